package pgpitr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/testutil"
)

// TestRefusals checks the errors of a physical backup and of a restore that
// cannot give the time asked for: wrong password, role without
// REPLICATION, a WAL gap, a target before the oldest base backup or after
// the newest WAL.
func TestRefusals(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	srv.Exec(t, "CREATE TABLE items (id int PRIMARY KEY, set text NOT NULL)")
	r, _ := repo.TestRepository(t)
	c := srv.Conn("refusals")

	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("COFFRE_TEST_PITR_WRONG", "not-the-password")
		bad := c.With(map[string]string{"password": "env:COFFRE_TEST_PITR_WRONG"})
		_, err := BaseBackup(ctx, archiver.New(r, archiver.Options{}), bad)
		if !errors.Is(err, source.ErrAuth) || strings.Contains(err.Error(), "not-the-password") {
			t.Fatalf("base backup with a wrong password: %v, want ErrAuth without the password", err)
		}
		err = (&WALStreamer{Repo: r, Conn: bad, FlushEvery: 100 * time.Millisecond}).Run(ctx)
		if !errors.Is(err, source.ErrAuth) {
			t.Fatalf("WAL streamer with a wrong password: %v, want ErrAuth", err)
		}
		if ms, _, err := snapshot.LoadAll(ctx, r); err != nil || len(ms) != 0 {
			t.Fatalf("recovery points after failed backups: %d (%v), want none", len(ms), err)
		}
	})

	t.Run("role without REPLICATION", func(t *testing.T) {
		srv.Exec(t, "CREATE ROLE plain LOGIN PASSWORD '"+srv.Password+"'")
		_, err := BaseBackup(ctx, archiver.New(r, archiver.Options{}), c.With(map[string]string{"user": "plain"}))
		if err == nil || !strings.Contains(hint.Of(err), "REPLICATION attribute") {
			t.Fatalf("base backup as a role without REPLICATION: %v", err)
		}
		t.Logf("error: %v", err)
		if ms, _, _ := snapshot.LoadAll(ctx, r); len(ms) != 0 {
			t.Fatalf("%d recovery points after a failed backup", len(ms))
		}
	})

	// A base backup and WAL in several points.
	_, meta := baseBackup(t, r, c)
	w, errc, cancel := startStreamer(t, r, c)
	for i := 0; i < 5; i++ {
		insertSet(t, db, "X", i*100+1, i*100+100)
		time.Sleep(300 * time.Millisecond)
	}
	if _, err := db.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, w, currentLSN(t, db), errc)
	stopStreamer(t, cancel, errc)
	covered := w.Stats().CoveredUntil

	newDir := func(t *testing.T) string { return filepath.Join(OwnedTempDir(t), "data") }
	restore := func(t *testing.T, target time.Time) (string, error) {
		dir := newDir(t)
		StopRestored(t, dir)
		_, err := RestoreToTime(ctx, r, target, RestoreOptions{DataDir: dir, Port: testutil.FreePort(t), RunAs: "postgres", BinDir: pgBin})
		return dir, err
	}

	t.Run("before the oldest base backup", func(t *testing.T) {
		dir, err := restore(t, meta.StartTime.Add(-time.Hour))
		if err == nil || !strings.Contains(err.Error(), "before the oldest base backup") {
			t.Fatalf("restore before the base backup: %v", err)
		}
		if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("refused restore created %s", dir)
		}
	})

	t.Run("after the newest WAL", func(t *testing.T) {
		_, err := restore(t, covered.Add(time.Hour))
		if err == nil || !strings.Contains(err.Error(), "after the newest archived WAL") {
			t.Fatalf("restore after the newest WAL: %v", err)
		}
	})

	t.Run("data directory not empty", func(t *testing.T) {
		dir := newDir(t)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := RestoreToTime(ctx, r, covered, RestoreOptions{DataDir: dir, Port: testutil.FreePort(t), RunAs: "postgres", BinDir: pgBin})
		if err == nil || !strings.Contains(err.Error(), "is not empty") {
			t.Fatalf("restore into a non-empty directory: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION")); err != nil || string(b) != "15\n" {
			t.Fatalf("restore touched the existing directory: %q %v", b, err)
		}
	})

	t.Run("gap", func(t *testing.T) {
		ms, _, err := snapshot.LoadAll(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var chain []*snapshot.Manifest
		for _, m := range ms {
			if wm, err := walMetaFromTags(m.Tags); m.Source.Type == TypeWAL && err == nil && wm.EndLSN > meta.StartLSN && wm.StartLSN < wm.EndLSN {
				chain = append(chain, m)
			}
		}
		if len(chain) < 3 {
			t.Fatalf("%d WAL points with WAL after the base backup, want ≥ 3", len(chain))
		}
		victim := chain[len(chain)/2]
		vm, _ := walMetaFromTags(victim.Tags)
		if err := snapshot.Delete(ctx, r, victim.ID); err != nil {
			t.Fatal(err)
		}
		dir, err := restore(t, covered)
		if !errors.Is(err, ErrWALGap) || !strings.Contains(err.Error(), "from "+vm.StartLSN.String()+" to "+vm.EndLSN.String()) {
			t.Fatalf("restore across a missing WAL point (%s–%s): %v", vm.StartLSN, vm.EndLSN, err)
		}
		t.Logf("error: %v", err)
		if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("refused restore created %s", dir)
		}
	})
}

// TestWALLevelMinimal: a server with wal_level=minimal (which needs
// max_wal_senders = 0) cannot be backed up physically, and says why.
func TestWALLevelMinimal(t *testing.T) {
	srv := StartTestServer(t, "wal_level = minimal", "max_wal_senders = 0")
	r, _ := repo.TestRepository(t)
	_, err := BaseBackup(context.Background(), archiver.New(r, archiver.Options{}), srv.Conn(""))
	if err == nil || !strings.Contains(hint.Of(err), "wal_level = replica") {
		t.Fatalf("base backup of a wal_level=minimal server: %v (hint %q)", err, hint.Of(err))
	}
	t.Logf("error: %v", err)
}
