package repo

import (
	"context"
	"io"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/pack"
)

// Limits of one read of a BlobReader: the span of pack bytes read at once,
// the bytes of other blobs it may skip between two of its own, and the
// blobs it covers.
const (
	seqMaxSpan  = 4 << 20
	seqMaxGap   = 1 << 20
	seqMaxBlobs = 1024
)

// BlobReader reads the plaintext of a sequence of blobs in order (the
// chunks of a file or of a stream), each one decrypted, decompressed and
// verified as LoadBlob does, but with few storage reads: blobs that follow
// each other in the sequence and lie close together in one pack, in the
// same order (a stream's chunks are stored in the order they were cut,
// interleaved at most with those of streams saved at the same time), are
// fetched by one ranged read of at most seqMaxSpan bytes. A stream of
// 32 KiB chunks restored with LoadBlob costs an open, a read and a key
// derivation per chunk; here, one read per few MiB.
//
// Errors are those of LoadBlob: a blob the index does not know, or that
// fails to decrypt or verify, is named with its pack. A failed ranged read
// is not trusted to say which blob is at fault: its blobs are then read one
// by one with LoadBlob, which names the first one that cannot be read (or
// reads them all, if the failure was transient). Not safe for concurrent
// use.
type BlobReader struct {
	r    *Repository
	ctx  context.Context
	t    pack.BlobType
	ids  []crypto.ID
	next int // index in ids of the blob Next returns next

	group  []index.Location // ids[next-gi:] ... the blobs of the current read
	gi     int              // index in group of the blob Next returns next
	start  int64            // offset in the pack of sealed[0]
	sealed []byte           // the group's span of its pack; nil: LoadBlob each
	buf    []byte           // sealed's backing array, reused
	sealer *crypto.Sealer   // of the pack of the last group read
	plain  []byte
}

// NewBlobReader returns a reader of the blobs ids of type t, in order.
func (r *Repository) NewBlobReader(ctx context.Context, t pack.BlobType, ids []crypto.ID) *BlobReader {
	return &BlobReader{r: r, ctx: ctx, t: t, ids: ids}
}

// Reset makes br read the blobs ids from the first, keeping its buffers.
func (br *BlobReader) Reset(ids []crypto.ID) {
	br.ids, br.next = ids, 0
	br.group, br.gi, br.sealed = br.group[:0], 0, nil
}

// Skip passes over the next blob without reading or verifying it (a
// restore that knows a chunk to be all zeros leaves a hole instead).
func (br *BlobReader) Skip() {
	if br.next == len(br.ids) {
		return
	}
	if br.gi < len(br.group) {
		br.gi++
	}
	br.next++
}

// Next returns the plaintext of the next blob, valid until the next call,
// or io.EOF after the last one.
func (br *BlobReader) Next() ([]byte, error) {
	if br.next == len(br.ids) {
		return nil, io.EOF
	}
	if br.gi == len(br.group) {
		if err := br.fill(); err != nil {
			return nil, err
		}
	}
	l, id := br.group[br.gi], br.ids[br.next]
	var out []byte
	var err error
	if br.sealed == nil {
		out, err = br.r.LoadBlob(br.ctx, br.t, id, br.plain)
	} else {
		off := int64(l.Entry.Offset) - br.start
		// openBlob decrypts in place: each blob's bytes are opened once.
		out, err = br.r.openBlob(br.sealer, l, br.sealed[off:off+int64(l.Entry.Length)], br.plain)
		if err != nil {
			err = hint.With(err, "run `coffre check` to see what is affected")
		}
	}
	if err != nil {
		return nil, err
	}
	br.plain = out
	br.gi++
	br.next++
	return out, nil
}

// fill finds the blobs of the next read and reads their span of the pack.
func (br *BlobReader) fill() error {
	br.group, br.gi, br.sealed = br.group[:0], 0, nil
	id := br.ids[br.next]
	first, ok := br.r.idx.Lookup(br.t, id)
	if !ok {
		return missingBlob(br.t, id)
	}
	br.group = append(br.group, first)
	if br.t == pack.TreeBlob {
		return nil // trees come from their packs read whole (packcache.go)
	}
	start := int64(first.Entry.Offset)
	end := start + int64(first.Entry.Length)
	for k := br.next + 1; k < len(br.ids) && len(br.group) < seqMaxBlobs; k++ {
		l, ok := br.r.idx.Lookup(br.t, br.ids[k])
		off := int64(l.Entry.Offset)
		if !ok || l.Pack != first.Pack || off < end || off-end > seqMaxGap || off+int64(l.Entry.Length)-start > seqMaxSpan {
			break
		}
		br.group = append(br.group, l)
		end = off + int64(l.Entry.Length)
	}
	if br.sealer == nil || br.sealer.Salt != first.Salt {
		s, err := br.r.key.OpenSealer("pack", first.Salt[:])
		if err != nil {
			return hint.With(&BlobError{Type: br.t, ID: id, Pack: first.Pack, Err: err}, "run `coffre check` to see what is affected")
		}
		br.sealer = s
	}
	h := blob.Handle{Kind: packKind(br.t), Name: first.Pack.String()}
	b, err := blob.LoadRange(br.ctx, br.r.be, h, start, end-start, br.buf)
	if err != nil {
		if br.ctx.Err() != nil {
			return br.ctx.Err()
		}
		return nil // LoadBlob, blob by blob, says which one is unreadable
	}
	br.buf, br.sealed, br.start = b, b, start
	return nil
}
