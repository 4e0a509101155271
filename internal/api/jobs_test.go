package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
)

func intp(n int) *int { return &n }

func TestStartBackup(t *testing.T) {
	e := newEnv(t, nil)
	ctx := e.ctx

	j, err := e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(60), CompletionWindowMinutes: intp(180)})
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != catalog.KindBackup || j.State != catalog.StatePending || j.Resource != resDocs || j.Vault != "primary" {
		t.Errorf("StartBackup = %+v", j)
	}
	if j.StartBy == nil || !j.StartBy.Equal(t0.Add(time.Hour)) || j.CompleteBy == nil || !j.CompleteBy.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("windows: start by %v, complete by %v; want %v and %v", j.StartBy, j.CompleteBy, t0.Add(time.Hour), t0.Add(3*time.Hour))
	}
	stored, err := e.cat.GetJob(ctx, j.ID)
	if err != nil || stored.State != catalog.StatePending || stored.Kind != catalog.KindBackup {
		t.Fatalf("stored job %+v, %v", stored, err)
	}
	ev := e.lastAudit()
	if ev.Action != "api POST /v1/jobs/backup" || ev.Object != j.ID || ev.Outcome != "ok" || ev.Actor != "token:"+e.tokID {
		t.Errorf("audit event %+v", ev)
	}
	contains(t, "audit detail", ev.Detail, resDocs)

	// 202 on the wire; no windows → none set.
	status, _, _ := e.raw("POST", "/v1/jobs/backup", e.bearer(), strings.NewReader(`{"resource":"`+resDB+`","vault":"secondary"}`))
	if status != http.StatusAccepted {
		t.Errorf("status %d, want 202", status)
	}
	js, _ := e.cat.ListJobs(ctx, catalog.JobFilter{Resource: resDB})
	if len(js) != 1 || !js[0].StartBy.IsZero() || !js[0].CompleteBy.IsZero() {
		t.Fatalf("job without windows: %+v", js)
	}
	// Only a completion window.
	j, err = e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary", CompletionWindowMinutes: intp(60)})
	if err != nil || j.StartBy != nil || j.CompleteBy == nil || !j.CompleteBy.Equal(t0.Add(time.Hour)) {
		t.Fatalf("completion window only: %+v, %v", j, err)
	}

	// A lifecycle travels to the runner as job params.
	j, err = e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary", MoveToColdStorageAfterDays: 30, DeleteAfterDays: 120})
	if err != nil || j.Params["move_to_cold_storage_after_days"] != "30" || j.Params["delete_after_days"] != "120" {
		t.Fatalf("lifecycle params: %+v, %v", j.Params, err)
	}

	jobsBefore, _ := e.cat.ListJobs(ctx, catalog.JobFilter{})
	for _, c := range []struct {
		name   string
		req    BackupRequest
		status int
		msg    string
	}{
		{"unknown resource", BackupRequest{Resource: "arn:coffre:filesystem:::resource/gone", Vault: "primary"}, 404, "resource/gone"},
		{"unknown vault", BackupRequest{Resource: resDocs, Vault: "tertiary"}, 404, `vault "tertiary"`},
		{"no vault", BackupRequest{Resource: resDocs}, 400, "vault"},
		{"start window too short", BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(59)}, 400, "start_window_minutes"},
		{"negative start window", BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(-60)}, 400, "start_window_minutes"},
		{"start window too long", BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(52_560_001)}, 400, "start_window_minutes"},
		{"completion too close", BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(120), CompletionWindowMinutes: intp(179)}, 400, "completion_window_minutes"},
		{"completion alone too short", BackupRequest{Resource: resDocs, Vault: "primary", CompletionWindowMinutes: intp(59)}, 400, "completion_window_minutes"},
		{"cold rule", BackupRequest{Resource: resDocs, Vault: "primary", MoveToColdStorageAfterDays: 30, DeleteAfterDays: 100}, 400, "+ 90"},
		{"negative lifecycle", BackupRequest{Resource: resDocs, Vault: "primary", DeleteAfterDays: -1}, 400, "negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.cl.StartBackup(ctx, c.req)
			ae := apiErr(t, err, c.status)
			contains(t, "message", ae.Message, c.msg)
			if ev := e.lastAudit(); ev.Outcome != "error "+strconv.Itoa(c.status) || ev.Action != "api POST /v1/jobs/backup" {
				t.Errorf("audit event %+v", ev)
			}
		})
	}

	big := `{"resource":"` + resDocs + `","vault":"primary","pad":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, c := range []struct{ name, body, msg string }{
		{"unknown field", `{"resource":"` + resDocs + `","vault":"primary","priority":1}`, `unknown field "priority"`},
		{"oversized", big, "larger than"},
		{"oversized whitespace", `{"resource":"` + resDocs + `","vault":"primary"}` + strings.Repeat(" ", 2<<20), "larger than"},
		{"not json", `resource=docs`, "invalid JSON"},
		{"empty", ``, "empty"},
		{"two objects", `{"resource":"` + resDocs + `","vault":"primary"}{}`, "after the JSON object"},
		{"wrong type", `{"resource":"` + resDocs + `","vault":"primary","start_window_minutes":"60"}`, "start_window_minutes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, _, eb := e.raw("POST", "/v1/jobs/backup", e.bearer(), strings.NewReader(c.body))
			if status != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", status, eb.Error)
			}
			contains(t, "error", eb.Error, c.msg)
		})
	}
	jobsAfter, _ := e.cat.ListJobs(ctx, catalog.JobFilter{})
	if len(jobsAfter) != len(jobsBefore) {
		t.Errorf("refused requests created %d jobs", len(jobsAfter)-len(jobsBefore))
	}
}

func TestStartRestore(t *testing.T) {
	e := newEnv(t, nil)
	ctx := e.ctx

	j, err := e.cl.StartRestore(ctx, RestoreRequest{Vault: "primary", RecoveryPoint: rpUnique[:8], Target: "/srv/restore/docs/", Path: "reports/2026"})
	if err != nil {
		t.Fatal(err)
	}
	wantParams := map[string]string{"recovery_point": rpUnique, "target": "/srv/restore/docs", "path": "reports/2026"}
	if j.Kind != catalog.KindRestore || j.State != catalog.StatePending || j.Vault != "primary" || j.Resource != resDocs {
		t.Errorf("StartRestore = %+v", j)
	}
	stored, err := e.cat.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Params) != len(wantParams) {
		t.Errorf("params %v, want %v", stored.Params, wantParams)
	}
	for k, v := range wantParams {
		if stored.Params[k] != v {
			t.Errorf("param %s = %q, want %q", k, stored.Params[k], v)
		}
	}
	if ev := e.lastAudit(); ev.Action != "api POST /v1/jobs/restore" || ev.Object != j.ID || ev.Outcome != "ok" {
		t.Errorf("audit event %+v", ev)
	}

	// The full id works too, and "path" is left out when not given.
	j, err = e.cl.StartRestore(ctx, RestoreRequest{Vault: "primary", RecoveryPoint: rpA, Target: "/srv/r2"})
	if err != nil || j.Params["recovery_point"] != rpA {
		t.Fatalf("restore by full id: %+v, %v", j, err)
	}
	if _, ok := j.Params["path"]; ok {
		t.Errorf("params %v hold an empty path", j.Params)
	}

	// An ambiguous prefix is refused with both candidates named.
	_, err = e.cl.StartRestore(ctx, RestoreRequest{Vault: "primary", RecoveryPoint: "aabbccdd", Target: "/srv/r3"})
	ae := apiErr(t, err, http.StatusBadRequest)
	contains(t, "message", ae.Message, "ambiguous")
	contains(t, "message", ae.Message, rpA)
	contains(t, "message", ae.Message, rpB)

	// Points are looked up in the named vault only.
	for _, c := range []struct {
		name   string
		req    RestoreRequest
		status int
		msg    string
	}{
		{"prefix too short", RestoreRequest{Vault: "primary", RecoveryPoint: "ffee00", Target: "/x"}, 404, "not found"},
		{"other vault", RestoreRequest{Vault: "secondary", RecoveryPoint: rpUnique, Target: "/x"}, 404, `vault "secondary"`},
		{"unknown point", RestoreRequest{Vault: "primary", RecoveryPoint: "deadbeefdeadbeef", Target: "/x"}, 404, "deadbeef"},
		{"unknown vault", RestoreRequest{Vault: "nowhere", RecoveryPoint: rpUnique, Target: "/x"}, 404, `vault "nowhere"`},
		{"relative target", RestoreRequest{Vault: "primary", RecoveryPoint: rpUnique, Target: "restore/here"}, 400, "absolute"},
		{"no target", RestoreRequest{Vault: "primary", RecoveryPoint: rpUnique}, 400, "target"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.cl.StartRestore(ctx, c.req)
			ae := apiErr(t, err, c.status)
			contains(t, "message", ae.Message, c.msg)
		})
	}

	// An expired point cannot be restored.
	if err := e.cat.PutRecoveryPoint(ctx, catalog.RecoveryPoint{ID: "eeee000011112222", Vault: "primary", Resource: resDocs, Status: "EXPIRED"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.cl.StartRestore(ctx, RestoreRequest{Vault: "primary", RecoveryPoint: "eeee0000", Target: "/x"})
	ae = apiErr(t, err, http.StatusConflict)
	contains(t, "message", ae.Message, "EXPIRED")

	js, _ := e.cat.ListJobs(ctx, catalog.JobFilter{Kind: catalog.KindRestore})
	if len(js) != 2 {
		t.Errorf("%d restore jobs, want 2 (refused requests create none)", len(js))
	}
}

func TestAbortJob(t *testing.T) {
	e := newEnv(t, nil)
	ctx := e.ctx
	wantMsg := "aborted by token:" + e.tokID

	pending, err := e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	running, err := e.cl.StartBackup(ctx, BackupRequest{Resource: resDB, Vault: "secondary"})
	if err != nil {
		t.Fatal(err)
	}

	// PENDING → ABORTED.
	j, err := e.cl.AbortJob(ctx, pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != catalog.StateAborted || j.Message != wantMsg || j.FinishedAt == nil {
		t.Errorf("abort PENDING = %+v", j)
	}
	if ev := e.lastAudit(); ev.Action != "api POST /v1/jobs/{id}/abort" || ev.Object != pending.ID || ev.Outcome != "ok" || ev.Detail != "was PENDING" {
		t.Errorf("audit event %+v", ev)
	}

	// RUNNING → ABORTED; the worker's next heartbeat fails.
	claimed, err := e.cat.ClaimJob(ctx, "w", catalog.ClaimLimits{})
	if err != nil || claimed.ID != running.ID {
		t.Fatalf("ClaimJob = %s, %v; want %s", claimed.ID, err, running.ID)
	}
	if err := e.cat.Heartbeat(ctx, running.ID, "w"); err != nil {
		t.Fatalf("heartbeat before abort: %v", err)
	}
	j, err = e.cl.AbortJob(ctx, running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != catalog.StateAborted || j.Message != wantMsg {
		t.Errorf("abort RUNNING = %+v", j)
	}
	if err := e.cat.Heartbeat(ctx, running.ID, "w"); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("heartbeat after abort: %v, want ErrConflict", err)
	}

	// A terminal job: 409 naming its state, and it is left alone.
	_, err = e.cl.AbortJob(ctx, pending.ID)
	ae := apiErr(t, err, http.StatusConflict)
	contains(t, "message", ae.Message, "ABORTED")
	done, err := e.cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cat.ClaimJob(ctx, "w", catalog.ClaimLimits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cat.TransitionJob(ctx, done.ID, catalog.StateRunning, catalog.StateCompleted, catalog.JobUpdate{}); err != nil {
		t.Fatal(err)
	}
	_, err = e.cl.AbortJob(ctx, done.ID)
	ae = apiErr(t, err, http.StatusConflict)
	contains(t, "message", ae.Message, "COMPLETED")
	if got, _ := e.cat.GetJob(ctx, done.ID); got.State != catalog.StateCompleted {
		t.Errorf("completed job is now %s", got.State)
	}
	if ev := e.lastAudit(); ev.Outcome != "error 409" || ev.Object != done.ID {
		t.Errorf("audit event %+v", ev)
	}

	_, err = e.cl.AbortJob(ctx, "ffffffffffffffffffffffffffffffff")
	apiErr(t, err, http.StatusNotFound)
}

// raceCatalog moves a job to RUNNING (as a worker would) just before the
// server's first transition, so that the optimistic abort must re-read.
type raceCatalog struct {
	catalog.Catalog
	raced atomic.Bool
}

func (r *raceCatalog) TransitionJob(ctx context.Context, id string, from, to catalog.JobState, u catalog.JobUpdate) (catalog.Job, error) {
	if r.raced.CompareAndSwap(false, true) {
		if _, err := r.Catalog.ClaimJob(ctx, "w", catalog.ClaimLimits{}); err != nil {
			return catalog.Job{}, err
		}
	}
	return r.Catalog.TransitionJob(ctx, id, from, to, u)
}

func TestAbortRetriesAfterAConcurrentMove(t *testing.T) {
	var rc *raceCatalog
	e := newEnv(t, func(c catalog.Catalog) catalog.Catalog { rc = &raceCatalog{Catalog: c}; return rc })
	j, err := e.cl.StartBackup(e.ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.cl.AbortJob(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !rc.raced.Load() || got.State != catalog.StateAborted || got.Owner != "w" {
		t.Errorf("abort after a concurrent claim = %+v (raced %v)", got, rc.raced.Load())
	}
	if ev := e.lastAudit(); ev.Detail != "was RUNNING" {
		t.Errorf("audit detail %q, want was RUNNING", ev.Detail)
	}
}

func TestWaitJob(t *testing.T) {
	e := newEnv(t, nil)
	j, err := e.cl.StartBackup(e.ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	// Count the client's polls of the job; the worker finishes the job only
	// after WaitJob has seen it unfinished at least twice.
	var polls atomic.Int32
	seen := make(chan struct{})
	inner := e.srv.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		if r.Method == "GET" && r.URL.Path == "/v1/jobs/"+j.ID && polls.Add(1) == 2 {
			close(seen)
		}
	}))
	defer hs.Close()
	cl := &Client{BaseURL: hs.URL, Token: e.tok, HTTP: hs.Client()}
	workerErr := make(chan error, 1)
	go func() {
		<-seen
		claimed, err := e.cat.ClaimJob(context.Background(), "w", catalog.ClaimLimits{})
		if err == nil {
			_, err = e.cat.TransitionJob(context.Background(), claimed.ID, catalog.StateRunning, catalog.StateCompleted,
				catalog.JobUpdate{RecoveryPoint: strp(rpA)})
		}
		workerErr <- err
	}()
	got, err := cl.WaitJob(e.ctx, j.ID, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-workerErr; err != nil {
		t.Fatal(err)
	}
	if got.State != catalog.StateCompleted || got.RecoveryPoint != rpA {
		t.Errorf("WaitJob = %+v, want COMPLETED with the recovery point", got)
	}
	if n := polls.Load(); n < 3 {
		t.Errorf("WaitJob polled %d times; want at least 3 (two unfinished, one finished)", n)
	}

	// A cancelled context stops the wait.
	j2, err := e.cl.StartBackup(e.ctx, BackupRequest{Resource: resDB, Vault: "secondary"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := e.cl.WaitJob(ctx, j2.ID, time.Millisecond); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitJob with a cancelled context: %v", err)
	}
	// An unknown job is an error, not an endless wait.
	_, err = e.cl.WaitJob(e.ctx, "nope", time.Millisecond)
	apiErr(t, err, http.StatusNotFound)
}

func strp(s string) *string { return &s }

func TestStartBackupHonoursVaultLock(t *testing.T) {
	e := newEnv(t, nil)
	ctx := e.ctx
	if err := e.cat.PutVault(ctx, catalog.Vault{Name: "locked", Location: "file:///srv/locked",
		Lock: catalog.VaultLock{Mode: catalog.LockCompliance, MinRetentionDays: 7, MaxRetentionDays: 35}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		del  int
		want string
	}{{3, "minimum retention of 7 days"}, {0, "maximum retention of 35 days"}, {36, "maximum retention of 35 days"}} {
		_, err := e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "locked", DeleteAfterDays: c.del})
		contains(t, fmt.Sprintf("delete after %d days", c.del), apiErr(t, err, 400).Message, c.want)
	}
	if _, err := e.cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "locked", DeleteAfterDays: 10}); err != nil {
		t.Fatalf("retention inside the lock's bounds: %v", err)
	}
}

func TestStartPointInTimeRestore(t *testing.T) {
	e := newEnv(t, nil)
	ctx := e.ctx
	at := t0.Add(-time.Hour).UTC().Format(time.RFC3339)
	ts := map[string]string{"data_dir": "/srv/pg-restored", "port": "5433"}
	j, err := e.cl.StartRestore(ctx, RestoreRequest{Vault: "primary", Resource: resDB, ToTime: at, TargetSettings: ts})
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != catalog.KindRestore || j.Resource != resDB || j.Params["to_time"] != at || j.Params["target.data_dir"] != "/srv/pg-restored" ||
		j.Params["target.port"] != "5433" || j.Params["recovery_point"] != "" {
		t.Fatalf("point-in-time restore job %+v", j)
	}
	for _, c := range []struct {
		name   string
		req    RestoreRequest
		status int
		msg    string
	}{
		{"bad time", RestoreRequest{Vault: "primary", Resource: resDB, ToTime: "yesterday", TargetSettings: ts}, 400, "RFC 3339"},
		{"future", RestoreRequest{Vault: "primary", Resource: resDB, ToTime: t0.Add(time.Hour).Format(time.RFC3339), TargetSettings: ts}, 400, "future"},
		{"not postgres", RestoreRequest{Vault: "primary", Resource: resDocs, ToTime: at, TargetSettings: ts}, 400, "PostgreSQL"},
		{"no data dir", RestoreRequest{Vault: "primary", Resource: resDB, ToTime: at, TargetSettings: map[string]string{"port": "5433"}}, 400, "data directory"},
		{"relative data dir", RestoreRequest{Vault: "primary", Resource: resDB, ToTime: at, TargetSettings: map[string]string{"data_dir": "x", "port": "1"}}, 400, "data directory"},
		{"no resource", RestoreRequest{Vault: "primary", ToTime: at, TargetSettings: ts}, 400, "resource"},
		{"unknown resource", RestoreRequest{Vault: "primary", Resource: "nope", ToTime: at, TargetSettings: ts}, 404, `resource "nope"`},
		{"secret in clear", RestoreRequest{Vault: "primary", Resource: resDB, ToTime: at,
			TargetSettings: map[string]string{"data_dir": "/x", "port": "1", "password": "hunter2"}}, 400, "reference"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.cl.StartRestore(ctx, c.req)
			contains(t, "message", apiErr(t, err, c.status).Message, c.msg)
		})
	}
}
