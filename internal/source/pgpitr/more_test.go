package pgpitr

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// TestStreamerResumes stops the streamer, writes while it is stopped and
// starts a new one: it resumes where the vault's WAL ends (the slot kept
// the WAL), so a restore across the pause finds no gap.
func TestStreamerResumes(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL); GRANT SELECT ON items TO "+srv.User)
	r, _ := repo.TestRepository(t)
	c := srv.Conn("resume")
	baseBackup(t, r, c)

	w1, errc, cancel := startStreamer(t, r, c)
	insertSet(t, db, "A", 1, 100)
	waitArchived(t, w1, currentLSN(t, db), errc)
	stopStreamer(t, cancel, errc)
	stopped := w1.Stats().ArchivedLSN

	insertSet(t, db, "B", 101, 200) // while no streamer runs
	time.Sleep(1100 * time.Millisecond)
	var target time.Time
	if err := db.QueryRow(ctx, "SELECT now()").Scan(&target); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)

	w2, errc, cancel := startStreamer(t, r, c)
	insertSet(t, db, "C", 201, 300)
	waitArchived(t, w2, currentLSN(t, db), errc)
	stopStreamer(t, cancel, errc)

	ms, _, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	resumed := false
	for _, m := range ms {
		if wm, err := walMetaFromTags(m.Tags); err == nil && m.Source.Type == TypeWAL && wm.StartLSN == stopped && wm.EndLSN > stopped {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("no WAL point starts at %s, where the first streamer stopped", stopped)
	}

	dataDir := filepath.Join(OwnedTempDir(t), "data")
	StopRestored(t, dataDir)
	port := testutil.FreePort(t)
	if _, err := RestoreToTime(ctx, r, target, RestoreOptions{DataDir: dataDir, Port: port, RunAs: "postgres", BinDir: pgBin}); err != nil {
		t.Fatalf("restore across the streamer's pause: %v", err)
	}
	if got, want := restoredSets(t, srv, port), "A:100:1-100 B:100:101-200"; got != want {
		t.Fatalf("restored rows %s, want %s", got, want)
	}
}

// TestTablespace restores a server with a second tablespace: its files go
// beside the new data directory, never into the source's tablespace.
func TestTablespace(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	tsDir := filepath.Join(OwnedTempDir(t), "ts")
	if out, err := AsPostgres("mkdir", "-m", "0700", tsDir).CombinedOutput(); err != nil {
		t.Fatalf("mkdir %s: %v %s", tsDir, err, out)
	}
	srv.Exec(t, fmt.Sprintf("CREATE TABLESPACE extra LOCATION '%s'", tsDir))
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL) TABLESPACE extra; GRANT SELECT ON items TO "+srv.User)
	insertSet(t, db, "A", 1, 500)
	r, _ := repo.TestRepository(t)
	c := srv.Conn("ts")
	_, meta := baseBackup(t, r, c)
	if len(meta.Tablespaces) != 1 || meta.Tablespaces[0].Location != tsDir {
		t.Fatalf("base backup tablespaces %+v, want one at %s", meta.Tablespaces, tsDir)
	}
	w, errc, cancel := startStreamer(t, r, c)
	insertSet(t, db, "B", 501, 1000)
	if _, err := db.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, w, currentLSN(t, db), errc)
	stopStreamer(t, cancel, errc)
	target := w.Stats().CoveredUntil

	dataDir := filepath.Join(OwnedTempDir(t), "data")
	StopRestored(t, dataDir)
	port := testutil.FreePort(t)
	if _, err := RestoreToTime(ctx, r, target, RestoreOptions{DataDir: dataDir, Port: port, RunAs: "postgres", BinDir: pgBin}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got, want := restoredSets(t, srv, port), "A:500:1-500 B:500:501-1000"; got != want {
		t.Fatalf("restored rows %s, want %s", got, want)
	}
	rc, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable", port, srv.User, srv.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(ctx)
	var loc string
	if err := rc.QueryRow(ctx, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'extra'").Scan(&loc); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dataDir+"-tablespaces", fmt.Sprint(meta.Tablespaces[0].OID)); loc != want {
		t.Fatalf("restored tablespace at %s, want %s", loc, want)
	}
	link, err := os.Readlink(filepath.Join(dataDir, "pg_tblspc", fmt.Sprint(meta.Tablespaces[0].OID)))
	if err != nil || link != loc {
		t.Fatalf("restored pg_tblspc link -> %q (%v), want %s", link, err, loc)
	}
	// The source still reads its own tablespace.
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil || n != 1000 {
		t.Fatalf("source after the restore: %d rows, %v", n, err)
	}
}

func slotRestartLSN(t *testing.T, db *pgx.Conn, slot string) LSN {
	t.Helper()
	var s string
	if err := db.QueryRow(context.Background(), "SELECT coalesce(restart_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	l, err := ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestStreamerWaitsForVault: while the vault is locked exclusively (a
// prune), the streamer commits nothing and the server keeps the WAL (the
// slot does not move past what the vault holds); once unlocked, it catches
// up.
func TestStreamerWaitsForVault(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL)")
	r, _ := repo.TestRepository(t)
	c := srv.Conn("locked")
	baseBackup(t, r, c)
	w, errc, cancel := startStreamer(t, r, c)
	insertSet(t, db, "A", 1, 100)
	waitArchived(t, w, currentLSN(t, db), errc)

	lock, err := r.Lock(ctx, true, "prune")
	if err != nil {
		t.Fatal(err)
	}
	held := w.Stats().ArchivedLSN
	insertSet(t, db, "B", 101, 200)
	want := currentLSN(t, db)
	time.Sleep(time.Second) // five FlushEvery
	if st := w.Stats(); st.ArchivedLSN != held || st.ReceivedLSN < want {
		t.Fatalf("while the vault is locked: archived %s (want %s), received %s (want ≥ %s)", st.ArchivedLSN, held, st.ReceivedLSN, want)
	}
	if got := slotRestartLSN(t, db, "locked"); got > held {
		t.Fatalf("slot restart LSN %s moved past the WAL in the vault (%s)", got, held)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, w, want, errc)
	stopStreamer(t, cancel, errc)
	// The server was told once the WAL was in the vault.
	archived := w.Stats().ArchivedLSN
	deadline := time.Now().Add(10 * time.Second)
	for got := slotRestartLSN(t, db, "locked"); got != archived; got = slotRestartLSN(t, db, "locked") {
		if got > archived || time.Now().After(deadline) {
			t.Fatalf("slot restart LSN %s, want the archived end %s", got, archived)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBaseBackupInterrupted: a base backup cut off mid-stream commits
// nothing.
func TestBaseBackupInterrupted(t *testing.T) {
	srv := StartTestServer(t)
	r, _ := repo.TestRepository(t)
	prog := &archiver.Progress{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for prog.BytesRead.Load() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	m, err := BaseBackup(ctx, archiver.New(r, archiver.Options{Progress: prog}), srv.Conn(""))
	if err == nil {
		t.Fatalf("base backup cancelled mid-stream committed %s", m.ID.Short())
	}
	if ms, _, lerr := snapshot.LoadAll(context.Background(), r); lerr != nil || len(ms) != 0 {
		t.Fatalf("%d recovery points after an interrupted base backup (%v)", len(ms), lerr)
	}
	t.Logf("error: %v", err)
}

// TestStreamerServerStops: when the server goes away, the streamer commits
// the WAL it received before returning the error.
func TestStreamerServerStops(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL)")
	r, _ := repo.TestRepository(t)
	c := srv.Conn("stops")
	baseBackup(t, r, c)
	w := &WALStreamer{Repo: r, Conn: c, FlushEvery: time.Hour} // commits only when a segment is full
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	insertSet(t, db, "A", 1, 100)
	want := currentLSN(t, db)
	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().ReceivedLSN < want {
		if time.Now().After(deadline) {
			t.Fatalf("WAL not received up to %s: %+v", want, w.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := AsPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", filepath.Join(srv.Dir, "data"), "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("stop the server: %v %s", err, out)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("WAL streamer returned nil when its server stopped")
		}
		t.Logf("error: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("WAL streamer still running 30s after its server stopped")
	}
	if st := w.Stats(); st.ArchivedLSN < want || st.Points == 0 {
		t.Fatalf("after the server stopped: %+v, want the WAL up to %s committed", st, want)
	}
}
