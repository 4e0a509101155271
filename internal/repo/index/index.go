// Package index owns the map from blob ids to their place in packs: the
// in-memory master index and the encoding of index files.
package index

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
)

// Pack describes one pack file and the blobs it holds.
type Pack struct {
	ID    crypto.ID
	Salt  [crypto.SaltSize]byte
	Type  pack.BlobType
	Size  uint64
	Blobs []pack.Entry
}

// File is the content of one index file.
type File struct {
	Supersedes []crypto.ID // index files this one replaces (written by prune)
	Packs      []Pack
}

const fileVersion = 1

// Encode serialises an index file (before sealing).
func (f *File) Encode() []byte {
	n := 0
	for _, p := range f.Packs {
		n += 64 + len(p.Blobs)*48
	}
	out := make([]byte, 0, 16+n+32*len(f.Supersedes))
	out = binary.AppendUvarint(out, fileVersion)
	out = binary.AppendUvarint(out, uint64(len(f.Supersedes)))
	for _, id := range f.Supersedes {
		out = append(out, id[:]...)
	}
	out = binary.AppendUvarint(out, uint64(len(f.Packs)))
	for _, p := range f.Packs {
		out = append(out, p.ID[:]...)
		out = append(out, p.Salt[:]...)
		out = append(out, byte(p.Type))
		out = binary.AppendUvarint(out, p.Size)
		out = binary.AppendUvarint(out, uint64(len(p.Blobs)))
		for _, e := range p.Blobs {
			out = append(out, e.Comp)
			out = append(out, e.ID[:]...)
			out = binary.AppendUvarint(out, uint64(e.Offset))
			out = binary.AppendUvarint(out, uint64(e.Length))
			out = binary.AppendUvarint(out, uint64(e.RawLength))
		}
	}
	return out
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(max uint64, what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b)
	if k <= 0 || v > max {
		d.err = fmt.Errorf("malformed index file: bad %s", what)
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("malformed index file: truncated in %s", what)
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// Decode parses an index file.
func Decode(b []byte) (*File, error) {
	d := &decoder{b: b}
	if v := d.uvarint(1<<20, "version"); d.err == nil && v != fileVersion {
		return nil, fmt.Errorf("index file has version %d, this coffre reads version %d", v, fileVersion)
	}
	f := &File{}
	ns := d.uvarint(uint64(len(b)/32), "supersedes count")
	for i := uint64(0); i < ns && d.err == nil; i++ {
		f.Supersedes = append(f.Supersedes, crypto.ID(d.bytes(32, "supersedes")))
	}
	np := d.uvarint(uint64(len(b)/50), "pack count")
	f.Packs = make([]Pack, 0, np)
	for i := uint64(0); i < np && d.err == nil; i++ {
		p := Pack{ID: crypto.ID(d.bytes(32, "pack id"))}
		copy(p.Salt[:], d.bytes(crypto.SaltSize, "salt"))
		p.Type = pack.BlobType(d.bytes(1, "type")[0])
		if p.Type > pack.TreeBlob && d.err == nil {
			d.err = fmt.Errorf("malformed index file: pack %v has unknown type %d", p.ID.Short(), p.Type)
		}
		p.Size = d.uvarint(1<<32, "pack size")
		nb := d.uvarint(uint64(len(d.b)/35+1), "blob count")
		p.Blobs = make([]pack.Entry, 0, nb)
		for j := uint64(0); j < nb && d.err == nil; j++ {
			e := pack.Entry{Type: p.Type, Comp: d.bytes(1, "comp")[0]}
			e.ID = crypto.ID(d.bytes(32, "blob id"))
			e.Offset = uint32(d.uvarint(1<<32-1, "offset"))
			e.Length = uint32(d.uvarint(1<<32-1, "length"))
			e.RawLength = uint32(d.uvarint(1<<32-1, "raw length"))
			if d.err == nil && (uint64(e.Offset)+uint64(e.Length) > p.Size || e.Comp > pack.CompZstd) {
				d.err = fmt.Errorf("malformed index file: blob %v outside pack %v", e.ID.Short(), p.ID.Short())
			}
			p.Blobs = append(p.Blobs, e)
		}
		f.Packs = append(f.Packs, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("malformed index file: %d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return f, nil
}

// Location is where a blob is stored.
type Location struct {
	Pack  crypto.ID
	Salt  [crypto.SaltSize]byte
	Entry pack.Entry
}

type loc struct {
	pack                   uint32
	offset, length, rawLen uint32
	comp                   uint8
}

type key struct {
	id crypto.ID
	t  pack.BlobType
}

type packInfo struct {
	id   crypto.ID
	salt [crypto.SaltSize]byte
	t    pack.BlobType
	size uint64
}

// Master is the union of all index files of a vault, plus the packs written
// by this process that are not yet in an index file. Safe for concurrent use.
type Master struct {
	mu     sync.RWMutex
	blobs  map[key]loc
	packs  []packInfo
	packNo map[crypto.ID]uint32
	files  map[crypto.ID]bool // index files loaded
}

// NewMaster returns an empty master index.
func NewMaster() *Master {
	return &Master{blobs: map[key]loc{}, packNo: map[crypto.ID]uint32{}, files: map[crypto.ID]bool{}}
}

// AddPack records a pack and its blobs. A blob already known keeps its first
// location.
func (m *Master) AddPack(p Pack) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addPackLocked(p)
}

func (m *Master) addPackLocked(p Pack) {
	n, ok := m.packNo[p.ID]
	if !ok {
		n = uint32(len(m.packs))
		m.packs = append(m.packs, packInfo{id: p.ID, salt: p.Salt, t: p.Type, size: p.Size})
		m.packNo[p.ID] = n
	}
	for _, e := range p.Blobs {
		k := key{e.ID, p.Type}
		if _, ok := m.blobs[k]; ok {
			continue
		}
		m.blobs[k] = loc{pack: n, offset: e.Offset, length: e.Length, rawLen: e.RawLength, comp: e.Comp}
	}
}

// AddFile records the content of an index file with the given id.
func (m *Master) AddFile(id crypto.ID, f *File) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[id] = true
	for _, p := range f.Packs {
		m.addPackLocked(p)
	}
}

// Has reports whether a blob is known.
func (m *Master) Has(t pack.BlobType, id crypto.ID) bool {
	m.mu.RLock()
	_, ok := m.blobs[key{id, t}]
	m.mu.RUnlock()
	return ok
}

// Lookup returns a blob's location.
func (m *Master) Lookup(t pack.BlobType, id crypto.ID) (Location, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l, ok := m.blobs[key{id, t}]
	if !ok {
		return Location{}, false
	}
	p := m.packs[l.pack]
	return Location{Pack: p.id, Salt: p.salt, Entry: pack.Entry{Type: t, Comp: l.comp, ID: id, Offset: l.offset, Length: l.length, RawLength: l.rawLen}}, true
}

// Count returns the number of blobs of type t.
func (m *Master) Count(t pack.BlobType) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for k := range m.blobs {
		if k.t == t {
			n++
		}
	}
	return n
}

// Packs returns every known pack with its blobs, sorted by id.
func (m *Master) Packs() []Pack {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Pack, len(m.packs))
	for i, p := range m.packs {
		out[i] = Pack{ID: p.id, Salt: p.salt, Type: p.t, Size: p.size}
	}
	for k, l := range m.blobs {
		out[l.pack].Blobs = append(out[l.pack].Blobs, pack.Entry{Type: k.t, Comp: l.comp, ID: k.id, Offset: l.offset, Length: l.length, RawLength: l.rawLen})
	}
	for i := range out {
		sort.Slice(out[i].Blobs, func(a, b int) bool { return out[i].Blobs[a].Offset < out[i].Blobs[b].Offset })
	}
	sort.Slice(out, func(a, b int) bool { return string(out[a].ID[:]) < string(out[b].ID[:]) })
	return out
}

// HasPack reports whether a pack is known.
func (m *Master) HasPack(id crypto.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.packNo[id]
	return ok
}

// Files returns the ids of the index files loaded.
func (m *Master) Files() []crypto.ID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]crypto.ID, 0, len(m.files))
	for id := range m.files {
		out = append(out, id)
	}
	return out
}

// HasFile reports whether an index file was loaded.
func (m *Master) HasFile(id crypto.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.files[id]
}
