package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source/fs"
	"github.com/coffre/coffre/internal/testutil"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// fakeElapsed is a settable monotonic clock.
type fakeElapsed struct {
	mu sync.Mutex
	d  time.Duration
}

func (f *fakeElapsed) Elapsed() time.Duration  { f.mu.Lock(); defer f.mu.Unlock(); return f.d }
func (f *fakeElapsed) Advance(d time.Duration) { f.mu.Lock(); f.d += d; f.mu.Unlock() }

// env is a catalog, vaults on local disk, a fake wall clock and a fake
// monotonic clock, and a Worker over them.
type env struct {
	t      *testing.T
	ctx    context.Context
	clk    *clock.Fake
	mono   *fakeElapsed
	cat    catalog.Catalog
	vaults jobs.Vaults
	logs   *testutil.LockedBuffer
	w      *Worker
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	cat, err := sqlite.Open(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	e := &env{t: t, ctx: context.Background(), clk: clk, mono: &fakeElapsed{}, cat: cat, logs: &testutil.LockedBuffer{}}
	e.vaults = &jobs.Opener{Keys: &jobs.Keyring{Dir: t.TempDir()}, Clock: clk, Logger: quietLogger()}
	e.w = e.newWorker(e.vaults)
	return e
}

func (e *env) newWorker(v jobs.Vaults) *Worker {
	return &Worker{Cat: e.cat, Vaults: v, Clock: e.clk, Elapsed: e.mono.Elapsed,
		Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// advance moves wall and monotonic time together (no jump).
func (e *env) advance(d time.Duration) { e.clk.Advance(d); e.mono.Advance(d) }

// run runs the worker once and fails the test on a run error or any
// collected error.
func (e *env) run() Result {
	e.t.Helper()
	res, err := e.w.RunOnce(e.ctx)
	if err != nil {
		e.t.Fatalf("RunOnce: %v", err)
	}
	if len(res.Errors) > 0 {
		e.t.Fatalf("RunOnce errors: %v", errors.Join(res.Errors...))
	}
	return res
}

func (e *env) vault(name string, lock catalog.VaultLock) catalog.Vault {
	e.t.Helper()
	v := catalog.Vault{Name: name, Location: filepath.Join(e.t.TempDir(), name), Lock: lock}
	if err := e.cat.PutVault(e.ctx, v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// open opens a vault through the env's Vaults and closes it at cleanup.
func (e *env) open(v catalog.Vault) *repo.Repository {
	e.t.Helper()
	r, err := e.vaults.Open(e.ctx, v)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = r.Close() })
	return r
}

// backup backs files up into v as the control plane does (shared lock,
// then index, lifecycle in the manifest) at the current fake time.
func backupTo(t *testing.T, r *repo.Repository, files map[string][]byte, resource string, lc *snapshot.Lifecycle) *snapshot.Manifest {
	t.Helper()
	ctx := context.Background()
	lock, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, dir, files)
	src, err := fs.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := archiver.New(r, archiver.Options{Lifecycle: lc, Resource: resource, BeforeCommit: lock.Check}).Backup(ctx, src,
		snapshot.Source{Type: snapshot.SourceFilesystem, Resource: resource, Paths: []string{src.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != snapshot.StatusCompleted {
		t.Fatalf("backup status %s: %v", m.Status, m.Errors)
	}
	return m
}

func (e *env) backup(v catalog.Vault, files map[string][]byte, lc *snapshot.Lifecycle) *snapshot.Manifest {
	e.t.Helper()
	r, err := e.vaults.Open(e.ctx, v)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Close()
	return backupTo(e.t, r, files, "arn:coffre:filesystem:test:"+v.Name, lc)
}

// register records m in the catalog as the control plane's job would, with
// dates computed here from the lifecycle days.
func (e *env) register(v catalog.Vault, m *snapshot.Manifest) catalog.RecoveryPoint {
	e.t.Helper()
	rp := rowFor(v.Name, m)
	if err := e.cat.PutRecoveryPoint(e.ctx, rp); err != nil {
		e.t.Fatal(err)
	}
	return rp
}

func rowFor(vault string, m *snapshot.Manifest) catalog.RecoveryPoint {
	rp := catalog.RecoveryPoint{ID: m.ID.String(), Vault: vault, Resource: m.Source.Resource, CreatedAt: m.Time,
		Status: m.Status, SizeBytes: m.Stats.Bytes, Tier: catalog.TierWarm}
	if lc := m.Lifecycle; lc != nil {
		rp.Plan, rp.Rule, rp.JobID = lc.Plan, lc.Rule, lc.Job
		if lc.MoveToColdAfterDays > 0 {
			rp.MoveToColdAt = m.Time.Add(time.Duration(lc.MoveToColdAfterDays) * day)
		}
		if lc.DeleteAfterDays > 0 {
			rp.DeleteAt = m.Time.Add(time.Duration(lc.DeleteAfterDays) * day)
		}
	}
	return rp
}

func (e *env) row(vault, id string) (catalog.RecoveryPoint, bool) {
	e.t.Helper()
	rp, err := e.cat.GetRecoveryPoint(e.ctx, vault, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return rp, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return rp, true
}

// manifests lists the ids of the manifests in the vault.
func (e *env) manifests(v catalog.Vault) map[string]bool {
	e.t.Helper()
	r := e.open(v)
	ids, err := r.List(e.ctx, blob.KindSnapshot)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, id := range ids {
		out[id.String()] = true
	}
	return out
}

// checkVault reads and verifies every byte of the vault.
func (e *env) checkVault(v catalog.Vault) {
	e.t.Helper()
	r := e.open(v)
	res, err := maintain.Check(e.ctx, r, maintain.CheckOptions{ReadData: true})
	if err != nil {
		e.t.Fatal(err)
	}
	if !res.OK() {
		e.t.Fatalf("check of vault %s: %+v", v.Name, res.Problems)
	}
}

// restoreMatches restores m and compares the files with want.
func (e *env) restoreMatches(v catalog.Vault, m *snapshot.Manifest, want map[string][]byte) {
	e.t.Helper()
	r := e.open(v)
	if err := r.LoadIndex(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	m2, err := snapshot.Load(e.ctx, r, m.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	dir := filepath.Join(e.t.TempDir(), "restore")
	if _, err := fs.Restore(e.ctx, r, m2, fs.RestoreOptions{Target: dir}); err != nil {
		e.t.Fatal(err)
	}
	got := testutil.ReadFiles(e.t, dir)
	if len(got) != len(want) {
		e.t.Fatalf("restored %d files, want %d", len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			e.t.Fatalf("restored %s differs (%d bytes, want %d)", p, len(got[p]), len(b))
		}
	}
}

func (e *env) audit() []catalog.AuditEvent {
	e.t.Helper()
	evs, err := e.cat.ListAudit(e.ctx, catalog.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func files(seed uint64, names ...string) map[string][]byte {
	out := map[string][]byte{}
	for i, n := range names {
		out[n] = testutil.RandomBytes(seed*100+uint64(i), 300<<10)
	}
	return out
}
