package pgpitr

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/stream"
	"github.com/coffre/coffre/internal/testutil"
	"github.com/jackc/pgx/v5"
)

func insertSet(t *testing.T, c *pgx.Conn, set string, from, to int) {
	t.Helper()
	if _, err := c.Exec(context.Background(), "INSERT INTO items SELECT i, $1 FROM generate_series($2::int, $3::int) AS i", set, from, to); err != nil {
		t.Fatalf("insert set %s: %v", set, err)
	}
}

func baseBackup(t *testing.T, r *repo.Repository, c source.Conn) (*snapshot.Manifest, BaseMeta) {
	t.Helper()
	m, err := BaseBackup(context.Background(), archiver.New(r, archiver.Options{}), c)
	if err != nil {
		t.Fatalf("base backup: %v", err)
	}
	var meta BaseMeta
	if err := readJSON(context.Background(), r, m, "meta.json", &meta); err != nil {
		t.Fatalf("base backup meta: %v", err)
	}
	return m, meta
}

func startStreamer(t *testing.T, r *repo.Repository, c source.Conn) (*WALStreamer, <-chan error, context.CancelFunc) {
	w := &WALStreamer{Repo: r, Conn: c, FlushEvery: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(cancel)
	return w, errc, cancel
}

func stopStreamer(t *testing.T, cancel context.CancelFunc, errc <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("WAL streamer: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WAL streamer did not stop within 30s of its context's cancellation")
	}
}

// TestPointInTimeRestore is the demonstration: rows A, base backup,
// rows B, time T, rows C; the restore to T holds exactly A and B.
func TestPointInTimeRestore(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL); GRANT SELECT ON items TO "+srv.User)
	insertSet(t, db, "A", 1, 1000)

	r, _ := repo.TestRepository(t)
	c := srv.Conn("pitr_test")
	base, meta := baseBackup(t, r, c)
	if base.Source.Type != TypeBase || meta.SystemID == "" || meta.Timeline != 1 || meta.EndLSN <= meta.StartLSN ||
		meta.SegmentSize != 16<<20 || !strings.HasPrefix(meta.ServerVersion, "15") || meta.EndTime.Before(meta.StartTime) {
		t.Fatalf("base backup: type %s, meta %+v", base.Source.Type, meta)
	}
	for _, p := range []string{"base/main.tar", "backup_manifest"} {
		if n, err := lookupNode(r, base, p); err != nil || n.Size == 0 {
			t.Fatalf("base backup file %s: %v", p, err)
		}
	}

	w, errc, cancel := startStreamer(t, r, c)
	waitArchived(t, w, currentLSN(t, db), errc) // the catch-up from the slot's start
	insertSet(t, db, "B", 1001, 2000)
	// RPO as measured here: from B's commit to B in the vault.
	committed := time.Now()
	waitArchived(t, w, currentLSN(t, db), errc)
	t.Logf("set B in the vault %v after its commit (FlushEvery %v)", time.Since(committed).Round(time.Millisecond), w.FlushEvery)
	// Recovery targets are compared with commit timestamps (wall clock):
	// leave a clear second on each side of T so that B commits before it
	// and C after it whatever the clocks' resolution.
	time.Sleep(1100 * time.Millisecond)
	var target time.Time
	if err := db.QueryRow(ctx, "SELECT now()").Scan(&target); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	insertSet(t, db, "C", 2001, 3000)
	if _, err := db.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	end := currentLSN(t, db)
	start := time.Now()
	waitArchived(t, w, end, errc)
	t.Logf("WAL archived up to %s %v after pg_switch_wal; last point's lag %v", end, time.Since(start).Round(time.Millisecond), w.Stats().Lag)
	stopStreamer(t, cancel, errc)
	st := w.Stats()
	if st.Points < 2 || st.ArchivedLSN < end || st.CoveredUntil.Before(target) {
		t.Fatalf("streamer stats %+v: want ≥ 2 points up to %s covering %s", st, end, target)
	}

	dir := OwnedTempDir(t)
	dataDir := filepath.Join(dir, "data")
	StopRestored(t, dataDir)
	port := testutil.FreePort(t)
	res, err := RestoreToTime(ctx, r, target, RestoreOptions{DataDir: dataDir, Port: port, RunAs: "postgres", BinDir: pgBin})
	if err != nil {
		t.Fatalf("restore to %s: %v", target, err)
	}
	t.Logf("restored %s to %s: base %s, %d WAL points up to %s, last transaction at %s, target reached %v",
		res.DataDir, target, res.Base.ID.Short(), res.WALPoints, res.EndLSN, res.Reached, res.TargetReached)
	if res.Port != port || res.Base.ID != base.ID || res.WALPoints == 0 || !res.TargetReached {
		t.Fatalf("restore result %+v", res)
	}
	if res.Reached.IsZero() || res.Reached.After(target) {
		t.Errorf("last transaction replayed at %s, want a time before the target %s", res.Reached, target)
	}

	if got, want := restoredSets(t, srv, port), "A:1000:1-1000 B:1000:1001-2000"; got != want {
		t.Fatalf("restored rows %s, want %s (A and B, no C)", got, want)
	}

	// A target after the last commit, still covered by the archived WAL
	// (keepalives): PostgreSQL finds no commit after it and the restore
	// recovers to the end of the WAL, which is the state at that time.
	dataDir2 := filepath.Join(dir, "data2")
	StopRestored(t, dataDir2)
	port2 := testutil.FreePort(t)
	res2, err := RestoreToTime(ctx, r, st.CoveredUntil, RestoreOptions{DataDir: dataDir2, Port: port2, RunAs: "postgres", BinDir: pgBin})
	if err != nil {
		t.Fatalf("restore to %s (the end of the archived WAL): %v", st.CoveredUntil, err)
	}
	t.Logf("restore to the end of the WAL: target reached %v, last transaction at %s", res2.TargetReached, res2.Reached)
	if got, want := restoredSets(t, srv, port2), "A:1000:1-1000 B:1000:1001-2000 C:1000:2001-3000"; got != want {
		t.Fatalf("rows restored to the end of the WAL: %s, want %s", got, want)
	}
}

// restoredSets summarises the items of a restored server, which must have
// promoted and accept writes.
func restoredSets(t *testing.T, srv *TestServer, port int) string {
	t.Helper()
	ctx := context.Background()
	rc, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable", port, srv.User, srv.Password))
	if err != nil {
		t.Fatalf("connect to the restored server: %v", err)
	}
	defer rc.Close(ctx)
	var inRecovery bool
	if err := rc.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("restored server in recovery: %v %v", inRecovery, err)
	}
	if _, err := rc.Exec(ctx, "CREATE TEMP TABLE probe (x int); INSERT INTO probe VALUES (1)"); err != nil {
		t.Fatalf("restored server not writable: %v", err)
	}
	rows, err := rc.Query(ctx, "SELECT set, count(*), min(id), max(id) FROM items GROUP BY set ORDER BY set")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var set string
		var n, lo, hi int
		if err := rows.Scan(&set, &n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%d:%d-%d", set, n, lo, hi))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " ")
}

func lookupNode(r *repo.Repository, m *snapshot.Manifest, p string) (*tree.Node, error) {
	return stream.Lookup(context.Background(), r, m.Tree, p)
}
