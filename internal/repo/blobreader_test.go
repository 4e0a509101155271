package repo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/testutil"
)

// saveStreams stores two streams of n small chunks each, saved
// alternately as two database tables backed up at once would be, plus a
// chunk repeated within the first stream and one shared by both, and
// returns each stream's chunk ids and bytes.
func saveStreams(t *testing.T, r *repo.Repository, n int) (ids [2][]crypto.ID, data [2][]byte) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	shared := testutil.Text(20 << 10)
	var prev0 []byte
	for i := range n {
		for s := range 2 {
			var c []byte
			switch {
			case i == n/2:
				c = shared
			case s == 0 && i == n/3:
				c = prev0 // the chunk before, again
			case rng.IntN(3) == 0:
				c = make([]byte, 8<<10+rng.IntN(32<<10)) // incompressible
				for j := range c {
					c[j] = byte(rng.Uint32())
				}
			default:
				c = append([]byte(nil), testutil.Text(8<<10+rng.IntN(32<<10))...)
				c[0] = byte(i)
				c[1] = byte(s)
				c[2] = byte(i >> 8)
			}
			id, _, err := r.SaveStreamBlob(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			ids[s] = append(ids[s], id)
			data[s] = append(data[s], c...)
			if s == 0 {
				prev0 = c
			}
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return ids, data
}

// readAll reads a sequence of blobs with a BlobReader.
func readAll(ctx context.Context, r *repo.Repository, ids []crypto.ID) ([]byte, error) {
	br := r.NewBlobReader(ctx, pack.DataBlob, ids)
	var out []byte
	for {
		b, err := br.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, b...)
	}
}

// A sequence of small blobs is read back intact with few storage reads,
// even with two streams' chunks interleaved in the packs.
func TestBlobReaderReadsFewTimes(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(mustLocal(t))
	r := repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	ids, data := saveStreams(t, r, 300)
	packs := map[crypto.ID]bool{}
	for s := range 2 {
		for _, id := range ids[s] {
			l, ok := r.Index().Lookup(pack.DataBlob, id)
			if !ok {
				t.Fatalf("chunk %s not indexed", id.Short())
			}
			packs[l.Pack] = true
		}
	}

	r2 := repo.TestOpen(t, f, repo.Options{})
	for s := range 2 {
		f.ResetCalls()
		got, err := readAll(ctx, r2, ids[s])
		if err != nil {
			t.Fatalf("stream %d: %v", s, err)
		}
		if !bytes.Equal(got, data[s]) {
			t.Fatalf("stream %d: read back %d bytes different from the %d saved", s, len(got), len(data[s]))
		}
		// One read per pack, plus one per break in the order (the
		// repeated and the shared chunk) and per 4 MiB of span.
		loads := f.CallsOf(faulty.OpLoad, blob.KindData)
		if limit := 2*len(packs) + 6; loads > limit {
			t.Errorf("stream %d: %d storage reads for %d chunks in %d packs, want at most %d", s, loads, len(ids[s]), len(packs), limit)
		}
		if loads == 0 {
			t.Errorf("stream %d: no storage read counted", s)
		}
	}
	// Past the end: io.EOF again.
	br := r2.NewBlobReader(ctx, pack.DataBlob, ids[0][:1])
	if _, err := br.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := br.Next(); err != io.EOF {
			t.Fatalf("Next past the end: %v, want io.EOF", err)
		}
	}
}

// A damaged byte fails the blob it lies in, named with its pack, after
// every blob before it was returned intact; a blob the index does not
// know is named; a failed storage read falls back to reading blob by
// blob, which reads them all when the failure was transient and names the
// unreadable blob when it was not.
func TestBlobReaderFaults(t *testing.T) {
	ctx := context.Background()
	be := mustLocal(t)
	r := repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{})
	ids, data := saveStreams(t, r, 120)
	seq, want := ids[0], data[0]

	// sizes of the chunks, to know what comes before the damaged one
	var before int
	k := len(seq) * 2 / 3
	for _, id := range seq[:k] {
		l, _ := r.Index().Lookup(pack.DataBlob, id)
		before += int(l.Entry.RawLength)
	}
	bad, _ := r.Index().Lookup(pack.DataBlob, seq[k])
	name := bad.Pack.String()
	p := filepath.Join(be.Root(), "data", name[:2], name)
	flipByteAt(t, p, int64(bad.Entry.Offset)+int64(bad.Entry.Length)/2)

	r2 := repo.TestOpen(t, be, repo.Options{})
	got, err := readAll(ctx, r2, seq)
	checkBlobError(t, err, seq[k], bad.Pack)
	if !errors.Is(err, crypto.ErrAuth) {
		t.Errorf("error %v does not wrap crypto.ErrAuth", err)
	}
	if len(got) != before || !bytes.Equal(got, want[:before]) {
		t.Errorf("before the damaged chunk %d: got %d bytes, want the %d saved", k, len(got), before)
	}
	flipByteAt(t, p, int64(bad.Entry.Offset)+int64(bad.Entry.Length)/2) // repaired

	// A chunk the index does not know.
	missing := crypto.ID{1, 2, 3}
	withMissing := append(append(append([]crypto.ID(nil), seq[:5]...), missing), seq[5:]...)
	_, err = readAll(ctx, r2, withMissing)
	var blobErr *repo.BlobError
	if !errors.As(err, &blobErr) || blobErr.ID != missing || !errors.Is(err, repo.ErrBlobMissing) {
		t.Errorf("read with a chunk the index lacks: %v, want a BlobError naming %s", err, missing.Short())
	}

	// A transient read failure: the first ranged read fails.
	f := faulty.New(be)
	r3 := repo.TestOpen(t, f, repo.Options{})
	boom := errors.New("injected load failure")
	failed := 0
	f.FailLoad(func(h blob.Handle) error {
		if h.Kind == blob.KindData && failed == 0 {
			failed++
			return boom
		}
		return nil
	})
	if got, err := readAll(ctx, r3, seq); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read with one failed storage read: %v (%d bytes of %d)", err, len(got), len(want))
	}

	// Short reads every time: the error is the storage's, for a named chunk.
	f.FailLoad(nil)
	f.ShortRead(func(h blob.Handle) bool { return h.Kind == blob.KindData })
	_, err = readAll(ctx, r3, seq)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &blobErr) || blobErr.ID != seq[0] {
		t.Errorf("read with short storage reads: %v, want io.ErrUnexpectedEOF for chunk %s", err, seq[0].Short())
	}

	// A cancelled context stops the read with its error.
	f.ShortRead(nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := readAll(cctx, r3, seq); !errors.Is(err, context.Canceled) {
		t.Errorf("read with a cancelled context: %v", err)
	}
}

// Skip passes over one blob, inside a read or between reads, and Reset
// starts over on another sequence with the same reader.
func TestBlobReaderSkipAndReset(t *testing.T) {
	ctx := context.Background()
	r := repo.TestInit(t, mustLocal(t), repo.TestInitOptions(), repo.Options{})
	ids, _ := saveStreams(t, r, 40)
	seq := ids[0]
	chunk := func(id crypto.ID) []byte {
		b, err := r.LoadBlob(ctx, pack.DataBlob, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Skip every third blob, the first one included.
	br := r.NewBlobReader(ctx, pack.DataBlob, seq)
	for pass := range 2 {
		for i, id := range seq {
			if i%3 == 0 {
				br.Skip()
				continue
			}
			got, err := br.Next()
			if err != nil {
				t.Fatalf("pass %d, blob %d: %v", pass, i, err)
			}
			if !bytes.Equal(got, chunk(id)) {
				t.Fatalf("pass %d, blob %d: not the blob's bytes after skipping", pass, i)
			}
		}
		br.Skip() // past the end: nothing
		if _, err := br.Next(); err != io.EOF {
			t.Fatalf("pass %d: Next after the last blob: %v, want io.EOF", pass, err)
		}
		br.Reset(seq)
	}
	// Reset onto the other stream, reversed (no two neighbours in order).
	rev := slices.Clone(ids[1])
	slices.Reverse(rev)
	br.Reset(rev)
	for i, id := range rev {
		got, err := br.Next()
		if err != nil || !bytes.Equal(got, chunk(id)) {
			t.Fatalf("reversed blob %d: %v", i, err)
		}
	}
}
