package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

func TestExpiryNeverEarlyThenDeletesAndPrunes(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	goneFiles, keptFiles := files(1, "a.bin", "b.bin"), files(2, "c.bin")
	gone := e.backup(v, goneFiles, &snapshot.Lifecycle{Plan: "daily", Rule: "r", Job: "j1", DeleteAfterDays: 7})
	kept := e.backup(v, keptFiles, &snapshot.Lifecycle{Plan: "daily", Rule: "r", Job: "j2"})
	e.register(v, gone)
	e.register(v, kept)
	deleteAt := t0.Add(7 * day)

	if res := e.run(); res.ClockHold == "" || res.Deleted != 0 {
		t.Fatalf("first run: %+v", res)
	}
	e.advance(deleteAt.Sub(t0) - time.Second)
	if res := e.run(); res.Deleted != 0 || res.Held != 0 || res.ClockHold != "" || len(res.Pruned) != 0 {
		t.Fatalf("one second before DeleteAt: %+v", res)
	}
	if _, ok := e.row(v.Name, gone.ID.String()); !ok || !e.manifests(v)[gone.ID.String()] {
		t.Fatal("point deleted before its DeleteAt")
	}

	e.advance(time.Second)
	res := e.run()
	if res.Deleted != 1 || res.Held != 0 || len(res.Pruned) != 1 || res.Pruned[0].Vault != v.Name {
		t.Fatalf("at DeleteAt: %+v", res)
	}
	if st := res.Pruned[0].Stats; st.PacksDeleted+st.PacksRepacked == 0 || st.BytesFreed <= 0 {
		t.Fatalf("prune reclaimed nothing: %+v", st)
	}
	if _, ok := e.row(v.Name, gone.ID.String()); ok {
		t.Fatal("catalog row of the deleted point is still there")
	}
	ms := e.manifests(v)
	if ms[gone.ID.String()] || !ms[kept.ID.String()] || len(ms) != 1 {
		t.Fatalf("manifests after deletion: %v", ms)
	}
	if _, ok := e.row(v.Name, kept.ID.String()); !ok {
		t.Fatal("row of the kept point was removed")
	}
	e.checkVault(v)
	e.restoreMatches(v, kept, keptFiles)

	evs := e.audit()
	if len(evs) != 1 {
		t.Fatalf("audit: %+v", evs)
	}
	ev := evs[0]
	if ev.Actor != "lifecycle" || ev.Action != "recovery-point.delete" || ev.Object != v.Name+"/"+gone.ID.String() ||
		ev.Outcome != "ok" || !strings.Contains(ev.Detail, deleteAt.Format(time.RFC3339)) {
		t.Fatalf("audit event: %+v", ev)
	}
	// Nothing left to do.
	e.advance(time.Hour)
	if res := e.run(); res.Deleted != 0 || res.Held != 0 || len(res.Pruned) != 0 {
		t.Fatalf("run after: %+v", res)
	}
}

func TestCatalogDateEarlierThanManifestIsHeld(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(3, "x"), &snapshot.Lifecycle{DeleteAfterDays: 30})
	rp := rowFor(v.Name, m)
	rp.DeleteAt = m.Time.Add(1 * day) // the catalog is wrong
	if err := e.cat.PutRecoveryPoint(e.ctx, rp); err != nil {
		t.Fatal(err)
	}
	e.run()
	e.advance(2 * day)
	res := e.run()
	if res.Held != 1 || res.Deleted != 0 {
		t.Fatalf("catalog says expired, manifest does not: %+v", res)
	}
	if got, ok := e.row(v.Name, rp.ID); !ok || got.Status != snapshot.StatusCompleted || !e.manifests(v)[rp.ID] {
		t.Fatalf("held point changed: %+v %v", got, ok)
	}
	if !strings.Contains(e.logs.String(), "manifest in the vault does not") {
		t.Fatalf("hold not logged:\n%s", e.logs)
	}
	e.advance(28*day - time.Second)
	if res := e.run(); res.Held != 1 || res.Deleted != 0 {
		t.Fatalf("one second before the manifest's date: %+v", res)
	}
	e.advance(time.Second)
	if res := e.run(); res.Deleted != 1 || res.Held != 0 {
		t.Fatalf("at the manifest's date: %+v", res)
	}
}

func TestVaultLockMinRetentionHolds(t *testing.T) {
	e := newEnv(t)
	v := e.vault("locked", catalog.VaultLock{Mode: catalog.LockCompliance, MinRetentionDays: 30})
	m := e.backup(v, files(4, "x"), &snapshot.Lifecycle{DeleteAfterDays: 7})
	e.register(v, m)
	e.run()
	e.advance(8 * day)
	if res := e.run(); res.Held != 1 || res.Deleted != 0 {
		t.Fatalf("expired but younger than the lock's minimum: %+v", res)
	}
	e.advance(22*day - time.Second)
	if res := e.run(); res.Held != 1 || res.Deleted != 0 {
		t.Fatalf("one second before the lock's minimum: %+v", res)
	}
	if !e.manifests(v)[m.ID.String()] {
		t.Fatal("manifest deleted under the vault lock")
	}
	e.advance(time.Second)
	if res := e.run(); res.Deleted != 1 || res.Held != 0 {
		t.Fatalf("at the lock's minimum: %+v", res)
	}
}

func TestFirstRunDeletesNothing(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(5, "x"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	e.register(v, m)
	e.clk.Advance(2 * day) // the worker starts when the point is long due
	res := e.run()
	if res.Deleted != 0 || res.Held != 1 || !strings.Contains(res.ClockHold, "first run") {
		t.Fatalf("first run: %+v", res)
	}
	e.advance(time.Minute)
	if res := e.run(); res.Deleted != 1 || res.ClockHold != "" {
		t.Fatalf("second run: %+v", res)
	}
}

func TestClockJumpHoldsDeletionsUntilSettled(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(6, "x"), &snapshot.Lifecycle{DeleteAfterDays: 7})
	e.register(v, m)
	e.run()
	e.advance(time.Hour)
	if res := e.run(); res.ClockHold != "" {
		t.Fatalf("steady clock not trusted: %+v", res)
	}
	// The wall clock leaps 30 days while one minute passes.
	e.clk.Advance(30 * day)
	e.mono.Advance(time.Minute)
	res := e.run()
	if res.Deleted != 0 || res.Held != 1 || res.ClockHold == "" {
		t.Fatalf("run after the jump: %+v", res)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "clock jump detected") || !strings.Contains(logs, "719h59m0s") {
		t.Fatalf("jump not named in the log:\n%s", logs)
	}
	e.advance(30 * time.Minute)
	if res := e.run(); res.Deleted != 0 || res.Held != 1 {
		t.Fatalf("30 min after the jump: %+v", res)
	}
	e.advance(29*time.Minute + 59*time.Second)
	if res := e.run(); res.Deleted != 0 || res.Held != 1 {
		t.Fatalf("1s before settling: %+v", res)
	}
	if !e.manifests(v)[m.ID.String()] {
		t.Fatal("deleted while the clock was settling")
	}
	e.advance(time.Second)
	if res := e.run(); res.Deleted != 1 || res.ClockHold != "" {
		t.Fatalf("after Settle: %+v", res)
	}
	if n := e.logs.Count("clock jump detected"); n != 1 {
		t.Fatalf("jump warning logged %d times", n)
	}
}

func TestClockGuard(t *testing.T) {
	const maxJump, settle = 24 * time.Hour, time.Hour
	var g clockGuard
	ok := func(wall time.Time, el time.Duration) (bool, string) {
		trusted, _, jump := g.observe(wall, el, maxJump, settle)
		return trusted, jump
	}
	if tr, _ := ok(t0, 0); tr {
		t.Fatal("first observation trusted")
	}
	if tr, j := ok(t0.Add(time.Hour), time.Hour); !tr || j != "" {
		t.Fatal("steady clock not trusted")
	}
	// Backwards is not special.
	if tr, j := ok(t0.Add(-5*day), 2*time.Hour); !tr || j != "" {
		t.Fatal("wall clock going back is treated as a jump")
	}
	// Just within MaxJump of drift: fine; beyond: jump.
	if tr, j := ok(t0.Add(-5*day+25*time.Hour), 3*time.Hour); !tr || j != "" {
		t.Fatalf("drift of exactly MaxJump: trusted %v jump %q", tr, j)
	}
	if tr, j := ok(t0.Add(-5*day+25*time.Hour+maxJump+time.Hour+time.Second), 4*time.Hour); tr || j == "" {
		t.Fatal("jump beyond MaxJump not detected")
	}
	// A second jump while settling restarts the period.
	if tr, _ := ok(t0.Add(10*day), 4*time.Hour+50*time.Minute); tr {
		t.Fatal("trusted right after a second jump")
	}
	if tr, _ := ok(t0.Add(10*day+time.Hour-time.Nanosecond), 5*time.Hour+50*time.Minute-time.Nanosecond); tr {
		t.Fatal("trusted before Settle after the second jump")
	}
	if tr, j := ok(t0.Add(10*day+time.Hour), 5*time.Hour+50*time.Minute); !tr || j != "" {
		t.Fatal("not trusted Settle after the second jump")
	}
	// The monotonic clock going back loses the reference.
	if tr, _ := ok(t0.Add(11*day), time.Minute); tr {
		t.Fatal("trusted after the monotonic clock went back")
	}
}

func TestInterruptedDeletionIsFinished(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	// A: crash after the manifest was deleted, before the catalog row.
	a := e.backup(v, files(7, "a"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	// B: crash after the row was marked, before the manifest was deleted.
	b := e.backup(v, files(8, "b"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	// C: marked DELETING but not due per its manifest (clock trouble).
	c := e.backup(v, files(9, "c"), &snapshot.Lifecycle{DeleteAfterDays: 90})
	keep := files(10, "k")
	k := e.backup(v, keep, nil)
	for _, m := range []*snapshot.Manifest{a, b, c, k} {
		rp := e.register(v, m)
		if m != k {
			rp.Status = StatusDeleting
			if err := e.cat.PutRecoveryPoint(e.ctx, rp); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := e.open(v)
	lock, err := r.Lock(e.ctx, true, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Delete(e.ctx, r, a.ID); err != nil {
		t.Fatal(err)
	}
	lock.Unlock()

	e.run()
	e.advance(2 * day)
	res := e.run()
	if res.Deleted != 2 || res.Held != 1 || len(res.Pruned) != 1 {
		t.Fatalf("run: %+v", res)
	}
	if st := res.Pruned[0].Stats; st.PacksDeleted == 0 {
		t.Fatalf("data of the interrupted deletions not pruned: %+v", st)
	}
	for _, m := range []*snapshot.Manifest{a, b} {
		if _, ok := e.row(v.Name, m.ID.String()); ok {
			t.Errorf("row %s still there", m.ID.Short())
		}
	}
	if got, ok := e.row(v.Name, c.ID.String()); !ok || got.Status != snapshot.StatusCompleted {
		t.Errorf("point not due: row %+v %v, want status restored", got, ok)
	}
	ms := e.manifests(v)
	if len(ms) != 2 || !ms[c.ID.String()] || !ms[k.ID.String()] {
		t.Fatalf("manifests: %v", ms)
	}
	e.checkVault(v)
	e.restoreMatches(v, k, keep)
	var details []string
	for _, ev := range e.audit() {
		details = append(details, ev.Object+": "+ev.Detail)
	}
	if len(details) != 2 || !strings.Contains(strings.Join(details, "\n"), v.Name+"/"+a.ID.String()+": finished an interrupted deletion") {
		t.Fatalf("audit: %q", details)
	}
}

func TestUnknownManifestIsReportedNotRemoved(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(11, "x"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	rp := e.register(v, m)
	rp.ID = strings.Repeat("ab", 32)
	if err := e.cat.PutRecoveryPoint(e.ctx, rp); err != nil {
		t.Fatal(err)
	}
	e.run()
	e.advance(2 * day)
	res, err := e.w.RunOnce(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 1 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Error(), "catalog rebuild") {
		t.Fatalf("run: %+v", res)
	}
	if _, ok := e.row(v.Name, rp.ID); !ok {
		t.Fatal("row without manifest removed by the worker")
	}
}

func TestBusyVaultIsPostponedNotAnError(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(3, "a.bin"), &snapshot.Lifecycle{DeleteAfterDays: 1})
	e.register(v, m)
	e.run() // first run: reference only
	e.advance(2 * day)
	r := e.open(v)
	defer r.Close()
	lock, err := r.Lock(e.ctx, false, "backup job in progress")
	if err != nil {
		t.Fatal(err)
	}
	res := e.run()
	if res.Deleted != 0 || len(res.Errors) != 0 || len(res.Busy) != 1 || res.Busy[0] != v.Name {
		t.Fatalf("pass while a job holds the vault: %+v", res)
	}
	if _, ok := e.row(v.Name, m.ID.String()); !ok {
		t.Fatal("point deleted while the vault was busy")
	}
	lock.Unlock()
	if res = e.run(); res.Deleted != 1 || len(res.Busy) != 0 {
		t.Fatalf("pass after the job: %+v", res)
	}
}
