package lifecycle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

func samePoints(t *testing.T, got, want []catalog.RecoveryPoint) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d:\n%+v\n%+v", len(got), len(want), got, want)
	}
	byID := map[string]catalog.RecoveryPoint{}
	for _, rp := range want {
		byID[rp.ID] = rp
	}
	for _, g := range got {
		w, ok := byID[g.ID]
		if !ok {
			t.Fatalf("unexpected row %+v", g)
		}
		if !g.CreatedAt.Equal(w.CreatedAt) || !g.MoveToColdAt.Equal(w.MoveToColdAt) || !g.DeleteAt.Equal(w.DeleteAt) {
			t.Fatalf("row %s dates:\n got %+v\nwant %+v", g.ID, g, w)
		}
		g.CreatedAt, g.MoveToColdAt, g.DeleteAt = w.CreatedAt, w.MoveToColdAt, w.DeleteAt
		if g != w {
			t.Fatalf("row %s:\n got %+v\nwant %+v", g.ID, g, w)
		}
	}
}

func noChange(t *testing.T, res RebuildResult, err error) {
	t.Helper()
	if err != nil || res.Added+res.Updated+res.Removed+res.Unreadable != 0 || len(res.Errors) != 0 {
		t.Fatalf("rebuild in sync changed something: %+v, %v", res, err)
	}
}

func TestRebuild(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	var want []catalog.RecoveryPoint
	p1 := e.backup(v, files(40, "a"), &snapshot.Lifecycle{Plan: "daily", Rule: "r1", Job: "job-1", MoveToColdAfterDays: 3, DeleteAfterDays: 10})
	e.clk.Advance(time.Hour)
	p2 := e.backup(v, files(41, "b"), &snapshot.Lifecycle{Plan: "weekly", Rule: "r2", Job: "job-2", DeleteAfterDays: 35})
	e.clk.Advance(time.Hour)
	p3 := e.backup(v, files(42, "c"), nil)
	for _, m := range []*snapshot.Manifest{p1, p2, p3} {
		want = append(want, e.register(v, m))
	}
	registered, err := e.cat.ListRecoveryPoints(e.ctx, catalog.RecoveryPointFilter{Vault: v.Name})
	if err != nil {
		t.Fatal(err)
	}
	samePoints(t, registered, want)

	// A second, empty catalog that only knows the vault.
	cat2, err := sqlite.Open(t.TempDir(), e.clk)
	if err != nil {
		t.Fatal(err)
	}
	defer cat2.Close()
	if err := cat2.PutVault(e.ctx, v); err != nil {
		t.Fatal(err)
	}
	r := e.open(v)
	rebuild := func() (RebuildResult, error) { return Rebuild(e.ctx, cat2, v, r) }
	rows := func() []catalog.RecoveryPoint {
		t.Helper()
		rps, err := cat2.ListRecoveryPoints(e.ctx, catalog.RecoveryPointFilter{Vault: v.Name})
		if err != nil {
			t.Fatal(err)
		}
		return rps
	}

	res, err := rebuild()
	if err != nil || res.Added != 3 || res.Updated+res.Removed+res.Unreadable != 0 || len(res.Errors) != 0 {
		t.Fatalf("rebuild of an empty catalog: %+v, %v", res, err)
	}
	samePoints(t, rows(), want)
	res, err = rebuild()
	noChange(t, res, err)
	evs, err := cat2.ListAudit(e.ctx, catalog.AuditFilter{})
	if err != nil || len(evs) != 1 || evs[0].Action != "catalog.rebuild" || !strings.Contains(evs[0].Detail, "added 3") {
		t.Fatalf("audit: %+v, %v", evs, err)
	}

	// A row without a manifest is removed; a wrong date and a wrong
	// creation time are corrected; a cold tier is kept.
	ghost := want[0]
	ghost.ID = strings.Repeat("cd", 32)
	wrong := want[1]
	wrong.DeleteAt = wrong.DeleteAt.Add(-20 * day)
	cold := want[0]
	cold.Tier = catalog.TierCold
	for _, rp := range []catalog.RecoveryPoint{ghost, wrong, cold} {
		if err := cat2.PutRecoveryPoint(e.ctx, rp); err != nil {
			t.Fatal(err)
		}
	}
	created := want[2]
	created.CreatedAt = created.CreatedAt.Add(-time.Hour)
	if err := cat2.DeleteRecoveryPoint(e.ctx, v.Name, created.ID); err != nil {
		t.Fatal(err)
	}
	if err := cat2.PutRecoveryPoint(e.ctx, created); err != nil {
		t.Fatal(err)
	}
	res, err = rebuild()
	if err != nil || res.Added != 0 || res.Updated != 2 || res.Removed != 1 || len(res.Errors) != 0 {
		t.Fatalf("rebuild of a drifted catalog: %+v, %v", res, err)
	}
	want[0].Tier = catalog.TierCold
	samePoints(t, rows(), want)
	res, err = rebuild()
	noChange(t, res, err)

	// An unreadable manifest is reported, and its row kept.
	p := filepath.Join(v.Location, "snapshots", p3.ID.String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = rebuild()
	if err != nil || res.Unreadable != 1 || len(res.Errors) != 1 || res.Removed != 0 || res.Added+res.Updated != 0 {
		t.Fatalf("rebuild with an unreadable manifest: %+v, %v", res, err)
	}
	if _, err := cat2.GetRecoveryPoint(e.ctx, v.Name, p3.ID.String()); err != nil {
		t.Fatalf("row of the unreadable manifest: %v", err)
	}
	samePoints(t, rows(), want)
}

func TestRebuildAfterWorkerDeletion(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	gone := e.backup(v, files(43, "a"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	kept := e.backup(v, files(44, "b"), &snapshot.Lifecycle{MoveToColdAfterDays: 1, DeleteAfterDays: 9})
	e.register(v, gone)
	want := e.register(v, kept)
	e.run()
	e.advance(2 * day)
	if res := e.run(); res.Deleted != 1 || res.MovedToCold != 1 {
		t.Fatalf("worker: %+v", res)
	}
	want.Tier = catalog.TierCold
	r := e.open(v)
	res, err := Rebuild(e.ctx, e.cat, v, r)
	noChange(t, res, err)
	rps, err := e.cat.ListRecoveryPoints(e.ctx, catalog.RecoveryPointFilter{Vault: v.Name})
	if err != nil {
		t.Fatal(err)
	}
	samePoints(t, rps, []catalog.RecoveryPoint{want})
	if _, err := e.cat.GetRecoveryPoint(e.ctx, v.Name, gone.ID.String()); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("deleted point: %v", err)
	}
}
