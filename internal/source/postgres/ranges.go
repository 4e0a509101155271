package postgres

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/coffre/coffre/internal/repo/archiver"
)

// Key ranges (order=range, the default). Sorting a big table by its
// primary key costs the server an index scan, which on the bench machine
// took twice the time of a sequential scan (every heap page goes through
// shared buffers instead of a small ring; docs/performance.md). A table
// whose primary key is a single integer column is instead read with one
// sequential scan in binary format, its key column first, and coffre sends
// each row to the stream of its key range: part i holds the rows whose key
// k has k>>shift == first+i, in the order they lie in the table. Ranges
// start at multiples of 1<<shift, so a day's range holds the same keys as
// the day before's. An UPDATE moves a row inside its range's stream only:
// to where the new version lies, which for a row moved far away is among
// the range's few strays before or after the range's own blocks. So a
// day's changes dirty the chunks around the old rows and a few chunks of
// strays, not chunks all over the table (as order=physical does).

// maxRanges bounds the ranges of one table: each is a stream with its
// chunker (1.5 MiB) while the table is read.
const maxRanges = 16

// rangeBytes is the table size per key range aimed at, and rangeMinBytes
// the smallest table split: a smaller one is sorted by the server (small:
// cheap). Variables for tests.
var (
	rangeBytes    int64 = 64 << 20
	rangeMinBytes       = 2 * rangeBytes
)

// rangeKeyTypes are the primary key types whose binary form the router
// decodes: int2, int4, int8 (big-endian two's complement).
var rangeKeyTypes = map[string]int{"smallint": 2, "integer": 4, "bigint": 8}

// rangeShift returns the smallest shift that puts keys lo..hi into at most
// n ranges.
func rangeShift(lo, hi int64, n int) uint {
	for s := uint(0); s < 63; s++ {
		// uint64: hi>>s - lo>>s can exceed the int64 range (lo < 0 < hi).
		if uint64(hi>>s)-uint64(lo>>s) < uint64(n) {
			return s
		}
	}
	return 63
}

// keyRanges splits table t (primary key column key, keys lo..hi, size
// bytes) into key-range parts, the key column first in its column list.
func keyRanges(t *Table, key, keyType string, size, lo, hi int64) {
	n := int(min(max(size/rangeBytes, 2), maxRanges))
	s := rangeShift(lo, hi, n)
	first, last := lo>>s, hi>>s
	t.RangeKey, t.RangeKeyType, t.RangeShift, t.RangeFirst = key, keyType, s, first
	t.OrderBy = nil
	cols := []string{key}
	for _, c := range t.Columns {
		if c != key {
			cols = append(cols, c)
		}
	}
	t.Columns = cols
	t.Parts = nil
	count := int(uint64(last)-uint64(first)) + 1 // at most n
	for i := range count {
		b := first + int64(i)
		from, to := b<<s, b<<s+(1<<s-1)
		if i == 0 {
			from = lo
		}
		if i == count-1 {
			to = hi
		}
		t.Parts = append(t.Parts, Part{Path: partPath(t.Schema, t.Name, i), Keys: fmt.Sprintf("%s %d to %d", key, from, to)})
	}
	t.Path = ""
}

// rangeRouter is the io.Writer that receives a ranged table's binary COPY
// stream (key column first) and writes each row to its range's writer, each
// of which gets its own binary COPY header and trailer. It follows the
// framing across writes of any size and counts rows per range.
type rangeRouter struct {
	out    []*bufio.Writer
	rows   []int64
	bytes  []int64
	first  int64 // the first range's number (lo >> shift)
	shift  uint
	keyLen int

	state int      // what the next bytes are
	pre   [14]byte // a row's field count, key length and key
	have  int
	skip  int64 // bytes left of the header extension or of a field
	cur   int   // the range of the row being routed
	left  int   // fields left in the row
	hdr   [19]byte
	off   int64 // bytes consumed, for messages
	err   error
	fast  int64 // rows routed whole, in one write
}

const (
	rrHeader = iota // signature, flags, extension length
	rrExt           // header extension, dropped
	rrRow           // a row's prefix: field count, key length, key (or the trailer)
	rrLen           // a field's length (passed on)
	rrValue         // a field's value (passed on)
	rrEnd           // after the trailer
)

func newRangeRouter(out []*bufio.Writer, first int64, shift uint, keyLen int) *rangeRouter {
	return &rangeRouter{out: out, rows: make([]int64, len(out)), bytes: make([]int64, len(out)),
		first: first, shift: shift, keyLen: keyLen}
}

// binaryHeader starts every range's stream: the signature, no flags, no
// header extension.
var binaryHeader = []byte(copySignature + "\x00\x00\x00\x00\x00\x00\x00\x00")

// binaryTrailer ends it.
var binaryTrailer = []byte{0xff, 0xff}

func (r *rangeRouter) fail(format string, a ...any) error {
	if r.err == nil {
		r.err = fmt.Errorf("binary COPY stream, byte %d: %s", r.off, fmt.Sprintf(format, a...))
	}
	return r.err
}

func (r *rangeRouter) emit(p []byte) error {
	r.bytes[r.cur] += int64(len(p))
	_, err := r.out[r.cur].Write(p)
	return err
}

func (r *rangeRouter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if r.err != nil {
			return 0, r.err
		}
		switch r.state {
		case rrHeader:
			k := copy(r.hdr[r.have:], p)
			p, r.have, r.off = p[k:], r.have+k, r.off+int64(k)
			if r.have < len(r.hdr) {
				continue
			}
			if string(r.hdr[:len(copySignature)]) != copySignature {
				return 0, r.fail("not a binary COPY stream (bad signature)")
			}
			if f := binary.BigEndian.Uint32(r.hdr[11:]); f&0x1ffff != 0 {
				return 0, r.fail("unexpected header flags %#x", f)
			}
			ext := int32(binary.BigEndian.Uint32(r.hdr[15:]))
			if ext < 0 {
				return 0, r.fail("header extension length %d", ext)
			}
			r.have, r.skip, r.state = 0, int64(ext), rrExt
			if ext == 0 {
				r.state = rrRow
			}
		case rrExt:
			k := min(int64(len(p)), r.skip)
			p, r.skip, r.off = p[k:], r.skip-k, r.off+k
			if r.skip == 0 {
				r.state = rrRow
			}
		case rrRow:
			if r.have == 0 {
				// The fast path: whole rows in p (PostgreSQL sends each
				// row in a message of its own), routed with one write
				// each. Anything else (a row cut across writes, the
				// trailer, a malformed row) takes the byte-wise path
				// below, which also reports the errors.
				if e := r.wholeRow(p); e > 0 {
					if err := r.emit(p[:e]); err != nil {
						return 0, err
					}
					p, r.off = p[e:], r.off+int64(e)
					continue
				}
			}
			need := 2
			if r.have >= 2 {
				if int16(binary.BigEndian.Uint16(r.pre[:])) == -1 {
					r.state = rrEnd
					continue
				}
				need = 6 + r.keyLen
			}
			k := copy(r.pre[r.have:need], p)
			p, r.have, r.off = p[k:], r.have+k, r.off+int64(k)
			if r.have < need {
				continue
			}
			if need == 2 {
				if c := int16(binary.BigEndian.Uint16(r.pre[:])); c != -1 && c < 1 {
					return 0, r.fail("row with %d fields: the key column is missing", c)
				}
				continue
			}
			if l := int32(binary.BigEndian.Uint32(r.pre[2:])); l != int32(r.keyLen) {
				return 0, r.fail("key field of %d bytes, want %d", l, r.keyLen)
			}
			r.route(r.pre[6:need])
			if err := r.emit(r.pre[:need]); err != nil {
				return 0, err
			}
			r.left = int(int16(binary.BigEndian.Uint16(r.pre[:]))) - 1
			r.have = 0
			r.state = rrRow
			if r.left > 0 {
				r.state = rrLen
			}
		case rrLen:
			k := copy(r.pre[r.have:4], p)
			p, r.have, r.off = p[k:], r.have+k, r.off+int64(k)
			if r.have < 4 {
				continue
			}
			if err := r.emit(r.pre[:4]); err != nil {
				return 0, err
			}
			r.have = 0
			switch l := int32(binary.BigEndian.Uint32(r.pre[:])); {
			case l < -1:
				return 0, r.fail("field length %d", l)
			case l <= 0: // NULL or empty
				r.fieldDone()
			default:
				r.skip, r.state = int64(l), rrValue
			}
		case rrValue:
			k := min(int64(len(p)), r.skip)
			if err := r.emit(p[:k]); err != nil {
				return 0, err
			}
			p, r.skip, r.off = p[k:], r.skip-k, r.off+k
			if r.skip == 0 {
				r.fieldDone()
			}
		case rrEnd:
			return 0, r.fail("data after the trailer")
		}
	}
	return n, nil
}

// wholeRow returns the length of the row at the start of p when all of it
// is in p and well formed, after setting r.cur to its range and counting it;
// else 0, with nothing changed.
func (r *rangeRouter) wholeRow(p []byte) int {
	kl := r.keyLen
	if len(p) < 6+kl {
		return 0
	}
	c := int(int16(binary.BigEndian.Uint16(p)))
	if c < 1 || int32(binary.BigEndian.Uint32(p[2:])) != int32(kl) {
		return 0
	}
	e := 6 + kl
	for range c - 1 {
		if len(p)-e < 4 {
			return 0
		}
		l := int(int32(binary.BigEndian.Uint32(p[e:])))
		if l < -1 {
			return 0
		}
		e += 4
		if l > 0 {
			if len(p)-e < l {
				return 0
			}
			e += l
		}
	}
	r.route(p[6 : 6+kl])
	r.fast++
	return e
}

// route sets r.cur to the range of the row with key bytes k (big-endian,
// r.keyLen of them) and counts the row.
func (r *rangeRouter) route(k []byte) {
	var key int64
	switch len(k) {
	case 2:
		key = int64(int16(binary.BigEndian.Uint16(k)))
	case 4:
		key = int64(int32(binary.BigEndian.Uint32(k)))
	default:
		key = int64(binary.BigEndian.Uint64(k))
	}
	r.cur = 0
	if kb := key >> r.shift; kb > r.first {
		r.cur = int(min(uint64(kb)-uint64(r.first), uint64(len(r.out)-1)))
	}
	r.rows[r.cur]++
}

func (r *rangeRouter) fieldDone() {
	r.left--
	if r.left == 0 {
		r.state = rrRow
	} else {
		r.state = rrLen
	}
}

// end checks that the stream ended with its trailer.
func (r *rangeRouter) end() error {
	if r.err == nil && r.state != rrEnd {
		if r.state == rrRow && r.have == 2 && int16(binary.BigEndian.Uint16(r.pre[:])) == -1 {
			r.state = rrEnd
			return nil
		}
		r.fail("the stream ends without its trailer (truncated)")
	}
	return r.err
}

// copyRanges reads table t with one sequential scan and stores its rows in
// its key ranges' streams (see rangeRouter).
func (b *backup) copyRanges(ctx context.Context, conn *pgx.Conn, st *archiver.Streams, t *Table) error {
	keyLen := rangeKeyTypes[t.RangeKeyType]
	if keyLen == 0 || len(t.Parts) == 0 {
		return fmt.Errorf("table %s: key ranges need a smallint, integer or bigint key, not %q", t, t.RangeKeyType)
	}
	n := len(t.Parts)
	pws := make([]*io.PipeWriter, n)
	outs := make([]*bufio.Writer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range t.Parts {
		pr, pw := io.Pipe()
		pws[i] = pw
		outs[i] = bufio.NewWriterSize(pw, 64<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.Add(t.Parts[i].Path, pr)
			pr.CloseWithError(errStopped)
		}()
	}
	rt := newRangeRouter(outs, t.RangeFirst, t.RangeShift, keyLen)
	var w io.Writer = rt
	if hook := testHookCopy; hook != nil {
		w = &copyCounter{w: rt, first: func() { hook(t.Schema, t.Name) }, bin: &binaryRows{}}
	}
	var cerr error
	for _, o := range outs {
		if _, err := o.Write(binaryHeader); err != nil && cerr == nil {
			cerr = err
		}
	}
	if cerr == nil {
		_, cerr = conn.PgConn().CopyTo(ctx, w, t.copyOut(nil))
	}
	if cerr == nil {
		cerr = rt.end()
	}
	for i, o := range outs {
		if cerr == nil {
			if _, err := o.Write(binaryTrailer); err != nil {
				cerr = err
			} else if err := o.Flush(); err != nil {
				cerr = err
			}
		}
		if cerr != nil {
			pws[i].CloseWithError(cerr)
		} else {
			pws[i].Close()
		}
	}
	wg.Wait()
	what := "table " + t.String()
	if cerr != nil && !errors.Is(cerr, errStopped) {
		return fmt.Errorf("copy %s: %w", what, cerr)
	}
	// A range whose storing failed stopped the copy, which stopped the
	// others: report the first error that is not one of those stops.
	var serr error
	var spart int
	for i, err := range errs {
		if err != nil && (serr == nil || errors.Is(serr, errStopped) && !errors.Is(err, errStopped)) {
			serr, spart = err, i
		}
	}
	if serr != nil {
		return fmt.Errorf("store %s (%s): %w", what, t.Parts[spart].Keys, serr)
	}
	if cerr != nil {
		return fmt.Errorf("copy %s: %w", what, cerr)
	}
	for i := range t.Parts {
		t.Parts[i].Rows, t.Parts[i].Bytes = rt.rows[i], rt.bytes[i]+int64(len(binaryHeader)+len(binaryTrailer))
	}
	return nil
}
