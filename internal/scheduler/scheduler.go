// Package scheduler turns backup plans, their rules and selections into BACKUP jobs in the catalog, with AWS Backup start and completion windows, idempotently across ticks and servers.
package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/policy/schedule"
)

// ExpiredMessage is the message of a job expired because it did not start
// within its start window.
const ExpiredMessage = "not started within the start window"

// DefaultMaxFiresPerRule is Options.MaxFiresPerRule when zero.
const DefaultMaxFiresPerRule = 1000

// Options tune a Scheduler.
type Options struct {
	// MaxFiresPerRule caps the fire times one rule may produce in one tick
	// (after a long outage, or with a very frequent rate); 0 means
	// DefaultMaxFiresPerRule. When more fall due, only the latest are
	// scheduled and the skip is reported in Result.Errors.
	MaxFiresPerRule int
}

// Result reports what one Tick did.
type Result struct {
	// Created counts the jobs this tick created, including missed fires
	// created already EXPIRED.
	Created int
	// Existing counts fires whose job already existed (created by an earlier
	// tick or by another server sharing the catalog).
	Existing int
	// Expired counts jobs this tick moved to EXPIRED: missed fires and stale
	// PENDING or CREATED jobs (see ExpireStale).
	Expired int
	// Errors are per-rule or per-job problems (a bad schedule expression or
	// time zone, a catalog error on one job) that did not stop the others.
	Errors []error
}

// Scheduler creates BACKUP jobs for the fire times of backup plan rules.
//
// It remembers, in memory only, the time up to which each rule (plan, rule)
// has been scheduled. A new Scheduler (a restart, or a second server) starts
// each rule from now minus that rule's start window: fires older than that
// could only be created EXPIRED, so a restart does not replay a year of
// schedule, and the fires still inside their start window are (re)derived and
// deduplicated by their deterministic job ids.
type Scheduler struct {
	cat  catalog.Catalog
	clk  clock.Clock
	opts Options

	mu   sync.Mutex
	last map[string]time.Time // rule key → scheduled up to (inclusive)
}

// New returns a Scheduler over cat using clk for the current time.
func New(cat catalog.Catalog, clk clock.Clock, opts Options) *Scheduler {
	if opts.MaxFiresPerRule <= 0 {
		opts.MaxFiresPerRule = DefaultMaxFiresPerRule
	}
	return &Scheduler{cat: cat, clk: clk, opts: opts, last: map[string]time.Time{}}
}

// JobID is the deterministic id of the BACKUP job for one fire time of a plan
// rule on a resource: the first 32 hex digits of the SHA-256 of the four
// values (the fire time as UTC nanoseconds), so every tick and every server
// derives the same id and the catalog refuses the duplicate.
func JobID(plan, rule, resource string, fire time.Time) string {
	h := sha256.New()
	for _, s := range []string{"coffre-backup-job", plan, rule, resource, fire.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Windows returns a rule's start and completion windows, each defaulting to
// schedule.DefaultWindows when zero.
func Windows(r catalog.Rule) schedule.Windows {
	w := schedule.DefaultWindows
	if r.StartWindowMinutes > 0 {
		w.Start = time.Duration(r.StartWindowMinutes) * time.Minute
	}
	if r.CompletionWindowMinutes > 0 {
		w.Completion = time.Duration(r.CompletionWindowMinutes) * time.Minute
	}
	return w
}

func ruleKey(plan, rule string) string { return plan + "\x00" + rule }

// Tick schedules every fire time in (last tick, now] of every rule of every
// plan, for every resource selected by one of the plan's selections (a
// resource selected several times by the same plan gets one job per fire;
// a resource in several plans gets one per plan rule). Each job is created
// CREATED with StartBy = fire + start window and CompleteBy = fire +
// completion window, then moved to PENDING. A fire whose StartBy has already
// passed (is before now) (the scheduler was not ticking, or the clock jumped) is still
// created, so that the missed backup is visible, but moved straight to
// EXPIRED. Tick then runs ExpireStale.
//
// On a rule's first tick, "last tick" is now minus the rule's start window.
// A rule whose schedule or time zone is invalid, or whose jobs hit catalog
// errors, is reported in Result.Errors; a rule with catalog errors is
// retried from the same point on the next tick. The returned error is for
// failures that stop the whole tick (listing plans, selections, resources).
func (s *Scheduler) Tick(ctx context.Context) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res Result
	now := s.clk.Now()

	plans, err := s.cat.ListPlans(ctx)
	if err != nil {
		return res, fmt.Errorf("scheduler: list plans: %w", err)
	}
	sels, err := s.cat.ListSelections(ctx, "")
	if err != nil {
		return res, fmt.Errorf("scheduler: list selections: %w", err)
	}
	resources, err := s.cat.ListResources(ctx, "")
	if err != nil {
		return res, fmt.Errorf("scheduler: list resources: %w", err)
	}
	byPlan := map[string][]catalog.Selection{}
	for _, sel := range sels {
		byPlan[sel.Plan] = append(byPlan[sel.Plan], sel)
	}

	for _, p := range plans {
		selected := selectedResources(byPlan[p.Name], resources)
		for _, r := range p.Rules {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			s.tickRule(ctx, &res, now, p.Name, r, selected)
		}
	}

	n, err := s.ExpireStale(ctx)
	res.Expired += n
	if err != nil {
		res.Errors = append(res.Errors, err)
	}
	return res, nil
}

// selectedResources returns the resources (in catalog order, each once)
// selected by at least one of sels.
func selectedResources(sels []catalog.Selection, resources []catalog.Resource) []catalog.Resource {
	var out []catalog.Resource
	for _, r := range resources {
		for _, sel := range sels {
			if Selects(sel, r) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

func (s *Scheduler) tickRule(ctx context.Context, res *Result, now time.Time, plan string, r catalog.Rule, resources []catalog.Resource) {
	loc, err := time.LoadLocation(r.Timezone) // "" is UTC
	if err != nil {
		res.Errors = append(res.Errors, fmt.Errorf("scheduler: plan %q rule %q: time zone: %w", plan, r.Name, err))
		return
	}
	sched, err := schedule.Parse(r.Schedule, loc)
	if err != nil {
		res.Errors = append(res.Errors, fmt.Errorf("scheduler: plan %q rule %q: %w", plan, r.Name, err))
		return
	}
	w := Windows(r)
	key := ruleKey(plan, r.Name)
	from, ok := s.last[key]
	if !ok {
		from = now.Add(-w.Start)
	}
	if !now.After(from) {
		return // nothing new (or the clock went backwards)
	}

	var fires []time.Time
	skipped := 0
	for t := sched.Next(from); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		if len(fires) == s.opts.MaxFiresPerRule {
			fires = fires[1:]
			skipped++
		}
		fires = append(fires, t)
	}
	if skipped > 0 {
		res.Errors = append(res.Errors, fmt.Errorf("scheduler: plan %q rule %q: %d fire times before %s skipped (more than %d due in one tick)",
			plan, r.Name, skipped, fires[0].UTC().Format(time.RFC3339), s.opts.MaxFiresPerRule))
	}

	failed := false
	for _, fire := range fires {
		for _, rs := range resources {
			if err := s.schedule(ctx, res, now, plan, r, w, rs.ID, fire); err != nil {
				res.Errors = append(res.Errors, err)
				failed = true
			}
		}
	}
	if !failed {
		s.last[key] = now
	}
}

// schedule creates (or finds) the job of one fire on one resource and moves
// it to PENDING, or to EXPIRED when its start window has already passed.
func (s *Scheduler) schedule(ctx context.Context, res *Result, now time.Time, plan string, r catalog.Rule, w schedule.Windows, resource string, fire time.Time) error {
	j := catalog.Job{
		ID:         JobID(plan, r.Name, resource, fire),
		Kind:       catalog.KindBackup,
		State:      catalog.StateCreated,
		Resource:   resource,
		Vault:      r.TargetVault,
		Plan:       plan,
		Rule:       r.Name,
		StartBy:    fire.Add(w.Start),
		CompleteBy: fire.Add(w.Completion),
	}
	created, err := s.cat.CreateJob(ctx, j)
	switch {
	case errors.Is(err, catalog.ErrConflict):
		res.Existing++
		// A crash (or another server) may have left it CREATED: finish the
		// move; losing that race to another server is fine.
		got, gerr := s.cat.GetJob(ctx, j.ID)
		if gerr != nil || got.State != catalog.StateCreated {
			return nil
		}
		created = got
	case err != nil:
		return fmt.Errorf("scheduler: create job %s (plan %q rule %q resource %s at %s): %w", j.ID, plan, r.Name, resource, fire.UTC().Format(time.RFC3339), err)
	default:
		res.Created++
		if err := s.audit(ctx, created, "created for the fire at "+fire.UTC().Format(time.RFC3339)); err != nil {
			return err
		}
	}
	to, u := catalog.StatePending, catalog.JobUpdate{}
	if now.After(created.StartBy) {
		msg := ExpiredMessage
		to, u = catalog.StateExpired, catalog.JobUpdate{Message: &msg}
	}
	moved, err := s.cat.TransitionJob(ctx, created.ID, catalog.StateCreated, to, u)
	switch {
	case err == nil:
		if to == catalog.StateExpired {
			res.Expired++
		}
		return s.audit(ctx, moved, "")
	case errors.Is(err, catalog.ErrConflict):
		// Another server moved it first.
	default:
		return fmt.Errorf("scheduler: job %s: %w", created.ID, err)
	}
	return nil
}

// ExpireStale moves every job (of any kind) that is PENDING or CREATED and
// whose StartBy has passed (is before now; ClaimJob still accepts a job at
// exactly StartBy) to EXPIRED with the message ExpiredMessage, and returns
// how many it moved. Jobs without a start window
// (zero StartBy) are left alone, and so are RUNNING jobs past their
// CompleteBy: the job runner owns running jobs and expires them itself. A job
// another server moved first is skipped silently.
func (s *Scheduler) ExpireStale(ctx context.Context) (int, error) {
	now := s.clk.Now()
	jobs, err := s.cat.ListJobs(ctx, catalog.JobFilter{States: []catalog.JobState{catalog.StateCreated, catalog.StatePending}})
	if err != nil {
		return 0, fmt.Errorf("scheduler: list jobs: %w", err)
	}
	n := 0
	var errs []error
	for _, j := range jobs {
		if j.StartBy.IsZero() || !now.After(j.StartBy) {
			continue
		}
		msg := ExpiredMessage
		moved, err := s.cat.TransitionJob(ctx, j.ID, j.State, catalog.StateExpired, catalog.JobUpdate{Message: &msg})
		switch {
		case err == nil:
			n++
			if err := s.audit(ctx, moved, "from "+string(j.State)); err != nil {
				errs = append(errs, err)
			}
		case errors.Is(err, catalog.ErrConflict):
		default:
			errs = append(errs, fmt.Errorf("scheduler: expire job %s: %w", j.ID, err))
		}
	}
	return n, errors.Join(errs...)
}

// AuditActor is the actor of the audit events the scheduler appends.
const AuditActor = "scheduler"

// audit appends the job state change to the audit chain.
func (s *Scheduler) audit(ctx context.Context, j catalog.Job, detail string) error {
	d := fmt.Sprintf("%s plan %s rule %s resource %s", j.Kind, j.Plan, j.Rule, j.Resource)
	if detail != "" {
		d += ": " + detail
	}
	if j.Message != "" {
		d += ": " + j.Message
	}
	outcome := "ok"
	if j.State == catalog.StateExpired {
		outcome = "error"
	}
	_, err := s.cat.AppendAudit(ctx, catalog.AuditEvent{Actor: AuditActor, Action: "job." + string(j.State), Object: "job/" + j.ID, Outcome: outcome, Detail: d})
	if err != nil {
		return fmt.Errorf("scheduler: audit job %s %s: %w", j.ID, j.State, err)
	}
	return nil
}
