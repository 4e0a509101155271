package archiver_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source/stream"
)

// dumpData returns n bytes alternating random and repetitive text blocks,
// like a database dump.
func dumpData(n int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], 42)
	rng := rand.NewChaCha8(seed)
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		if i%2 == 0 {
			blk := make([]byte, 300<<10)
			_, _ = rng.Read(blk)
			b.Write(blk)
		} else {
			for j := 0; j < 3000; j++ {
				fmt.Fprintf(&b, "INSERT INTO t VALUES (%d, %d, 'row');\n", i, j)
			}
		}
	}
	return b.Bytes()[:n]
}

// onlyReader hides everything but Read, as a pipe does.
type onlyReader struct{ io.Reader }

var streamSrc = snapshot.Source{Type: snapshot.SourceStream, Command: "pg_dump db"}

func snapshots(t *testing.T, r *repo.Repository) int {
	t.Helper()
	ids, err := r.List(context.Background(), blob.KindSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

func TestBackupStreamRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, be := repo.TestRepository(t)
	data := dumpData(20 << 20)
	finished := false
	m, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, onlyReader{bytes.NewReader(data)},
		archiver.StreamNode{Name: "dump.sql"}, streamSrc, func() error { finished = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !finished {
		t.Error("finish was not called")
	}
	if m.Status != snapshot.StatusCompleted || m.Source.Filename != "dump.sql" || m.Stats.Bytes != int64(len(data)) {
		t.Errorf("manifest status %s, filename %q, %d bytes; want COMPLETED, dump.sql, %d", m.Status, m.Source.Filename, m.Stats.Bytes, len(data))
	}

	// Read it back through a fresh handle.
	r2 := repo.TestOpen(t, be, repo.Options{})
	m2, err := snapshot.Load(ctx, r2, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tree.Load(ctx, r2, m2.Tree)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Nodes) != 1 {
		t.Fatalf("stream tree has %d nodes, want 1", len(tr.Nodes))
	}
	n := tr.Nodes[0]
	if n.Name != "dump.sql" || n.Type != tree.TypeFile || n.Mode != 0o600 || n.Size != uint64(len(data)) {
		t.Errorf("stream node %s %s %o %d bytes, want dump.sql file 600 %d bytes", n.Name, n.Type, n.Mode, n.Size, len(data))
	}
	if len(n.Content) < 20 {
		t.Errorf("20 MiB stream in %d chunks: the stream chunker was not used", len(n.Content))
	}
	var out bytes.Buffer
	w, err := stream.WriteTo(ctx, r2, &n, &out)
	if err != nil {
		t.Fatal(err)
	}
	if w != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("WriteTo wrote %d bytes that differ from the %d backed up", w, len(data))
	}

	// The same stream again adds no data.
	dataBlobs := r2.Index().Count(pack.DataBlob)
	if _, err := archiver.New(r2, archiver.Options{}).BackupStream(ctx, bytes.NewReader(data), archiver.StreamNode{Name: "dump.sql"}, streamSrc, nil); err != nil {
		t.Fatal(err)
	}
	if got := r2.Index().Count(pack.DataBlob); got != dataBlobs {
		t.Errorf("a second backup of the same stream added %d data blobs", got-dataBlobs)
	}
}

func TestBackupStreamFinishErrorAborts(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	errCmd := errors.New("pg_dump: exit status 1")
	m, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, bytes.NewReader(dumpData(3<<20)),
		archiver.StreamNode{Name: "dump.sql"}, streamSrc, func() error { return errCmd })
	if !errors.Is(err, errCmd) {
		t.Fatalf("BackupStream with a failing finish = %v, want its error", err)
	}
	if m != nil {
		t.Error("aborted stream backup returned a manifest")
	}
	if n := snapshots(t, r); n != 0 {
		t.Errorf("aborted stream backup wrote %d recovery points", n)
	}
}

// failingReader yields n bytes of data, then fails.
type failingReader struct {
	rd  io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.rd.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestBackupStreamReadErrorAborts(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	errRead := errors.New("broken pipe")
	finishCalled := false
	_, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, &failingReader{bytes.NewReader(dumpData(2 << 20)), errRead},
		archiver.StreamNode{}, streamSrc, func() error { finishCalled = true; return nil })
	if !errors.Is(err, errRead) {
		t.Fatalf("BackupStream of a failing reader = %v, want its error", err)
	}
	if finishCalled {
		t.Error("finish was called although the stream failed")
	}
	if n := snapshots(t, r); n != 0 {
		t.Errorf("failed stream backup wrote %d recovery points", n)
	}
}

func TestBackupStreamBackendErrorAborts(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(mem.New())
	repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	r := repo.TestOpen(t, f, repo.Options{})
	errBackend := errors.New("injected: bucket unavailable")
	var saves atomic.Int64
	f.FailSave(func(h blob.Handle) error {
		if h.Kind == blob.KindData && saves.Add(1) > 1 {
			return errBackend
		}
		return nil
	})
	_, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, bytes.NewReader(dumpData(6<<20)),
		archiver.StreamNode{Name: "dump.sql"}, streamSrc, nil)
	if !errors.Is(err, errBackend) {
		t.Fatalf("BackupStream with failing pack saves = %v, want the backend error", err)
	}
	if n := snapshots(t, r); n != 0 {
		t.Errorf("failed stream backup wrote %d recovery points", n)
	}
}

func TestBackupStreamsParallelTreeRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, be := repo.TestRepository(t)
	files := map[string][]byte{
		"meta.json":                []byte(`{"tables":3}`),
		"schema/pre-data.sql":      []byte("CREATE TABLE a();\n"),
		"data/public.a.copy":       dumpData(3 << 20),
		"data/public.b.copy":       dumpData(1 << 20)[:12345],
		"data/deep/x/public.c.cpy": nil, // an empty stream
	}
	src := snapshot.Source{Type: "postgres", Resource: "db"}
	m, err := archiver.New(r, archiver.Options{}).BackupStreams(ctx, src, func(ctx context.Context, s *archiver.Streams) error {
		errs := make(chan error, len(files))
		for p, b := range files {
			go func() { errs <- s.Add(p, onlyReader{bytes.NewReader(b)}) }()
		}
		var first error
		for range files {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		if err := s.AddBytes("meta.json", nil); err == nil {
			return errors.New("a path added twice was accepted")
		}
		for _, bad := range []string{"", "/abs", "../up", "a/../b", "./x"} {
			if err := s.AddBytes(bad, nil); err == nil {
				return fmt.Errorf("path %q accepted", bad)
			}
		}
		return first
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Source.Type != "postgres" || m.Stats.Files != int64(len(files)) || m.Status != snapshot.StatusCompleted {
		t.Fatalf("manifest: %+v", m)
	}
	r2 := repo.TestOpen(t, be, repo.Options{})
	for p, want := range files {
		n, err := stream.Lookup(ctx, r2, m.Tree, p)
		if err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
		got, err := io.ReadAll(stream.NewReader(ctx, r2, n))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes back (%v), want %d", p, len(got), err, len(want))
		}
	}
	if _, err := stream.Lookup(ctx, r2, m.Tree, "data/missing"); err == nil {
		t.Fatal("lookup of a missing path succeeded")
	}
}

func TestBackupStreamsFillErrorCommitsNothing(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	boom := errors.New("connection killed mid-stream")
	_, err := archiver.New(r, archiver.Options{}).BackupStreams(ctx, snapshot.Source{Type: "redis"}, func(ctx context.Context, s *archiver.Streams) error {
		if err := s.AddBytes("db0/keys", dumpData(1<<20)); err != nil {
			return err
		}
		return s.Add("db1/keys", &failingReader{rd: bytes.NewReader(dumpData(1 << 20)), err: boom})
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if n := snapshots(t, r); n != 0 {
		t.Fatalf("%d recovery points after a failed multi-stream backup", n)
	}
}

func TestStatsCountOnlyThisBackup(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	data := dumpData(4 << 20)
	m1, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, bytes.NewReader(data), archiver.StreamNode{Name: "a"}, streamSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same data again on the same handle adds nothing, and says so.
	m2, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, bytes.NewReader(data), archiver.StreamNode{Name: "a"}, streamSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Stats.StoredAdded == 0 || m2.Stats.StoredAdded >= m1.Stats.StoredAdded/10 || m2.Stats.BlobsAdded > 1 {
		t.Fatalf("first backup stored %d bytes, second (same data, same handle) %d bytes and %d blobs", m1.Stats.StoredAdded, m2.Stats.StoredAdded, m2.Stats.BlobsAdded)
	}
}

func TestBackupStreamsReportsTheStorageErrorNotTheCancellation(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(mem.New())
	repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	r := repo.TestOpen(t, f, repo.Options{})
	errBackend := errors.New("injected: bucket unavailable")
	f.FailSave(func(h blob.Handle) error {
		if h.Kind == blob.KindData {
			return errBackend
		}
		return nil
	})
	_, err := archiver.New(r, archiver.Options{}).BackupStreams(ctx, snapshot.Source{Type: "postgres"}, func(ctx context.Context, s *archiver.Streams) error {
		// Like an adapter whose other streams stop on the cancelled
		// context and which reports that first.
		_ = s.AddBytes("data/a.copy", dumpData(12<<20))
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, errBackend) {
		t.Fatalf("err = %v, want the backend error", err)
	}
	if n := snapshots(t, r); n != 0 {
		t.Fatalf("%d recovery points after a storage failure", n)
	}
}

// TestStreamChunksAtStreamLevel backs up the same stream into vaults that
// differ only in their stream level: it decides how small a stream's
// chunks get (level 0 is the compressor's business, tested in repo).
func TestStreamChunksAtStreamLevel(t *testing.T) {
	ctx := context.Background()
	// Rows of random words and numbers: every chunk compresses, and
	// level 19 finds much more than level 1 whatever the vault's chunk
	// boundaries (each vault has its own chunker seed).
	words := strings.Fields("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega")
	rng := rand.New(rand.NewPCG(7, 8))
	var b bytes.Buffer
	for b.Len() < 4<<20 {
		fmt.Fprintf(&b, "INSERT INTO t VALUES (%d, '%s %s %s', %d);\n", rng.IntN(1e6),
			words[rng.IntN(len(words))], words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(1e9))
	}
	data := b.Bytes()
	stored := func(level, streamLevel int) int64 {
		o := repo.TestInitOptions()
		o.ZstdLevel, o.ZstdLevelStream = level, streamLevel
		r := repo.TestInit(t, mem.New(), o, repo.Options{})
		if _, err := archiver.New(r, archiver.Options{}).BackupStream(ctx, onlyReader{bytes.NewReader(data)},
			archiver.StreamNode{Name: "dump.sql"}, streamSrc, nil); err != nil {
			t.Fatal(err)
		}
		return r.Stats().StoredAdded
	}
	fast, best := stored(3, 1), stored(3, repo.MaxZstdLevel)
	if best >= fast-fast/20 {
		t.Errorf("stream level %d stored %d bytes, level 1 %d: the stream level is not used", repo.MaxZstdLevel, best, fast)
	}
}
