package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/blobtest"
)

func newVault(t testing.TB) *Storage {
	s, err := Create(filepath.Join(t.TempDir(), "vault"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Storage { return newVault(t) })
}

func BenchmarkLocal(b *testing.B) {
	blobtest.RunBench(b, func(b *testing.B) blob.Storage { return newVault(b) })
}

func save(t *testing.T, s *Storage, h blob.Handle, data string) {
	t.Helper()
	if err := s.Save(context.Background(), h, strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutAndModes(t *testing.T) {
	s := newVault(t)
	root := s.Root()
	for _, k := range []string{"keys", "data", "tree", "index", "snapshots", "locks"} {
		fi, err := os.Stat(filepath.Join(root, k))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 directory", k, fi.Mode())
		}
	}
	files := map[blob.Handle]string{
		{Kind: blob.KindConfig, Name: "config"}:     "config",
		{Kind: blob.KindKey, Name: "k1"}:            "keys/k1",
		{Kind: blob.KindData, Name: "ab12"}:         "data/ab/ab12",
		{Kind: blob.KindTree, Name: "cd34"}:         "tree/cd/cd34",
		{Kind: blob.KindIndex, Name: "ef56"}:        "index/ef56",
		{Kind: blob.KindSnapshot, Name: "0123"}:     "snapshots/0123",
		{Kind: blob.KindLock, Name: "4567"}:         "locks/4567",
		{Kind: blob.KindData, Name: "zz-a.b_c"}:     "data/zz/zz-a.b_c",
		{Kind: blob.KindTree, Name: "a."}:           "tree/a./a.",
		{Kind: blob.KindSnapshot, Name: "a..b-..."}: "snapshots/a..b-...",
	}
	for h, rel := range files {
		save(t, s, h, "content of "+rel)
		p := filepath.Join(root, filepath.FromSlash(rel))
		if s.Path(h) != p {
			t.Errorf("Path(%v) = %s, want %s", h, s.Path(h), p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%v: %v", h, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", rel, fi.Mode())
		}
		dir, err := os.Stat(filepath.Dir(p))
		if err != nil || dir.Mode().Perm() != 0o700 {
			t.Errorf("%s: dir mode %v, %v; want 0700", rel, dir.Mode(), err)
		}
	}
	// Open sees the same files.
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	for h, rel := range files {
		got, err := blob.LoadAll(context.Background(), s2, h)
		if err != nil || string(got) != "content of "+rel {
			t.Errorf("reopened Load(%v) = %q, %v", h, got, err)
		}
	}
	// No temporary file is left anywhere.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestShortDataNameRejected(t *testing.T) {
	s := newVault(t)
	for _, k := range []blob.Kind{blob.KindData, blob.KindTree} {
		h := blob.Handle{Kind: k, Name: "a"}
		if err := s.Save(context.Background(), h, strings.NewReader("x"), 1); err == nil {
			t.Errorf("Save(%v) succeeded, want an invalid-name error", h)
		}
	}
	h := blob.Handle{Kind: blob.KindConfig, Name: "notconfig"}
	if err := s.Save(context.Background(), h, strings.NewReader("x"), 1); err == nil {
		t.Errorf("Save(%v) succeeded, want an invalid-name error", h)
	}
}

func TestListSkipsStrayFiles(t *testing.T) {
	s := newVault(t)
	root := s.Root()
	save(t, s, blob.Handle{Kind: blob.KindData, Name: "ab01"}, "x")
	save(t, s, blob.Handle{Kind: blob.KindIndex, Name: "ab01"}, "x")
	stray := []string{
		"data/ab/.tmp-123",
		"data/.tmp-456",
		"data/ab01x", // a file at the wrong level
		"data/ab/cd02",
		"data/ab/UPPER",
		"index/.tmp-789",
		"index/.hidden",
		"index/Thumbs.db",
		".tmp-config",
	}
	for _, rel := range stray {
		if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(rel)), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"data/.hidden", "index/subdir"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "data/.hidden/ab03"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []blob.Kind{blob.KindData, blob.KindIndex} {
		var got []string
		err := s.List(context.Background(), k, func(fi blob.FileInfo) error {
			got = append(got, fi.Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != "ab01" {
			t.Errorf("List(%v) = %v, want [ab01]", k, got)
		}
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	// An existing empty directory is fine.
	if _, err := Create(dir); err != nil {
		t.Fatalf("Create of an empty directory: %v", err)
	}
	// A non-empty one is not.
	_, err := Create(dir)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Create of a non-empty directory: %v, want a not-empty error", err)
	}
	// Nested missing parents are created.
	if _, err := Create(filepath.Join(dir, "a", "b", "c")); err != nil {
		t.Fatalf("Create with missing parents: %v", err)
	}
	// A file is not a directory.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(f); err == nil {
		t.Fatal("Create over a file succeeded")
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "missing"))
	if !blob.IsNotExist(err) || !strings.Contains(err.Error(), "no such directory") {
		t.Errorf("Open of a missing root: %v, want a not-exist error", err)
	}
	root := filepath.Join(dir, "vault")
	s, err := Create(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(root)
	if !blob.IsNotExist(err) || !strings.Contains(err.Error(), "no config") {
		t.Errorf("Open without config: %v, want a not-exist error naming the config", err)
	}
	save(t, s, blob.Handle{Kind: blob.KindConfig, Name: "config"}, "cfg")
	s2, err := Open(root)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s2.Location() != root {
		t.Errorf("Location = %q, want %q", s2.Location(), root)
	}
	// A root that is a file.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f); err == nil {
		t.Error("Open of a file succeeded")
	}
}

func TestDiskFull(t *testing.T) {
	err := diskFull(&fs.PathError{Op: "write", Path: "/v/data/ab/.tmp-1", Err: syscall.ENOSPC}, "/v/data/ab/ab01")
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "/v/data/ab/ab01") {
		t.Errorf("diskFull = %v", err)
	}
	other := errors.New("other")
	if diskFull(other, "x") != other {
		t.Error("diskFull changed an unrelated error")
	}
}

func TestDiskFullDevFull(t *testing.T) {
	// /dev/full fails every write with a real ENOSPC.
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	_, err = f.Write([]byte("x"))
	err = diskFull(err, "/dev/full")
	if err == nil || !strings.Contains(err.Error(), "disk full writing /dev/full") {
		t.Errorf("write to /dev/full: %v", err)
	}
}

func TestTruncatedUnderReader(t *testing.T) {
	s := newVault(t)
	h := blob.Handle{Kind: blob.KindData, Name: "ab01"}
	data := bytes.Repeat([]byte("x"), 1000)
	if err := s.Save(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	rd, err := s.Load(context.Background(), h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := os.Truncate(s.Path(h), 10); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	n, err := rd.Read(buf)
	if err == nil {
		_, err = rd.Read(buf[n:])
	}
	if err == nil {
		t.Fatalf("reading a truncated file: %d bytes, %v; want an error", n, err)
	}
	if err == io.EOF {
		t.Fatalf("reading a truncated file ended with a plain EOF after %d bytes", n)
	}
}

// newStreamFile starts a data file in a new vault.
func newStreamFile(t *testing.T) (*Storage, blob.StreamFile) {
	t.Helper()
	s, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sf, err := s.Create(context.Background(), blob.KindData)
	if err != nil {
		t.Fatal(err)
	}
	return s, sf
}

// TestStreamFileBuffers: a stream written in pieces of every size (bytes,
// pieces that cross the buffer's end, pieces larger than it) commits exactly
// the bytes written, in order, while fewer of them have reached the file
// before Commit than were written.
func TestStreamFileBuffers(t *testing.T) {
	ctx := context.Background()
	s, sf := newStreamFile(t)
	var want []byte
	rnd := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 1, 7, 100 << 10, streamBuffer - 100<<10 - 9, 1, streamBuffer / 2, 3, streamBuffer*3 + 5, 12345}
	for i := 0; i < 300; i++ {
		sizes = append(sizes, rnd.IntN(40<<10))
	}
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rnd.Uint32())
		}
		m, err := sf.Write(p)
		if err != nil || m != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		want = append(want, p...)
	}
	fi, err := sf.(*streamFile).f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() >= int64(len(want)) || fi.Size() == 0 {
		t.Errorf("before Commit the file holds %d of %d bytes written: want some, not all, buffered", fi.Size(), len(want))
	}
	if err := sf.Commit(ctx, "ab01"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.Path(blob.Handle{Kind: blob.KindData, Name: "ab01"}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("committed %d bytes, differ from the %d written", len(got), len(want))
	}
}

// TestStreamFileWriteError: a write that fails while flushing the buffer
// is returned by that Write, by every later one and by Commit, which names
// nothing and leaves no temporary file.
func TestStreamFileWriteError(t *testing.T) {
	ctx := context.Background()
	s, sf := newStreamFile(t)
	f := sf.(*streamFile).f
	if _, err := sf.Write(make([]byte, 1000)); err != nil {
		t.Fatalf("a buffered write failed: %v", err)
	}
	f.Close() // every write to the file fails from now on
	_, err := sf.Write(make([]byte, streamBuffer))
	if err == nil || !strings.Contains(err.Error(), f.Name()) {
		t.Fatalf("Write past the buffer over a closed file: %v, want an error naming %s", err, f.Name())
	}
	if _, err2 := sf.Write([]byte("x")); err2 == nil {
		t.Error("a Write after a failed one succeeded")
	}
	if err := sf.Commit(ctx, "ab01"); err == nil {
		t.Fatal("Commit after a failed write succeeded")
	}
	if _, err := os.Stat(s.Path(blob.Handle{Kind: blob.KindData, Name: "ab01"})); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed file is visible: %v", err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the temporary file is left behind: %v", err)
	}
}
