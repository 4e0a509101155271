package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/scheduler"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/pgpitr"
)

// Physical is the Source of PostgreSQL resources selected by a rule with
// continuous backup: each backup job takes a base backup over the
// replication protocol (the WALSupervisor streams the WAL in between), and
// restores go to a point in time (see RestoreToTime).
type Physical struct {
	BinDir string // pg_ctl and pg_controldata; default: found on PATH
}

// Backup implements Source: a base backup.
func (Physical) Backup(ctx context.Context, r *repo.Repository, res catalog.Resource, opts archiver.Options) (*snapshot.Manifest, error) {
	m, err := pgpitr.BaseBackup(ctx, archiver.New(r, opts), conn(res))
	return m, permanentSource(err)
}

// Restore implements Source: the state at the end of the base backup's WAL
// that the vault holds, unless params set "to_time".
func (p Physical) Restore(ctx context.Context, r *repo.Repository, res catalog.Resource, m *snapshot.Manifest, params map[string]string) (string, error) {
	at := m.Time
	if tt := params["to_time"]; tt != "" {
		var err error
		if at, err = time.Parse(time.RFC3339, tt); err != nil {
			return "", Permanent(fmt.Errorf("restore param to_time=%q: want an RFC 3339 time", tt))
		}
	}
	return p.RestoreToTime(ctx, r, res, at, params)
}

// RestoreToTime restores the resource as it was at t into a new data
// directory (param "target.data_dir", absolute) started on a new port
// ("target.port") as the OS user "target.run_as" (default postgres when
// running as root).
func (p Physical) RestoreToTime(ctx context.Context, r *repo.Repository, res catalog.Resource, t time.Time, params map[string]string) (string, error) {
	dir := params["target.data_dir"]
	if dir == "" || !filepath.IsAbs(dir) {
		return "", Permanent(fmt.Errorf("point-in-time restore of %s: target.data_dir %q is not an absolute path", res.ID, dir))
	}
	port, err := strconv.Atoi(params["target.port"])
	if err != nil || port <= 0 || port > 65535 {
		return "", Permanent(fmt.Errorf("point-in-time restore of %s: target.port %q is not a TCP port", res.ID, params["target.port"]))
	}
	runAs := params["target.run_as"]
	if runAs == "" && os.Geteuid() == 0 {
		runAs = "postgres"
	}
	bin, err := p.binDir()
	if err != nil {
		return "", Permanent(err)
	}
	out, err := pgpitr.RestoreToTime(ctx, r, t, pgpitr.RestoreOptions{DataDir: dir, Port: port, RunAs: runAs, BinDir: bin, Resource: res.ID})
	if err != nil {
		if errors.Is(err, pgpitr.ErrWALGap) {
			return "", Permanent(err)
		}
		return "", permanentSource(err)
	}
	reached := "the requested time"
	if !out.TargetReached {
		reached = "the end of the archived WAL (before the requested time: nothing later was committed)"
	}
	return fmt.Sprintf("restored %s to %s, recovered to %s: data directory %s, listening on 127.0.0.1:%d (base %s + %d WAL points)",
		res.ID, t.UTC().Format(time.RFC3339), reached, out.DataDir, out.Port, out.Base.ID.Short(), out.WALPoints), nil
}

// binDir is BinDir, else the directory of pg_ctl on PATH, else the newest
// /usr/lib/postgresql/*/bin (Debian's layout).
func (p Physical) binDir() (string, error) {
	if p.BinDir != "" {
		return p.BinDir, nil
	}
	if path, err := exec.LookPath("pg_controldata"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), "pg_ctl")); err == nil {
			return filepath.Dir(path), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestV := "", -1
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if _, serr := os.Stat(filepath.Join(d, "pg_ctl")); err == nil && serr == nil && v > bestV {
			best, bestV = d, v
		}
	}
	if best == "" {
		return "", errors.New("point-in-time restore needs the PostgreSQL server programs (pg_ctl, pg_controldata): install them or set their directory")
	}
	return best, nil
}

// WALSupervisor keeps one WAL streamer running for every PostgreSQL
// resource that a rule with continuous backup selects, into the rule's
// vault, and registers every WAL point it commits in the catalog (so the
// lifecycle worker expires them with the rule's retention). A streamer
// that stops (server restart, network) is restarted on a later Tick after
// Retry. Several servers may run supervisors on one catalog: PostgreSQL lets
// only one of them stream from a replication slot, the others retry.
//
// Replication slots. A slot nobody streams from makes PostgreSQL keep every
// WAL segment from its restart point on, so the supervisor drops the slots
// it named (Slot) once continuous backup is no longer wanted for their
// resource and vault: when Tick stops a streamer because no rule selects
// the pair any more (rule removed or no longer continuous, selection
// changed, resource or plan deleted, vault changed), it waits for the
// streamer to commit and close its connection, then drops the slot in the
// background (pgpitr.DropSlot; several tries with backoff while the slot is
// still in use or the server is unreachable). No streamer starts for the
// pair until the drop has finished; a Tick that finds the pair wanted again
// meanwhile abandons the drop (the slot holds the WAL since the streamer
// stopped) and the next Tick starts the streamer. Every drop is recorded in the audit
// chain (actor WALAuditActor); a slot that cannot be dropped is logged as
// a warning naming the slot, the server and the SQL to run by hand, and
// recorded in the audit chain with outcome "error". A slot named by the
// resource's "slot" setting belongs to the user: it is left in place with
// a warning. Stop (a shutdown) and streamers that fail (Tick restarts them)
// keep their slot, so no WAL is lost. The first Tick also looks for the
// slots of pairs that had continuous backup (the catalog holds their WAL
// points) and no longer have it, left by a server that was down when
// continuous backup was turned off or that could not drop them, and drops
// those not in use.
type WALSupervisor struct {
	Cat        catalog.Catalog
	Vaults     Vaults
	Log        *slog.Logger  // default slog.Default()
	FlushEvery time.Duration // each streamer's commit period (the RPO); 0: the streamer's default (30 s)
	Retry      time.Duration // wait before restarting a stopped streamer; default 1 minute

	mu       sync.Mutex
	running  map[string]*walRun
	starts   map[string]int
	dropping map[string]context.CancelCauseFunc // pairs whose slot is being dropped: no streamer starts meanwhile
	swept    bool                               // the search for leftover slots ran
	dropCtx  context.Context                    // cancelled by Stop
	dropStop context.CancelFunc
	drops    sync.WaitGroup

	// dropBackoff is the first wait between two tries to drop a slot
	// (doubled after each; default 500 ms); tests shorten it.
	dropBackoff time.Duration
}

// Audit chain entries of the WAL supervisor.
const (
	WALAuditActor      = "wal-supervisor"
	WALAuditActionDrop = "replication-slot.drop"
)

// dropTries is how many times a slot drop is tried (waits of 0.5, 1, 2, 4
// and 8 s between: a WAL sender whose connection closed ends within that).
const dropTries = 6

type walRun struct {
	cancel   context.CancelFunc
	done     chan struct{}
	streamer *pgpitr.WALStreamer
	conn     source.Conn
	slot     string
	ownSlot  bool // slot is Slot(…), not the resource's slot setting

	mu        sync.Mutex // guards err and stoppedAt (not s.mu: Tick waits on done holding s.mu)
	err       error
	stoppedAt time.Time
}

func (run *walRun) stopped() (time.Time, error) {
	run.mu.Lock()
	defer run.mu.Unlock()
	return run.stoppedAt, run.err
}

// WALStatus describes one supervised streamer.
type WALStatus struct {
	Resource, Vault string
	Running         bool
	Err             error // why the last run stopped
	Starts          int   // runs started so far
	Stats           pgpitr.WALStats
}

type walWant struct {
	res        catalog.Resource
	vault      catalog.Vault
	plan, rule string
	deleteDays int
}

func walKey(resource, vault string) string { return resource + "\x00" + vault }

// Slot is the replication slot a supervisor uses for a resource and vault
// (unless the resource's "slot" setting names one).
func Slot(resource, vault string) string {
	sum := sha256.Sum256([]byte(walKey(resource, vault)))
	return "coffre_" + hex.EncodeToString(sum[:8])
}

func (s *WALSupervisor) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// wanted lists the (resource, vault) pairs that need a streamer.
func (s *WALSupervisor) wanted(ctx context.Context) (map[string]walWant, error) {
	plans, err := s.Cat.ListPlans(ctx)
	if err != nil {
		return nil, err
	}
	resources, err := s.Cat.ListResources(ctx, "postgres")
	if err != nil {
		return nil, err
	}
	out := map[string]walWant{}
	for _, p := range plans {
		var sels []catalog.Selection
		for _, r := range p.Rules {
			if !r.ContinuousBackup {
				continue
			}
			if sels == nil {
				if sels, err = s.Cat.ListSelections(ctx, p.Name); err != nil {
					return nil, err
				}
			}
			v, err := s.Cat.GetVault(ctx, r.TargetVault)
			if err != nil {
				return nil, fmt.Errorf("plan %s rule %s: %w", p.Name, r.Name, err)
			}
			for _, res := range resources {
				for _, sel := range sels {
					if scheduler.Selects(sel, res) {
						out[walKey(res.ID, v.Name)] = walWant{res: res, vault: v, plan: p.Name, rule: r.Name, deleteDays: r.DeleteAfterDays}
						break
					}
				}
			}
		}
	}
	return out, nil
}

// Tick starts the streamers that should run and do not (or stopped more
// than Retry ago) and stops those no rule wants any more, then drops their
// slots in the background (see WALSupervisor). The first Tick also starts
// dropping the leftover slots it finds.
func (s *WALSupervisor) Tick(ctx context.Context) error {
	want, err := s.wanted(ctx)
	if err != nil {
		return fmt.Errorf("WAL supervisor: %w", err)
	}
	retry := s.Retry
	if retry <= 0 {
		retry = time.Minute
	}
	s.mu.Lock()
	sweep := !s.swept
	s.swept = true
	s.mu.Unlock()
	var leftovers []slotDrop
	if sweep {
		var err error
		if leftovers, err = s.leftovers(ctx, want); err != nil {
			s.log().Warn("could not look for leftover replication slots; trying again at the next tick", "err", err)
			s.mu.Lock()
			s.swept = false
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		s.running = map[string]*walRun{}
	}
	for k, run := range s.running {
		if _, ok := want[k]; !ok {
			run.cancel()
			<-run.done
			delete(s.running, k)
			s.release(k, run)
		}
	}
	for _, d := range leftovers {
		if _, dropping := s.dropping[d.key]; s.running[d.key] == nil && !dropping {
			s.startDrop(d)
		}
	}
	for k, w := range want {
		if abandon, ok := s.dropping[k]; ok {
			abandon(errWantedAgain) // start once the drop has returned
			continue
		}
		if run, ok := s.running[k]; ok {
			select {
			case <-run.done:
				if at, _ := run.stopped(); time.Since(at) < retry {
					continue
				}
			default:
				continue // running
			}
		}
		s.running[k] = s.start(ctx, w)
		if s.starts == nil {
			s.starts = map[string]int{}
		}
		s.starts[k]++
	}
	return nil
}

func (s *WALSupervisor) start(ctx context.Context, w walWant) *walRun {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	run := &walRun{cancel: cancel, done: make(chan struct{})}
	log := s.log().With("resource", w.res.ID, "vault", w.vault.Name)
	c := conn(w.res)
	slot := c.Settings["slot"]
	if slot == "" {
		slot = Slot(w.res.ID, w.vault.Name)
		run.ownSlot = true
	}
	run.conn, run.slot = c, slot
	run.streamer = &pgpitr.WALStreamer{Conn: c, Slot: slot, FlushEvery: s.FlushEvery, Log: log,
		Lifecycle: &snapshot.Lifecycle{Plan: w.plan, Rule: w.rule, DeleteAfterDays: w.deleteDays},
		OnCommit: func(m *snapshot.Manifest) error {
			return s.Cat.PutRecoveryPoint(context.WithoutCancel(ctx), catalog.RecoveryPoint{
				ID: m.ID.String(), Vault: w.vault.Name, Resource: w.res.ID, CreatedAt: m.Time, Status: m.Status,
				SizeBytes: m.Stats.Bytes, Tier: catalog.TierWarm, DeleteAt: m.DeleteAt(), Plan: w.plan, Rule: w.rule,
			})
		}}
	if err := s.initialBase(ctx, w); err != nil {
		log.Warn("could not queue the initial base backup", "err", err)
	}
	go func() {
		defer close(run.done)
		err := s.stream(ctx, w, run.streamer)
		if ctx.Err() == nil {
			log.Warn("WAL streamer stopped; it will be restarted", "err", err)
		}
		run.mu.Lock()
		run.err, run.stoppedAt = err, time.Now()
		run.mu.Unlock()
	}()
	log.Info("WAL streamer started", "slot", slot)
	return run
}

// InitialBaseFire is the fire time of the initial base backup job's
// deterministic id (scheduler.JobID), shared by every server.
var InitialBaseFire = time.Unix(0, 0).UTC()

// initialBase queues a base backup of the resource when its vault has none
// for this rule yet, as AWS Backup takes a full backup when continuous
// backup starts: WAL alone restores nothing. Its id is deterministic, so
// servers starting together queue one.
func (s *WALSupervisor) initialBase(ctx context.Context, w walWant) error {
	pts, err := s.Cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: w.vault.Name, Resource: w.res.ID})
	if err != nil {
		return err
	}
	for _, p := range pts {
		if p.Rule == w.rule && p.JobID != "" {
			return nil // a base backup exists (WAL points have no job)
		}
	}
	_, err = s.Cat.CreateJob(ctx, catalog.Job{ID: scheduler.JobID(w.plan, w.rule, w.res.ID, InitialBaseFire), Kind: catalog.KindBackup,
		State: catalog.StatePending, Resource: w.res.ID, Vault: w.vault.Name, Plan: w.plan, Rule: w.rule})
	if errors.Is(err, catalog.ErrConflict) {
		return nil
	}
	return err
}

func (s *WALSupervisor) stream(ctx context.Context, w walWant, st *pgpitr.WALStreamer) error {
	r, err := s.Vaults.Open(ctx, w.vault)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	st.Repo = r
	return st.Run(ctx)
}

// Status reports every supervised streamer.
func (s *WALSupervisor) Status() []WALStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []WALStatus
	for k, run := range s.running {
		res, vault, _ := strings.Cut(k, "\x00")
		_, err := run.stopped()
		st := WALStatus{Resource: res, Vault: vault, Err: err, Starts: s.starts[k], Stats: run.streamer.Stats()}
		select {
		case <-run.done:
		default:
			st.Running = true
		}
		out = append(out, st)
	}
	return out
}

// Stop stops every streamer (each commits what it received) and waits. It
// keeps their replication slots (the next start resumes from them) and
// cancels the slot drops in progress (the first Tick of the next start
// looks for those slots again).
func (s *WALSupervisor) Stop() {
	s.mu.Lock()
	runs := s.running
	s.running = nil
	stopDrops := s.dropStop
	s.dropCtx, s.dropStop = nil, nil
	s.mu.Unlock()
	if stopDrops != nil {
		stopDrops()
	}
	for _, run := range runs {
		run.cancel()
	}
	for _, run := range runs {
		<-run.done
	}
	s.drops.Wait()
}

// slotDrop is a replication slot to drop.
type slotDrop struct {
	key    string // walKey of the pair
	conn   source.Conn
	slot   string
	vault  string
	reason string
	// leftover: found by sweep, not left by a streamer this supervisor
	// stopped; the slot may well not exist.
	leftover bool
}

// release lets go of the slot of a streamer Tick stopped because no rule
// wants it any more (s.mu held; the streamer has returned).
func (s *WALSupervisor) release(k string, run *walRun) {
	_, vault, _ := strings.Cut(k, "\x00")
	if !run.ownSlot {
		s.log().Warn("continuous backup stopped; the replication slot named by the resource's slot setting is left in place: "+
			"PostgreSQL keeps every WAL segment for it until it is used again or dropped",
			"resource", run.conn.Resource, "vault", vault, "slot", run.slot, "server", pgpitr.ServerAddr(run.conn),
			"sql", dropSQL(run.slot))
		return
	}
	s.startDrop(slotDrop{key: k, conn: run.conn, slot: run.slot, vault: vault, reason: "continuous backup is no longer wanted for this resource and vault"})
}

// errWantedAgain abandons the drop of a slot whose pair has continuous
// backup again.
var errWantedAgain = errors.New("continuous backup is wanted again for this resource and vault")

// startDrop drops d's slot in the background (s.mu held).
func (s *WALSupervisor) startDrop(d slotDrop) {
	if s.dropping == nil {
		s.dropping = map[string]context.CancelCauseFunc{}
	}
	if s.dropCtx == nil {
		s.dropCtx, s.dropStop = context.WithCancel(context.Background())
	}
	ctx, cancel := context.WithCancelCause(s.dropCtx)
	s.dropping[d.key] = cancel
	s.drops.Add(1)
	go func() {
		defer s.drops.Done()
		s.drop(ctx, d)
		s.mu.Lock()
		delete(s.dropping, d.key)
		s.mu.Unlock()
		cancel(nil)
	}()
}

func dropSQL(slot string) string {
	return "SELECT pg_drop_replication_slot('" + slot + "');"
}

// drop drops d's slot, trying again with backoff while it is in use or the
// server cannot be reached, and logs and audits the outcome.
func (s *WALSupervisor) drop(ctx context.Context, d slotDrop) {
	server := pgpitr.ServerAddr(d.conn)
	log := s.log().With("resource", d.conn.Resource, "vault", d.vault, "slot", d.slot, "server", server)
	wait := s.dropBackoff
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	var err error
	for try := 1; ; try++ {
		var existed bool
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		existed, err = pgpitr.DropSlot(actx, d.conn, d.slot)
		cancel()
		if err == nil {
			switch {
			case existed:
				log.Info("replication slot dropped", "reason", d.reason)
				s.audit(ctx, d, "ok", fmt.Sprintf("dropped replication slot %s at %s: %s", d.slot, server, d.reason))
			case d.leftover:
				log.Debug("no leftover replication slot")
			default:
				log.Info("replication slot already dropped (by another server?)")
			}
			return
		}
		if try == dropTries || ctx.Err() != nil || errors.Is(err, source.ErrAuth) || errors.Is(err, source.ErrSettings) {
			break
		}
		log.Debug("could not drop the replication slot yet; trying again", "try", try, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	if errors.Is(context.Cause(ctx), errWantedAgain) {
		log.Info("replication slot kept: continuous backup is wanted again before it could be dropped", "err", err)
		return
	}
	why := "could not drop the replication slot"
	if ctx.Err() != nil {
		why += " before coffre stopped (its next start looks for it if the catalog holds WAL points of the pair)"
	}
	if d.leftover && !errors.Is(err, pgpitr.ErrSlotActive) {
		// Whether the slot exists is unknown: no audit entry at every start.
		log.Warn(why+" that continuous backup may have left: if it exists, PostgreSQL keeps every WAL segment for it; drop it by hand",
			"reason", d.reason, "sql", dropSQL(d.slot), "err", err)
		return
	}
	log.Warn(why+": PostgreSQL keeps every WAL segment for it until it is dropped; drop it by hand",
		"reason", d.reason, "sql", dropSQL(d.slot), "err", err)
	s.audit(ctx, d, "error", fmt.Sprintf("could not drop replication slot %s at %s (%s): %v; run on that server: %s",
		d.slot, server, d.reason, err, dropSQL(d.slot)))
}

func (s *WALSupervisor) audit(ctx context.Context, d slotDrop, outcome, detail string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err := s.Cat.AppendAudit(actx, catalog.AuditEvent{Actor: WALAuditActor, Action: WALAuditActionDrop,
		Object: d.conn.Resource + "/" + d.slot, Outcome: outcome, Detail: detail})
	if err != nil {
		s.log().Error("audit append failed", "resource", d.conn.Resource, "slot", d.slot, "err", err)
	}
}

// leftovers lists the slots (named by Slot) of the resource and vault
// pairs that had continuous backup, as their WAL points in the catalog
// show, and no longer have it. Such a slot is left when continuous backup
// was turned off while no supervisor ran, or when its drop failed; most
// often it no longer exists.
func (s *WALSupervisor) leftovers(ctx context.Context, want map[string]walWant) ([]slotDrop, error) {
	resources, err := s.Cat.ListResources(ctx, "postgres")
	if err != nil {
		return nil, err
	}
	var out []slotDrop
	for _, res := range resources {
		if res.Settings["slot"] != "" {
			continue // the user's slot
		}
		pts, err := s.Cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Resource: res.ID})
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, p := range pts {
			k := walKey(res.ID, p.Vault)
			if p.JobID != "" || p.Rule == "" || seen[k] {
				continue // base backups come from jobs; WAL points have none
			}
			seen[k] = true
			if _, ok := want[k]; !ok {
				out = append(out, slotDrop{key: k, conn: conn(res), slot: Slot(res.ID, p.Vault), vault: p.Vault, leftover: true,
					reason: "the catalog holds WAL points of this resource and vault, which no longer have continuous backup"})
			}
		}
	}
	return out, nil
}
