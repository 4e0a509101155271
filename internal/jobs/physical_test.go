package jobs

import (
	"context"
	"fmt"
	"net"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
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
