package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/coffre/coffre/internal/testutil"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/snapshot"
	fssrc "github.com/coffre/coffre/internal/source/fs"
)

// writeTree creates files (path -> content) under dir.
func writeTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns every regular file under dir (slash paths -> content)
// and fails on anything else but directories.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected type %v", p, d.Type())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(want, got map[string][]byte) error {
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			return fmt.Errorf("%s missing", p)
		}
		if !bytes.Equal(g, w) {
			return fmt.Errorf("%s: %d bytes differ from the %d backed up", p, len(g), len(w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			return fmt.Errorf("%s: not in the backup", p)
		}
	}
	return nil
}

// treeStates are successive versions of a small tree; the big file spans
// several chunks (and so several 1 MiB packs).
func treeStates() []map[string][]byte {
	s1 := map[string][]byte{
		"big.bin":         testutil.RandomBytes(10, 3<<20+12345),
		"notes.txt":       testutil.Text(20 << 10),
		"sub/a.txt":       []byte("alpha\n"),
		"sub/deep/b.bin":  testutil.RandomBytes(11, 100<<10),
		"sub/deep/empty":  {},
		"other/c.txt":     testutil.Text(3000),
		"other/random.db": testutil.RandomBytes(12, 700<<10),
	}
	s2 := map[string][]byte{}
	for p, b := range s1 {
		s2[p] = b
	}
	s2["big.bin"] = append(bytes.Clone(s1["big.bin"][:1<<20]), testutil.RandomBytes(13, 2<<20)...)
	s2["sub/new.bin"] = testutil.RandomBytes(14, 1500<<10)
	delete(s2, "other/c.txt")
	return []map[string][]byte{s1, s2}
}

// setTree makes dir hold exactly files.
func setTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, files)
}

func backup(ctx context.Context, t *testing.T, r *repo.Repository, dir string, parent *snapshot.Manifest) (*snapshot.Manifest, error) {
	t.Helper()
	src, err := fssrc.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := archiver.New(r, archiver.Options{Parent: parent})
	return a.Backup(ctx, src, snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{src.Path()}})
}

func mustBackup(t *testing.T, r *repo.Repository, dir string, parent *snapshot.Manifest) *snapshot.Manifest {
	t.Helper()
	m, err := backup(context.Background(), t, r, dir, parent)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if m.Status != snapshot.StatusCompleted {
		t.Fatalf("backup status %s, errors %v", m.Status, m.Errors)
	}
	return m
}

// restoreAndCompare restores m into a new directory and compares it to want.
func restoreAndCompare(t *testing.T, r *repo.Repository, m *snapshot.Manifest, want map[string][]byte) error {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "restore")
	if _, err := fssrc.Restore(context.Background(), r, m, fssrc.RestoreOptions{Target: dst}); err != nil {
		return fmt.Errorf("restore %s: %w", m.ID.Short(), err)
	}
	if err := sameTree(want, readTree(t, dst)); err != nil {
		return fmt.Errorf("restore %s: %w", m.ID.Short(), err)
	}
	return nil
}

func snapshotIDs(t *testing.T, r *repo.Repository) map[string]bool {
	t.Helper()
	ids, err := r.List(context.Background(), blob.KindSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, id := range ids {
		out[id.String()] = true
	}
	return out
}

// failDataSavesAfter makes data pack saves fail with err after n succeeded.
func failDataSavesAfter(f *faulty.Storage, n int64, err error) {
	var saves atomic.Int64
	f.FailSave(func(h blob.Handle) error {
		if h.Kind == blob.KindData && saves.Add(1) > n {
			return err
		}
		return nil
	})
}

func TestBackendErrorMidBackup(t *testing.T) {
	ctx := context.Background()
	states := treeStates()
	dir := filepath.Join(t.TempDir(), "src")
	f := faulty.New(mem.New())
	r := repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	setTree(t, dir, states[0])
	m1 := mustBackup(t, r, dir, nil)

	setTree(t, dir, states[1])
	errBackend := errors.New("injected: backend unavailable")
	failDataSavesAfter(f, 1, errBackend)
	r2 := repo.TestOpen(t, f, repo.Options{})
	before := snapshotIDs(t, r2)
	m, err := backup(ctx, t, r2, dir, m1)
	if !errors.Is(err, errBackend) {
		t.Fatalf("backup with failing data saves = %v (manifest %v), want an error wrapping the backend error", err, m)
	}
	if m != nil {
		t.Errorf("failed backup returned a manifest")
	}
	if after := snapshotIDs(t, r2); len(after) != len(before) {
		t.Fatalf("failed backup wrote a recovery point: %d before, %d after", len(before), len(after))
	}

	f.Reset()
	r3 := repo.TestOpen(t, f, repo.Options{})
	m3 := mustBackup(t, r3, dir, m1)
	r4 := repo.TestOpen(t, f, repo.Options{})
	res, err := maintain.Check(ctx, r4, maintain.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Errorf("check after a failed backup: %+v", res.Problems)
	}
	for i, m := range []*snapshot.Manifest{m1, m3} {
		if err := restoreAndCompare(t, r4, m, states[i]); err != nil {
			t.Error(err)
		}
	}
}

func TestDiskFullFailsBackup(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "src")
	setTree(t, dir, treeStates()[0])
	f := faulty.New(mem.New())
	repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	r := repo.TestOpen(t, f, repo.Options{})
	failDataSavesAfter(f, 0, fmt.Errorf("write /vault/data/tmp: %w", syscall.ENOSPC))
	m, err := backup(ctx, t, r, dir, nil)
	if err == nil {
		t.Fatalf("backup on a full disk succeeded: %+v", m)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("error %v does not wrap ENOSPC", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "disk full") && !strings.Contains(msg, syscall.ENOSPC.Error()) {
		t.Errorf("error %q says neither 'disk full' nor %q", msg, syscall.ENOSPC.Error())
	}
	if n := len(snapshotIDs(t, r)); n != 0 {
		t.Errorf("backup on a full disk wrote %d recovery points", n)
	}
}

// TestCrashMidBackup kills the process (simulated: every storage call fails
// from then on) after each possible number of successful Saves of a backup,
// and checks that the vault left behind is consistent: it opens, check
// finds no problem, every committed recovery point restores byte for byte,
// and a new backup succeeds.
func TestCrashMidBackup(t *testing.T) {
	ctx := context.Background()
	states := treeStates()
	dir := filepath.Join(t.TempDir(), "src")

	// The base vault: one committed recovery point of state 0.
	newBase := func(t *testing.T) (blob.Storage, *snapshot.Manifest) {
		inner := mem.New()
		r := repo.TestInit(t, inner, repo.TestInitOptions(), repo.Options{})
		setTree(t, dir, states[0])
		m := mustBackup(t, r, dir, nil)
		setTree(t, dir, states[1])
		return inner, m
	}
	// Small index checkpoints so that index files are written mid-backup too.
	opts := repo.Options{IndexCheckpoint: 2}

	// Count the Saves of an uninterrupted backup (lock included).
	inner, m0 := newBase(t)
	f := faulty.New(inner)
	r := repo.TestOpen(t, f, opts)
	l, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	mustBackup(t, r, dir, m0)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	total := f.Calls(faulty.OpSave)
	if total < 6 {
		t.Fatalf("a backup made only %d Saves; the test tree is too small to exercise crashes", total)
	}

	for n := 0; n <= total; n++ {
		t.Run(fmt.Sprintf("after%d", n), func(t *testing.T) {
			inner, m0 := newBase(t)
			f := faulty.New(inner)
			r := repo.TestOpen(t, f, opts)
			f.CrashAfter(n)
			var m *snapshot.Manifest
			l, err := r.Lock(ctx, false, "backup")
			if err == nil {
				m, err = backup(ctx, t, r, dir, m0)
				_ = l.Unlock() // fails after the crash, leaving the lock file
			}
			if f.Crashed() && err == nil && m == nil {
				t.Fatal("backup returned neither a manifest nor an error")
			}
			if !f.Crashed() && err != nil {
				t.Fatalf("backup failed without a crash: %v", err)
			}

			// "Restart": a new handle on what the storage holds.
			r2 := repo.TestOpen(t, inner, repo.Options{})
			res, err := maintain.Check(ctx, r2, maintain.CheckOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() {
				t.Fatalf("check after a crash after %d saves: %+v", n, res.Problems)
			}
			ms, errs, err := snapshot.LoadAll(ctx, r2)
			if err != nil || len(errs) > 0 {
				t.Fatalf("LoadAll: %v %v", err, errs)
			}
			if m != nil && !snapshotIDs(t, r2)[m.ID.String()] {
				t.Errorf("backup reported recovery point %s but it is not stored", m.ID.Short())
			}
			for _, sm := range ms {
				want := states[1]
				if sm.ID == m0.ID {
					want = states[0]
				}
				if err := restoreAndCompare(t, r2, sm, want); err != nil {
					t.Error(err)
				}
			}
			// The vault takes a new backup, and a lock despite the one
			// the crash left behind.
			l2, err := r2.Lock(ctx, false, "backup")
			if err != nil {
				t.Fatalf("lock after the crash: %v", err)
			}
			defer l2.Unlock()
			m2 := mustBackup(t, r2, dir, ms[len(ms)-1])
			if err := restoreAndCompare(t, repo.TestOpen(t, inner, repo.Options{}), m2, states[1]); err != nil {
				t.Error(err)
			}
		})
	}
}
