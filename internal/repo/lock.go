package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
)

// Lock timing. A lock not refreshed for StaleAfter is ignored by others
// (its holder is presumed dead); holders refresh every RefreshEvery.
const (
	RefreshEvery = 5 * time.Minute
	StaleAfter   = 30 * time.Minute
)

// LockInfo is the content of a lock file.
type LockInfo struct {
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Operation string    `json:"operation"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
}

// Lock is a held lock.
type Lock struct {
	r    *Repository
	info LockInfo
	mu   sync.Mutex
	id   crypto.ID
	stop chan struct{}
	done chan struct{}
	lost error
	once sync.Once
}

// ErrLocked says another operation holds a conflicting lock.
var ErrLocked = errors.New("vault is locked")

// LockError describes a conflicting lock.
type LockError struct {
	Holder LockInfo
	ID     crypto.ID
}

func (e *LockError) Error() string {
	kind := "shared"
	if e.Holder.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%v: %s lock %s held by %q (pid %d on %s) since %s", ErrLocked, kind, e.ID.Short(), e.Holder.Operation,
		e.Holder.PID, e.Holder.Hostname, e.Holder.Time.Format(time.RFC3339))
}
func (e *LockError) Unwrap() error { return ErrLocked }

// Lock takes a shared (backup, restore, check) or exclusive (prune, delete
// with GC) lock. Protocol: write our lock file, then list all lock files; if
// a live conflicting lock exists, remove ours and fail. Two concurrent lockers
// each see the other's file (storage is read-after-write consistent), so at
// most one of two conflicting lockers proceeds.
func (r *Repository) Lock(ctx context.Context, exclusive bool, op string) (*Lock, error) {
	host, _ := os.Hostname()
	l := &Lock{r: r, info: LockInfo{Time: r.clock.Now().UTC(), Exclusive: exclusive, Operation: op, Hostname: host, PID: os.Getpid()}}
	id, err := r.SaveJSON(ctx, blob.KindLock, l.info)
	if err != nil {
		return nil, fmt.Errorf("lock vault: %w", err)
	}
	l.id = id
	if err := r.checkLocks(ctx, l); err != nil {
		_ = r.Remove(context.WithoutCancel(ctx), blob.KindLock, id)
		return nil, err
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.refresher()
	return l, nil
}

func (r *Repository) checkLocks(ctx context.Context, own *Lock) error {
	ids, err := r.List(ctx, blob.KindLock)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if id == own.id {
			continue
		}
		var li LockInfo
		if err := r.LoadJSON(ctx, blob.KindLock, id, &li); err != nil {
			if blob.IsNotExist(err) {
				continue // removed meanwhile
			}
			return fmt.Errorf("read lock %s: %w", id.Short(), err)
		}
		if r.isStale(li) {
			continue
		}
		if own.info.Exclusive || li.Exclusive {
			return hint.With(&LockError{Holder: li, ID: id},
				"wait for that operation to finish; if its process is gone, `coffre unlock` removes stale locks")
		}
	}
	return nil
}

// isStale reports whether a lock's holder is presumed dead: not refreshed
// for StaleAfter, or held by a process of this host that no longer exists.
func (r *Repository) isStale(li LockInfo) bool {
	if r.clock.Now().Sub(li.Time) > StaleAfter {
		return true
	}
	host, _ := os.Hostname()
	if li.Hostname == host && li.PID > 0 && li.PID != os.Getpid() {
		if err := syscall.Kill(li.PID, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
	}
	return false
}

func (l *Lock) refresher() {
	defer close(l.done)
	t := time.NewTicker(RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.Refresh(context.Background()); err != nil {
				l.r.log.Error("refresh lock", "err", err)
				l.mu.Lock()
				// Others consider the lock stale once StaleAfter has passed
				// since the last successful refresh: from then on it is lost.
				if l.lost == nil && l.r.clock.Now().Sub(l.info.Time) > StaleAfter-RefreshEvery {
					l.lost = fmt.Errorf("lock %s could not be refreshed for %s: %w", l.id.Short(), StaleAfter-RefreshEvery, err)
				}
				l.mu.Unlock()
			}
		}
	}
}

// Refresh rewrites the lock with the current time (a new file, then the old
// one removed), and fails if our lock file disappeared meanwhile (someone
// judged it stale): the holder must then stop before committing anything.
func (l *Lock) Refresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.r.be.Stat(ctx, blob.Handle{Kind: blob.KindLock, Name: l.id.String()}); err != nil {
		l.lost = fmt.Errorf("our lock %s was removed by another process: %w", l.id.Short(), err)
		return l.lost
	}
	// Not refreshed for StaleAfter (the process was suspended, the machine
	// slept): others may have judged the lock stale and pruned meanwhile.
	if age := l.r.clock.Now().Sub(l.info.Time); age > StaleAfter && l.lost == nil {
		l.lost = fmt.Errorf("our lock %s was not refreshed for %s, others may have ignored it", l.id.Short(), age.Round(time.Second))
	}
	info := l.info
	info.Time = l.r.clock.Now().UTC()
	id, err := l.r.SaveJSON(ctx, blob.KindLock, info)
	if err != nil {
		return err
	}
	old := l.id
	l.id, l.info = id, info
	_ = l.r.Remove(ctx, blob.KindLock, old)
	return nil
}

// Check returns an error if the lock was lost; call before committing.
func (l *Lock) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if age := l.r.clock.Now().Sub(l.info.Time); age > StaleAfter {
		l.lost = fmt.Errorf("our lock %s was not refreshed for %s, others may have ignored it", l.id.Short(), age.Round(time.Second))
		return l.lost
	}
	if _, err := l.r.be.Stat(ctx, blob.Handle{Kind: blob.KindLock, Name: l.id.String()}); err != nil {
		l.lost = fmt.Errorf("our lock %s is gone (another process judged it stale): %w", l.id.Short(), err)
	}
	return l.lost
}

// Unlock releases the lock. Calling it again does nothing.
func (l *Lock) Unlock() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		defer l.mu.Unlock()
		err = l.r.Remove(context.Background(), blob.KindLock, l.id)
		if blob.IsNotExist(err) {
			err = nil
		}
	})
	return err
}

// RemoveStaleLocks deletes locks whose holders are presumed dead (all locks
// when all is set) and returns how many it removed.
func (r *Repository) RemoveStaleLocks(ctx context.Context, all bool) (int, error) {
	ids, err := r.List(ctx, blob.KindLock)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		var li LockInfo
		err := r.LoadJSON(ctx, blob.KindLock, id, &li)
		if err != nil && !all {
			if blob.IsNotExist(err) {
				continue
			}
			// Unreadable: a transient storage error must not remove a live
			// lock. --remove-all removes it.
			return n, fmt.Errorf("read lock %s: %w (use --remove-all to remove it anyway)", id.Short(), err)
		}
		if err == nil && !all && !r.isStale(li) {
			continue
		}
		if err := r.Remove(ctx, blob.KindLock, id); err != nil && !blob.IsNotExist(err) {
			return n, err
		}
		n++
	}
	return n, nil
}
