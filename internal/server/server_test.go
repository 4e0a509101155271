package server

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/postgres"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/lifecycle"
	"github.com/coffre/coffre/internal/policy/apply"
	"github.com/coffre/coffre/internal/policy/config"
	"github.com/coffre/coffre/internal/testutil"
)

// devHCL is the seed's development environment with its vault on local
// disk and one directory as the EFS file system it selects.
const devHCL = `
environment "accessweaver" {
  environment = "development"
  efs_arns    = ["arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0bbbbbbbbbbbbbbb2"]
  tags = { Project = "AccessWeaver" }
}

vault "accessweaver-dev-backup-vault" {
  location = "file://%s"
}

resource "filesystem" "documents" {
  id       = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0bbbbbbbbbbbbbbb2"
  settings = { path = "%s" }
}
`

// applyDev applies devHCL (a new vault directory, src as the file system)
// to cat.
func applyDev(t *testing.T, cat catalog.Catalog, src string) {
	t.Helper()
	cfg, diags := config.Parse([]byte(fmt.Sprintf(devHCL, filepath.Join(t.TempDir(), "vault"), src)), "dev.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	res, diags := cfg.Expand()
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p, err := apply.Diff(context.Background(), cat, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := apply.Apply(context.Background(), cat, p); err != nil {
		t.Fatal(err)
	}
}

type testServer struct {
	passes atomic.Int64 // lifecycle passes finished
	t      *testing.T
	cat    catalog.Catalog
	clk    *clock.Fake
	cancel context.CancelFunc
	done   chan error
}

func startServer(t *testing.T, start time.Time, withLifecycle bool) *testServer {
	t.Helper()
	return startServerWith(t, start, withLifecycle, nil)
}

// startServerWith is startServer with mod applied to the server's Config.
func startServerWith(t *testing.T, start time.Time, withLifecycle bool, mod func(*Config)) *testServer {
	t.Helper()
	clk := clock.NewFake(start)
	cat, err := sqlite.Open(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	testutil.WriteFiles(t, src, map[string][]byte{"report.txt": []byte("quarterly"), "data/blob": testutil.RandomBytes(7, 100_000)})
	applyDev(t, cat, src)
	ctx := context.Background()
	vaults := &jobs.Opener{Keys: &jobs.Keyring{Dir: t.TempDir()}, Clock: clk}
	runner := &jobs.Runner{Vaults: vaults, Owner: "srv", Poll: 10 * time.Millisecond, HeartbeatEvery: 50 * time.Millisecond}
	sctx, cancel := context.WithCancel(ctx)
	s := &testServer{t: t, cat: cat, clk: clk, cancel: cancel, done: make(chan error, 1)}
	c := Config{Cat: cat, Runner: runner, Clock: clk, Tick: 20 * time.Millisecond, LifecycleEvery: 20 * time.Millisecond}
	if withLifecycle {
		// The worker's monotonic clock follows the fake one: the test's
		// jumps are the server's real time passing, not clock faults.
		w := &lifecycle.Worker{Cat: cat, Vaults: vaults, Clock: clk, Elapsed: func() time.Duration { return clk.Now().Sub(start) }}
		c.Lifecycle = func(ctx context.Context) error {
			res, err := w.RunOnce(ctx)
			for _, e := range res.Errors {
				if ctx.Err() == nil { // errors of a pass cut by shutdown are expected
					t.Errorf("lifecycle: %v", e)
				}
			}
			s.passes.Add(1)
			return err
		}
	}
	if mod != nil {
		mod(&c)
	}
	go func() { s.done <- Run(sctx, c) }()
	t.Cleanup(func() {
		s.stop()
		cat.Close()
	})
	return s
}

func (s *testServer) stop() {
	if s.cancel != nil {
		s.cancel()
		if err := <-s.done; err != nil {
			s.t.Errorf("server: %v", err)
		}
		s.cancel = nil
	}
}

// waitFor polls the catalog until cond holds; the deadline only turns a hang
// into a failure.
func (s *testServer) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s at %s", what, s.clk.Now())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *testServer) jobs() []catalog.Job {
	s.t.Helper()
	js, err := s.cat.ListJobs(context.Background(), catalog.JobFilter{Kind: catalog.KindBackup})
	if err != nil {
		s.t.Fatal(err)
	}
	return js
}

func (s *testServer) points() []catalog.RecoveryPoint {
	s.t.Helper()
	ps, err := s.cat.ListRecoveryPoints(context.Background(), catalog.RecoveryPointFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	return ps
}

// TestNoScheduler: a server started with NoScheduler inside the development
// plan's start window (22:00 UTC, 1 h) makes no job of the due fire, while
// its lifecycle runs pass after pass (as coffre demo runs it); the same
// server with the scheduler makes that job (see the test below).
func TestNoScheduler(t *testing.T) {
	at := time.Date(2026, 3, 1, 22, 10, 0, 0, time.UTC)
	s := startServerWith(t, at, true, func(c *Config) { c.NoScheduler = true })
	s.waitFor("three lifecycle passes", func() bool { return s.passes.Load() >= 3 })
	if js := s.jobs(); len(js) != 0 {
		t.Fatalf("%d backup jobs with the scheduler off, want none: %+v", len(js), js)
	}
	s.stop()

	on := startServer(t, at, false)
	on.waitFor("the due fire's job", func() bool { return len(on.jobs()) == 1 })
}

// TestServerRunsTheDevelopmentPlanOnAFastForwardedClock leaves a server
// running while its clock is moved through nine days, one night of which
// the server is down: every night's fire at 22:00 becomes exactly one job,
// run inside its start window; the missed night's job is EXPIRED.
func TestServerRunsTheDevelopmentPlanOnAFastForwardedClock(t *testing.T) {
	day0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := startServer(t, day0, true)
	var wantCompleted []time.Time
	for d := 0; d < 9; d++ {
		fire := time.Date(2026, 3, 1+d, 22, 0, 0, 0, time.UTC)
		// Daytime: nothing due.
		s.clk.Set(fire.Add(-time.Minute))
		if d == 4 {
			// The server misses this night: its clock jumps past the start
			// window (60 minutes in the development plan).
			s.clk.Set(fire.Add(90 * time.Minute))
			s.waitFor("the missed fire's job", func() bool { return len(s.jobs()) == d+1 })
			continue
		}
		// Just before the nightly fire, a week after an earlier night's
		// backup at 22:10: that point is 7 days minus 11 minutes old and
		// must still be there after lifecycle passes.
		s.settle()
		s.checkPoints(wantCompleted)
		s.clk.Set(fire.Add(10 * time.Minute))
		wantCompleted = append(wantCompleted, fire)
		s.waitFor(fmt.Sprintf("night %d's backup", d), func() bool {
			js := s.jobs()
			return len(js) == d+1 && js[d].State == catalog.StateCompleted
		})
		// Now the point of night d-7 is exactly 7 days old: it goes.
		s.settle()
		s.checkPoints(wantCompleted)
	}
	js := s.jobs()
	if len(js) != 9 {
		t.Fatalf("%d jobs for 9 nights", len(js))
	}
	var completed []time.Time
	for i, j := range js {
		if j.Plan != "accessweaver-dev-daily" || j.Rule != "daily-backup-rule" || j.Vault != "accessweaver-dev-backup-vault" {
			t.Fatalf("job %d: %+v", i, j)
		}
		fire := j.StartBy.Add(-60 * time.Minute)
		if !j.CompleteBy.Equal(fire.Add(240 * time.Minute)) {
			t.Fatalf("job %d completion window ends %s, want fire+240m", i, j.CompleteBy)
		}
		switch j.State {
		case catalog.StateCompleted:
			completed = append(completed, fire)
			if !j.StartedAt.Equal(fire.Add(10*time.Minute)) || j.RecoveryPoint == "" {
				t.Fatalf("job %d started %s (want fire+10m), point %q: %+v", i, j.StartedAt, j.RecoveryPoint, j)
			}
		case catalog.StateExpired:
			if i != 4 || !fire.Equal(time.Date(2026, 3, 5, 22, 0, 0, 0, time.UTC)) {
				t.Fatalf("job %d (fire %s) EXPIRED", i, fire)
			}
		default:
			t.Fatalf("job %d ended %s: %s", i, j.State, j.Message)
		}
	}
	sort.Slice(completed, func(a, b int) bool { return completed[a].Before(completed[b]) })
	if fmt.Sprint(completed) != fmt.Sprint(wantCompleted) {
		t.Fatalf("completed fires %v, want %v", completed, wantCompleted)
	}
	// Nights 0 and 1 have expired (7-day retention); 2, 3, 5, 6, 7, 8 remain.
	if n := len(s.points()); n != 6 {
		t.Fatalf("%d recovery points, want 6", n)
	}
}

// settle waits for two more lifecycle passes, so that one ran entirely at
// the current fake time.
func (s *testServer) settle() {
	s.t.Helper()
	n := s.passes.Load()
	s.waitFor("two lifecycle passes", func() bool { return s.passes.Load() >= n+2 })
}

// checkPoints asserts that exactly the backups of the given fires younger
// than 7 days are in the catalog (each made at fire+10m), and that the vault
// holds the same points.
func (s *testServer) checkPoints(fires []time.Time) {
	s.t.Helper()
	now := s.clk.Now()
	var want []time.Time
	for _, f := range fires {
		if made := f.Add(10 * time.Minute); made.Add(7 * 24 * time.Hour).After(now) {
			want = append(want, made)
		}
	}
	var got []time.Time
	for _, p := range s.points() {
		got = append(got, p.CreatedAt)
		if !p.DeleteAt.Equal(p.CreatedAt.Add(7 * 24 * time.Hour)) {
			s.t.Fatalf("point %s deletes at %s, want created+7d", p.ID[:8], p.DeleteAt)
		}
	}
	sort.Slice(got, func(a, b int) bool { return got[a].Before(got[b]) })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		s.t.Fatalf("at %s points made at %v, want %v", now, got, want)
	}
}

// TestTwoServersShareAPostgreSQLCatalog runs two servers (two schedulers,
// two job runners) on one PostgreSQL catalog through three nights: every
// fire still makes exactly one job, run once, and the audit chain both
// append to stays intact.
func TestTwoServersShareAPostgreSQLCatalog(t *testing.T) {
	dsn := postgres.TestSchemaDSN(t)
	day0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(day0)
	ctx := context.Background()
	open := func() catalog.Catalog {
		c, err := postgres.Open(ctx, dsn, clk)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cat1, cat2 := open(), open()
	src := t.TempDir()
	testutil.WriteFiles(t, src, map[string][]byte{"a": testutil.RandomBytes(9, 50_000)})
	applyDev(t, cat1, src)
	keys := &jobs.Keyring{Dir: t.TempDir()}
	v, err := cat1.GetVault(ctx, "accessweaver-dev-backup-vault")
	if err != nil {
		t.Fatal(err)
	}
	// Create the vault once (two processes creating one local vault at the
	// same instant is not supported).
	r, err := (&jobs.Opener{Keys: keys, Clock: clk}).Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	sctx, cancel := context.WithCancel(ctx)
	var done []chan error
	for i, cat := range []catalog.Catalog{cat1, cat2} {
		runner := &jobs.Runner{Vaults: &jobs.Opener{Keys: keys, Clock: clk}, Owner: fmt.Sprint("server", i+1),
			Poll: 10 * time.Millisecond, HeartbeatEvery: 50 * time.Millisecond}
		ch := make(chan error, 1)
		done = append(done, ch)
		go func() { ch <- Run(sctx, Config{Cat: cat, Runner: runner, Clock: clk, Tick: 15 * time.Millisecond}) }()
	}
	defer func() {
		cancel()
		for _, ch := range done {
			if err := <-ch; err != nil {
				t.Errorf("server: %v", err)
			}
		}
	}()
	s := &testServer{t: t, cat: cat1, clk: clk}
	for d := 0; d < 3; d++ {
		fire := time.Date(2026, 3, 1+d, 22, 0, 0, 0, time.UTC)
		clk.Set(fire.Add(10 * time.Minute))
		s.waitFor(fmt.Sprintf("night %d", d), func() bool {
			js := s.jobs()
			return len(js) == d+1 && js[d].State == catalog.StateCompleted
		})
	}
	// Let both schedulers tick again at the last time: still no duplicate.
	time.Sleep(50 * time.Millisecond)
	js := s.jobs()
	if len(js) != 3 {
		t.Fatalf("%d jobs for 3 nights on two servers", len(js))
	}
	for _, j := range js {
		if j.State != catalog.StateCompleted || j.Attempt != 1 {
			t.Fatalf("job %+v", j)
		}
	}
	if n := len(s.points()); n != 3 {
		t.Fatalf("%d recovery points, want 3", n)
	}
	// The server that created a job appends its job.CREATED event after
	// the insert; the other server may have run the job to completion in
	// between (on a loaded machine, longer than any fixed sleep). So wait
	// for the three events, then check that no fourth one comes.
	created := func() int {
		evs, err := cat2.ListAudit(ctx, catalog.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Action == "job.CREATED" {
				n++
			}
		}
		return n
	}
	s.waitFor("a job.CREATED audit event per fire", func() bool { return created() >= 3 })
	time.Sleep(100 * time.Millisecond)
	if n := created(); n != 3 {
		t.Fatalf("%d job.CREATED audit events, want 3 (one per fire, whichever server won)", n)
	}
	if broken, err := cat2.VerifyAudit(ctx); broken != 0 || err != nil {
		t.Fatalf("VerifyAudit = %d, %v", broken, err)
	}
}
