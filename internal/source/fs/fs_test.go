package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/testutil"

	"golang.org/x/sys/unix"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source/fs"
)

func mkfile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// setMtimes gives every entry under root (and root) a distinct mtime, with
// nanoseconds, children before their directories.
func setMtimes(t *testing.T, root string) {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Deepest first, so that setting a child's time does not matter to its
	// directory (it does not change the directory's mtime anyway).
	sort.Slice(paths, func(i, j int) bool { return strings.Count(paths[i], "/") > strings.Count(paths[j], "/") })
	base := time.Date(2023, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for i, p := range paths {
		mt := base.Add(time.Duration(i)*time.Hour + time.Duration(i)*time.Microsecond)
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func newRepo(t *testing.T) *repo.Repository {
	r, _ := repo.TestRepository(t)
	return r
}

func backupWith(t *testing.T, r *repo.Repository, fsys archiver.FS, dir string, o archiver.Options) *snapshot.Manifest {
	t.Helper()
	m, err := archiver.New(r, o).Backup(context.Background(), fsys, snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{dir}})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m
}

func backupDir(t *testing.T, r *repo.Repository, dir string, excludes []string, parent *snapshot.Manifest) *snapshot.Manifest {
	t.Helper()
	src, err := fs.New(dir, excludes)
	if err != nil {
		t.Fatal(err)
	}
	return backupWith(t, r, src, dir, archiver.Options{Parent: parent})
}

func restore(t *testing.T, r *repo.Repository, m *snapshot.Manifest) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "restored")
	st, err := fs.Restore(context.Background(), r, m, fs.RestoreOptions{Target: dst})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(st.Warnings) > 0 {
		t.Errorf("restore warnings: %v", st.Warnings)
	}
	return dst
}

const modeBits = os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky

// compareTrees compares type, permission and special bits, mtime, content
// and symlink targets of every entry of want and got (roots included), and
// that both hold the same names.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		q := filepath.Join(got, rel)
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: not restored: %v", rel, err)
			return nil
		}
		if wi.Mode().Type() != gi.Mode().Type() {
			t.Errorf("%s: type %v, want %v", rel, gi.Mode().Type(), wi.Mode().Type())
			return nil
		}
		if wi.Mode()&os.ModeSymlink == 0 && wi.Mode()&modeBits != gi.Mode()&modeBits {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode()&modeBits, wi.Mode()&modeBits)
		}
		if !wi.ModTime().Equal(gi.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		switch {
		case wi.Mode().IsRegular():
			wb, err1 := os.ReadFile(p)
			gb, err2 := os.ReadFile(q)
			if err1 != nil || err2 != nil {
				return errors.Join(err1, err2)
			}
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: restored content (%d bytes) differs from the original (%d bytes)", rel, len(gb), len(wb))
			}
		case wi.Mode()&os.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, _ := os.Readlink(q)
			if wt != gt {
				t.Errorf("%s: symlink target %q, want %q", rel, gt, wt)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(got, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(got, p); !seen[rel] {
			t.Errorf("%s: restored but not in the source", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

const sparseSize = 8 << 20

// makeSparse writes an 8 MiB file that is a hole but for 4 KiB at its start.
func makeSparse(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(testutil.RandomBytes(7, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(sparseSize); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, p); st.Blocks*512 >= sparseSize/4 {
		t.Skipf("the filesystem of %s does not make sparse files (%d blocks)", p, st.Blocks)
	}
}

func TestBackupRestoreTree(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	mkdir(t, src, 0o750)
	mkfile(t, filepath.Join(src, "empty"), nil, 0o644)
	mkfile(t, filepath.Join(src, "big.bin"), testutil.RandomBytes(1, 9<<20+321), 0o600)
	mkfile(t, filepath.Join(src, "text.txt"), testutil.Text(700<<10), 0o644)
	mkfile(t, filepath.Join(src, "secret"), []byte("top secret\n"), 0o640)
	mkfile(t, filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	mkfile(t, filepath.Join(src, "a/b/c/deep.txt"), []byte("deep\n"), 0o644)
	mkfile(t, filepath.Join(src, "a/b/mid.txt"), testutil.Text(5000), 0o644)
	mkdir(t, filepath.Join(src, "emptydir"), 0o700)
	mkdir(t, filepath.Join(src, "a/emptier"), 0o755)
	mkdir(t, filepath.Join(src, "shared"), 0o775|os.ModeSetgid)
	mkdir(t, filepath.Join(src, "tmp"), 0o777|os.ModeSticky)
	mkfile(t, filepath.Join(src, "shared/doc.txt"), []byte("shared doc\n"), 0o664)
	if err := os.Symlink("text.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../nowhere", filepath.Join(src, "a/dangling")); err != nil {
		t.Fatal(err)
	}
	mkfile(t, filepath.Join(src, "hl1"), testutil.Text(3000), 0o644)
	if err := os.Link(filepath.Join(src, "hl1"), filepath.Join(src, "a/hl2")); err != nil {
		t.Fatal(err)
	}
	makeSparse(t, filepath.Join(src, "sparse.img"))
	setMtimes(t, src)

	r := newRepo(t)
	m := backupDir(t, r, src, nil, nil)
	if m.Status != snapshot.StatusCompleted || m.Stats.Errors != 0 {
		t.Fatalf("backup status %s, errors %v", m.Status, m.Errors)
	}
	if m.Stats.Files != 11 { // the hard link pair counts twice
		t.Errorf("Stats.Files = %d, want 11", m.Stats.Files)
	}

	dst := restore(t, r, m)
	compareTrees(t, src, dst)

	s1, s2 := stat(t, filepath.Join(dst, "hl1")), stat(t, filepath.Join(dst, "a/hl2"))
	if s1.Ino != s2.Ino || s1.Nlink != 2 {
		t.Errorf("restored hard links: inodes %d and %d, %d links; want one inode with 2 links", s1.Ino, s2.Ino, s1.Nlink)
	}
	sp := stat(t, filepath.Join(dst, "sparse.img"))
	if sp.Size != sparseSize {
		t.Errorf("restored sparse file has %d bytes, want %d", sp.Size, sparseSize)
	}
	// The original allocates 4 KiB; allow some slack, but not a quarter of
	// the file.
	if alloc := sp.Blocks * 512; alloc > sparseSize/4 {
		t.Errorf("restored sparse file allocates %d bytes of its %d: its holes were filled", alloc, sparseSize)
	}
}

// writeAt changes a file's content and gives it a new mtime.
func rewrite(t *testing.T, p string, data []byte, mt time.Time) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestIncrementalReadsOnlyChangedFiles(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for i := 0; i < 10; i++ {
		mkfile(t, filepath.Join(src, fmt.Sprintf("d%d/f%d.txt", i%3, i)), testutil.Text(1000+i*777), 0o644)
	}
	mkfile(t, filepath.Join(src, "large.bin"), testutil.RandomBytes(3, 2<<20), 0o644)
	setMtimes(t, src)
	r := newRepo(t)
	m1 := backupDir(t, r, src, nil, nil)
	if m1.Stats.FilesChanged != 11 {
		t.Errorf("first backup read %d files, want 11", m1.Stats.FilesChanged)
	}

	mt := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	changed := map[string][]byte{
		"d1/f4.txt": []byte("new content of f4\n"),
		"large.bin": testutil.RandomBytes(4, 2<<20),        // same size, new mtime
		"d0/new":    []byte("a file that did not exist\n"), // counts as read
	}
	var changedBytes int64
	for p, b := range changed {
		rewrite(t, filepath.Join(src, p), b, mt)
		changedBytes += int64(len(b))
	}
	m2 := backupDir(t, r, src, nil, m1)
	if m2.Stats.FilesChanged != int64(len(changed)) {
		t.Errorf("incremental backup read %d files, want the %d changed", m2.Stats.FilesChanged, len(changed))
	}
	if m2.Stats.BytesRead != changedBytes {
		t.Errorf("incremental backup read %d bytes, want %d", m2.Stats.BytesRead, changedBytes)
	}
	if m2.Stats.Files != 12 || m2.Parent == nil || *m2.Parent != m1.ID {
		t.Errorf("incremental: %d files, parent %v; want 12 files, parent %s", m2.Stats.Files, m2.Parent, m1.ID.Short())
	}
	compareTrees(t, src, restore(t, r, m2))
}

// TestIncrementalSeesDeepChanges makes one small change at a time deep in
// a tree, each followed by an incremental backup: the backup reuses the
// previous tree of every directory whose entries are all the same, and must
// not reuse one where anything changed (the restore would bring back the
// old state). An unchanged tree keeps its root tree id.
func TestIncrementalSeesDeepChanges(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for i := 0; i < 6; i++ {
		mkfile(t, filepath.Join(src, fmt.Sprintf("a/b%d/c/f%d.txt", i%2, i)), testutil.Text(500+i), 0o644)
	}
	if err := os.Symlink("../c/f0.txt", filepath.Join(src, "a/b0/link")); err != nil {
		t.Fatal(err)
	}
	setMtimes(t, src)
	r := newRepo(t)
	prev := backupDir(t, r, src, nil, nil)
	if m := backupDir(t, r, src, nil, prev); m.Tree != prev.Tree {
		t.Fatalf("unchanged tree: root tree %s, want %s", m.Tree.Short(), prev.Tree.Short())
	}
	mt := time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)
	deep := filepath.Join(src, "a/b0/c")
	for _, c := range []struct {
		what   string
		change func() error
	}{
		{"chmod a file", func() error { return os.Chmod(filepath.Join(deep, "f0.txt"), 0o600) }},
		{"chmod a directory", func() error { return os.Chmod(deep, 0o700) }},
		{"a directory's mtime", func() error { return os.Chtimes(filepath.Join(src, "a/b1"), mt, mt) }},
		{"retarget a symlink", func() error {
			l := filepath.Join(src, "a/b0/link")
			if err := os.Remove(l); err != nil {
				return err
			}
			return os.Symlink("../c/f2.txt", l)
		}},
		{"rename a file", func() error { return os.Rename(filepath.Join(deep, "f2.txt"), filepath.Join(deep, "g2.txt")) }},
		{"an empty file", func() error { return os.WriteFile(filepath.Join(deep, "empty"), nil, 0o644) }},
		{"same size, same mtime, new content", func() error {
			p := filepath.Join(deep, "f4.txt")
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[0] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, fi.ModTime(), fi.ModTime())
		}},
	} {
		if err := c.change(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		m := backupDir(t, r, src, nil, prev)
		if m.Tree == prev.Tree {
			t.Errorf("%s: the root tree did not change", c.what)
		}
		compareTrees(t, src, restore(t, r, m))
		prev = m
	}
}

// paths lists every path of a recovery point.
func paths(t *testing.T, r *repo.Repository, m *snapshot.Manifest) []string {
	t.Helper()
	var out []string
	err := tree.Walk(context.Background(), r, m.Tree, func(p string, n *tree.Node) error {
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestExcludes(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for _, p := range []string{
		"keep.txt", "x.tmp", "sub/y.tmp", "sub/keep.go",
		"logs/a.gz", "logs/keep.txt", "sub/logs/b.gz",
		"cache/big", "sub/cache/inner", "other/cache",
	} {
		mkfile(t, filepath.Join(src, p), []byte(p), 0o644)
	}
	r := newRepo(t)
	m := backupDir(t, r, src, []string{"*.tmp", "logs/*.gz", "cache/"}, nil)
	want := []string{
		"keep.txt", "logs", "logs/keep.txt",
		"other", "other/cache", // a file named cache: "cache/" is for directories only
		"sub", "sub/keep.go", "sub/logs", "sub/logs/b.gz", // logs/*.gz is relative to the root
	}
	if got := paths(t, r, m); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("backed up\n  %v\nwant\n  %v", got, want)
	}
	if _, err := fs.New(src, []string{"[bad"}); err == nil {
		t.Error("fs.New accepted a malformed exclude pattern")
	}
}

// failOpenFS is a test double: a real source whose Open fails for one path,
// as for a file the process may not read.
type failOpenFS struct {
	archiver.FS
	path string
	err  error
}

func (f *failOpenFS) Open(p string) (io.ReadCloser, error) {
	if p == f.path {
		return nil, f.err
	}
	return f.FS.Open(p)
}

func smallTree(t *testing.T) string {
	src := filepath.Join(t.TempDir(), "src")
	mkfile(t, filepath.Join(src, "a.txt"), testutil.Text(2000), 0o644)
	mkfile(t, filepath.Join(src, "sub/b.txt"), testutil.Text(3000), 0o644)
	mkfile(t, filepath.Join(src, "sub/c.bin"), testutil.RandomBytes(9, 1<<20), 0o644)
	mkfile(t, filepath.Join(src, "z.txt"), []byte("last\n"), 0o644)
	return src
}

func newSource(t *testing.T, dir string) *fs.Source {
	t.Helper()
	s, err := fs.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkPartial checks that m is PARTIAL because of exactly path, and that
// every other file restores intact.
func checkPartial(t *testing.T, r *repo.Repository, m *snapshot.Manifest, src, path, errText string) {
	t.Helper()
	if m.Status != snapshot.StatusPartial || m.Stats.Errors != 1 || len(m.Errors) != 1 {
		t.Fatalf("status %s, %d errors %v; want PARTIAL with 1 error", m.Status, m.Stats.Errors, m.Errors)
	}
	if !strings.HasPrefix(m.Errors[0], path+": ") || !strings.Contains(m.Errors[0], errText) {
		t.Errorf("error %q does not name %s and say %q", m.Errors[0], path, errText)
	}
	dst := restore(t, r, m)
	err := filepath.WalkDir(src, func(p string, d iofs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == path {
			return nil
		}
		wb, _ := os.ReadFile(p)
		gb, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil || !bytes.Equal(wb, gb) {
			t.Errorf("%s not restored intact (err %v)", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUnreadableFile(t *testing.T) {
	src := smallTree(t)
	r := newRepo(t)
	var reported []string
	fsys := &failOpenFS{FS: newSource(t, src), path: "sub/b.txt", err: os.ErrPermission}
	m := backupWith(t, r, fsys, src, archiver.Options{OnError: func(p string, err error) {
		if errors.Is(err, os.ErrPermission) {
			reported = append(reported, p)
		}
	}})
	checkPartial(t, r, m, src, "sub/b.txt", "permission denied")
	if len(reported) != 1 || reported[0] != "sub/b.txt" {
		t.Errorf("OnError saw %v, want [sub/b.txt]", reported)
	}
	// The tree records the error on the file's node.
	var node *tree.Node
	_ = tree.Walk(context.Background(), r, m.Tree, func(p string, n *tree.Node) error {
		if p == "sub/b.txt" {
			node = n
		}
		return nil
	})
	if node == nil || node.Error == "" {
		t.Errorf("node of the unreadable file: %+v, want its error recorded", node)
	}
}

// changingFS is a test double: a real source whose files at path report
// archiver.ErrChanged on Close for the first `times` opens (all when
// times < 0), as a file written to while it is read.
type changingFS struct {
	archiver.FS
	path  string
	times int64
	opens atomic.Int64
}

type changedFile struct{ io.ReadCloser }

func (f changedFile) Close() error {
	_ = f.ReadCloser.Close()
	return archiver.ErrChanged
}

func (f *changingFS) Open(p string) (io.ReadCloser, error) {
	rc, err := f.FS.Open(p)
	if err != nil || p != f.path {
		return rc, err
	}
	if n := f.opens.Add(1); f.times < 0 || n <= f.times {
		return changedFile{rc}, nil
	}
	return rc, nil
}

func TestFileChangingWhileRead(t *testing.T) {
	for _, path := range []string{"a.txt", "sub/c.bin"} { // one read, and chunked
		t.Run(filepath.Base(path), func(t *testing.T) {
			src := smallTree(t)
			t.Run("always", func(t *testing.T) {
				r := newRepo(t)
				fsys := &changingFS{FS: newSource(t, src), path: path, times: -1}
				m := backupWith(t, r, fsys, src, archiver.Options{})
				checkPartial(t, r, m, src, path, "changed while it was being read")
				if n := fsys.opens.Load(); n < 2 {
					t.Errorf("file opened %d times, want retries", n)
				}
			})
			t.Run("once", func(t *testing.T) {
				r := newRepo(t)
				fsys := &changingFS{FS: newSource(t, src), path: path, times: 1}
				m := backupWith(t, r, fsys, src, archiver.Options{})
				if m.Status != snapshot.StatusCompleted || len(m.Errors) != 0 {
					t.Fatalf("status %s, errors %v; want COMPLETED after a retry", m.Status, m.Errors)
				}
				if n := fsys.opens.Load(); n != 2 {
					t.Errorf("file opened %d times, want 2", n)
				}
				compareTrees(t, src, restore(t, r, m))
			})
		})
	}
}

// vanishingFS is a test double: a real source that deletes a file right
// after listing its directory, as a file removed during the backup.
type vanishingFS struct {
	*fs.Source
	dir, name string
}

func (f *vanishingFS) ReadDir(p string) ([]tree.Node, error) {
	nodes, err := f.Source.ReadDir(p)
	if err == nil && p == f.dir {
		if rerr := os.Remove(filepath.Join(f.Source.Path(), f.dir, f.name)); rerr != nil {
			return nil, rerr
		}
	}
	return nodes, err
}

func TestFileVanishesBeforeOpen(t *testing.T) {
	src := smallTree(t)
	r := newRepo(t)
	var gotErr error
	fsys := &vanishingFS{Source: newSource(t, src), dir: "sub", name: "b.txt"}
	m := backupWith(t, r, fsys, src, archiver.Options{OnError: func(p string, err error) { gotErr = err }})
	if !errors.Is(gotErr, os.ErrNotExist) {
		t.Errorf("error reported for the vanished file: %v, want one wrapping os.ErrNotExist", gotErr)
	}
	checkPartial(t, r, m, src, "sub/b.txt", "no such file")
}

func TestSourceMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "does-not-exist")
	_, err := fs.New(p, nil)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("fs.New of a missing path = %v, want an error naming %s", err, p)
	}
}

func TestRestoreIntoNonEmptyTarget(t *testing.T) {
	src := smallTree(t)
	r := newRepo(t)
	m := backupDir(t, r, src, nil, nil)
	dst := t.TempDir()
	mkfile(t, filepath.Join(dst, "unrelated"), []byte("keep me"), 0o644)

	_, err := fs.Restore(context.Background(), r, m, fs.RestoreOptions{Target: dst})
	if !errors.Is(err, fs.ErrTargetNotEmpty) {
		t.Fatalf("restore into a non-empty directory = %v, want ErrTargetNotEmpty", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "a.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused restore wrote files")
	}

	if _, err := fs.Restore(context.Background(), r, m, fs.RestoreOptions{Target: dst, Overwrite: true}); err != nil {
		t.Fatalf("restore with Overwrite: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "unrelated")); err != nil || string(b) != "keep me" {
		t.Errorf("restore with Overwrite changed an unrelated file: %q, %v", b, err)
	}
	compareTrees(t, filepath.Join(src, "sub"), filepath.Join(dst, "sub"))
	for _, p := range []string{"a.txt", "z.txt"} {
		wb, _ := os.ReadFile(filepath.Join(src, p))
		if gb, err := os.ReadFile(filepath.Join(dst, p)); err != nil || !bytes.Equal(wb, gb) {
			t.Errorf("%s not restored intact with Overwrite (err %v)", p, err)
		}
	}

	// Existing files are never replaced, even with Overwrite.
	if _, err := fs.Restore(context.Background(), r, m, fs.RestoreOptions{Target: dst, Overwrite: true}); err == nil {
		t.Error("restore with Overwrite replaced existing files silently")
	}
}

// A file whose chunks of zeros repeat between chunks of data restores
// byte for byte, with the zero chunks after the first left as holes, and
// with every data chunk read: the chunk reader passes over the zero
// chunks it is told to skip without losing its place.
func TestRestoreSkipsRepeatedZeroChunks(t *testing.T) {
	src := t.TempDir()
	var want []byte
	data := func(n int, seed byte) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7+int(seed)) ^ byte(i>>9)
		}
		want = append(want, b...)
	}
	data(1<<20, 1)
	want = append(want, make([]byte, 13<<20)...) // 4 MiB zero chunks, cut at the maximum
	data(1<<20, 2)
	want = append(want, make([]byte, 13<<20)...)
	data(64<<10, 3)
	p := filepath.Join(src, "mixed.img")
	mkfile(t, p, want, 0o644)
	setMtimes(t, src)

	r := newRepo(t)
	m := backupDir(t, r, src, nil, nil)
	tr, err := tree.Load(context.Background(), r, m.Tree)
	if err != nil {
		t.Fatal(err)
	}
	n := tr.Find("mixed.img")
	if n == nil {
		t.Fatal("mixed.img not in the recovery point")
	}
	seen := map[crypto.ID]int{}
	for _, id := range n.Content {
		seen[id]++
	}
	repeated := 0
	for _, c := range seen {
		if c > 1 {
			repeated += c - 1
		}
	}
	if repeated < 2 {
		t.Fatalf("%d chunks, %d repeats: the test wants repeated zero chunks", len(n.Content), repeated)
	}

	dst := restore(t, r, m)
	got, err := os.ReadFile(filepath.Join(dst, "mixed.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("restored %d bytes that differ from the %d backed up", len(got), len(want))
	}
	if alloc := stat(t, filepath.Join(dst, "mixed.img")).Blocks * 512; alloc > int64(len(want))/2 {
		t.Errorf("restored file allocates %d of its %d bytes: its zero chunks were written", alloc, len(want))
	}
}

// The small files of a directory are restored in batches whose chunks come
// in few storage reads (one GET per few MiB on S3), not one read per file;
// every file still comes back whole.
func TestRestoreBatchesSmallFiles(t *testing.T) {
	src := t.TempDir()
	const files = 300
	for i := range files {
		b := append([]byte(fmt.Sprintf("file %d\n", i)), testutil.Text(1000+i*37)...)
		mkfile(t, filepath.Join(src, fmt.Sprintf("f%03d.txt", i)), b, 0o644)
	}
	mkfile(t, filepath.Join(src, "big.bin"), testutil.Text(3<<20), 0o644) // alone, between batches
	setMtimes(t, src)
	f := faulty.New(mem.New())
	r := repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	m := backupDir(t, r, src, nil, nil)

	r2 := repo.TestOpen(t, f, repo.Options{})
	f.ResetCalls()
	dst := restore(t, r2, m)
	compareTrees(t, src, dst)
	loads := f.CallsOf(faulty.OpLoad, blob.KindData)
	t.Logf("%d reads of data packs", loads)
	if loads > 20 {
		t.Errorf("%d reads of data packs to restore %d small files: want them batched", loads, files)
	}
}
