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
type WALSupervisor struct {
	Cat        catalog.Catalog
	Vaults     Vaults
	Log        *slog.Logger  // default slog.Default()
	FlushEvery time.Duration // each streamer's commit period (the RPO); 0: the streamer's default (30 s)
	Retry      time.Duration // wait before restarting a stopped streamer; default 1 minute

	mu      sync.Mutex
	running map[string]*walRun
	starts  map[string]int
}

type walRun struct {
	cancel   context.CancelFunc
	done     chan struct{}
	streamer *pgpitr.WALStreamer

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
// than Retry ago) and stops those no rule wants any more.
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
	defer s.mu.Unlock()
	if s.running == nil {
		s.running = map[string]*walRun{}
	}
	for k, run := range s.running {
		if _, ok := want[k]; !ok {
			run.cancel()
			<-run.done
			delete(s.running, k)
		}
	}
	for k, w := range want {
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
	}
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

// Stop stops every streamer (each commits what it received) and waits.
func (s *WALSupervisor) Stop() {
	s.mu.Lock()
	runs := s.running
	s.running = nil
	s.mu.Unlock()
	for _, run := range runs {
		run.cancel()
	}
	for _, run := range runs {
		<-run.done
	}
}
