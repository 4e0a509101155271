// Package pack owns the pack file format: many encrypted blobs in one stored
// file, followed by an encrypted trailer that lists them, so that a pack can be
// indexed again from its own bytes.
//
//	header   "CFPK" | version (1 byte) | salt (16 bytes)
//	blobs    AES-256-GCM(subkey, nonce = blob offset, ad = type || id, payload) ...
//	trailer  AES-256-GCM(subkey, nonce = TrailerNonce, ad = "pack trailer", entries)
//	tail     trailer length, uint32 little endian (4 bytes, plaintext)
//
// The subkey is HKDF-SHA256(data key, salt, "coffre pack v1"). A blob's payload
// is its plaintext, zstd-compressed when that saves space. See
// docs/repository-format.md.
package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/coffre/coffre/internal/repo/bufpool"
	"github.com/coffre/coffre/internal/repo/crypto"
)

// BlobType says what a blob holds.
type BlobType uint8

// Blob types. Data blobs and tree blobs never share a pack.
const (
	DataBlob BlobType = 0
	TreeBlob BlobType = 1
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Compression of a blob's payload.
const (
	CompNone uint8 = 0
	CompZstd uint8 = 1
)

// Header layout.
const (
	Magic        = "CFPK"
	Version      = 1
	HeaderSize   = 4 + 1 + crypto.SaltSize
	TailSize     = 4
	TrailerNonce = uint64(1) << 63
)

// Entry describes one blob in a pack.
type Entry struct {
	Type      BlobType
	Comp      uint8
	ID        crypto.ID
	Offset    uint32 // of the sealed payload in the pack
	Length    uint32 // of the sealed payload (compressed plaintext + tag)
	RawLength uint32 // plaintext length
}

// AD returns the additional data that binds a blob's ciphertext to its type and id.
func AD(t BlobType, id crypto.ID) []byte {
	ad := make([]byte, 1+crypto.IDSize)
	ad[0] = byte(t)
	copy(ad[1:], id[:])
	return ad
}

// Writer writes one pack to a sink (a file being written, or a memory
// buffer), hashing its bytes on the way. It is not safe for concurrent use.
type Writer struct {
	s       *crypto.Sealer
	out     io.Writer
	hash    *crypto.StreamHash
	size    int
	scratch []byte
	entries []Entry
	ad      [1 + crypto.IDSize]byte
	err     error
}

// NewWriter starts a pack with a fresh salt, writing to out.
func NewWriter(k *crypto.Key, out io.Writer) (*Writer, error) {
	s, err := k.NewSealer("pack")
	if err != nil {
		return nil, err
	}
	w := &Writer{s: s, out: out, hash: crypto.NewStreamHash()}
	hdr := append([]byte(Magic), Version)
	hdr = append(hdr, s.Salt[:]...)
	if err := w.write(hdr); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	if _, err := w.out.Write(b); err != nil {
		w.err = err
		return err
	}
	_, _ = w.hash.Write(b)
	w.size += len(b)
	return nil
}

// Salt returns the pack's salt (kept in the index, so that one blob can be
// decrypted without reading the header).
func (w *Writer) Salt() [crypto.SaltSize]byte { return w.s.Salt }

// Add seals payload (already compressed if comp says so) and appends it.
func (w *Writer) Add(t BlobType, id crypto.ID, comp uint8, payload []byte, rawLen int) (Entry, error) {
	off := w.size
	w.ad[0] = byte(t)
	copy(w.ad[1:], id[:])
	if need := len(payload) + crypto.Overhead; cap(w.scratch) < need {
		// A pooled buffer: growing a fresh one per pack costs more (zeroing,
		// page faults) than sealing the payload.
		bufpool.Default.Put(w.scratch)
		w.scratch = bufpool.Default.Get(need)
	}
	w.scratch = w.s.Seal(w.scratch[:0], uint64(off), payload, w.ad[:])
	if err := w.write(w.scratch); err != nil {
		return Entry{}, err
	}
	e := Entry{Type: t, Comp: comp, ID: id, Offset: uint32(off), Length: uint32(len(w.scratch)), RawLength: uint32(rawLen)}
	w.entries = append(w.entries, e)
	return e, nil
}

// Size is the current size of the pack, without the trailer.
func (w *Writer) Size() int { return w.size }

// Count is the number of blobs added.
func (w *Writer) Count() int { return len(w.entries) }

// Entries returns the blobs added so far.
func (w *Writer) Entries() []Entry { return w.entries }

// Finish appends the trailer and returns the pack's total size and id (the
// BLAKE3 hash of its bytes). The writer is not used afterwards.
func (w *Writer) Finish() (int, crypto.ID, error) {
	plain := EncodeTrailer(w.entries)
	ct := w.s.Seal(w.scratch[:0], TrailerNonce, plain, []byte("pack trailer"))
	ct = binary.LittleEndian.AppendUint32(ct, uint32(len(ct)))
	if err := w.write(ct); err != nil {
		return 0, crypto.ID{}, err
	}
	bufpool.Default.Put(w.scratch)
	w.scratch = nil
	return w.size, w.hash.ID(), nil
}

// MemSink is an in-memory pack sink.
type MemSink struct{ Buf []byte }

// Write appends to the buffer.
func (m *MemSink) Write(b []byte) (int, error) { m.Buf = append(m.Buf, b...); return len(b), nil }

// EncodeTrailer serialises entries: count, then per entry type, comp, id,
// length, raw length (uvarints). Offsets follow from the lengths.
func EncodeTrailer(entries []Entry) []byte {
	out := binary.AppendUvarint(nil, uint64(len(entries)))
	for _, e := range entries {
		out = append(out, byte(e.Type), e.Comp)
		out = append(out, e.ID[:]...)
		out = binary.AppendUvarint(out, uint64(e.Length))
		out = binary.AppendUvarint(out, uint64(e.RawLength))
	}
	return out
}

// ErrFormat is wrapped by errors about malformed packs.
var ErrFormat = errors.New("malformed pack")

// DecodeTrailer parses a trailer's plaintext.
func DecodeTrailer(b []byte) ([]Entry, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: bad entry count", ErrFormat)
	}
	b = b[k:]
	entries := make([]Entry, 0, n)
	off := uint64(HeaderSize)
	for i := uint64(0); i < n; i++ {
		if len(b) < 2+crypto.IDSize {
			return nil, fmt.Errorf("%w: trailer truncated at entry %d", ErrFormat, i)
		}
		e := Entry{Type: BlobType(b[0]), Comp: b[1]}
		if e.Type > TreeBlob || e.Comp > CompZstd {
			return nil, fmt.Errorf("%w: entry %d has unknown type %d or compression %d", ErrFormat, i, b[0], b[1])
		}
		copy(e.ID[:], b[2:2+crypto.IDSize])
		b = b[2+crypto.IDSize:]
		l, k := binary.Uvarint(b)
		if k <= 0 || l < crypto.Overhead || l > 1<<31 {
			return nil, fmt.Errorf("%w: entry %d has bad length", ErrFormat, i)
		}
		b = b[k:]
		r, k := binary.Uvarint(b)
		if k <= 0 || r > 1<<31 {
			return nil, fmt.Errorf("%w: entry %d has bad raw length", ErrFormat, i)
		}
		b = b[k:]
		e.Offset, e.Length, e.RawLength = uint32(off), uint32(l), uint32(r)
		off += l
		if off > 1<<32-1 {
			return nil, fmt.Errorf("%w: pack larger than 4 GiB", ErrFormat)
		}
		entries = append(entries, e)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes in trailer", ErrFormat, len(b))
	}
	return entries, nil
}

// ParseHeader checks the header of a pack and returns its salt.
func ParseHeader(b []byte) ([crypto.SaltSize]byte, error) {
	var salt [crypto.SaltSize]byte
	if len(b) < HeaderSize {
		return salt, fmt.Errorf("%w: %d bytes, shorter than a header", ErrFormat, len(b))
	}
	if string(b[:4]) != Magic {
		return salt, fmt.Errorf("%w: bad magic %q", ErrFormat, b[:4])
	}
	if b[4] != Version {
		return salt, fmt.Errorf("%w: version %d, this coffre reads version %d", ErrFormat, b[4], Version)
	}
	copy(salt[:], b[5:HeaderSize])
	return salt, nil
}

// ReadTrailer decrypts and parses the trailer of a whole pack held in memory
// and checks that the entries cover the pack exactly.
func ReadTrailer(k *crypto.Key, b []byte) ([crypto.SaltSize]byte, []Entry, error) {
	salt, err := ParseHeader(b)
	if err != nil {
		return salt, nil, err
	}
	if len(b) < HeaderSize+crypto.Overhead+TailSize {
		return salt, nil, fmt.Errorf("%w: too short (%d bytes)", ErrFormat, len(b))
	}
	tl := int(binary.LittleEndian.Uint32(b[len(b)-TailSize:]))
	if tl < crypto.Overhead || tl > len(b)-HeaderSize-TailSize {
		return salt, nil, fmt.Errorf("%w: trailer length %d out of range", ErrFormat, tl)
	}
	ctStart := len(b) - TailSize - tl
	s, err := k.OpenSealer("pack", salt[:])
	if err != nil {
		return salt, nil, err
	}
	plain, err := s.Open(nil, TrailerNonce, b[ctStart:len(b)-TailSize], []byte("pack trailer"))
	if err != nil {
		return salt, nil, fmt.Errorf("trailer: %w", err)
	}
	entries, err := DecodeTrailer(plain)
	if err != nil {
		return salt, nil, err
	}
	end := HeaderSize
	if n := len(entries); n > 0 {
		end = int(entries[n-1].Offset + entries[n-1].Length)
	}
	if end != ctStart {
		return salt, nil, fmt.Errorf("%w: blobs end at %d but trailer starts at %d", ErrFormat, end, ctStart)
	}
	return salt, entries, nil
}
