package archiver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source/stream"
)

// memFS is a test double: a virtual tree of one directory of files.
type memFS struct{ files map[string][]byte }

var fsTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func (m *memFS) Root() (tree.Node, error) {
	return tree.Node{Name: "root", Type: tree.TypeDir, Mode: 0o755, ModTime: fsTime}, nil
}

func (m *memFS) ReadDir(p string) ([]tree.Node, error) {
	if p != "" {
		return nil, errors.New("no such directory")
	}
	var out []tree.Node
	for name, b := range m.files {
		out = append(out, tree.Node{Name: name, Type: tree.TypeFile, Mode: 0o644, ModTime: fsTime, Size: uint64(len(b))})
	}
	return out, nil
}

func (m *memFS) Open(p string) (io.ReadCloser, error) {
	b, ok := m.files[p]
	if !ok {
		return nil, errors.New("no such file")
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// gateStorage is a test double: the first data pack Save waits until the
// storage sees another Save (or its context ends). A backup of a little more
// than one pack of data thus still has that pack's upload in flight when it
// finishes reading; the next Save comes from the final Flush.
type gateStorage struct {
	blob.Storage
	mu       sync.Mutex
	gated    bool
	released bool
	release  chan struct{}
}

func (g *gateStorage) Save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	g.mu.Lock()
	wait := false
	switch {
	case !g.gated && h.Kind == blob.KindData:
		g.gated, wait = true, true
	case g.gated && !g.released:
		g.released = true
		close(g.release)
	}
	g.mu.Unlock()
	if wait {
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Storage.Save(ctx, h, rd, size)
}

// TestBackupWaitsForInFlightPackSaves: a pack upload still running when the
// archiver has read everything must complete, not be cancelled.
func TestBackupWaitsForInFlightPackSaves(t *testing.T) {
	ctx := context.Background()
	g := &gateStorage{Storage: mem.New(), release: make(chan struct{})}
	r := repo.TestInit(t, g, repo.TestInitOptions(), repo.Options{}) // 1 MiB packs
	data := make([]byte, 1536<<10)                                   // incompressible: fills a 1 MiB pack
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	fsys := &memFS{files: map[string][]byte{"f": data}}
	m, err := archiver.New(r, archiver.Options{}).Backup(ctx, fsys, snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{"/virtual"}})
	if err != nil {
		t.Fatalf("backup with a slow pack upload: %v", err)
	}
	tr, err := tree.Load(ctx, r, m.Tree)
	if err != nil {
		t.Fatal(err)
	}
	n := tr.Find("f")
	if n == nil {
		t.Fatal("file missing from the recovery point")
	}
	var out bytes.Buffer
	if _, err := stream.WriteTo(ctx, r, n, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("restored %d bytes (err %v), want the %d backed up", out.Len(), err, len(data))
	}
}

// prefetchFS is memFS with a Prefetcher that records its hints.
type prefetchFS struct {
	memFS
	mu    sync.Mutex
	hints map[string]int64
}

func (p *prefetchFS) Prefetch(path string, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hints[path] = size
}

// TestPrefetchHintsFilesToRead: a Prefetcher FS is told of every file the
// backup reads (with its size), and of no other: not the empty ones, not
// those an incremental backup reuses.
func TestPrefetchHintsFilesToRead(t *testing.T) {
	ctx := context.Background()
	r := repo.TestInit(t, mem.New(), repo.TestInitOptions(), repo.Options{})
	fsys := &prefetchFS{memFS: memFS{files: map[string][]byte{"a": []byte("aaa"), "b": []byte("bbbbb"), "empty": nil}}, hints: map[string]int64{}}
	src := snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{"/virtual"}}
	m1, err := archiver.New(r, archiver.Options{}).Backup(ctx, fsys, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(fsys.hints) != 2 || fsys.hints["a"] != 3 || fsys.hints["b"] != 5 {
		t.Errorf("first backup hinted %v, want a (3 bytes) and b (5 bytes)", fsys.hints)
	}
	// memFS gives every file the same mtime: a size change marks b changed.
	fsys.files["b"] = []byte("bbbbbb")
	fsys.hints = map[string]int64{}
	if _, err := archiver.New(r, archiver.Options{Parent: m1}).Backup(ctx, fsys, src); err != nil {
		t.Fatal(err)
	}
	if len(fsys.hints) != 1 || fsys.hints["b"] != 6 {
		t.Errorf("incremental backup hinted %v, want only b (6 bytes)", fsys.hints)
	}
}
