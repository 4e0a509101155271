package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

// Defaults of Runner's tunables.
const (
	DefaultWorkers        = 2
	DefaultHeartbeatEvery = 15 * time.Second
	DefaultStaleAfter     = 2 * time.Minute
	DefaultMaxAttempts    = 3
	DefaultPoll           = time.Second
	DefaultShutdownGrace  = 30 * time.Second
	DefaultLockWait       = 2 * time.Minute
)

// DefaultLimits bound concurrent jobs when Runner.Limits is zero: one job
// per resource at a time (two backups of one database never overlap) and
// four per vault, across every server sharing the catalog.
var DefaultLimits = catalog.ClaimLimits{PerVault: 4, PerResource: 1}

// Messages of jobs the runner stops.
const (
	MsgCompletionWindow = "stopped at the end of its completion window"
	MsgShutdown         = "interrupted by a server shutdown; will run again"
)

var (
	errLostJob = errors.New("job is no longer owned by this worker (aborted, or requeued after a lost heartbeat)")
	errWindow  = errors.New(MsgCompletionWindow)
	errStop    = errors.New("server shutting down")
)

// Runner claims jobs from the catalog and runs them.
//
// Each claimed job is heartbeaten while it runs; a job whose heartbeat fails
// (it was aborted through the API, or another server judged this one dead
// and requeued it) is cancelled at once and its result discarded. A job past
// its completion window is stopped and marked EXPIRED. Transient failures
// are retried with exponential backoff, within the job's start window, up to
// MaxAttempts; RecoverStale requeues the RUNNING jobs of workers that
// stopped heartbeating (a crash or a kill), so no job stays RUNNING forever.
// Every state change the runner makes is appended to the audit chain.
type Runner struct {
	Cat     catalog.Catalog
	Vaults  Vaults
	Sources map[string]Source // by resource type; nil: DefaultSources()
	// Physical backs up PostgreSQL resources under continuous-backup rules
	// and restores them to a point in time.
	Physical Physical
	Clock    clock.Clock  // default clock.Real{}
	Log      *slog.Logger // default slog.Default()
	Owner    string       // this worker's id; default host-pid-random

	Workers        int                 // jobs run at once by Run; default DefaultWorkers
	Limits         catalog.ClaimLimits // zero: DefaultLimits
	HeartbeatEvery time.Duration       // default DefaultHeartbeatEvery
	StaleAfter     time.Duration       // default DefaultStaleAfter
	MaxAttempts    int                 // default DefaultMaxAttempts
	// Backoff is the wait before attempt n+1 after attempt n failed;
	// default 1 min × 2^(n-1), at most 30 min.
	Backoff       func(attempt int) time.Duration
	Poll          time.Duration // how often Run looks for work; default DefaultPoll
	ShutdownGrace time.Duration // how long Run lets jobs finish after its context ends; default DefaultShutdownGrace
	// LockWait is how long a job waits for a vault held exclusively (by a
	// prune or a lifecycle pass) before the attempt fails and is retried
	// with backoff; default DefaultLockWait.
	LockWait time.Duration
	// OnChange, when set, is called after every job state change the runner
	// makes (notifications hook).
	OnChange func(catalog.Job)

	once sync.Once
}

func (r *Runner) fill() {
	r.once.Do(func() {
		if r.Sources == nil {
			r.Sources = DefaultSources()
		}
		if r.Clock == nil {
			r.Clock = clock.Real{}
		}
		if r.Log == nil {
			r.Log = slog.Default()
		}
		if r.Owner == "" {
			host, _ := os.Hostname()
			var b [3]byte
			_, _ = rand.Read(b[:])
			r.Owner = host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
		}
		if r.Workers <= 0 {
			r.Workers = DefaultWorkers
		}
		if r.Limits == (catalog.ClaimLimits{}) {
			r.Limits = DefaultLimits
		}
		if r.HeartbeatEvery <= 0 {
			r.HeartbeatEvery = DefaultHeartbeatEvery
		}
		if r.StaleAfter <= 0 {
			r.StaleAfter = DefaultStaleAfter
		}
		if r.MaxAttempts <= 0 {
			r.MaxAttempts = DefaultMaxAttempts
		}
		if r.Backoff == nil {
			r.Backoff = func(n int) time.Duration {
				d := time.Minute << max(0, min(n-1, 5))
				return min(d, 30*time.Minute)
			}
		}
		if r.Poll <= 0 {
			r.Poll = DefaultPoll
		}
		if r.ShutdownGrace <= 0 {
			r.ShutdownGrace = DefaultShutdownGrace
		}
		if r.LockWait <= 0 {
			r.LockWait = DefaultLockWait
		}
	})
}

// OwnerID returns the worker id the runner claims jobs under.
func (r *Runner) OwnerID() string { r.fill(); return r.Owner }

// Run claims and runs jobs with Workers goroutines until ctx ends, then
// stops claiming and gives running jobs ShutdownGrace to finish; jobs still
// running after that are cancelled and requeued (PENDING) to run again.
// It recovers stale jobs at start and every StaleAfter/2.
func (r *Runner) Run(ctx context.Context) error {
	r.fill()
	jobCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)
	if _, err := r.RecoverStale(ctx); err != nil {
		r.Log.Warn("recovering stale jobs", "err", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < r.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(r.Poll)
			defer t.Stop()
			for {
				for ctx.Err() == nil {
					ran, err := r.runOne(jobCtx)
					if err != nil {
						r.Log.Warn("job runner", "err", err)
					}
					if !ran || err != nil {
						break
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	staleT := time.NewTicker(max(r.StaleAfter/2, time.Second))
	defer staleT.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-staleT.C:
			if _, err := r.RecoverStale(ctx); err != nil && ctx.Err() == nil {
				r.Log.Warn("recovering stale jobs", "err", err)
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	select {
	case <-done:
	case <-time.After(r.ShutdownGrace):
		r.Log.Info("shutdown grace over; requeueing running jobs")
		cancelJobs(errStop)
		<-done
	}
	return nil
}

// RunOnce claims one job and runs it to its end; it reports whether there
// was a job. Tests and `coffre server --once` drive the runner with it.
func (r *Runner) RunOnce(ctx context.Context) (bool, error) {
	r.fill()
	return r.runOne(ctx)
}

// RecoverStale requeues (or fails, after MaxAttempts) the RUNNING jobs whose
// heartbeat is older than StaleAfter: their worker crashed, was killed, or
// lost the catalog. It returns how many jobs it moved.
func (r *Runner) RecoverStale(ctx context.Context) (int, error) {
	r.fill()
	stale, err := r.Cat.ListStaleRunning(ctx, r.StaleAfter)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range stale {
		why := fmt.Sprintf("worker %s lost (no heartbeat since %s)", j.Owner, j.HeartbeatAt.Format(time.RFC3339))
		var err error
		if j.Attempt >= r.MaxAttempts {
			_, err = r.transition(ctx, j, catalog.StateFailed, catalog.JobUpdate{Message: ptr(why + fmt.Sprintf("; failed after %d attempts", j.Attempt))})
		} else {
			_, err = r.transition(ctx, j, catalog.StatePending, catalog.JobUpdate{Message: ptr(why + "; will run again")})
		}
		if errors.Is(err, catalog.ErrConflict) {
			continue // its worker came back, or another server recovered it first
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func ptr[T any](v T) *T { return &v }

// transition moves j from its current state, audits the change and calls
// OnChange.
func (r *Runner) transition(ctx context.Context, j catalog.Job, to catalog.JobState, u catalog.JobUpdate) (catalog.Job, error) {
	ctx = context.WithoutCancel(ctx) // a job's end is recorded even while shutting down
	nj, err := r.Cat.TransitionJob(ctx, j.ID, j.State, to, u)
	if err != nil {
		return nj, err
	}
	r.audit(ctx, nj, j.State)
	if r.OnChange != nil {
		r.OnChange(nj)
	}
	return nj, nil
}

func (r *Runner) audit(ctx context.Context, j catalog.Job, from catalog.JobState) {
	detail := fmt.Sprintf("%s %s → %s attempt %d", j.Kind, from, j.State, j.Attempt)
	if j.RecoveryPoint != "" {
		detail += " recovery point " + j.RecoveryPoint
	}
	if j.Message != "" {
		detail += ": " + j.Message
	}
	outcome := "ok"
	switch j.State {
	case catalog.StateFailed, catalog.StateExpired, catalog.StateAborted:
		outcome = "error"
	case catalog.StatePartial:
		outcome = "partial"
	}
	_, err := r.Cat.AppendAudit(ctx, catalog.AuditEvent{Actor: "worker:" + r.Owner, Action: "job." + string(j.State),
		Object: "job/" + j.ID, Outcome: outcome, Detail: detail})
	if err != nil {
		r.Log.Error("audit append failed", "job", j.ID, "err", err)
	}
}

// RunJob runs one given PENDING job now, in this process, as its last
// attempt (a failure is final: there may be no server to retry it). The CLI
// uses it when no server is configured.
func (r *Runner) RunJob(ctx context.Context, id string) (catalog.Job, error) {
	r.fill()
	j, err := r.Cat.TransitionJob(ctx, id, catalog.StatePending, catalog.StateRunning, catalog.JobUpdate{Owner: &r.Owner})
	if err != nil {
		return j, err
	}
	if err := r.run(ctx, j, true); err != nil {
		return j, err
	}
	return r.Cat.GetJob(context.WithoutCancel(ctx), id)
}

func (r *Runner) runOne(ctx context.Context) (bool, error) {
	j, err := r.Cat.ClaimJob(ctx, r.Owner, r.Limits)
	if errors.Is(err, catalog.ErrNoJob) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, r.run(ctx, j, false)
}

func (r *Runner) run(ctx context.Context, j catalog.Job, last bool) error {
	r.audit(ctx, j, catalog.StatePending)
	if r.OnChange != nil {
		r.OnChange(j)
	}
	log := r.Log.With("job", j.ID, "kind", j.Kind, "resource", j.Resource, "vault", j.Vault, "attempt", j.Attempt)
	log.Info("job started")

	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hbDone := make(chan struct{})
	go r.heartbeat(jctx, j, cancel, hbDone)
	res, err := r.execute(jctx, j, log)
	cancel(nil)
	<-hbDone
	if cause := context.Cause(jctx); err != nil && cause != nil && cause != context.Canceled && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	return r.finish(ctx, j, res, err, log, last)
}

// heartbeat keeps the claim alive and watches the completion window.
func (r *Runner) heartbeat(ctx context.Context, j catalog.Job, cancel context.CancelCauseFunc, done chan<- struct{}) {
	defer close(done)
	check := time.NewTicker(min(r.HeartbeatEvery, time.Second))
	defer check.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
		}
		if !j.CompleteBy.IsZero() && r.Clock.Now().After(j.CompleteBy) {
			cancel(errWindow)
			return
		}
		if time.Since(last) < r.HeartbeatEvery {
			continue
		}
		last = time.Now()
		err := r.Cat.Heartbeat(ctx, j.ID, r.Owner)
		if errors.Is(err, catalog.ErrConflict) || errors.Is(err, catalog.ErrNotFound) {
			cancel(errLostJob)
			return
		}
		if err != nil && ctx.Err() == nil {
			r.Log.Warn("heartbeat failed", "job", j.ID, "err", err)
		}
	}
}

// result is what a successful run produced.
type result struct {
	state   catalog.JobState
	rp      string
	bytes   int64
	message string
}

func (r *Runner) finish(ctx context.Context, j catalog.Job, res result, err error, log *slog.Logger, last bool) error {
	now := r.Clock.Now()
	var to catalog.JobState
	u := catalog.JobUpdate{}
	switch {
	case err == nil:
		to = res.state
		u.Message, u.RecoveryPoint, u.BytesProcessed = &res.message, &res.rp, &res.bytes
	case errors.Is(err, errLostJob):
		log.Warn("job lost while running; result discarded", "err", err)
		return nil // it is ABORTED or requeued: someone else owns its state now
	case errors.Is(err, errWindow):
		to, u.Message = catalog.StateExpired, ptr(MsgCompletionWindow)
	case errors.Is(err, errStop):
		to, u.Message, u.NotBefore = catalog.StatePending, ptr(MsgShutdown), &now
	case IsPermanent(err):
		to, u.Message = catalog.StateFailed, ptr(err.Error())
	case last:
		to, u.Message = catalog.StateFailed, ptr(err.Error())
	case j.Attempt >= r.MaxAttempts:
		to, u.Message = catalog.StateFailed, ptr(fmt.Sprintf("failed after %d attempts: %v", j.Attempt, err))
	default:
		next := now.Add(r.Backoff(j.Attempt))
		if !j.StartBy.IsZero() && next.After(j.StartBy) {
			to, u.Message = catalog.StateFailed, ptr(fmt.Sprintf("attempt %d failed and the start window closes at %s, before a retry: %v",
				j.Attempt, j.StartBy.Format(time.RFC3339), err))
		} else {
			to, u.Message, u.NotBefore = catalog.StatePending, ptr(fmt.Sprintf("attempt %d failed, retry after %s: %v", j.Attempt, next.Format(time.RFC3339), err)), &next
		}
	}
	nj, terr := r.transition(ctx, j, to, u)
	if errors.Is(terr, catalog.ErrConflict) {
		log.Warn("job changed state while running; result discarded", "err", terr)
		return nil
	}
	if terr != nil {
		return fmt.Errorf("record end of job %s: %w", j.ID, terr)
	}
	log.Info("job ended", "state", nj.State, "message", nj.Message)
	return nil
}

func (r *Runner) execute(ctx context.Context, j catalog.Job, log *slog.Logger) (result, error) {
	v, err := r.Cat.GetVault(ctx, j.Vault)
	if err != nil {
		return result{}, Permanent(err)
	}
	var res catalog.Resource
	if j.Resource != "" {
		if res, err = r.Cat.GetResource(ctx, j.Resource); err != nil {
			return result{}, Permanent(err)
		}
	}
	switch j.Kind {
	case catalog.KindBackup:
		return r.backup(ctx, j, v, res, log)
	case catalog.KindRestore:
		return r.restore(ctx, j, v, res)
	default:
		return result{}, Permanent(fmt.Errorf("job kind %s is not run by this version of coffre", j.Kind))
	}
}

func (r *Runner) source(res catalog.Resource) (Source, error) {
	s, ok := r.Sources[res.Type]
	if !ok {
		return nil, Permanent(fmt.Errorf("resource %s: no adapter for type %q in this coffre", res.ID, res.Type))
	}
	return s, nil
}

// openLocked opens the vault, takes a shared lock, then loads the index.
func (r *Runner) openLocked(ctx context.Context, v catalog.Vault, op string) (*repo.Repository, *repo.Lock, error) {
	rp, err := r.Vaults.Open(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	lock, err := rp.Lock(ctx, false, op)
	for wait := time.Duration(0); errors.Is(err, repo.ErrLocked) && wait < r.LockWait; wait += 250 * time.Millisecond {
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
		if ctx.Err() != nil {
			break
		}
		lock, err = rp.Lock(ctx, false, op)
	}
	if err != nil {
		rp.Close()
		return nil, nil, err
	}
	if err := rp.LoadIndex(ctx); err != nil {
		lock.Unlock()
		rp.Close()
		return nil, nil, err
	}
	return rp, lock, nil
}

func (r *Runner) backup(ctx context.Context, j catalog.Job, v catalog.Vault, res catalog.Resource, log *slog.Logger) (result, error) {
	if j.Resource == "" {
		return result{}, Permanent(errors.New("backup job has no resource"))
	}
	lc, continuous, err := r.lifecycle(ctx, j)
	if err != nil {
		return result{}, err
	}
	var src Source = r.Physical
	if !continuous || res.Type != "postgres" {
		if src, err = r.source(res); err != nil {
			return result{}, err
		}
	}
	rp, lock, err := r.openLocked(ctx, v, "backup job "+j.ID)
	if err != nil {
		return result{}, err
	}
	defer rp.Close()
	defer lock.Unlock()

	var m *snapshot.Manifest
	if j.Attempt > 1 {
		// An earlier attempt may have committed its recovery point and died
		// before recording it: adopt it rather than back up twice.
		if m, err = findJobPoint(ctx, rp, j.ID); err != nil {
			return result{}, err
		}
		if m != nil {
			log.Info("adopting the recovery point an earlier attempt committed", "recovery_point", m.ID.Short())
		}
	}
	if m == nil {
		parent := r.parent(ctx, rp, v.Name, res.ID, log)
		opts := archiver.Options{
			Parent: parent, Resource: res.ID, Lifecycle: lc, Tags: res.Tags,
			BeforeCommit: func(ctx context.Context) error {
				if err := context.Cause(ctx); err != nil {
					return err
				}
				return lock.Check(ctx)
			},
			OnError: func(p string, err error) { log.Warn("file not backed up completely", "path", p, "err", err) },
		}
		if m, err = src.Backup(ctx, rp, res, opts); err != nil {
			return result{}, err
		}
	}
	point := catalog.RecoveryPoint{
		ID: m.ID.String(), Vault: v.Name, Resource: res.ID, CreatedAt: m.Time, Status: m.Status,
		SizeBytes: m.Stats.Bytes, Tier: catalog.TierWarm, MoveToColdAt: m.MoveToColdAt(), DeleteAt: m.DeleteAt(),
		Plan: j.Plan, Rule: j.Rule, JobID: j.ID,
	}
	if err := r.Cat.PutRecoveryPoint(context.WithoutCancel(ctx), point); err != nil {
		return result{}, fmt.Errorf("record recovery point %s: %w", m.ID.Short(), err)
	}
	out := result{state: catalog.StateCompleted, rp: point.ID, bytes: m.Stats.BytesRead}
	s := m.Stats
	out.message = fmt.Sprintf("%d files, %d bytes; %d files read, %d bytes added (%d stored)", s.Files, s.Bytes, s.FilesChanged, s.BytesAdded, s.StoredAdded)
	if m.Status == snapshot.StatusPartial {
		out.state = catalog.StatePartial
		out.message = fmt.Sprintf("%d file(s) could not be read: %v; %s", s.Errors, m.Errors[:min(len(m.Errors), 3)], out.message)
	}
	return out, nil
}

// lifecycle returns what the job's plan rule (or its params, for an
// on-demand backup) says about keeping the point, and whether the rule is a
// continuous-backup rule.
func (r *Runner) lifecycle(ctx context.Context, j catalog.Job) (*snapshot.Lifecycle, bool, error) {
	lc := &snapshot.Lifecycle{Plan: j.Plan, Rule: j.Rule, Job: j.ID}
	continuous := false
	if j.Plan != "" {
		p, err := r.Cat.GetPlan(ctx, j.Plan)
		if err != nil {
			return nil, false, Permanent(fmt.Errorf("plan of job: %w", err))
		}
		found := false
		for _, ru := range p.Rules {
			if ru.Name == j.Rule {
				lc.MoveToColdAfterDays, lc.DeleteAfterDays, found = ru.MoveToColdAfterDays, ru.DeleteAfterDays, true
				continuous = ru.ContinuousBackup
			}
		}
		if !found {
			return nil, false, Permanent(fmt.Errorf("plan %s has no rule %q (changed since the job was created?)", j.Plan, j.Rule))
		}
	}
	for k, dst := range map[string]*int{"delete_after_days": &lc.DeleteAfterDays, "move_to_cold_storage_after_days": &lc.MoveToColdAfterDays} {
		if s, ok := j.Params[k]; ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return nil, false, Permanent(fmt.Errorf("job param %s=%q is not a number of days", k, s))
			}
			*dst = n
		}
	}
	return lc, continuous, nil
}

// parent finds the newest recovery point of the resource in the vault
// through the catalog; any problem only costs a full read.
func (r *Runner) parent(ctx context.Context, rp *repo.Repository, vault, resource string, log *slog.Logger) *snapshot.Manifest {
	pts, err := r.Cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: vault, Resource: resource})
	if err != nil {
		log.Warn("no parent recovery point: catalog", "err", err)
		return nil
	}
	for i := len(pts) - 1; i >= 0; i-- {
		p := pts[i]
		if p.Status != snapshot.StatusCompleted && p.Status != snapshot.StatusPartial {
			continue
		}
		id, err := crypto.ParseID(p.ID)
		if err != nil {
			continue
		}
		m, err := snapshot.Load(ctx, rp, id)
		if err != nil {
			log.Warn("parent recovery point unreadable; reading every file", "recovery_point", p.ID, "err", err)
			return nil
		}
		return m
	}
	return nil
}

func findJobPoint(ctx context.Context, rp *repo.Repository, jobID string) (*snapshot.Manifest, error) {
	ms, _, err := snapshot.LoadAll(ctx, rp)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Lifecycle != nil && m.Lifecycle.Job == jobID {
			return m, nil
		}
	}
	return nil, nil
}

func (r *Runner) restore(ctx context.Context, j catalog.Job, v catalog.Vault, res catalog.Resource) (result, error) {
	if tt := j.Params["to_time"]; tt != "" && res.Type == "postgres" {
		at, err := time.Parse(time.RFC3339, tt)
		if err != nil {
			return result{}, Permanent(fmt.Errorf("restore param to_time=%q: want an RFC 3339 time like 2026-11-25T14:03:00Z", tt))
		}
		rp, lock, err := r.openLocked(ctx, v, "restore job "+j.ID)
		if err != nil {
			return result{}, err
		}
		defer rp.Close()
		defer lock.Unlock()
		msg, err := r.Physical.RestoreToTime(ctx, rp, res, at, j.Params)
		if err != nil {
			return result{}, err
		}
		return result{state: catalog.StateCompleted, message: msg}, nil
	}
	id := j.Params["recovery_point"]
	if id == "" {
		return result{}, Permanent(errors.New("restore job has no recovery_point param"))
	}
	rp, lock, err := r.openLocked(ctx, v, "restore job "+j.ID)
	if err != nil {
		return result{}, err
	}
	defer rp.Close()
	defer lock.Unlock()
	m, err := snapshot.Find(ctx, rp, id)
	if err != nil {
		return result{}, Permanent(err)
	}
	if res.ID == "" {
		res = catalog.Resource{ID: m.Source.Resource, Type: m.Source.Type}
	}
	src, err := r.source(res)
	if err != nil {
		return result{}, err
	}
	msg, err := src.Restore(ctx, rp, res, m, j.Params)
	if err != nil {
		return result{}, err
	}
	return result{state: catalog.StateCompleted, rp: m.ID.String(), bytes: m.Stats.Bytes, message: msg}, nil
}
