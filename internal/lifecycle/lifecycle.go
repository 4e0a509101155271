// Package lifecycle applies recovery points' lifecycle: it deletes expired points (never early), garbage-collects their data, moves cold points' packs to the backend's cold storage class, and rebuilds the catalog's recovery point index from a vault.
//
// The vault is the source of truth: a recovery point is deleted only when
// its manifest in the vault says it has expired, whatever the catalog says,
// and the catalog's index can be rebuilt from the manifests (Rebuild).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

// StatusDeleting is the catalog status of a recovery point whose deletion
// has started: set before the manifest is deleted, so that a crash leaves a
// row the next run finishes.
const StatusDeleting = "DELETING"

// Audit vocabulary of the worker.
const (
	Actor        = "lifecycle"
	ActionDelete = "recovery-point.delete"
)

// Defaults of the Worker's zero fields.
const (
	// DefaultColdClass is S3 Glacier Instant Retrieval: cheaper storage
	// that is still read directly, so restores, ranged blob reads, prune's
	// repack and check --read-data keep working on cold packs (which new
	// backups may also deduplicate against). Archive classes (GLACIER,
	// DEEP_ARCHIVE) need a thaw step coffre does not have yet.
	DefaultColdClass = "GLACIER_IR"
	DefaultMaxJump   = 24 * time.Hour
	DefaultSettle    = time.Hour
)

// Worker applies the lifecycle of every vault of the catalog, one RunOnce
// at a time (concurrent calls are serialized).
//
// Clock-jump guard: the Worker remembers, in memory, the wall time and the
// Elapsed time of its previous run. The first RunOnce of a Worker only
// records them and deletes nothing (nor moves anything to cold storage);
// later runs act when no jump is pending. A jump is a wall clock that
// advanced more than MaxJump beyond what Elapsed advanced; after one, the
// Worker deletes nothing (and moves nothing to cold storage) until the wall
// clock has stepped in line with Elapsed (no new jump) for Settle of Elapsed
// time, and logs one warning naming the jump. A wall clock going backwards
// only makes fewer points due. A jump that happened before the Worker's
// first run cannot be detected. Elapsed does not advance while the machine
// sleeps, so a wake-up after a long suspend also counts as a jump.
type Worker struct {
	Cat    catalog.Catalog
	Vaults jobs.Vaults
	Clock  clock.Clock  // default clock.Real{}
	Log    *slog.Logger // default slog.Default()
	// ColdClass is the storage class of cold packs; default "GLACIER".
	ColdClass string
	// PruneGrace is passed to maintain.Prune (0: its default).
	PruneGrace time.Duration
	// MaxJump is how far the wall clock may run ahead of Elapsed between
	// two runs before it counts as a jump; default 24h.
	MaxJump time.Duration
	// Settle is how long, in Elapsed time, the wall clock must run steadily
	// after a jump before deletions resume; default 1h.
	Settle time.Duration
	// Elapsed is a monotonic time since an arbitrary origin; default: the
	// real monotonic clock, from the Worker's first run.
	Elapsed func() time.Duration

	mu          sync.Mutex
	guard       clockGuard
	noColdClass map[string]bool // vaults whose backend lacks storage classes (logged once)
}

// VaultPrune is the garbage collection run in one vault.
type VaultPrune struct {
	Vault string
	Stats *maintain.PruneStats
}

// Result reports what one RunOnce did.
type Result struct {
	// Deleted counts recovery points deleted (manifest, then catalog row),
	// including deletions an earlier run left unfinished.
	Deleted int
	// Held counts points the catalog lists as expired (or DELETING) that
	// were kept: the vault's manifest is not due yet, the vault lock's
	// minimum retention has not passed, or the wall clock is not trusted
	// (see ClockHold).
	Held int
	// MovedToCold counts points whose catalog tier became cold.
	MovedToCold int
	// PacksMoved counts data packs whose storage class was set to ColdClass
	// (on a backend with storage classes; 0 on local disk).
	PacksMoved int
	// Busy lists vaults skipped because a job held their lock; the next
	// pass retries them.
	Busy []string
	// Pruned lists the garbage collections run (vaults where points were
	// deleted).
	Pruned []VaultPrune
	// ClockHold says why this run deleted nothing and moved nothing to cold
	// storage (first run, clock jump); empty when the clock was trusted.
	ClockHold string
	// Errors are per-vault or per-point problems; they did not stop the
	// other vaults.
	Errors []error
}

func (w *Worker) defaults() {
	if w.Clock == nil {
		w.Clock = clock.Real{}
	}
	if w.Log == nil {
		w.Log = slog.Default()
	}
	if w.ColdClass == "" {
		w.ColdClass = DefaultColdClass
	}
	if w.MaxJump <= 0 {
		w.MaxJump = DefaultMaxJump
	}
	if w.Settle <= 0 {
		w.Settle = DefaultSettle
	}
	if w.Elapsed == nil {
		// Sub of two clock.Real readings uses their monotonic readings.
		origin := clock.Real{}.Now()
		w.Elapsed = func() time.Duration { return clock.Real{}.Now().Sub(origin) }
	}
	if w.noColdClass == nil {
		w.noColdClass = map[string]bool{}
	}
}

// RunOnce applies the lifecycle once to every vault of the catalog: expiry
// (with garbage collection) under an exclusive vault lock, then cold
// storage under a shared one. Errors of one vault or point are collected in
// Result.Errors; the returned error is only for failures that stop the whole
// run (the catalog cannot be listed, ctx is done).
func (w *Worker) RunOnce(ctx context.Context) (Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.defaults()
	var res Result
	now := w.Clock.Now()
	trusted, hold, jump := w.guard.observe(now, w.Elapsed(), w.MaxJump, w.Settle)
	if jump != "" {
		w.Log.Warn("lifecycle: clock jump detected; holding deletions and cold moves", "jump", jump, "settle", w.Settle)
	}
	res.ClockHold = hold
	vaults, err := w.Cat.ListVaults(ctx)
	if err != nil {
		return res, fmt.Errorf("lifecycle: %w", err)
	}
	expired, err := w.Cat.ListExpired(ctx, now)
	if err != nil {
		return res, fmt.Errorf("lifecycle: %w", err)
	}
	due := map[string][]catalog.RecoveryPoint{}
	for _, rp := range expired {
		due[rp.Vault] = append(due[rp.Vault], rp)
	}
	known := map[string]bool{}
	for _, v := range vaults {
		known[v.Name] = true
	}
	for name, rps := range due {
		if !known[name] {
			res.Errors = append(res.Errors, fmt.Errorf("lifecycle: %d expired recovery point(s) of vault %q, which is not in the catalog", len(rps), name))
		}
	}
	for _, v := range vaults {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		err := w.runVault(ctx, v, due[v.Name], now, trusted, hold, &res)
		switch {
		case errors.Is(err, repo.ErrLocked):
			// A backup or restore is using the vault: try again next pass.
			res.Busy = append(res.Busy, v.Name)
			w.Log.Info("vault busy; lifecycle postponed to the next pass", "vault", v.Name, "err", err)
		case err != nil:
			res.Errors = append(res.Errors, fmt.Errorf("lifecycle: vault %s: %w", v.Name, err))
		}
	}
	return res, nil
}

// runVault applies expiry and cold storage to one vault.
func (w *Worker) runVault(ctx context.Context, v catalog.Vault, due []catalog.RecoveryPoint, now time.Time, trusted bool, hold string, res *Result) error {
	rows, err := w.Cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: v.Name})
	if err != nil {
		return err
	}
	// Expiry candidates: expired rows, and DELETING rows an earlier run
	// left behind.
	cands := append([]catalog.RecoveryPoint(nil), due...)
	seen := map[string]bool{}
	for _, rp := range due {
		seen[rp.ID] = true
	}
	for _, rp := range rows {
		if rp.Status == StatusDeleting && !seen[rp.ID] {
			cands = append(cands, rp)
		}
	}
	cold := coldDue(rows, now)
	if len(cands) == 0 && len(cold) == 0 {
		return nil
	}
	if !trusted {
		res.Held += len(cands)
		w.Log.Info("lifecycle: wall clock not trusted yet, vault left alone", "vault", v.Name, "reason", hold,
			"held", len(cands), "cold_due", len(cold))
		return nil
	}
	r, err := w.Vaults.Open(ctx, v)
	if err != nil {
		return err
	}
	defer func() {
		if r != nil {
			_ = r.Close()
		}
	}()
	var errs []error
	if len(cands) > 0 {
		pruned, err := w.expire(ctx, v, r, cands, now, res)
		if err != nil {
			errs = append(errs, err)
		}
		if len(cold) > 0 {
			// Points deleted just now are no longer cold candidates.
			if rows, err = w.Cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: v.Name}); err != nil {
				return errors.Join(append(errs, err)...)
			}
			cold = coldDue(rows, now)
		}
		if pruned && len(cold) > 0 {
			// Prune rewrote the index (repacked blobs moved): the cold
			// step needs a handle whose index is read afresh.
			_ = r.Close()
			if r, err = w.Vaults.Open(ctx, v); err != nil {
				r = nil
				return errors.Join(append(errs, err)...)
			}
		}
	}
	if len(cold) > 0 {
		if err := w.moveCold(ctx, v, r, cold, now, res); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// coldDue returns the rows still warm whose catalog cold date has passed.
func coldDue(rows []catalog.RecoveryPoint, now time.Time) []catalog.RecoveryPoint {
	var out []catalog.RecoveryPoint
	for _, rp := range rows {
		if rp.Tier != catalog.TierCold && rp.Status != StatusDeleting && !rp.MoveToColdAt.IsZero() && !rp.MoveToColdAt.After(now) {
			out = append(out, rp)
		}
	}
	return out
}

// expire deletes the due candidates under an exclusive lock and, when any
// was deleted, prunes. It reports whether prune ran.
func (w *Worker) expire(ctx context.Context, v catalog.Vault, r *repo.Repository, cands []catalog.RecoveryPoint, now time.Time, res *Result) (pruned bool, err error) {
	lock, err := r.Lock(ctx, true, "lifecycle")
	if err != nil {
		return false, err
	}
	defer func() {
		if uerr := lock.Unlock(); uerr != nil {
			w.Log.Error("lifecycle: unlock vault", "vault", v.Name, "err", uerr)
		}
	}()
	if err := r.LoadIndex(ctx); err != nil {
		return false, err
	}
	deleted := 0
	var errs []error
	for _, rp := range cands {
		if err := ctx.Err(); err != nil {
			return false, errors.Join(append(errs, err)...)
		}
		ok, err := w.expireOne(ctx, v, r, lock, rp, now, res)
		if ok {
			deleted++
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("recovery point %s: %w", rp.ID, err))
			var lost *lockLostError
			if errors.As(err, &lost) {
				return false, errors.Join(errs...)
			}
		}
	}
	if deleted == 0 {
		return false, errors.Join(errs...)
	}
	st, err := maintain.Prune(ctx, r, maintain.PruneOptions{Grace: w.PruneGrace, BeforeDelete: lock.Check})
	if err != nil {
		return false, errors.Join(append(errs, fmt.Errorf("garbage collection after deleting %d point(s): %w", deleted, err))...)
	}
	res.Pruned = append(res.Pruned, VaultPrune{Vault: v.Name, Stats: st})
	w.Log.Info("lifecycle: garbage collected", "vault", v.Name, "packs_deleted", st.PacksDeleted,
		"packs_repacked", st.PacksRepacked, "bytes_freed", st.BytesFreed)
	return true, errors.Join(errs...)
}

type lockLostError struct{ err error }

func (e *lockLostError) Error() string { return "vault lock lost: " + e.err.Error() }
func (e *lockLostError) Unwrap() error { return e.err }

// expireOne deletes one candidate if the vault agrees it is due. It
// reports whether a deletion was completed (now, or one an earlier run
// started).
func (w *Worker) expireOne(ctx context.Context, v catalog.Vault, r *repo.Repository, lock *repo.Lock, rp catalog.RecoveryPoint, now time.Time, res *Result) (bool, error) {
	obj := v.Name + "/" + rp.ID
	id, err := crypto.ParseID(rp.ID)
	if err != nil {
		return false, fmt.Errorf("catalog id is not a manifest id: %w", err)
	}
	m, err := snapshot.Load(ctx, r, id)
	switch {
	case blob.IsNotExist(err) && rp.Status == StatusDeleting:
		// An earlier run deleted the manifest and stopped before the
		// catalog: finish.
		if err := w.Cat.DeleteRecoveryPoint(ctx, v.Name, rp.ID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return false, err
		}
		res.Deleted++
		w.Log.Info("lifecycle: finished an interrupted deletion", "point", obj)
		return true, w.audit(ctx, obj, fmt.Sprintf("finished an interrupted deletion (manifest already gone); delete date %s", fmtTime(rp.DeleteAt)))
	case blob.IsNotExist(err):
		// Another worker sharing the catalog may have deleted it before
		// we got the vault lock: then its row is gone too.
		cur, gerr := w.Cat.GetRecoveryPoint(ctx, v.Name, rp.ID)
		if errors.Is(gerr, catalog.ErrNotFound) {
			return false, nil
		}
		if gerr == nil && cur.Status == StatusDeleting {
			rp.Status = StatusDeleting
			return w.expireOne(ctx, v, r, lock, rp, now, res)
		}
		// Not ours to judge: the catalog lists a point the vault does
		// not hold. Leave the row for an operator (catalog rebuild).
		return false, fmt.Errorf("the catalog lists it as expired but the vault has no such manifest; run `coffre catalog rebuild --vault %s`", v.Name)
	case err != nil:
		return false, err
	}
	deleteAt := m.DeleteAt()
	if deleteAt.IsZero() || deleteAt.After(now) {
		res.Held++
		when := "never"
		if !deleteAt.IsZero() {
			when = fmtTime(deleteAt)
		}
		w.Log.Warn("lifecycle: the catalog says the point expired but its manifest in the vault does not; kept",
			"point", obj, "catalog_delete_at", fmtTime(rp.DeleteAt), "manifest_delete_at", when,
			"fix", "coffre catalog rebuild --vault "+v.Name)
		return false, w.undoDeleting(ctx, rp, m)
	}
	if days := v.Lock.MinRetentionDays; days > 0 {
		if keep := m.Time.Add(time.Duration(days) * snapshot.Day); keep.After(now) {
			res.Held++
			w.Log.Warn("lifecycle: vault lock minimum retention keeps an expired point", "point", obj,
				"min_retention_days", days, "kept_until", fmtTime(keep))
			return false, w.undoDeleting(ctx, rp, m)
		}
	}
	if err := lock.Check(ctx); err != nil {
		return false, &lockLostError{err}
	}
	marked := rp
	marked.Status = StatusDeleting
	if err := w.Cat.PutRecoveryPoint(ctx, marked); err != nil {
		return false, err
	}
	if err := snapshot.Delete(ctx, r, m.ID); err != nil && !blob.IsNotExist(err) {
		return false, err
	}
	if err := w.Cat.DeleteRecoveryPoint(ctx, v.Name, rp.ID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return true, err // the manifest is gone: prune must run; the DELETING row is finished next run
	}
	res.Deleted++
	w.Log.Info("lifecycle: deleted expired recovery point", "point", obj, "delete_at", fmtTime(deleteAt))
	return true, w.audit(ctx, obj, "expired: delete date "+fmtTime(deleteAt))
}

// undoDeleting restores the manifest's status on a DELETING row that turns
// out not to be due.
func (w *Worker) undoDeleting(ctx context.Context, rp catalog.RecoveryPoint, m *snapshot.Manifest) error {
	if rp.Status != StatusDeleting {
		return nil
	}
	rp.Status = m.Status
	return w.Cat.PutRecoveryPoint(ctx, rp)
}

func (w *Worker) audit(ctx context.Context, obj, detail string) error {
	_, err := w.Cat.AppendAudit(ctx, catalog.AuditEvent{Actor: Actor, Action: ActionDelete, Object: obj, Outcome: "ok", Detail: detail})
	if err != nil {
		return fmt.Errorf("audit deletion: %w", err)
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}
