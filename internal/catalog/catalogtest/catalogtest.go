// Package catalogtest is the conformance suite every catalog.Catalog implementation must pass.
package catalogtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
)

// Opener opens one catalog storage; every call opens the same storage again.
type Opener func(clk clock.Clock) (catalog.Catalog, error)

// RawExecer is the test hook the tamper tests need: run a raw SQL statement
// with ? placeholders behind the catalog's back.
type RawExecer interface {
	ExecRawForTest(ctx context.Context, query string, args ...any) error
}

// Base is the fake clock's starting time in the suite.
var Base = time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)

// Run runs the suite; fresh must return an Opener for new, empty storage
// (a temporary directory, a new database or schema), cleaned up with t.
func Run(t *testing.T, fresh func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c catalog.Catalog, clk *clock.Fake)
	}{
		{"Vaults", testVaults},
		{"Resources", testResources},
		{"Plans", testPlans},
		{"Selections", testSelections},
		{"JobsCreateListFilter", testJobsList},
		{"JobTransitions", testJobTransitions},
		{"JobTransitionConflict", testJobConflict},
		{"ClaimConcurrent", testClaimConcurrent},
		{"HeartbeatAndStale", testStale},
		{"JobParamsAndBackoff", testJobParamsBackoff},
		{"ClaimLimits", testClaimLimits},
		{"Tokens", testTokens},
		{"RecoveryPoints", testRecoveryPoints},
		{"RecoveryPointExpiry", testExpiry},
		{"AuditChain", testAudit},
		{"AuditTamper", testAuditTamper},
		{"AuditConcurrent", testAuditConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(Base)
			c, err := fresh(t)(clk)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			tc.fn(t, c, clk)
		})
	}
	t.Run("MigrationsIdempotent", func(t *testing.T) { testReopen(t, fresh(t)) })
}

func ctx() context.Context { return context.Background() }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func equal(t *testing.T, got, want any, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func testVaults(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	v := catalog.Vault{
		Name: "primary", Location: "file:///var/lib/coffre/primary", KeyRef: "env:COFFRE_KEY",
		Lock: catalog.VaultLock{Mode: catalog.LockCompliance, MinRetentionDays: 7, MaxRetentionDays: 365},
		Tags: map[string]string{"env": "prod", "team": "platform"},
	}
	must(t, c.PutVault(ctx(), v))
	got, err := c.GetVault(ctx(), "primary")
	must(t, err)
	v.CreatedAt = Base
	equal(t, got, v, "vault round trip (CreatedAt from the clock)")

	clk.Advance(time.Hour)
	v2 := catalog.Vault{Name: "primary", Location: "s3://bucket/x", Lock: catalog.VaultLock{Mode: catalog.LockGovernance}}
	must(t, c.PutVault(ctx(), v2))
	got, err = c.GetVault(ctx(), "primary")
	must(t, err)
	v2.CreatedAt = Base
	equal(t, got, v2, "vault upsert keeps CreatedAt, replaces the rest")

	must(t, c.PutVault(ctx(), catalog.Vault{Name: "a-secondary", Location: "s3://other"}))
	vs, err := c.ListVaults(ctx())
	must(t, err)
	if len(vs) != 2 || vs[0].Name != "a-secondary" || vs[1].Name != "primary" {
		t.Fatalf("ListVaults not sorted by name: %+v", vs)
	}

	wantErr(t, c.PutVault(ctx(), catalog.Vault{Location: "x"}), catalog.ErrInvalid, "vault without name")
	wantErr(t, c.PutVault(ctx(), catalog.Vault{Name: "x", Location: "x", Lock: catalog.VaultLock{Mode: "strict"}}), catalog.ErrInvalid, "unknown lock mode")
	wantErr(t, c.PutVault(ctx(), catalog.Vault{Name: "x", Location: "x", Lock: catalog.VaultLock{Mode: catalog.LockGovernance, MinRetentionDays: 30, MaxRetentionDays: 7}}), catalog.ErrInvalid, "min > max retention")

	must(t, c.DeleteVault(ctx(), "primary"))
	_, err = c.GetVault(ctx(), "primary")
	wantErr(t, err, catalog.ErrNotFound, "get deleted vault")
	wantErr(t, c.DeleteVault(ctx(), "primary"), catalog.ErrNotFound, "delete missing vault")
}

func testResources(t *testing.T, c catalog.Catalog, _ *clock.Fake) {
	pg := catalog.Resource{
		ID: "arn:coffre:postgres:local:main", Type: "postgres", Name: "main",
		Settings: map[string]string{"host": "127.0.0.1", "password": "env:PGPASSWORD", "client_secret": "file:/run/secrets/x"},
		Tags:     map[string]string{"backup": "daily"},
	}
	fs := catalog.Resource{ID: "arn:coffre:filesystem:local:home", Type: "filesystem", Settings: map[string]string{}}
	must(t, c.PutResource(ctx(), pg))
	must(t, c.PutResource(ctx(), fs))
	got, err := c.GetResource(ctx(), pg.ID)
	must(t, err)
	pg.CreatedAt = Base
	equal(t, got, pg, "resource round trip")

	all, err := c.ListResources(ctx(), "")
	must(t, err)
	if len(all) != 2 || all[0].ID != fs.ID || all[1].ID != pg.ID {
		t.Fatalf("ListResources(\"\") = %+v, want both sorted by id", all)
	}
	only, err := c.ListResources(ctx(), "postgres")
	must(t, err)
	if len(only) != 1 || only[0].ID != pg.ID {
		t.Fatalf("ListResources(postgres) = %+v", only)
	}

	bad := pg
	bad.Settings = map[string]string{"PGPASSWORD": "hunter2"}
	err = c.PutResource(ctx(), bad)
	wantErr(t, err, catalog.ErrInvalid, "inline secret in settings")
	got, err = c.GetResource(ctx(), pg.ID)
	must(t, err)
	if got.Settings["password"] != "env:PGPASSWORD" {
		t.Fatalf("refused put changed the stored resource: %+v", got)
	}

	must(t, c.DeleteResource(ctx(), fs.ID))
	_, err = c.GetResource(ctx(), fs.ID)
	wantErr(t, err, catalog.ErrNotFound, "get deleted resource")
	wantErr(t, c.DeleteResource(ctx(), fs.ID), catalog.ErrNotFound, "delete missing resource")
}

func testPlans(t *testing.T, c catalog.Catalog, _ *clock.Fake) {
	p := catalog.Plan{
		Name: "prod",
		Tags: map[string]string{"env": "prod"},
		Rules: []catalog.Rule{
			{
				Name: "daily", Schedule: "cron(0 22 * * ? *)", Timezone: "Europe/Paris",
				StartWindowMinutes: 60, CompletionWindowMinutes: 480, TargetVault: "primary",
				MoveToColdAfterDays: 30, DeleteAfterDays: 365,
				CopyActions: []catalog.CopyAction{{TargetVault: "dr", MoveToColdAfterDays: 7, DeleteAfterDays: 90}},
			},
			{Name: "pitr", Schedule: "rate(1 hour)", TargetVault: "primary", DeleteAfterDays: 35, ContinuousBackup: true},
		},
	}
	must(t, c.PutPlan(ctx(), p))
	got, err := c.GetPlan(ctx(), "prod")
	must(t, err)
	p.CreatedAt = Base
	equal(t, got, p, "plan round trip with rules in order")

	p.Rules = []catalog.Rule{p.Rules[1]}
	must(t, c.PutPlan(ctx(), p))
	got, err = c.GetPlan(ctx(), "prod")
	must(t, err)
	equal(t, got, p, "plan upsert replaces its rules")

	must(t, c.PutPlan(ctx(), catalog.Plan{Name: "dev"}))
	ps, err := c.ListPlans(ctx())
	must(t, err)
	if len(ps) != 2 || ps[0].Name != "dev" || len(ps[0].Rules) != 0 || ps[1].Name != "prod" || len(ps[1].Rules) != 1 {
		t.Fatalf("ListPlans = %+v", ps)
	}
	wantErr(t, c.PutPlan(ctx(), catalog.Plan{Name: "x", Rules: []catalog.Rule{{Name: "a"}, {Name: "a"}}}), catalog.ErrInvalid, "duplicate rule names")

	must(t, c.DeletePlan(ctx(), "prod"))
	_, err = c.GetPlan(ctx(), "prod")
	wantErr(t, err, catalog.ErrNotFound, "get deleted plan")
	wantErr(t, c.DeletePlan(ctx(), "prod"), catalog.ErrNotFound, "delete missing plan")
	must(t, c.PutPlan(ctx(), catalog.Plan{Name: "prod"}))
	got, err = c.GetPlan(ctx(), "prod")
	must(t, err)
	if len(got.Rules) != 0 {
		t.Fatalf("DeletePlan left rules behind: %+v", got.Rules)
	}
}

func testSelections(t *testing.T, c catalog.Catalog, _ *clock.Fake) {
	s := catalog.Selection{
		Name: "prod-dbs", Plan: "prod",
		Resources:    []string{"arn:coffre:postgres:*"},
		NotResources: []string{"arn:coffre:postgres:local:scratch"},
		Conditions: []catalog.Condition{
			{Op: catalog.StringEquals, Key: "env", Value: "prod"},
			{Op: catalog.StringNotLike, Key: "tier", Value: "tmp*"},
		},
	}
	must(t, c.PutSelection(ctx(), s))
	got, err := c.GetSelection(ctx(), s.Name)
	must(t, err)
	s.CreatedAt = Base
	equal(t, got, s, "selection round trip")
	must(t, c.PutSelection(ctx(), catalog.Selection{Name: "dev-all", Plan: "dev", Resources: []string{"*"}}))
	must(t, c.PutSelection(ctx(), catalog.Selection{Name: "prod-fs", Plan: "prod", Resources: []string{"arn:coffre:filesystem:*"}}))

	byPlan, err := c.ListSelections(ctx(), "prod")
	must(t, err)
	if len(byPlan) != 2 || byPlan[0].Name != "prod-dbs" || byPlan[1].Name != "prod-fs" {
		t.Fatalf("ListSelections(prod) = %+v", byPlan)
	}
	all, err := c.ListSelections(ctx(), "")
	must(t, err)
	if len(all) != 3 || all[0].Name != "dev-all" {
		t.Fatalf("ListSelections(\"\") = %+v", all)
	}
	wantErr(t, c.PutSelection(ctx(), catalog.Selection{Name: "x", Plan: "p", Conditions: []catalog.Condition{{Op: "Equals"}}}), catalog.ErrInvalid, "unknown condition op")
	must(t, c.DeleteSelection(ctx(), "dev-all"))
	_, err = c.GetSelection(ctx(), "dev-all")
	wantErr(t, err, catalog.ErrNotFound, "get deleted selection")
	wantErr(t, c.DeleteSelection(ctx(), "dev-all"), catalog.ErrNotFound, "delete missing selection")
}

func testJobsList(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	j, err := c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, Resource: "r1", Vault: "v1", Plan: "p", Rule: "daily",
		StartBy: Base.Add(time.Hour), CompleteBy: Base.Add(8 * time.Hour)})
	must(t, err)
	if len(j.ID) != 32 || j.State != catalog.StateCreated || !j.CreatedAt.Equal(Base) {
		t.Fatalf("CreateJob defaults: %+v", j)
	}
	got, err := c.GetJob(ctx(), j.ID)
	must(t, err)
	equal(t, got, j, "job round trip")

	clk.Advance(time.Second)
	_, err = c.CreateJob(ctx(), catalog.Job{ID: "j2", Kind: catalog.KindCopy, State: catalog.StatePending, Resource: "r1", Vault: "v2"})
	must(t, err)
	clk.Advance(time.Second)
	_, err = c.CreateJob(ctx(), catalog.Job{ID: "j3", Kind: catalog.KindRestore, State: catalog.StatePending, Resource: "r2", Vault: "v1"})
	must(t, err)

	_, err = c.CreateJob(ctx(), catalog.Job{ID: "j2", Kind: catalog.KindBackup})
	wantErr(t, err, catalog.ErrConflict, "duplicate job id")
	_, err = c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, State: catalog.StateRunning})
	wantErr(t, err, catalog.ErrInvalid, "job created RUNNING")
	_, err = c.CreateJob(ctx(), catalog.Job{Kind: "SNAPSHOT"})
	wantErr(t, err, catalog.ErrInvalid, "unknown job kind")
	_, err = c.GetJob(ctx(), "nope")
	wantErr(t, err, catalog.ErrNotFound, "get missing job")

	ids := func(f catalog.JobFilter) string {
		t.Helper()
		js, err := c.ListJobs(ctx(), f)
		must(t, err)
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		f    catalog.JobFilter
		want string
	}{
		{catalog.JobFilter{}, j.ID + ",j2,j3"},
		{catalog.JobFilter{States: []catalog.JobState{catalog.StatePending}}, "j2,j3"},
		{catalog.JobFilter{States: []catalog.JobState{catalog.StateCreated, catalog.StateRunning}}, j.ID},
		{catalog.JobFilter{Resource: "r1"}, j.ID + ",j2"},
		{catalog.JobFilter{Vault: "v1"}, j.ID + ",j3"},
		{catalog.JobFilter{Vault: "v1", States: []catalog.JobState{catalog.StatePending}}, "j3"},
		{catalog.JobFilter{Kind: catalog.KindCopy}, "j2"},
		{catalog.JobFilter{Limit: 2}, j.ID + ",j2"},
	} {
		if got := ids(tc.f); got != tc.want {
			t.Errorf("ListJobs(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func testJobTransitions(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	j, err := c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, Resource: "r"})
	must(t, err)
	j, err = c.TransitionJob(ctx(), j.ID, catalog.StateCreated, catalog.StatePending, catalog.JobUpdate{})
	must(t, err)
	clk.Advance(time.Minute)
	j, err = c.TransitionJob(ctx(), j.ID, catalog.StatePending, catalog.StateRunning, catalog.JobUpdate{Owner: ptr("w1")})
	must(t, err)
	if j.State != catalog.StateRunning || j.Owner != "w1" || !j.StartedAt.Equal(Base.Add(time.Minute)) || !j.HeartbeatAt.Equal(j.StartedAt) {
		t.Fatalf("entering RUNNING: %+v", j)
	}
	clk.Advance(time.Minute)
	j, err = c.TransitionJob(ctx(), j.ID, catalog.StateRunning, catalog.StateCompleted, catalog.JobUpdate{
		RecoveryPoint: ptr("ab12"), Message: ptr("ok"), BytesProcessed: ptr(int64(1 << 40))})
	must(t, err)
	if !j.FinishedAt.Equal(Base.Add(2*time.Minute)) || j.RecoveryPoint != "ab12" || j.Message != "ok" || j.BytesProcessed != 1<<40 {
		t.Fatalf("entering COMPLETED: %+v", j)
	}
	stored, err := c.GetJob(ctx(), j.ID)
	must(t, err)
	equal(t, stored, j, "TransitionJob returns the stored job")

	// Every move the table refuses is refused, before touching the row.
	for _, from := range catalog.AllStates {
		for _, to := range catalog.AllStates {
			if catalog.CheckTransition(from, to) == nil {
				continue
			}
			_, err := c.TransitionJob(ctx(), j.ID, from, to, catalog.JobUpdate{})
			wantErr(t, err, catalog.ErrInvalidTransition, fmt.Sprintf("%s→%s", from, to))
		}
	}
	stored, err = c.GetJob(ctx(), j.ID)
	must(t, err)
	equal(t, stored, j, "refused transitions left the job alone")

	// RUNNING → PENDING (requeue after a crash) clears the owner.
	k, err := c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending})
	must(t, err)
	k, err = c.ClaimJob(ctx(), "w2", catalog.ClaimLimits{})
	must(t, err)
	k, err = c.TransitionJob(ctx(), k.ID, catalog.StateRunning, catalog.StatePending, catalog.JobUpdate{Message: ptr("requeued")})
	must(t, err)
	if k.Owner != "" || !k.HeartbeatAt.IsZero() || k.Message != "requeued" {
		t.Fatalf("requeue: %+v", k)
	}
	_, err = c.TransitionJob(ctx(), "missing", catalog.StatePending, catalog.StateRunning, catalog.JobUpdate{})
	wantErr(t, err, catalog.ErrNotFound, "transition missing job")
}

func testJobConflict(t *testing.T, c catalog.Catalog, _ *clock.Fake) {
	j, err := c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending})
	must(t, err)
	_, err = c.TransitionJob(ctx(), j.ID, catalog.StateCreated, catalog.StatePending, catalog.JobUpdate{})
	wantErr(t, err, catalog.ErrConflict, "transition from a state the job is not in")

	// Eight servers race to abort the same job: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := c.TransitionJob(ctx(), j.ID, catalog.StatePending, catalog.StateAborted, catalog.JobUpdate{Message: ptr(fmt.Sprint("by ", i))})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, catalog.ErrConflict):
				conflicts++
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Fatalf("concurrent transitions: %d won, %d conflicted; want 1 and 7", wins, conflicts)
	}
	got, err := c.GetJob(ctx(), j.ID)
	must(t, err)
	if got.State != catalog.StateAborted {
		t.Fatalf("state %s", got.State)
	}
}

func testClaimConcurrent(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	const n = 40
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		j, err := c.CreateJob(ctx(), catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending,
			StartBy: Base.Add(time.Hour), CreatedAt: Base.Add(time.Duration(i) * time.Millisecond)})
		must(t, err)
		want[j.ID] = true
	}
	// Not claimable: start window already past, or not yet PENDING.
	late, err := c.CreateJob(ctx(), catalog.Job{ID: "late", Kind: catalog.KindBackup, State: catalog.StatePending, StartBy: Base.Add(-time.Second)})
	must(t, err)
	_, err = c.CreateJob(ctx(), catalog.Job{ID: "created", Kind: catalog.KindBackup})
	must(t, err)

	claimed := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(owner string) {
			defer wg.Done()
			// n/8 claims each: a claimer must never be told ErrNoJob (nor
			// block) while claimable jobs remain, only that another claimer
			// holds the one it looked at.
			for i := 0; i < n/8; i++ {
				j, err := c.ClaimJob(ctx(), owner, catalog.ClaimLimits{})
				if err != nil {
					t.Errorf("%s: claim %d of %d: %v", owner, i+1, n/8, err)
					return
				}
				if j.State != catalog.StateRunning || j.Owner != owner || j.Attempt != 1 || !j.StartedAt.Equal(Base) {
					t.Errorf("%s claimed %+v", owner, j)
				}
				mu.Lock()
				claimed[j.ID] = append(claimed[j.ID], owner)
				mu.Unlock()
			}
		}(fmt.Sprintf("worker-%d", w))
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("claimed %d distinct jobs, want %d", len(claimed), n)
	}
	if _, err := c.ClaimJob(ctx(), "late-worker", catalog.ClaimLimits{}); !errors.Is(err, catalog.ErrNoJob) {
		t.Fatalf("ClaimJob with nothing claimable: %v, want ErrNoJob", err)
	}
	for id, owners := range claimed {
		if !want[id] {
			t.Errorf("claimed job %s that should not be claimable", id)
		}
		if len(owners) != 1 {
			t.Errorf("job %s claimed %d times: %v", id, len(owners), owners)
		}
	}
	got, err := c.GetJob(ctx(), late.ID)
	must(t, err)
	if got.State != catalog.StatePending {
		t.Fatalf("job past its start window was claimed: %+v", got)
	}

	// Oldest first, and a requeued job is claimed again with Attempt 2.
	first, err := c.CreateJob(ctx(), catalog.Job{ID: "old", Kind: catalog.KindBackup, State: catalog.StatePending, CreatedAt: Base.Add(-time.Hour)})
	must(t, err)
	_, err = c.CreateJob(ctx(), catalog.Job{ID: "new", Kind: catalog.KindBackup, State: catalog.StatePending})
	must(t, err)
	j, err := c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if j.ID != first.ID {
		t.Fatalf("claimed %s first, want the oldest %s", j.ID, first.ID)
	}
	_, err = c.TransitionJob(ctx(), j.ID, catalog.StateRunning, catalog.StatePending, catalog.JobUpdate{})
	must(t, err)
	clk.Advance(time.Minute)
	j, err = c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if j.ID != first.ID || j.Attempt != 2 || !j.StartedAt.Equal(Base.Add(time.Minute)) {
		t.Fatalf("reclaim: %+v", j)
	}
}

func testStale(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	for _, id := range []string{"a", "b", "c"} {
		_, err := c.CreateJob(ctx(), catalog.Job{ID: id, Kind: catalog.KindBackup, State: catalog.StatePending})
		must(t, err)
		clk.Advance(time.Millisecond)
	}
	a, err := c.ClaimJob(ctx(), "w1", catalog.ClaimLimits{})
	must(t, err)
	b, err := c.ClaimJob(ctx(), "w2", catalog.ClaimLimits{})
	must(t, err)
	if a.ID != "a" || b.ID != "b" {
		t.Fatalf("claimed %s, %s", a.ID, b.ID)
	}
	clk.Advance(10 * time.Minute)
	must(t, c.Heartbeat(ctx(), "a", "w1"))
	wantErr(t, c.Heartbeat(ctx(), "b", "w1"), catalog.ErrConflict, "heartbeat by a worker that does not own the job")
	wantErr(t, c.Heartbeat(ctx(), "c", "w1"), catalog.ErrConflict, "heartbeat of a PENDING job")
	wantErr(t, c.Heartbeat(ctx(), "zz", "w1"), catalog.ErrNotFound, "heartbeat of a missing job")

	got, err := c.GetJob(ctx(), "a")
	must(t, err)
	if !got.HeartbeatAt.Equal(clk.Now()) {
		t.Fatalf("heartbeat at %v, want %v", got.HeartbeatAt, clk.Now())
	}
	stale, err := c.ListStaleRunning(ctx(), 5*time.Minute)
	must(t, err)
	if len(stale) != 1 || stale[0].ID != "b" {
		t.Fatalf("ListStaleRunning(5m) = %+v, want only b", stale)
	}
	stale, err = c.ListStaleRunning(ctx(), 11*time.Minute)
	must(t, err)
	if len(stale) != 0 {
		t.Fatalf("ListStaleRunning(11m) = %+v, want none", stale)
	}
	_, err = c.TransitionJob(ctx(), "b", catalog.StateRunning, catalog.StateFailed, catalog.JobUpdate{Message: ptr("worker lost")})
	must(t, err)
	stale, err = c.ListStaleRunning(ctx(), 0)
	must(t, err)
	if len(stale) != 0 {
		t.Fatalf("finished job still listed stale: %+v", stale)
	}
}

func testRecoveryPoints(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	rp := catalog.RecoveryPoint{
		ID: "9f86d081884c7d659a2feaa0c55ad015", Vault: "primary", Resource: "arn:coffre:postgres:local:main",
		Status: "COMPLETED", SizeBytes: 123456789, Tier: catalog.TierWarm,
		MoveToColdAt: Base.Add(30 * 24 * time.Hour), DeleteAt: Base.Add(365 * 24 * time.Hour),
		Plan: "prod", Rule: "daily", JobID: "job-1",
	}
	must(t, c.PutRecoveryPoint(ctx(), rp))
	got, err := c.GetRecoveryPoint(ctx(), "primary", rp.ID)
	must(t, err)
	rp.CreatedAt = Base
	equal(t, got, rp, "recovery point round trip")

	copyRP := rp
	copyRP.Vault, copyRP.Tier, copyRP.DeleteAt = "dr", catalog.TierCold, time.Time{}
	must(t, c.PutRecoveryPoint(ctx(), copyRP))
	clk.Advance(time.Hour)
	other := catalog.RecoveryPoint{ID: "aa", Vault: "primary", Resource: "arn:coffre:filesystem:local:home", Status: "COMPLETED"}
	must(t, c.PutRecoveryPoint(ctx(), other))

	keys := func(f catalog.RecoveryPointFilter) string {
		t.Helper()
		rps, err := c.ListRecoveryPoints(ctx(), f)
		must(t, err)
		var out []string
		for _, r := range rps {
			out = append(out, r.Vault+"/"+r.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		f    catalog.RecoveryPointFilter
		want string
	}{
		{catalog.RecoveryPointFilter{}, "primary/aa,dr/" + rp.ID + ",primary/" + rp.ID},
		{catalog.RecoveryPointFilter{Vault: "primary"}, "primary/aa,primary/" + rp.ID},
		{catalog.RecoveryPointFilter{Resource: rp.Resource}, "dr/" + rp.ID + ",primary/" + rp.ID},
		{catalog.RecoveryPointFilter{Vault: "dr", Resource: rp.Resource}, "dr/" + rp.ID},
	} {
		if got := keys(tc.f); got != tc.want {
			t.Errorf("ListRecoveryPoints(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
	got, err = c.GetRecoveryPoint(ctx(), "primary", "aa")
	must(t, err)
	if got.Tier != catalog.TierWarm || !got.CreatedAt.Equal(Base.Add(time.Hour)) {
		t.Fatalf("defaults: %+v", got)
	}
	rp.Tier = catalog.TierCold
	must(t, c.PutRecoveryPoint(ctx(), rp))
	got, err = c.GetRecoveryPoint(ctx(), "primary", rp.ID)
	must(t, err)
	equal(t, got, rp, "recovery point upsert (moved to cold)")
	wantErr(t, c.PutRecoveryPoint(ctx(), catalog.RecoveryPoint{ID: "x", Vault: "v", Tier: "glacier"}), catalog.ErrInvalid, "unknown tier")

	must(t, c.DeleteRecoveryPoint(ctx(), "primary", rp.ID))
	_, err = c.GetRecoveryPoint(ctx(), "primary", rp.ID)
	wantErr(t, err, catalog.ErrNotFound, "get deleted recovery point")
	if _, err := c.GetRecoveryPoint(ctx(), "dr", rp.ID); err != nil {
		t.Fatalf("deleting primary/%s removed the copy in dr: %v", rp.ID, err)
	}
	wantErr(t, c.DeleteRecoveryPoint(ctx(), "primary", rp.ID), catalog.ErrNotFound, "delete missing recovery point")
}

func testExpiry(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	day := 24 * time.Hour
	for i, d := range []int{1, 7, 35, 0} {
		rp := catalog.RecoveryPoint{ID: fmt.Sprintf("rp%d", i), Vault: "v", Resource: "r"}
		if d > 0 {
			rp.DeleteAt = clk.Now().Add(time.Duration(d) * day)
		}
		must(t, c.PutRecoveryPoint(ctx(), rp))
	}
	expired := func() string {
		t.Helper()
		rps, err := c.ListExpired(ctx(), clk.Now())
		must(t, err)
		var out []string
		for _, r := range rps {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	if got := expired(); got != "" {
		t.Fatalf("expired at creation: %s", got)
	}
	clk.Advance(day - time.Nanosecond)
	if got := expired(); got != "" {
		t.Fatalf("expired a nanosecond early: %s", got)
	}
	clk.Advance(time.Nanosecond)
	if got := expired(); got != "rp0" {
		t.Fatalf("at day 1: %q, want rp0 (DeleteAt == now is expired)", got)
	}
	clk.Advance(30 * day)
	if got := expired(); got != "rp0,rp1" {
		t.Fatalf("at day 31: %q", got)
	}
	clk.Advance(10000 * day)
	if got := expired(); got != "rp0,rp1,rp2" {
		t.Fatalf("far future: %q (a point without DeleteAt never expires)", got)
	}
}

func appendN(t *testing.T, c catalog.Catalog, clk *clock.Fake, n int) []catalog.AuditEvent {
	t.Helper()
	var out []catalog.AuditEvent
	for i := 0; i < n; i++ {
		clk.Advance(time.Second)
		e, err := c.AppendAudit(ctx(), catalog.AuditEvent{Actor: "alice", Action: "vault.put", Object: fmt.Sprint("vault/", i),
			Outcome: "success", Detail: `{"note":"é ✓"}`})
		must(t, err)
		out = append(out, e)
	}
	return out
}

func testAudit(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	if n, err := c.VerifyAudit(ctx()); err != nil || n != 0 {
		t.Fatalf("empty chain: %d, %v", n, err)
	}
	evs := appendN(t, c, clk, 5)
	prev := ""
	for i, e := range evs {
		if e.Seq != int64(i+1) || e.PrevHash != prev || e.Hash != catalog.AuditHash(e) || len(e.Hash) != 64 ||
			!e.Time.Equal(Base.Add(time.Duration(i+1)*time.Second)) {
			t.Fatalf("event %d: %+v", i, e)
		}
		prev = e.Hash
	}
	got, err := c.ListAudit(ctx(), catalog.AuditFilter{})
	must(t, err)
	equal(t, got, evs, "ListAudit returns the chain as appended")
	got, err = c.ListAudit(ctx(), catalog.AuditFilter{AfterSeq: 2, Limit: 2})
	must(t, err)
	if len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 4 {
		t.Fatalf("ListAudit(after 2, limit 2) = %+v", got)
	}
	// A given time is kept (in UTC).
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("CET", 3600))
	e, err := c.AppendAudit(ctx(), catalog.AuditEvent{Time: at, Actor: "bob", Action: "x"})
	must(t, err)
	if e.Seq != 6 || !e.Time.Equal(at) {
		t.Fatalf("explicit time: %+v", e)
	}
	if n, err := c.VerifyAudit(ctx()); err != nil || n != 0 {
		t.Fatalf("intact chain reported broken at %d (%v)", n, err)
	}
}

func rawExec(t *testing.T, c catalog.Catalog, query string, args ...any) {
	t.Helper()
	r, ok := c.(RawExecer)
	if !ok {
		t.Fatalf("%T does not implement catalogtest.RawExecer, which the tamper tests need", c)
	}
	must(t, r.ExecRawForTest(ctx(), query, args...))
}

func testAuditTamper(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	evs := appendN(t, c, clk, 6)
	verify := func() int64 {
		t.Helper()
		n, err := c.VerifyAudit(ctx())
		must(t, err)
		return n
	}
	// Rewrite an action: that event's hash no longer matches.
	rawExec(t, c, `UPDATE audit_events SET action = ? WHERE seq = ?`, "vault.delete", 4)
	if n := verify(); n != 4 {
		t.Fatalf("edited row 4: VerifyAudit = %d, want 4", n)
	}
	rawExec(t, c, `UPDATE audit_events SET action = ? WHERE seq = ?`, evs[3].Action, 4)
	if n := verify(); n != 0 {
		t.Fatalf("restored row: VerifyAudit = %d, want 0", n)
	}
	// Rewrite row 2 and recompute its hash: the link from row 3 breaks.
	forged := evs[1]
	forged.Outcome = "denied"
	forged.Hash = catalog.AuditHash(forged)
	rawExec(t, c, `UPDATE audit_events SET outcome = ?, hash = ? WHERE seq = ?`, forged.Outcome, forged.Hash, 2)
	if n := verify(); n != 3 {
		t.Fatalf("re-hashed row 2: VerifyAudit = %d, want 3", n)
	}
	rawExec(t, c, `UPDATE audit_events SET outcome = ?, hash = ? WHERE seq = ?`, evs[1].Outcome, evs[1].Hash, 2)
	// Delete a row in the middle.
	rawExec(t, c, `DELETE FROM audit_events WHERE seq = ?`, 5)
	if n := verify(); n != 5 {
		t.Fatalf("deleted row 5: VerifyAudit = %d, want 5", n)
	}
	// Change a time.
	rawExec(t, c, `UPDATE audit_events SET time = time + 1 WHERE seq = ?`, 1)
	if n := verify(); n != 1 {
		t.Fatalf("moved row 1 in time: VerifyAudit = %d, want 1", n)
	}
}

func testAuditConcurrent(t *testing.T, c catalog.Catalog, _ *clock.Fake) {
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := c.AppendAudit(ctx(), catalog.AuditEvent{Actor: fmt.Sprint("w", w), Action: fmt.Sprint(i)}); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent AppendAudit: %v", err)
	}
	evs, err := c.ListAudit(ctx(), catalog.AuditFilter{})
	must(t, err)
	seqs := make([]int, len(evs))
	for i, e := range evs {
		seqs[i] = int(e.Seq)
	}
	if !sort.IntsAreSorted(seqs) || len(seqs) != 80 || seqs[0] != 1 || seqs[79] != 80 {
		t.Fatalf("seqs after concurrent appends: %v", seqs)
	}
	if n, err := c.VerifyAudit(ctx()); err != nil || n != 0 {
		t.Fatalf("chain after concurrent appends broken at %d (%v)", n, err)
	}
}

func testReopen(t *testing.T, open Opener) {
	clk := clock.NewFake(Base)
	c, err := open(clk)
	must(t, err)
	must(t, c.PutVault(ctx(), catalog.Vault{Name: "v", Location: "file:///v"}))
	_, err = c.AppendAudit(ctx(), catalog.AuditEvent{Action: "a"})
	must(t, err)
	must(t, c.Close())

	c, err = open(clk) // migrations already applied: a no-op
	must(t, err)
	if _, err := c.GetVault(ctx(), "v"); err != nil {
		t.Fatalf("data lost on reopen: %v", err)
	}
	if n, err := c.VerifyAudit(ctx()); err != nil || n != 0 {
		t.Fatalf("audit after reopen: %d %v", n, err)
	}
	rawExec(t, c, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, 999999, "9999_from_the_future.sql", 0)
	must(t, c.Close())

	c, err = open(clk)
	if err == nil {
		_ = c.Close()
		t.Fatal("opened a catalog whose schema is newer than the code")
	}
	if !strings.Contains(err.Error(), "newer") || hint.Of(err) == "" {
		t.Fatalf("newer schema: error %q (hint %q) should say so and give a hint", err, hint.Of(err))
	}
}

func testJobParamsBackoff(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	params := map[string]string{"recovery_point": "ab12", "target": "/tmp/restore here", "é": "ü"}
	j, err := c.CreateJob(ctx(), catalog.Job{ID: "r", Kind: catalog.KindRestore, State: catalog.StatePending, Params: params})
	must(t, err)
	equal(t, j.Params, params, "params after create")
	noParams, err := c.CreateJob(ctx(), catalog.Job{ID: "n", Kind: catalog.KindBackup, CreatedAt: Base.Add(time.Hour)})
	must(t, err)
	if len(noParams.Params) != 0 {
		t.Fatalf("job created without params has %v", noParams.Params)
	}
	// A job held back by NotBefore is not claimable until then.
	_, err = c.TransitionJob(ctx(), "n", catalog.StateCreated, catalog.StatePending, catalog.JobUpdate{})
	must(t, err)
	got, err := c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if got.ID != "r" {
		t.Fatalf("claimed %s, want r", got.ID)
	}
	later := clk.Now().Add(10 * time.Minute)
	got, err = c.TransitionJob(ctx(), "r", catalog.StateRunning, catalog.StatePending, catalog.JobUpdate{NotBefore: &later, Message: ptr("retry in 10m")})
	must(t, err)
	if !got.NotBefore.Equal(later) || !reflect.DeepEqual(got.Params, params) {
		t.Fatalf("after requeue: NotBefore %v Params %v", got.NotBefore, got.Params)
	}
	got, err = c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if got.ID != "n" {
		t.Fatalf("claimed %s while r is backing off, want n", got.ID)
	}
	_, err = c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	wantErr(t, err, catalog.ErrNoJob, "claim while the only PENDING job backs off")
	clk.Advance(10 * time.Minute)
	got, err = c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if got.ID != "r" || got.Attempt != 2 {
		t.Fatalf("after backoff claimed %+v, want r attempt 2", got)
	}
}

func testClaimLimits(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	mk := func(id, vault, res string) {
		_, err := c.CreateJob(ctx(), catalog.Job{ID: id, Kind: catalog.KindBackup, State: catalog.StatePending, Vault: vault, Resource: res})
		must(t, err)
		clk.Advance(time.Millisecond)
	}
	mk("1", "v1", "db")
	mk("2", "v1", "db")  // same resource as 1
	mk("3", "v1", "fs")  // vault v1 full after 1 and 3 with PerVault 2
	mk("4", "v1", "fs2") // waits for v1
	mk("5", "v2", "")    // no resource: only the vault limit applies
	mk("6", "v2", "")
	lim := catalog.ClaimLimits{PerVault: 2, PerResource: 1}
	var got []string
	for {
		j, err := c.ClaimJob(ctx(), "w", lim)
		if errors.Is(err, catalog.ErrNoJob) {
			break
		}
		must(t, err)
		got = append(got, j.ID)
	}
	equal(t, got, []string{"1", "3", "5", "6"}, "claimed under limits {PerVault 2, PerResource 1}")
	_, err := c.TransitionJob(ctx(), "1", catalog.StateRunning, catalog.StateCompleted, catalog.JobUpdate{})
	must(t, err)
	j, err := c.ClaimJob(ctx(), "w", lim)
	must(t, err)
	if j.ID != "2" {
		t.Fatalf("after job 1 finished, claimed %s, want 2 (same resource, oldest)", j.ID)
	}
	j, err = c.ClaimJob(ctx(), "w", catalog.ClaimLimits{})
	must(t, err)
	if j.ID != "4" {
		t.Fatalf("without limits claimed %s, want 4", j.ID)
	}
}

func testTokens(t *testing.T, c catalog.Catalog, clk *clock.Fake) {
	h := func(b byte) string { return strings.Repeat(string("0123456789abcdef"[b%16]), 64) }
	must(t, c.CreateToken(ctx(), catalog.Token{ID: "tok-b", Name: "ci", Hash: h(1)}))
	must(t, c.CreateToken(ctx(), catalog.Token{ID: "tok-a", Name: "ops", Hash: h(2)}))
	wantErr(t, c.CreateToken(ctx(), catalog.Token{ID: "tok-b", Hash: h(3)}), catalog.ErrConflict, "duplicate token id")
	wantErr(t, c.CreateToken(ctx(), catalog.Token{ID: "tok-c", Hash: h(1)}), catalog.ErrConflict, "duplicate token hash")
	wantErr(t, c.CreateToken(ctx(), catalog.Token{ID: "tok-d", Hash: "short"}), catalog.ErrInvalid, "token with a malformed hash")
	ts, err := c.ListTokens(ctx())
	must(t, err)
	if len(ts) != 2 || ts[0].ID != "tok-a" || ts[1].ID != "tok-b" || !ts[0].CreatedAt.Equal(Base) {
		t.Fatalf("ListTokens = %+v", ts)
	}
	tok, err := c.TokenByHash(ctx(), h(1), false)
	must(t, err)
	if tok.ID != "tok-b" || !tok.LastUsedAt.IsZero() {
		t.Fatalf("TokenByHash = %+v", tok)
	}
	clk.Advance(time.Hour)
	tok, err = c.TokenByHash(ctx(), h(1), true)
	must(t, err)
	if !tok.LastUsedAt.Equal(clk.Now()) {
		t.Fatalf("touched token LastUsedAt = %v, want %v", tok.LastUsedAt, clk.Now())
	}
	tok, err = c.TokenByHash(ctx(), h(1), false)
	must(t, err)
	if !tok.LastUsedAt.Equal(clk.Now()) {
		t.Fatalf("LastUsedAt not stored: %v", tok.LastUsedAt)
	}
	_, err = c.TokenByHash(ctx(), h(9), false)
	wantErr(t, err, catalog.ErrNotFound, "unknown token hash")
	must(t, c.DeleteToken(ctx(), "tok-b"))
	wantErr(t, c.DeleteToken(ctx(), "tok-b"), catalog.ErrNotFound, "deleting a deleted token")
	_, err = c.TokenByHash(ctx(), h(1), false)
	wantErr(t, err, catalog.ErrNotFound, "deleted token")
}
