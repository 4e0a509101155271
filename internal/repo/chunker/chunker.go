// Package chunker owns content-defined chunking: it splits a byte stream into
// variable-size chunks with FastCDC so that an edit changes only nearby chunks.
//
// The algorithm is FastCDC (Xia et al., USENIX ATC 2016 and IEEE TPDS 2020):
// a gear rolling hash h = h<<1 + Table[b], no hashing of the first MinSize
// bytes of a chunk, and normalized chunking level 2: from MinSize up to
// AvgSize a cut needs log2(AvgSize)+2 zero hash bits (maskS), from AvgSize on
// it needs log2(AvgSize)-2 (maskL), and a chunk is cut at MaxSize at the
// latest. A chunk ends with the byte at which h&mask == 0.
//
// Mask layout: both masks are made of the most significant bits of the hash
// (maskS = top log2(AvgSize)+2 bits, maskL = top log2(AvgSize)-2 bits), not
// the spread masks of the paper. In a gear hash, bit k of h depends only on
// the last k+1 bytes, so the top bits see the whole 64-byte window (the
// paper's spread masks see about 48 bytes), and the distribution of cut
// points is the same. Changing the masks, the table derivation or the cut
// rule changes every chunk boundary and so defeats deduplication against
// existing vaults: the golden test pins them.
package chunker

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"unsafe"
)

// Params are a chunker's size parameters; stored in the vault config.
type Params struct {
	MinSize, AvgSize, MaxSize int
}

const (
	// minMinSize is the smallest allowed MinSize.
	minMinSize = 64
	// maxMaxSize is the largest allowed MaxSize.
	maxMaxSize = 64 << 20
)

// DefaultParams are the size parameters for file trees.
var DefaultParams = Params{MinSize: 512 << 10, AvgSize: 1 << 20, MaxSize: 4 << 20}

// StreamParams are the size parameters for database dumps, streams and large
// compressible files: 32 KiB on average, so that a dump whose rows change by
// 1% a day re-stores little (measured in docs/performance.md).
var StreamParams = Params{MinSize: 8 << 10, AvgSize: 32 << 10, MaxSize: 512 << 10}

// Validate reports whether p is usable: AvgSize is a power of two and
// 64 <= MinSize < AvgSize < MaxSize <= 64 MiB. The error names the bad field.
func (p Params) Validate() error {
	switch {
	case p.MinSize < minMinSize:
		return fmt.Errorf("chunker: invalid params: MinSize %d is below %d", p.MinSize, minMinSize)
	case p.AvgSize <= 0 || p.AvgSize&(p.AvgSize-1) != 0:
		return fmt.Errorf("chunker: invalid params: AvgSize %d is not a power of two", p.AvgSize)
	case p.AvgSize <= p.MinSize:
		return fmt.Errorf("chunker: invalid params: AvgSize %d must be greater than MinSize %d", p.AvgSize, p.MinSize)
	case p.MaxSize <= p.AvgSize:
		return fmt.Errorf("chunker: invalid params: MaxSize %d must be greater than AvgSize %d", p.MaxSize, p.AvgSize)
	case p.MaxSize > maxMaxSize:
		return fmt.Errorf("chunker: invalid params: MaxSize %d is above %d (64 MiB)", p.MaxSize, maxMaxSize)
	}
	return nil
}

// masks returns the normalized-chunking masks for p (see the package doc).
func (p Params) masks() (maskS, maskL uint64) {
	b := bits.TrailingZeros(uint(p.AvgSize))
	return ^uint64(0) << (64 - (b + 2)), ^uint64(0) << (64 - (b - 2))
}

// Table is the gear table (256 uint64). A vault derives it from a secret seed
// so that chunk boundaries leak nothing about content.
type Table [256]uint64

// NewTable derives a gear table from seed. It is deterministic: the same seed
// gives the same table. Block i (i = 0..63) is SHA-256(seed || uint32be(i)),
// and its 32 bytes are entries 4i..4i+3, each a big-endian uint64.
func NewTable(seed []byte) *Table {
	var t Table
	msg := make([]byte, len(seed)+4)
	copy(msg, seed)
	for i := 0; i < len(t)/4; i++ {
		binary.BigEndian.PutUint32(msg[len(seed):], uint32(i))
		sum := sha256.Sum256(msg)
		for j := 0; j < 4; j++ {
			t[4*i+j] = binary.BigEndian.Uint64(sum[8*j:])
		}
	}
	return &t
}

// Chunker splits the data of a reader into content-defined chunks. It is not
// safe for concurrent use.
//
// It reads from the reader in large blocks into one buffer of
// MaxSize + max(MaxSize/4, 1 MiB) bytes (5 MiB with DefaultParams, 2 MiB with
// StreamParams), allocated by New and reused across Reset; Next allocates
// nothing.
type Chunker struct {
	rd           io.Reader
	p            Params
	t            *Table
	maskS, maskL uint64

	buf      []byte
	pos, end int // buf[pos:end] is read but not yet returned
	// block is the free space at the end of buf below which fill first moves
	// the pending data to the front.
	block int

	// Resumable boundary search for the pending chunk, which starts at pos:
	// buf[pos:pos+scanned] has been searched without finding a cut, and h is
	// the hash after it (scanned == 0: search not started).
	scanned int
	h       uint64

	eof bool
	err error // sticky, already wrapped
}

// New returns a chunker for rd with params p and gear table t. It panics if p
// is invalid (check Params.Validate first) or t is nil.
func New(rd io.Reader, p Params, t *Table) *Chunker {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	if t == nil {
		panic("chunker: nil Table")
	}
	block := max(p.MaxSize/4, 1<<20)
	c := &Chunker{
		p:     p,
		t:     t,
		buf:   alignedBuf(p.MaxSize + block),
		block: block,
	}
	c.maskS, c.maskL = p.masks()
	c.Reset(rd)
	return c
}

// Params returns the chunker's size parameters.
func (c *Chunker) Params() Params { return c.p }

// Reset makes c chunk rd from its start, reusing c's buffer. Params and
// table are kept.
func (c *Chunker) Reset(rd io.Reader) {
	c.rd = rd
	c.pos, c.end = 0, 0
	c.scanned, c.h = 0, 0
	c.eof = false
	c.err = nil
}

// readAlign is the alignment of buf and of the offset of every read into it
// (but after the reader's short reads): the page size, which direct I/O
// needs.
const readAlign = 4096

// alignedBuf returns n bytes starting on a readAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+readAlign)
	off := -int(uintptr(unsafe.Pointer(&b[0]))) & (readAlign - 1)
	return b[off : off+n : off+n]
}

// errInvalidRead reports a reader returning an impossible count.
var errInvalidRead = errors.New("reader returned an invalid count")

// Next returns the next chunk. It returns io.EOF (and no data) after the last
// chunk; only the last chunk may be smaller than MinSize, and no chunk is
// larger than MaxSize or empty.
//
// If cap(buf) is at least the chunk's length, the chunk is copied into buf
// and buf[:len] is returned; it then stays valid as long as the caller keeps
// buf. Otherwise (for example with buf == nil, the zero-copy way) the returned
// slice aliases c's internal buffer and is valid only until the next call to
// Next or Reset; the caller may modify it, and appending to it never
// overwrites c's data.
//
// A read error of the reader is returned wrapped (errors.Is works), after the
// chunks that the data read before it fully determine; Next then keeps
// returning it.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	for {
		n := min(c.end-c.pos, c.p.MaxSize)
		if n > c.p.MinSize {
			if cut := c.search(c.buf[c.pos : c.pos+n]); cut > 0 {
				return c.emit(cut, buf), nil
			}
		}
		switch {
		case n == c.p.MaxSize:
			return c.emit(n, buf), nil
		case c.eof:
			if n == 0 {
				return nil, io.EOF
			}
			return c.emit(n, buf), nil
		case c.err != nil:
			return nil, c.err
		}
		c.fill()
	}
}

// emit consumes the next n bytes as a chunk and returns it (see Next).
func (c *Chunker) emit(n int, buf []byte) []byte {
	chunk := c.buf[c.pos : c.pos+n : c.pos+n]
	c.pos += n
	c.scanned, c.h = 0, 0
	if cap(buf) >= n {
		buf = buf[:n]
		copy(buf, chunk)
		return buf
	}
	return chunk
}

// fill reads once from the reader, first moving the pending data to the front
// of the buffer if the free space at the end is small. It sets c.eof or c.err.
func (c *Chunker) fill() {
	if c.pos > 0 && len(c.buf)-c.end < c.block {
		// The pending data moves to the front, shifted so that it ends
		// on a readAlign boundary: reads then start aligned, which lets a
		// reader doing direct I/O read straight into buf.
		rem := c.end - c.pos
		pad := -rem & (readAlign - 1)
		copy(c.buf[pad:], c.buf[c.pos:c.end])
		c.pos, c.end = pad, pad+rem
	}
	for empty := 0; ; empty++ {
		n, err := c.rd.Read(c.buf[c.end:])
		if n < 0 || n > len(c.buf)-c.end {
			c.err = fmt.Errorf("chunker: reading input: %w", errInvalidRead)
			return
		}
		c.end += n
		switch {
		case err == io.EOF:
			c.eof = true
			return
		case err != nil:
			c.err = fmt.Errorf("chunker: reading input: %w", err)
			return
		case n > 0:
			return
		case empty >= 100:
			c.err = fmt.Errorf("chunker: reading input: %w", io.ErrNoProgress)
			return
		}
	}
}

// search continues the boundary search of the pending chunk over data, which
// starts at the chunk's start and is at most MaxSize long. It returns the
// chunk length if a cut point is in data, else 0 after recording its progress.
func (c *Chunker) search(data []byte) int {
	i, h := c.scanned, c.h
	if i < c.p.MinSize {
		i, h = c.p.MinSize, 0
	}
	if i < c.p.AvgSize {
		end := min(c.p.AvgSize, len(data))
		var k int
		if k, h = c.t.scan(data[i:end], h, c.maskS); k >= 0 {
			return i + k + 1
		}
		i = end
	}
	if i < len(data) {
		var k int
		if k, h = c.t.scan(data[i:], h, c.maskL); k >= 0 {
			return i + k + 1
		}
		i = len(data)
	}
	c.scanned, c.h = i, h
	return 0
}

// scan rolls the gear hash h over d and returns the index of the first byte
// after which h&mask == 0, or -1, and the hash at that point (at the end of d
// if none). It computes h_i = h_{i-1}<<1 + t[d[i]] for every byte, but 8 bytes
// per iteration and with the dependency chain cut in half: h_{i+2} is computed
// from h_i as h_i<<2 + (t[d[i+1]]<<1 + t[d[i+2]]), so consecutive steps of the
// loop-carried hash need one LEA per two bytes instead of a shift and an add
// per byte. This roughly doubles the speed of the naive loop (scanNaive in the
// tests, against which it is checked).
func (t *Table) scan(d []byte, h, mask uint64) (int, uint64) {
	_ = t[0] // one nil check, outside the loop
	i := 0
	for ; len(d)-i >= 8; i += 8 {
		q := d[i : i+8 : i+8]
		a0, a1, a2, a3 := t[q[0]], t[q[1]], t[q[2]], t[q[3]]
		a4, a5, a6, a7 := t[q[4]], t[q[5]], t[q[6]], t[q[7]]
		h1 := h<<1 + a0
		h2 := h<<2 + (a0<<1 + a1)
		h3 := h2<<1 + a2
		h4 := h2<<2 + (a2<<1 + a3)
		h5 := h4<<1 + a4
		h6 := h4<<2 + (a4<<1 + a5)
		h7 := h6<<1 + a6
		h8 := h6<<2 + (a6<<1 + a7)
		switch {
		case h1&mask == 0:
			return i, h1
		case h2&mask == 0:
			return i + 1, h2
		case h3&mask == 0:
			return i + 2, h3
		case h4&mask == 0:
			return i + 3, h4
		case h5&mask == 0:
			return i + 4, h5
		case h6&mask == 0:
			return i + 5, h6
		case h7&mask == 0:
			return i + 6, h7
		case h8&mask == 0:
			return i + 7, h8
		}
		h = h8
	}
	for ; i < len(d); i++ {
		h = h<<1 + t[d[i]]
		if h&mask == 0 {
			return i, h
		}
	}
	return -1, h
}
