package repo_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/mem"
)

var lockEpoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// lockVault returns a vault and a function opening more handles on it, each
// with its own fake clock.
func lockVault(t *testing.T) func(c clock.Clock) *repo.Repository {
	be := mem.New()
	repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{Clock: clock.NewFake(lockEpoch)})
	return func(c clock.Clock) *repo.Repository { return repo.TestOpen(t, be, repo.Options{Clock: c}) }
}

func countLocks(t *testing.T, r *repo.Repository) int {
	t.Helper()
	ids, err := r.List(context.Background(), blob.KindLock)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

// testLock is a held lock that the test's cleanup releases unless the test
// did (Lock.Unlock must be called exactly once).
type testLock struct {
	*repo.Lock
	released bool
}

func (l *testLock) Unlock() error {
	l.released = true
	return l.Lock.Unlock()
}

func mustLock(t *testing.T, r *repo.Repository, exclusive bool, op string) *testLock {
	t.Helper()
	l, err := r.Lock(context.Background(), exclusive, op)
	if err != nil {
		t.Fatalf("Lock(exclusive=%v, %s): %v", exclusive, op, err)
	}
	tl := &testLock{Lock: l}
	t.Cleanup(func() {
		if !tl.released {
			_ = tl.Unlock()
		}
	})
	return tl
}

func checkLocked(t *testing.T, err error, holderOp string) {
	t.Helper()
	if !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("conflicting Lock = %v, want an error wrapping ErrLocked", err)
	}
	var le *repo.LockError
	if !errors.As(err, &le) || le.Holder.Operation != holderOp {
		t.Errorf("conflicting Lock error %v does not carry holder operation %q", err, holderOp)
	}
	if !strings.Contains(err.Error(), holderOp) {
		t.Errorf("conflicting Lock error %q does not name the holder operation %q", err, holderOp)
	}
}

func TestExclusiveLockConflictsWithShared(t *testing.T) {
	ctx := context.Background()
	open := lockVault(t)
	c := clock.NewFake(lockEpoch)
	r1, r2 := open(c), open(c)

	ex := mustLock(t, r1, true, "prune")
	_, err := r2.Lock(ctx, false, "backup")
	checkLocked(t, err, "prune")
	if n := countLocks(t, r1); n != 1 {
		t.Errorf("%d lock files after a refused lock, want 1 (the refused locker must remove its own)", n)
	}
	if err := ex.Unlock(); err != nil {
		t.Fatal(err)
	}

	sh := mustLock(t, r2, false, "backup")
	_, err = r1.Lock(ctx, true, "prune")
	checkLocked(t, err, "backup")
	if err := sh.Unlock(); err != nil {
		t.Fatal(err)
	}
	// Nothing held now: the exclusive lock goes through.
	mustLock(t, r1, true, "prune")
}

func TestSharedLocksCoexist(t *testing.T) {
	open := lockVault(t)
	c := clock.NewFake(lockEpoch)
	r1, r2 := open(c), open(c)
	l1 := mustLock(t, r1, false, "backup")
	l2 := mustLock(t, r2, false, "restore")
	if n := countLocks(t, r1); n != 2 {
		t.Errorf("%d lock files, want 2", n)
	}
	for _, l := range []*testLock{l1, l2} {
		if err := l.Check(context.Background()); err != nil {
			t.Errorf("Check of a held lock: %v", err)
		}
	}
}

func TestStaleLockIgnored(t *testing.T) {
	ctx := context.Background()
	open := lockVault(t)
	old := clock.NewFake(lockEpoch)
	now := clock.NewFake(lockEpoch)
	holder, other := open(old), open(now)
	mustLock(t, holder, true, "prune")

	now.Advance(repo.StaleAfter - time.Minute)
	_, err := other.Lock(ctx, false, "backup")
	checkLocked(t, err, "prune")

	now.Advance(2 * time.Minute) // past StaleAfter since the lock was written
	mustLock(t, other, false, "backup")
}

func TestRefreshKeepsLockFresh(t *testing.T) {
	ctx := context.Background()
	open := lockVault(t)
	c := clock.NewFake(lockEpoch)
	holder, other := open(c), open(c)
	l := mustLock(t, holder, true, "prune")
	c.Advance(repo.StaleAfter - time.Minute)
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Minute) // stale by the first write, fresh by the refresh
	_, err := other.Lock(ctx, false, "backup")
	checkLocked(t, err, "prune")
	if n := countLocks(t, holder); n != 1 {
		t.Errorf("%d lock files after a refresh, want 1", n)
	}
}

func TestUnlockRemovesLockFile(t *testing.T) {
	open := lockVault(t)
	r := open(clock.NewFake(lockEpoch))
	l, err := r.Lock(context.Background(), false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	if n := countLocks(t, r); n != 1 {
		t.Fatalf("%d lock files while locked, want 1", n)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if n := countLocks(t, r); n != 0 {
		t.Errorf("%d lock files after Unlock, want 0", n)
	}
}

func TestRemoveStaleLocks(t *testing.T) {
	ctx := context.Background()
	open := lockVault(t)
	old := clock.NewFake(lockEpoch)
	now := clock.NewFake(lockEpoch.Add(repo.StaleAfter + time.Minute))
	stale := mustLock(t, open(old), false, "backup")
	r := open(now)
	fresh := mustLock(t, r, false, "check")

	n, err := r.RemoveStaleLocks(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("RemoveStaleLocks removed %d locks, want 1", n)
	}
	if got := countLocks(t, r); got != 1 {
		t.Errorf("%d lock files left, want 1 (the fresh one)", got)
	}
	if err := fresh.Check(ctx); err != nil {
		t.Errorf("the fresh lock was removed: %v", err)
	}
	if err := stale.Check(ctx); err == nil {
		t.Error("Check of a lock removed as stale succeeded")
	}
	if err := stale.Unlock(); err != nil {
		t.Errorf("Unlock of a lock already removed: %v", err)
	}

	n, err = r.RemoveStaleLocks(ctx, true)
	if err != nil || n != 1 {
		t.Errorf("RemoveStaleLocks(all) = %d, %v; want 1, nil", n, err)
	}
	if got := countLocks(t, r); got != 0 {
		t.Errorf("%d lock files left after removing all, want 0", got)
	}
}

func TestUnlockTwiceIsHarmless(t *testing.T) {
	r, _ := repo.TestRepository(t)
	l, err := r.Lock(context.Background(), true, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	l2, err := r.Lock(context.Background(), true, "again")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	_ = l2.Unlock()
}

// A holder that was suspended past StaleAfter (no refresh) must not commit:
// others may have ignored its lock and pruned meanwhile.
func TestLockLostAfterSuspension(t *testing.T) {
	open := lockVault(t)
	clk := clock.NewFake(lockEpoch)
	r := open(clk)
	l := mustLock(t, r, false, "backup")
	if err := l.Check(context.Background()); err != nil {
		t.Fatalf("fresh lock: %v", err)
	}
	clk.Advance(repo.StaleAfter + time.Minute)
	if err := l.Check(context.Background()); err == nil {
		t.Fatal("Check passed for a lock not refreshed for longer than StaleAfter")
	}
	// Refreshing afterwards does not make it valid again.
	_ = l.Refresh(context.Background())
	if err := l.Check(context.Background()); err == nil {
		t.Fatal("Check passed after a late refresh")
	}
}
