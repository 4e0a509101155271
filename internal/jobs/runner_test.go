package jobs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/testutil"
)

var base = time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)

type env struct {
	t      *testing.T
	cat    *sqlite.Catalog
	clk    *clock.Fake
	vaults *Opener
	vault  catalog.Vault
	res    catalog.Resource
	src    string
	runner *Runner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := clock.NewFake(base)
	cat, err := sqlite.Open(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	e := &env{t: t, cat: cat, clk: clk, src: t.TempDir()}
	e.vaults = &Opener{Keys: &Keyring{Dir: t.TempDir()}, Clock: clk}
	e.vault = catalog.Vault{Name: "main", Location: "file://" + filepath.Join(t.TempDir(), "vault")}
	e.res = catalog.Resource{ID: "arn:coffre:filesystem:::resource/docs", Type: "filesystem", Settings: map[string]string{"path": e.src}}
	testutil.WriteFiles(t, e.src, map[string][]byte{"a.txt": []byte("alpha"), "sub/b.bin": testutil.RandomBytes(1, 300_000)})
	ctx := context.Background()
	must(t, cat.PutVault(ctx, e.vault))
	must(t, cat.PutResource(ctx, e.res))
	must(t, cat.PutPlan(ctx, catalog.Plan{Name: "daily", Rules: []catalog.Rule{{Name: "r", Schedule: "cron(0 22 * * ? *)", TargetVault: "main", MoveToColdAfterDays: 7, DeleteAfterDays: 97}}}))
	e.runner = &Runner{Cat: cat, Vaults: e.vaults, Clock: clk, Owner: "test-worker", HeartbeatEvery: 5 * time.Millisecond}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) job(j catalog.Job) catalog.Job {
	e.t.Helper()
	if j.Kind == "" {
		j.Kind = catalog.KindBackup
	}
	if j.Resource == "" && j.Kind == catalog.KindBackup {
		j.Resource = e.res.ID
	}
	if j.Vault == "" {
		j.Vault = e.vault.Name
	}
	j.State = catalog.StatePending
	j, err := e.cat.CreateJob(context.Background(), j)
	must(e.t, err)
	return j
}

func (e *env) runOnce() {
	e.t.Helper()
	ran, err := e.runner.RunOnce(context.Background())
	must(e.t, err)
	if !ran {
		e.t.Fatal("RunOnce found no job")
	}
}

func (e *env) get(id string) catalog.Job {
	e.t.Helper()
	j, err := e.cat.GetJob(context.Background(), id)
	must(e.t, err)
	return j
}

func (e *env) manifests() []*snapshot.Manifest {
	e.t.Helper()
	r, err := e.vaults.Open(context.Background(), e.vault)
	must(e.t, err)
	defer r.Close()
	ms, errs, err := snapshot.LoadAll(context.Background(), r)
	must(e.t, err)
	if len(errs) > 0 {
		e.t.Fatal(errs)
	}
	return ms
}

func TestBackupJobRecordsPointWithLifecycleAndRestores(t *testing.T) {
	e := newEnv(t)
	j := e.job(catalog.Job{Plan: "daily", Rule: "r"})
	e.runOnce()
	got := e.get(j.ID)
	if got.State != catalog.StateCompleted || got.RecoveryPoint == "" || got.Attempt != 1 || got.Owner != "test-worker" {
		t.Fatalf("job after run: %+v", got)
	}
	rp, err := e.cat.GetRecoveryPoint(context.Background(), "main", got.RecoveryPoint)
	must(t, err)
	if !rp.CreatedAt.Equal(base) || !rp.DeleteAt.Equal(base.Add(97*24*time.Hour)) || !rp.MoveToColdAt.Equal(base.Add(7*24*time.Hour)) ||
		rp.Plan != "daily" || rp.Rule != "r" || rp.JobID != j.ID || rp.Resource != e.res.ID || rp.SizeBytes != 300_005 || rp.Tier != catalog.TierWarm {
		t.Fatalf("recovery point: %+v", rp)
	}
	ms := e.manifests()
	if len(ms) != 1 || ms[0].Lifecycle == nil || ms[0].Lifecycle.Job != j.ID || ms[0].Lifecycle.DeleteAfterDays != 97 || ms[0].Source.Resource != e.res.ID {
		t.Fatalf("manifest lifecycle: %+v", ms[0].Lifecycle)
	}

	// A second backup reuses the first as parent: nothing is read again.
	e.clk.Advance(24 * time.Hour)
	j2 := e.job(catalog.Job{Plan: "daily", Rule: "r"})
	e.runOnce()
	ms = e.manifests()
	if e.get(j2.ID).State != catalog.StateCompleted || len(ms) != 2 {
		t.Fatalf("second backup: %+v, %d manifests", e.get(j2.ID), len(ms))
	}
	last := ms[len(ms)-1]
	if last.Parent == nil || last.Parent.String() != got.RecoveryPoint || last.Stats.FilesChanged != 0 {
		t.Fatalf("second backup did not reuse its parent: parent %v, files read %d", last.Parent, last.Stats.FilesChanged)
	}

	// Restore through a job.
	target := filepath.Join(t.TempDir(), "out")
	rj := e.job(catalog.Job{Kind: catalog.KindRestore, Resource: e.res.ID, Params: map[string]string{"recovery_point": got.RecoveryPoint[:12], "target": target}})
	e.runOnce()
	rj = e.get(rj.ID)
	if rj.State != catalog.StateCompleted || rj.RecoveryPoint != got.RecoveryPoint || !strings.Contains(rj.Message, "restored 2 files") {
		t.Fatalf("restore job: %+v", rj)
	}
	if want, have := testutil.ReadFiles(t, e.src), testutil.ReadFiles(t, target); !reflect.DeepEqual(want, have) {
		t.Fatalf("restored files differ: %d vs %d files", len(want), len(have))
	}
	// Restoring again into the same (now full) target is refused, permanently.
	rj2 := e.job(catalog.Job{Kind: catalog.KindRestore, Params: map[string]string{"recovery_point": got.RecoveryPoint, "target": target}})
	e.runOnce()
	if rj2 = e.get(rj2.ID); rj2.State != catalog.StateFailed || rj2.Attempt != 1 || !strings.Contains(rj2.Message, "not empty") {
		t.Fatalf("restore into a full target: %+v", rj2)
	}

	// Every state change is in the audit chain, which verifies.
	evs, err := e.cat.ListAudit(context.Background(), catalog.AuditFilter{})
	must(t, err)
	var seen []string
	for _, ev := range evs {
		if ev.Object == "job/"+j.ID {
			seen = append(seen, ev.Action)
		}
	}
	if !reflect.DeepEqual(seen, []string{"job.RUNNING", "job.COMPLETED"}) {
		t.Fatalf("audit of job %s: %v", j.ID, seen)
	}
	if broken, err := e.cat.VerifyAudit(context.Background()); err != nil || broken != 0 {
		t.Fatalf("VerifyAudit = %d, %v", broken, err)
	}
}

func TestPermanentErrorsFailAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	must(t, e.cat.PutResource(ctx, catalog.Resource{ID: "bad-path", Type: "filesystem", Settings: map[string]string{"path": "relative/dir"}}))
	must(t, e.cat.PutResource(ctx, catalog.Resource{ID: "gone", Type: "filesystem", Settings: map[string]string{"path": "/nonexistent/coffre-test"}}))
	must(t, e.cat.PutResource(ctx, catalog.Resource{ID: "pg", Type: "postgres"}))
	must(t, e.cat.PutResource(ctx, catalog.Resource{ID: "ddb", Type: "dynamodb"}))
	for _, c := range []struct{ res, want string }{
		{"bad-path", "want an absolute path"},
		{"gone", "does not exist"},
		{"pg", "setting database is required"},
		{"ddb", `no adapter for type "dynamodb"`},
	} {
		j := e.job(catalog.Job{Resource: c.res})
		e.runOnce()
		if got := e.get(j.ID); got.State != catalog.StateFailed || got.Attempt != 1 || !strings.Contains(got.Message, c.want) {
			t.Errorf("%s: %s attempt %d %q, want FAILED at attempt 1 with %q", c.res, got.State, got.Attempt, got.Message, c.want)
		}
	}
}

// flakyVaults is a test double of Vaults whose first Open calls fail with a
// transient error; the real Opener cannot be made to fail transiently on
// purpose.
type flakyVaults struct {
	Vaults
	failures atomic.Int32
}

func (f *flakyVaults) Open(ctx context.Context, v catalog.Vault) (*repo.Repository, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("connection reset by peer")
	}
	return f.Vaults.Open(ctx, v)
}

func TestTransientErrorsRetryWithBackoff(t *testing.T) {
	e := newEnv(t)
	fv := &flakyVaults{Vaults: e.vaults}
	fv.failures.Store(1)
	e.runner.Vaults = fv
	j := e.job(catalog.Job{})
	e.runOnce()
	got := e.get(j.ID)
	if got.State != catalog.StatePending || !got.NotBefore.Equal(base.Add(time.Minute)) || !strings.Contains(got.Message, "connection reset") {
		t.Fatalf("after a transient failure: %+v", got)
	}
	if ran, err := e.runner.RunOnce(context.Background()); ran || err != nil {
		t.Fatalf("job claimed during its backoff: %v %v", ran, err)
	}
	e.clk.Advance(time.Minute)
	e.runOnce()
	if got = e.get(j.ID); got.State != catalog.StateCompleted || got.Attempt != 2 {
		t.Fatalf("retry: %+v", got)
	}

	// Failing every attempt ends FAILED after MaxAttempts, with doubling waits.
	fv.failures.Store(100)
	j = e.job(catalog.Job{})
	var waits []time.Duration
	for i := 0; i < DefaultMaxAttempts; i++ {
		before := e.clk.Now()
		e.runOnce()
		got = e.get(j.ID)
		if got.State == catalog.StatePending {
			waits = append(waits, got.NotBefore.Sub(before))
			e.clk.Set(got.NotBefore)
		}
	}
	if got.State != catalog.StateFailed || got.Attempt != DefaultMaxAttempts || !strings.Contains(got.Message, "failed after 3 attempts") {
		t.Fatalf("after %d failures: %+v", DefaultMaxAttempts, got)
	}
	if !reflect.DeepEqual(waits, []time.Duration{time.Minute, 2 * time.Minute}) {
		t.Fatalf("backoff waits %v", waits)
	}

	// No retry is scheduled past the start window.
	fv.failures.Store(1)
	j = e.job(catalog.Job{StartBy: e.clk.Now().Add(30 * time.Second)})
	e.runOnce()
	if got = e.get(j.ID); got.State != catalog.StateFailed || !strings.Contains(got.Message, "start window closes") {
		t.Fatalf("retry past the start window: %+v", got)
	}
}

func TestStaleJobsAreRequeuedAndFinished(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	j := e.job(catalog.Job{})
	if _, err := e.cat.ClaimJob(ctx, "crashed-worker", catalog.ClaimLimits{}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.runner.RecoverStale(ctx); err != nil || n != 0 {
		t.Fatalf("RecoverStale on a fresh heartbeat: %d, %v", n, err)
	}
	e.clk.Advance(DefaultStaleAfter + time.Second)
	if n, err := e.runner.RecoverStale(ctx); err != nil || n != 1 {
		t.Fatalf("RecoverStale: %d, %v", n, err)
	}
	got := e.get(j.ID)
	if got.State != catalog.StatePending || got.Owner != "" || !strings.Contains(got.Message, "crashed-worker lost") {
		t.Fatalf("requeued job: %+v", got)
	}
	e.runOnce()
	if got = e.get(j.ID); got.State != catalog.StateCompleted || got.Attempt != 2 {
		t.Fatalf("after requeue: %+v", got)
	}

	// A job that keeps losing its worker fails after MaxAttempts.
	j = e.job(catalog.Job{})
	for i := 0; i < DefaultMaxAttempts; i++ {
		if _, err := e.cat.ClaimJob(ctx, "crashing", catalog.ClaimLimits{}); err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(DefaultStaleAfter + time.Second)
		if _, err := e.runner.RecoverStale(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got = e.get(j.ID); got.State != catalog.StateFailed || !strings.Contains(got.Message, "failed after 3 attempts") {
		t.Fatalf("job lost 3 times: %+v", got)
	}
}

func TestCommittedPointOfACrashedAttemptIsAdopted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	j := e.job(catalog.Job{Plan: "daily", Rule: "r"})
	if _, err := e.cat.ClaimJob(ctx, "crashed-worker", catalog.ClaimLimits{}); err != nil {
		t.Fatal(err)
	}
	// The crashed attempt committed its recovery point, then died before
	// recording it in the catalog.
	r, lock, err := e.runner.openLocked(ctx, e.vault, "test")
	must(t, err)
	m, err := Filesystem{}.Backup(ctx, r, e.res, archiver.Options{Resource: e.res.ID, Lifecycle: &snapshot.Lifecycle{Plan: "daily", Rule: "r", Job: j.ID, DeleteAfterDays: 97}})
	must(t, err)
	lock.Unlock()
	r.Close()

	e.clk.Advance(DefaultStaleAfter + time.Second)
	if _, err := e.runner.RecoverStale(ctx); err != nil {
		t.Fatal(err)
	}
	e.runOnce()
	got := e.get(j.ID)
	if got.State != catalog.StateCompleted || got.RecoveryPoint != m.ID.String() {
		t.Fatalf("job %+v, want COMPLETED with the adopted point %s", got, m.ID.Short())
	}
	if n := len(e.manifests()); n != 1 {
		t.Fatalf("%d recovery points in the vault, want 1 (no second backup)", n)
	}
	if _, err := e.cat.GetRecoveryPoint(ctx, "main", m.ID.String()); err != nil {
		t.Fatalf("adopted point not in the catalog: %v", err)
	}
}

// blockingSource is a test double of Source that blocks until its context
// ends, to hold a job RUNNING while a test aborts it, lets its completion
// window pass or shuts the runner down.
type blockingSource struct{ started chan struct{} }

func (b blockingSource) Backup(ctx context.Context, _ *repo.Repository, _ catalog.Resource, _ archiver.Options) (*snapshot.Manifest, error) {
	close(b.started)
	<-ctx.Done()
	return nil, context.Cause(ctx)
}

func (b blockingSource) Restore(context.Context, *repo.Repository, catalog.Resource, *snapshot.Manifest, map[string]string) (string, error) {
	return "", errors.New("not used")
}

func (e *env) blockOn() chan struct{} {
	started := make(chan struct{})
	e.runner.Sources = map[string]Source{"filesystem": blockingSource{started: started}}
	return started
}

func TestAbortedRunningJobIsCancelled(t *testing.T) {
	e := newEnv(t)
	started := e.blockOn()
	j := e.job(catalog.Job{})
	done := make(chan error)
	go func() { _, err := e.runner.RunOnce(context.Background()); done <- err }()
	<-started
	if _, err := e.cat.TransitionJob(context.Background(), j.ID, catalog.StateRunning, catalog.StateAborted, catalog.JobUpdate{Message: ptr("aborted by test")}); err != nil {
		t.Fatal(err)
	}
	must(t, <-done)
	if got := e.get(j.ID); got.State != catalog.StateAborted || got.Message != "aborted by test" {
		t.Fatalf("aborted job: %+v", got)
	}
}

func TestCompletionWindowExpiresRunningJob(t *testing.T) {
	e := newEnv(t)
	started := e.blockOn()
	j := e.job(catalog.Job{CompleteBy: base.Add(time.Hour)})
	done := make(chan error)
	go func() { _, err := e.runner.RunOnce(context.Background()); done <- err }()
	<-started
	e.clk.Advance(time.Hour + time.Second)
	must(t, <-done)
	if got := e.get(j.ID); got.State != catalog.StateExpired || got.Message != MsgCompletionWindow {
		t.Fatalf("job past its completion window: %+v", got)
	}
}

func TestShutdownRequeuesRunningJobs(t *testing.T) {
	e := newEnv(t)
	started := e.blockOn()
	e.runner.ShutdownGrace = 20 * time.Millisecond
	e.runner.Poll = 5 * time.Millisecond
	j := e.job(catalog.Job{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.runner.Run(ctx) }()
	<-started
	cancel()
	must(t, <-done)
	got := e.get(j.ID)
	if got.State != catalog.StatePending || got.Message != MsgShutdown || got.Owner != "" {
		t.Fatalf("job running at shutdown: %+v", got)
	}
	// Another runner picks it up and finishes it.
	e.runner.Sources = nil
	r2 := &Runner{Cat: e.cat, Vaults: e.vaults, Clock: e.clk, Owner: "second"}
	if ran, err := r2.RunOnce(context.Background()); !ran || err != nil {
		t.Fatalf("second runner: %v %v", ran, err)
	}
	if got = e.get(j.ID); got.State != catalog.StateCompleted || got.Owner != "second" {
		t.Fatalf("after restart: %+v", got)
	}
}

func TestRunFinishesJobsAndStopsCleanly(t *testing.T) {
	e := newEnv(t)
	e.runner.Poll = 5 * time.Millisecond
	var ids []string
	for i := 0; i < 3; i++ {
		must(t, e.cat.PutResource(context.Background(), catalog.Resource{ID: fmt.Sprint("r", i), Type: "filesystem", Settings: map[string]string{"path": e.src}}))
		ids = append(ids, e.job(catalog.Job{Resource: fmt.Sprint("r", i)}).ID)
	}
	changes := make(chan catalog.Job, 16)
	e.runner.OnChange = func(j catalog.Job) { changes <- j }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.runner.Run(ctx) }()
	finished := map[string]bool{}
	for len(finished) < 3 {
		j := <-changes
		if catalog.Terminal(j.State) {
			if j.State != catalog.StateCompleted {
				t.Fatalf("job %s ended %s: %s", j.ID, j.State, j.Message)
			}
			finished[j.ID] = true
		}
	}
	cancel()
	must(t, <-done)
	for _, id := range ids {
		if !finished[id] {
			t.Fatalf("job %s not run", id)
		}
	}
	if n := len(e.manifests()); n != 3 {
		t.Fatalf("%d recovery points, want 3", n)
	}
}

func TestRunJobRunsThatJobOnceInProcess(t *testing.T) {
	e := newEnv(t)
	other := e.job(catalog.Job{})
	fv := &flakyVaults{Vaults: e.vaults}
	fv.failures.Store(1)
	e.runner.Vaults = fv
	j := e.job(catalog.Job{CreatedAt: base.Add(time.Second)})
	got, err := e.runner.RunJob(context.Background(), j.ID)
	must(t, err)
	if got.State != catalog.StateFailed || !strings.Contains(got.Message, "connection reset") {
		t.Fatalf("RunJob with a transient error: %+v, want FAILED (no retry in-process)", got)
	}
	if o := e.get(other.ID); o.State != catalog.StatePending {
		t.Fatalf("RunJob touched another job: %+v", o)
	}
	j = e.job(catalog.Job{CreatedAt: base.Add(2 * time.Second)})
	if got, err = e.runner.RunJob(context.Background(), j.ID); err != nil || got.State != catalog.StateCompleted || got.RecoveryPoint == "" {
		t.Fatalf("RunJob: %+v, %v", got, err)
	}
	if _, err := e.runner.RunJob(context.Background(), j.ID); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("RunJob of a finished job: %v, want ErrConflict", err)
	}
}
