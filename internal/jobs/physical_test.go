package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/scheduler"
	"github.com/coffre/coffre/internal/source/pgpitr"
	"github.com/coffre/coffre/internal/testutil"
)

// TestContinuousBackupAndPointInTimeRestoreJobs drives PITR through the
// control plane: a plan rule with continuous backup makes the supervisor
// stream the WAL and registers its points; the rule's backup job takes a
// base backup; a restore job with to_time brings up a new server holding
// exactly the rows committed before that time.
func TestContinuousBackupAndPointInTimeRestoreJobs(t *testing.T) {
	srv := pgpitr.StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL); GRANT SELECT ON items TO "+srv.User)
	insert := func(set string, from, to int) {
		t.Helper()
		if _, err := db.Exec(ctx, "INSERT INTO items SELECT g, $1 FROM generate_series($2::int, $3::int) g", set, from, to); err != nil {
			t.Fatal(err)
		}
	}
	insert("A", 1, 100)

	e := newEnv(t)
	e.vaults.Clock = clock.Real{} // base backup and WAL times are compared with the server's clock
	res := catalog.Resource{ID: "arn:aws:rds:eu-west-1:123456789012:db:accessweaver-prod", Type: "postgres", Settings: map[string]string{
		"host": "127.0.0.1", "port": strconv.Itoa(srv.Port), "user": srv.User, "password": "env:" + srv.PwEnv,
		"sslmode": "disable", "database": "postgres"}}
	must(t, e.cat.PutResource(ctx, res))
	must(t, e.cat.PutPlan(ctx, catalog.Plan{Name: "prod-hourly", Rules: []catalog.Rule{{Name: "continuous", Schedule: "cron(0 3 * * ? *)",
		TargetVault: e.vault.Name, DeleteAfterDays: 35, ContinuousBackup: true}}}))
	must(t, e.cat.PutSelection(ctx, catalog.Selection{Name: "prod-hourly/rds", Plan: "prod-hourly", Resources: []string{"arn:aws:rds:*"}}))

	sup := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, FlushEvery: 200 * time.Millisecond}
	t.Cleanup(sup.Stop)
	must(t, sup.Tick(ctx))
	if st := sup.Status(); len(st) != 1 || st[0].Resource != res.ID || st[0].Vault != e.vault.Name {
		t.Fatalf("supervisor status %+v", st)
	}

	// Starting continuous backup queued the initial base backup, once.
	initial := scheduler.JobID("prod-hourly", "continuous", res.ID, InitialBaseFire)
	if j, err := e.cat.GetJob(ctx, initial); err != nil || j.State != catalog.StatePending || j.Plan != "prod-hourly" {
		t.Fatalf("initial base backup job: %+v, %v", j, err)
	}
	e.runOnce()
	if got := e.get(initial); got.State != catalog.StateCompleted || got.RecoveryPoint == "" {
		t.Fatalf("base backup job: %+v", got)
	}

	insert("B", 101, 200)
	time.Sleep(1100 * time.Millisecond) // recovery targets are wall-clock times: a clear second on each side of T
	var target time.Time
	must(t, db.QueryRow(ctx, "SELECT now()").Scan(&target))
	time.Sleep(1100 * time.Millisecond)
	insert("C", 201, 300)
	var lsn string
	must(t, db.QueryRow(ctx, "SELECT pg_switch_wal()::text").Scan(&lsn))
	end, err := pgpitr.ParseLSN(lsn)
	must(t, err)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := sup.Status()
		if len(st) == 1 && st[0].Stats.ArchivedLSN >= end && !st[0].Stats.CoveredUntil.Before(target) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL not archived past %s within 60 s: %+v", end, st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// WAL points are in the catalog with the rule's retention.
	pts, err := e.cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: e.vault.Name, Resource: res.ID})
	must(t, err)
	wal := 0
	for _, p := range pts {
		if p.Rule == "continuous" && p.JobID == "" {
			wal++
			if !p.DeleteAt.Equal(p.CreatedAt.Add(35 * 24 * time.Hour)) {
				t.Fatalf("WAL point %s deletes at %s, want created+35d", p.ID[:8], p.DeleteAt)
			}
		}
	}
	if wal == 0 {
		t.Fatalf("no WAL point registered in the catalog: %+v", pts)
	}

	dir := pgpitr.OwnedTempDir(t)
	dataDir := filepath.Join(dir, "restored")
	pgpitr.StopRestored(t, dataDir)
	port := testutil.FreePort(t)
	rj := e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{
		"to_time": target.UTC().Format(time.RFC3339Nano), "target.data_dir": dataDir, "target.port": strconv.Itoa(port)}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateCompleted || !strings.Contains(rj.Message, "recovered to the requested time") {
		t.Fatalf("point-in-time restore job: %+v", rj)
	}
	// The restored server listens on 127.0.0.1 only, with the source's roles.
	rc, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable", port, srv.User, srv.Password))
	must(t, err)
	defer rc.Close(ctx)
	var sets string
	var n int
	must(t, rc.QueryRow(ctx, "SELECT string_agg(DISTINCT set, ',' ORDER BY set), count(*) FROM items").Scan(&sets, &n))
	if sets != "A,B" || n != 200 {
		t.Fatalf("restored to %s: sets %q, %d rows; want A,B and 200 rows", target, sets, n)
	}

	// A rule that stops being continuous stops its streamer.
	must(t, e.cat.PutPlan(ctx, catalog.Plan{Name: "prod-hourly", Rules: []catalog.Rule{{Name: "continuous", Schedule: "cron(0 3 * * ? *)",
		TargetVault: e.vault.Name, DeleteAfterDays: 35}}}))
	must(t, sup.Tick(ctx))
	if st := sup.Status(); len(st) != 0 {
		t.Fatalf("streamers after the rule stopped being continuous: %+v", st)
	}

	// A restore job into a directory that is not new fails at once.
	rj = e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{
		"to_time": target.UTC().Format(time.RFC3339), "target.data_dir": "relative/dir", "target.port": "5999"}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateFailed || rj.Attempt != 1 || !strings.Contains(rj.Message, "not an absolute path") {
		t.Fatalf("restore into a relative directory: %+v", rj)
	}
}

// TestWALSupervisorRestartsStoppedStreamers checks the supervisor against an
// endpoint where nothing listens: the streamer stops with an error, is not
// restarted before Retry, and is after it.
func TestWALSupervisorRestartsStoppedStreamers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := testutil.FreePort(t)
	res := catalog.Resource{ID: "pg-down", Type: "postgres", Settings: map[string]string{"host": "127.0.0.1", "port": strconv.Itoa(port), "user": "x", "database": "postgres", "sslmode": "disable"}}
	must(t, e.cat.PutResource(ctx, res))
	must(t, e.cat.PutPlan(ctx, catalog.Plan{Name: "p", Rules: []catalog.Rule{{Name: "c", Schedule: "rate(1 hour)", TargetVault: e.vault.Name, ContinuousBackup: true}}}))
	must(t, e.cat.PutSelection(ctx, catalog.Selection{Name: "p/s", Plan: "p", Resources: []string{"pg-down"}}))
	sup := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, Retry: time.Hour}
	t.Cleanup(sup.Stop)
	must(t, sup.Tick(ctx))
	waitStopped := func() WALStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := sup.Status()
			if len(st) == 1 && !st[0].Running && st[0].Err != nil {
				return st[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("streamer did not stop on an unreachable server: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first := waitStopped()
	if !strings.Contains(first.Err.Error(), strconv.Itoa(port)) {
		t.Fatalf("streamer error %v does not name the server", first.Err)
	}
	if first.Starts != 1 {
		t.Fatalf("starts %d, want 1", first.Starts)
	}
	must(t, sup.Tick(ctx)) // before Retry: left stopped
	if st := sup.Status(); st[0].Running || st[0].Err == nil || st[0].Starts != 1 {
		t.Fatalf("restarted before Retry: %+v", st)
	}
	sup.Retry = time.Nanosecond
	must(t, sup.Tick(ctx)) // after Retry: a new run (it fails again)
	if st := sup.Status(); len(st) != 1 || st[0].Starts != 2 {
		t.Fatalf("after Retry: %+v", st)
	}
	waitStopped()
}

// logBuffer collects a supervisor's log lines.
type logBuffer struct{ testutil.LockedBuffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// slotAudit returns the audit chain's slot drop entries.
func slotAudit(t *testing.T, cat catalog.Catalog) []catalog.AuditEvent {
	t.Helper()
	evs, err := cat.ListAudit(context.Background(), catalog.AuditFilter{})
	must(t, err)
	var out []catalog.AuditEvent
	for _, e := range evs {
		if e.Actor == WALAuditActor && e.Action == WALAuditActionDrop {
			out = append(out, e)
		}
	}
	return out
}

// continuousRule makes plan "p" back up the resources its selection "p/s"
// picks (res.ID) continuously into the env's vault, or not.
func continuousRule(t *testing.T, e *env, continuous bool) {
	t.Helper()
	must(t, e.cat.PutPlan(context.Background(), catalog.Plan{Name: "p", Rules: []catalog.Rule{{Name: "c", Schedule: "rate(1 hour)",
		TargetVault: e.vault.Name, DeleteAfterDays: 7, ContinuousBackup: continuous}}}))
}

// TestWALSupervisorReplicationSlots checks, on one PostgreSQL server, that
// the supervisor drops the slot it named when continuous backup stops
// being wanted (rule no longer continuous, resource deleted), leaves a slot
// the resource's settings name, keeps its slot across a failed streamer and
// a shutdown, and drops at start the slot of a pair that lost continuous
// backup while no supervisor ran.
func TestWALSupervisorReplicationSlots(t *testing.T) {
	srv := pgpitr.StartTestServer(t, "max_replication_slots = 10", "max_wal_senders = 10")
	db := srv.Super(t)
	ctx := context.Background()
	slotState := func(t *testing.T, slot string) (exists, active bool) {
		t.Helper()
		err := db.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, false
		}
		must(t, err)
		return true, active
	}
	waitSlot := func(t *testing.T, slot string, wantActive bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if exists, active := slotState(t, slot); exists && active == wantActive {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("slot %s not there with active=%v within 30 s", slot, wantActive)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// setup makes a resource of that server (settings added) selected by a
	// continuous rule, and a supervisor logging to the returned buffer.
	setup := func(t *testing.T, id string, extra map[string]string) (*env, catalog.Resource, *WALSupervisor, *logBuffer) {
		t.Helper()
		e := newEnv(t)
		res := catalog.Resource{ID: id, Type: "postgres", Settings: map[string]string{"host": "127.0.0.1", "port": strconv.Itoa(srv.Port),
			"user": srv.User, "password": "env:" + srv.PwEnv, "sslmode": "disable"}}
		for k, v := range extra {
			res.Settings[k] = v
		}
		must(t, e.cat.PutResource(ctx, res))
		continuousRule(t, e, true)
		must(t, e.cat.PutSelection(ctx, catalog.Selection{Name: "p/s", Plan: "p", Resources: []string{id}}))
		logs := &logBuffer{}
		sup := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, FlushEvery: 200 * time.Millisecond, Log: logs.logger(), dropBackoff: 50 * time.Millisecond}
		t.Cleanup(sup.Stop)
		return e, res, sup, logs
	}

	t.Run("dropped when continuous backup stops", func(t *testing.T) {
		e, res, sup, logs := setup(t, "pg-dropped", nil)
		slot := Slot(res.ID, e.vault.Name)
		must(t, sup.Tick(ctx))
		waitSlot(t, slot, true)

		continuousRule(t, e, false)
		must(t, sup.Tick(ctx))
		if st := sup.Status(); len(st) != 0 {
			t.Fatalf("streamers after the rule stopped being continuous: %+v", st)
		}
		sup.drops.Wait()
		if exists, _ := slotState(t, slot); exists {
			t.Fatalf("slot %s still exists after continuous backup was turned off; log:\n%s", slot, logs)
		}
		if !strings.Contains(logs.String(), "replication slot dropped") {
			t.Fatalf("drop not logged:\n%s", logs)
		}
		ev := slotAudit(t, e.cat)
		if len(ev) != 1 || ev[0].Outcome != "ok" || ev[0].Object != res.ID+"/"+slot || !strings.Contains(ev[0].Detail, "127.0.0.1:"+strconv.Itoa(srv.Port)) {
			t.Fatalf("audit entries of the drop: %+v", ev)
		}

		// Continuous again: a new slot; then the resource is deleted.
		continuousRule(t, e, true)
		must(t, sup.Tick(ctx))
		waitSlot(t, slot, true)
		must(t, e.cat.DeleteResource(ctx, res.ID))
		must(t, sup.Tick(ctx))
		sup.drops.Wait()
		if exists, _ := slotState(t, slot); exists {
			t.Fatalf("slot %s still exists after its resource was deleted; log:\n%s", slot, logs)
		}
		if ev := slotAudit(t, e.cat); len(ev) != 2 || ev[1].Outcome != "ok" {
			t.Fatalf("audit entries of the drops: %+v", ev)
		}
	})

	t.Run("user-named slot left in place", func(t *testing.T) {
		e, res, sup, logs := setup(t, "pg-user-slot", map[string]string{"slot": "users_own_slot"})
		must(t, sup.Tick(ctx))
		waitSlot(t, "users_own_slot", true)
		must(t, e.cat.DeleteSelection(ctx, "p/s")) // the resource is no longer selected
		must(t, sup.Tick(ctx))
		sup.drops.Wait()
		if st := sup.Status(); len(st) != 0 {
			t.Fatalf("streamers after the resource was deselected: %+v", st)
		}
		waitSlot(t, "users_own_slot", false)
		if exists, _ := slotState(t, Slot(res.ID, e.vault.Name)); exists {
			t.Fatal("a coffre-named slot was created for a resource with a slot setting")
		}
		if l := logs.String(); !strings.Contains(l, "left in place") || !strings.Contains(l, "users_own_slot") ||
			!strings.Contains(l, "pg_drop_replication_slot('users_own_slot')") {
			t.Fatalf("no warning that the user's slot is left in place:\n%s", l)
		}
		if ev := slotAudit(t, e.cat); len(ev) != 0 {
			t.Fatalf("audit entries of drops: %+v", ev)
		}
	})

	t.Run("kept across a failure and a shutdown", func(t *testing.T) {
		e, res, sup, logs := setup(t, "pg-kept", nil)
		slot := Slot(res.ID, e.vault.Name)
		sup.Retry = time.Hour
		must(t, sup.Tick(ctx))
		waitSlot(t, slot, true)
		// The server ends the streamer's connection: a transient failure.
		_, err := db.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", slot)
		must(t, err)
		deadline := time.Now().Add(30 * time.Second)
		for st := sup.Status(); len(st) != 1 || st[0].Running; st = sup.Status() {
			if time.Now().After(deadline) {
				t.Fatalf("streamer did not stop when its connection was terminated: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
		must(t, sup.Tick(ctx)) // before Retry: stays stopped
		sup.drops.Wait()
		waitSlot(t, slot, false)
		sup.Retry = time.Nanosecond
		must(t, sup.Tick(ctx))
		waitSlot(t, slot, true)
		sup.Stop() // a server shutdown
		waitSlot(t, slot, false)

		// A new supervisor resumes from the slot, which it leaves alone.
		sup2 := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, FlushEvery: 200 * time.Millisecond, Log: logs.logger()}
		t.Cleanup(sup2.Stop)
		must(t, sup2.Tick(ctx))
		waitSlot(t, slot, true)
		sup2.Stop()
		waitSlot(t, slot, false)
		if ev := slotAudit(t, e.cat); len(ev) != 0 {
			t.Fatalf("audit entries of drops: %+v", ev)
		}
		_, err = db.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
		must(t, err)
	})

	t.Run("leftover slot dropped at start", func(t *testing.T) {
		e, res, sup, logs := setup(t, "pg-leftover", nil)
		slot := Slot(res.ID, e.vault.Name)
		must(t, sup.Tick(ctx))
		waitSlot(t, slot, true)
		srv.Exec(t, "CREATE TABLE leftover (id int)") // WAL, for a WAL point in the catalog
		deadline := time.Now().Add(30 * time.Second)
		for st := sup.Status(); len(st) != 1 || st[0].Stats.Points == 0; st = sup.Status() {
			if time.Now().After(deadline) {
				t.Fatalf("no WAL point committed: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		sup.Stop()
		waitSlot(t, slot, false)

		// Turned off while no supervisor runs: the next one drops the slot.
		continuousRule(t, e, false)
		sup2 := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, Log: logs.logger(), dropBackoff: 50 * time.Millisecond}
		t.Cleanup(sup2.Stop)
		must(t, sup2.Tick(ctx))
		sup2.drops.Wait()
		if exists, _ := slotState(t, slot); exists {
			t.Fatalf("leftover slot %s not dropped at start; log:\n%s", slot, logs)
		}
		if ev := slotAudit(t, e.cat); len(ev) != 1 || ev[0].Outcome != "ok" || !strings.Contains(ev[0].Detail, "WAL points") {
			t.Fatalf("audit entries of the drop: %+v", ev)
		}
		// Once gone, a later start finds nothing and says nothing above debug.
		logs2 := &logBuffer{}
		sup3 := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, Log: slog.New(slog.NewTextHandler(logs2, nil))}
		t.Cleanup(sup3.Stop)
		must(t, sup3.Tick(ctx))
		sup3.drops.Wait()
		if logs2.String() != "" || len(slotAudit(t, e.cat)) != 1 {
			t.Fatalf("second start: log %q, audit %+v", logs2, slotAudit(t, e.cat))
		}
	})
}

// TestWALSupervisorReportsSlotItCannotDrop turns continuous backup off for
// a resource whose server cannot be reached: the drop is tried six times,
// then a warning names the slot, the server and the SQL to run, and the
// audit chain records the failure. Turned off and on again while the drop
// is being tried, the drop is abandoned (the slot holds the WAL) and no
// streamer starts until it has returned.
func TestWALSupervisorReportsSlotItCannotDrop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := testutil.FreePort(t)
	res := catalog.Resource{ID: "pg-gone", Type: "postgres", Settings: map[string]string{"host": "127.0.0.1", "port": strconv.Itoa(port), "user": "x", "sslmode": "disable"}}
	must(t, e.cat.PutResource(ctx, res))
	continuousRule(t, e, true)
	must(t, e.cat.PutSelection(ctx, catalog.Selection{Name: "p/s", Plan: "p", Resources: []string{res.ID}}))
	logs := &logBuffer{}
	sup := &WALSupervisor{Cat: e.cat, Vaults: e.vaults, Retry: time.Nanosecond, Log: logs.logger(), dropBackoff: 100 * time.Millisecond}
	t.Cleanup(sup.Stop)
	must(t, sup.Tick(ctx))

	continuousRule(t, e, false)
	must(t, sup.Tick(ctx))
	sup.drops.Wait()
	slot := Slot(res.ID, e.vault.Name)
	sql := "SELECT pg_drop_replication_slot('" + slot + "');"
	server := "127.0.0.1:" + strconv.Itoa(port)
	out := logs.String()
	if n := strings.Count(out, "could not drop the replication slot yet"); n != dropTries-1 {
		t.Fatalf("%d retries, want %d:\n%s", n, dropTries-1, out)
	}
	if !strings.Contains(out, "level=WARN msg=\"could not drop the replication slot:") || !strings.Contains(out, slot) ||
		!strings.Contains(out, server) || !strings.Contains(out, sql) {
		t.Fatalf("no warning naming the slot, the server and the SQL:\n%s", out)
	}
	ev := slotAudit(t, e.cat)
	if len(ev) != 1 || ev[0].Outcome != "error" || !strings.Contains(ev[0].Detail, sql) || !strings.Contains(ev[0].Detail, server) {
		t.Fatalf("audit entries of the failed drop: %+v", ev)
	}

	continuousRule(t, e, true)
	must(t, sup.Tick(ctx))
	if st := sup.Status(); len(st) != 1 || st[0].Starts != 2 {
		t.Fatalf("continuous again: %+v", st)
	}
	continuousRule(t, e, false)
	must(t, sup.Tick(ctx)) // the drop starts, and fails
	continuousRule(t, e, true)
	must(t, sup.Tick(ctx)) // wanted again: the drop is abandoned
	if st := sup.Status(); len(st) != 0 {
		t.Fatalf("a streamer started while its slot was being dropped: %+v", st)
	}
	sup.drops.Wait()
	if !strings.Contains(logs.String(), "replication slot kept: continuous backup is wanted again") {
		t.Fatalf("abandoned drop not logged:\n%s", logs)
	}
	if ev := slotAudit(t, e.cat); len(ev) != 1 {
		t.Fatalf("audit entries after the abandoned drop: %+v", ev)
	}
	must(t, sup.Tick(ctx)) // the drop has returned: the streamer starts again
	if st := sup.Status(); len(st) != 1 || st[0].Starts != 3 {
		t.Fatalf("after the abandoned drop: %+v", st)
	}
}
