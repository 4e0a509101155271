package redis

// A streaming parser of the RDB format, for the PSYNC path: it reads a
// snapshot once, front to back, and turns every key into the DUMP payload
// the server would have returned for it, without decoding values.
//
// A DUMP payload is the value's type byte, the value's serialisation exactly
// as in an RDB file, the RDB version (u16 little-endian) and the CRC-64 of
// all that (u64 little-endian). The parser therefore only delimits each
// value (it knows how many bytes every encoding takes) and copies its bytes;
// it never decompresses or interprets listpacks, intsets or ziplists.
//
// Memory: the read buffer, the key being read, and the payload being copied
// (into the buffer the sink hands out, see rdbSink). Lengths read from the
// stream never size an allocation beyond what the stream then delivers, so a
// damaged stream fails with an error, not with an out-of-memory crash.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// RDB versions this parser reads: 6 (Redis 2.6) to 11 (Redis 7.2). Version
// 12 (Redis 7.4) adds hash types with per-field expiry that it does not know.
const (
	rdbMinVersion = 6
	rdbMaxVersion = 11
)

// RDB opcodes (rdb.h).
const (
	rdbOpFunction2     = 245 // a function library (its source code)
	rdbOpFunctionPreGA = 246 // the function format of Redis 7.0 release candidates
	rdbOpModuleAux     = 247
	rdbOpIdle          = 248
	rdbOpFreq          = 249
	rdbOpAux           = 250
	rdbOpResizeDB      = 251
	rdbOpExpireMS      = 252
	rdbOpExpireSec     = 253
	rdbOpSelectDB      = 254
	rdbOpEOF           = 255
)

// RDB value types (rdb.h).
const (
	rdbTypeString           = 0
	rdbTypeList             = 1
	rdbTypeSet              = 2
	rdbTypeZSet             = 3
	rdbTypeHash             = 4
	rdbTypeZSet2            = 5
	rdbTypeModule           = 6
	rdbTypeModule2          = 7
	rdbTypeHashZipmap       = 9
	rdbTypeListZiplist      = 10
	rdbTypeSetIntset        = 11
	rdbTypeZSetZiplist      = 12
	rdbTypeHashZiplist      = 13
	rdbTypeListQuicklist    = 14
	rdbTypeStreamListpacks  = 15
	rdbTypeHashListpack     = 16
	rdbTypeZSetListpack     = 17
	rdbTypeListQuicklist2   = 18
	rdbTypeStreamListpacks2 = 19
	rdbTypeSetListpack      = 20
	rdbTypeStreamListpacks3 = 21
)

// String encodings of a length byte 0b11xxxxxx.
const (
	rdbEncInt8  = 0
	rdbEncInt16 = 1
	rdbEncInt32 = 2
	rdbEncLZF   = 3
)

// rdbEOFMarkLen is the length of the mark that ends a diskless transfer.
const rdbEOFMarkLen = 40

var (
	// errRDBCorrupt marks a stream that is not a valid RDB (damaged or
	// truncated in transfer).
	errRDBCorrupt = errors.New("malformed RDB stream")
	// errRDBUnsupported marks what this parser cannot delimit: a module
	// type, a value type or RDB version newer than this build, functions
	// in the pre-release format. The SCAN path backs such keys up.
	errRDBUnsupported = errors.New("not readable from the replication stream by this build")
)

// rdbError is a parse failure at an offset of the RDB stream.
type rdbError struct {
	off int64
	msg string
	err error // errRDBCorrupt, errRDBUnsupported or a read error
}

func (e *rdbError) Error() string { return fmt.Sprintf("RDB offset %d: %s", e.off, e.msg) }
func (e *rdbError) Unwrap() error { return e.err }

// rdbSink receives a parsed stream's databases and keys.
type rdbSink interface {
	// selectDB starts database db; the keys that follow are in it.
	selectDB(db int) error
	// key is called for each key with its absolute expiry (Unix ms, -1:
	// none) and RDB type before its value is read. It returns the buffer
	// to append the key's DUMP payload to, or nil to skip the value. key
	// is only valid during the call.
	key(key []byte, expireAt int64, typ byte) (*[]byte, error)
	// value is called after the payload was appended to the buffer key
	// returned; payload is its tail.
	value(payload []byte) error
}

// rdbReader reads an RDB stream through its own buffer, keeps the stream's
// CRC-64 and can copy the bytes it consumes into a capture buffer.
type rdbReader struct {
	src    io.Reader
	buf    []byte
	r, w   int   // unread bytes: buf[r:w]
	base   int64 // stream offset of buf[0]
	crc    uint64
	crcAt  int     // buf[crcAt:r] is consumed but not yet in crc
	capt   *[]byte // while capturing: consumed bytes are appended here
	captAt int     // buf[captAt:r] is consumed but not yet captured
	err    error   // the source's sticky error
}

func newRDBReader(src io.Reader, size int) *rdbReader {
	return &rdbReader{src: src, buf: make([]byte, max(size, 4096))}
}

// offset is the stream offset of the next byte.
func (rd *rdbReader) offset() int64 { return rd.base + int64(rd.r) }

// flush adds the bytes consumed since the last flush to the checksum and,
// while capturing, to the capture buffer.
func (rd *rdbReader) flush() {
	if rd.crcAt < rd.r {
		rd.crc = crc64(rd.crc, rd.buf[rd.crcAt:rd.r])
		rd.crcAt = rd.r
	}
	if rd.capt != nil && rd.captAt < rd.r {
		*rd.capt = append(*rd.capt, rd.buf[rd.captAt:rd.r]...)
		rd.captAt = rd.r
	}
}

// fill makes at least n unread bytes available (n ≤ len(buf)).
func (rd *rdbReader) fill(n int) error {
	if rd.w-rd.r >= n {
		return nil
	}
	rd.flush()
	if rd.r > 0 {
		copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.base += int64(rd.r)
		rd.w -= rd.r
		rd.r, rd.crcAt, rd.captAt = 0, 0, 0
	}
	for rd.w < n {
		if rd.err != nil {
			if rd.err == io.EOF {
				return &rdbError{off: rd.base + int64(rd.w), msg: "truncated: the stream ends before the RDB does", err: io.ErrUnexpectedEOF}
			}
			return rd.err
		}
		m, err := rd.src.Read(rd.buf[rd.w:])
		rd.w += m
		if err != nil {
			rd.err = err
		}
	}
	return nil
}

func (rd *rdbReader) startCapture(dst *[]byte) { rd.capt, rd.captAt = dst, rd.r }

func (rd *rdbReader) stopCapture() {
	rd.flush()
	rd.capt = nil
}

// sum returns the CRC-64 of every byte consumed so far.
func (rd *rdbReader) sum() uint64 {
	rd.flush()
	return rd.crc
}

func (rd *rdbReader) readByte() (byte, error) {
	if rd.r == rd.w {
		if err := rd.fill(1); err != nil {
			return 0, err
		}
	}
	b := rd.buf[rd.r]
	rd.r++
	return b, nil
}

// next returns the next n bytes (n ≤ 64), valid until the next read.
func (rd *rdbReader) next(n int) ([]byte, error) {
	if rd.w-rd.r < n {
		if err := rd.fill(n); err != nil {
			return nil, err
		}
	}
	b := rd.buf[rd.r : rd.r+n]
	rd.r += n
	return b, nil
}

// skip consumes n bytes.
func (rd *rdbReader) skip(n uint64) error {
	for {
		avail := uint64(rd.w - rd.r)
		if n <= avail {
			rd.r += int(n)
			return nil
		}
		n -= avail
		rd.r = rd.w
		if err := rd.fill(1); err != nil {
			return err
		}
	}
}

// read appends the next n bytes to dst, growing it only as the bytes arrive.
func (rd *rdbReader) read(dst []byte, n uint64) ([]byte, error) {
	for n > 0 {
		if rd.r == rd.w {
			if err := rd.fill(1); err != nil {
				return dst, err
			}
		}
		k := min(uint64(rd.w-rd.r), n)
		dst = append(dst, rd.buf[rd.r:rd.r+int(k)]...)
		rd.r += int(k)
		n -= k
	}
	return dst, nil
}

// rdbParser parses one RDB stream.
type rdbParser struct {
	rd      *rdbReader
	version int
	// aux holds the AUX fields of the stream named in rdbAuxKept.
	aux map[string]string
	// unsupported, for tests, makes value types unknown to the parser.
	unsupported func(typ byte) bool

	key, str, lzf []byte // scratch buffers
}

func newRDBParser(rd *rdbReader) *rdbParser {
	return &rdbParser{rd: rd, aux: map[string]string{}}
}

func (p *rdbParser) corrupt(off int64, format string, args ...any) error {
	return &rdbError{off: off, msg: fmt.Sprintf(format, args...), err: errRDBCorrupt}
}

// readLen reads a length. For the special string encodings (first byte
// 0b11xxxxxx) enc is true and n is the encoding.
func (p *rdbParser) readLen() (n uint64, enc bool, err error) {
	rd := p.rd
	b, err := rd.readByte()
	if err != nil {
		return 0, false, err
	}
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3f), false, nil
	case 1:
		b2, err := rd.readByte()
		if err != nil {
			return 0, false, err
		}
		return uint64(b&0x3f)<<8 | uint64(b2), false, nil
	case 2:
		switch b {
		case 0x80:
			x, err := rd.next(4)
			if err != nil {
				return 0, false, err
			}
			return uint64(binary.BigEndian.Uint32(x)), false, nil
		case 0x81:
			x, err := rd.next(8)
			if err != nil {
				return 0, false, err
			}
			return binary.BigEndian.Uint64(x), false, nil
		}
		return 0, false, p.corrupt(rd.offset()-1, "invalid length byte 0x%02x", b)
	}
	return uint64(b & 0x3f), true, nil
}

// plainLen reads a length that may not be a string encoding.
func (p *rdbParser) plainLen() (uint64, error) {
	n, enc, err := p.readLen()
	if err == nil && enc {
		err = p.corrupt(p.rd.offset()-1, "string encoding where a length belongs")
	}
	return n, err
}

// count reads an element count, refusing absurd ones early (every element
// takes at least one byte, so a count beyond 2^48 is damage).
func (p *rdbParser) count() (uint64, error) {
	n, err := p.plainLen()
	if err == nil && n > 1<<48 {
		err = p.corrupt(p.rd.offset(), "element count %d", n)
	}
	return n, err
}

// skipString consumes a string in any encoding.
func (p *rdbParser) skipString() error {
	n, enc, err := p.readLen()
	if err != nil {
		return err
	}
	if !enc {
		return p.rd.skip(n)
	}
	switch n {
	case rdbEncInt8:
		return p.rd.skip(1)
	case rdbEncInt16:
		return p.rd.skip(2)
	case rdbEncInt32:
		return p.rd.skip(4)
	case rdbEncLZF:
		clen, err := p.plainLen()
		if err != nil {
			return err
		}
		if _, err := p.plainLen(); err != nil {
			return err
		}
		return p.rd.skip(clen)
	}
	return p.corrupt(p.rd.offset()-1, "unknown string encoding %d", n)
}

// readString appends a string, decoded, to dst[:0]; limit bounds its length.
func (p *rdbParser) readString(dst []byte, limit uint64) ([]byte, error) {
	rd := p.rd
	dst = dst[:0]
	off := rd.offset()
	n, enc, err := p.readLen()
	if err != nil {
		return dst, err
	}
	if !enc {
		if n > limit {
			return dst, p.corrupt(off, "string of %d bytes where at most %d are allowed", n, limit)
		}
		return rd.read(dst, n)
	}
	switch n {
	case rdbEncInt8, rdbEncInt16, rdbEncInt32:
		size := 1 << n
		x, err := rd.next(size)
		if err != nil {
			return dst, err
		}
		var v int64
		switch size {
		case 1:
			v = int64(int8(x[0]))
		case 2:
			v = int64(int16(binary.LittleEndian.Uint16(x)))
		default:
			v = int64(int32(binary.LittleEndian.Uint32(x)))
		}
		return strconv.AppendInt(dst, v, 10), nil
	case rdbEncLZF:
		clen, err := p.plainLen()
		if err != nil {
			return dst, err
		}
		ulen, err := p.plainLen()
		if err != nil {
			return dst, err
		}
		// LZF expands at most 88 times (3 bytes for a 264-byte match), and
		// Redis stores it only when it saves space.
		if ulen > limit || clen == 0 || clen > ulen || ulen > 88*clen+32 {
			return dst, p.corrupt(off, "LZF string of %d bytes compressed into %d", ulen, clen)
		}
		if p.lzf, err = rd.read(p.lzf[:0], clen); err != nil {
			return dst, err
		}
		dst = append(dst, make([]byte, ulen)...)
		if err := lzfDecompress(dst, p.lzf); err != nil {
			return dst, p.corrupt(off, "LZF string: %v", err)
		}
		return dst, nil
	}
	return dst, p.corrupt(off, "unknown string encoding %d", n)
}

// maxAuxLen bounds the AUX field names and the values kept (a few bytes in
// practice).
const maxAuxLen = 1 << 20

// rdbAuxKept are the AUX fields whose values the parser keeps.
var rdbAuxKept = map[string]bool{
	"redis-ver": true, "redis-bits": true, "ctime": true, "used-mem": true,
	"repl-stream-db": true, "repl-id": true, "repl-offset": true, "aof-base": true, "aof-preamble": true,
}

// parse reads the whole stream, up to and including the checksum, into sink.
func (p *rdbParser) parse(sink rdbSink) error {
	rd := p.rd
	hdr, err := rd.next(9)
	if err != nil {
		return err
	}
	if string(hdr[:5]) != "REDIS" {
		return p.corrupt(0, "not an RDB stream (header %q)", hdr)
	}
	v, err := strconv.Atoi(string(hdr[5:]))
	if err != nil || v < 1 {
		return p.corrupt(5, "not an RDB stream (version %q)", hdr[5:])
	}
	p.version = v
	if v < rdbMinVersion || v > rdbMaxVersion {
		return &rdbError{off: 5, err: errRDBUnsupported,
			msg: fmt.Sprintf("RDB format %d (written by %s): this build reads formats %d to %d", v, redisForRDB(v), rdbMinVersion, rdbMaxVersion)}
	}

	db, selected := 0, false
	expireAt := int64(-1)
	for {
		off := rd.offset()
		t, err := rd.readByte()
		if err != nil {
			return err
		}
		switch t {
		case rdbOpEOF:
			sum := rd.sum()
			want, err := rd.next(8)
			if err != nil {
				return err
			}
			if w := binary.LittleEndian.Uint64(want); w != 0 && w != sum {
				return &rdbError{off: off + 1, err: errRDBCorrupt,
					msg: fmt.Sprintf("checksum mismatch: the stream's %d bytes sum to %016x, its trailer says %016x: the snapshot was damaged in transfer", off+1, sum, w)}
			}
			return nil
		case rdbOpSelectDB:
			n, err := p.plainLen()
			if err != nil {
				return err
			}
			if n > 1<<20 {
				return p.corrupt(off, "database number %d", n)
			}
			db, selected = int(n), true
			if err := sink.selectDB(db); err != nil {
				return err
			}
		case rdbOpResizeDB:
			for range 2 {
				if _, err := p.plainLen(); err != nil {
					return err
				}
			}
		case rdbOpExpireMS:
			x, err := rd.next(8)
			if err != nil {
				return err
			}
			expireAt = int64(binary.LittleEndian.Uint64(x))
		case rdbOpExpireSec:
			x, err := rd.next(4)
			if err != nil {
				return err
			}
			expireAt = int64(int32(binary.LittleEndian.Uint32(x))) * 1000
		case rdbOpFreq:
			if err := rd.skip(1); err != nil {
				return err
			}
		case rdbOpIdle:
			if _, err := p.plainLen(); err != nil {
				return err
			}
		case rdbOpAux:
			if p.str, err = p.readString(p.str, maxAuxLen); err != nil {
				return err
			}
			name := string(p.str)
			if !rdbAuxKept[name] {
				// Others may be big: Redis ≤ 6 sends its Lua scripts as "lua".
				if err := p.skipString(); err != nil {
					return err
				}
				continue
			}
			if p.str, err = p.readString(p.str, maxAuxLen); err != nil {
				return err
			}
			p.aux[name] = string(p.str)
		case rdbOpModuleAux:
			if err := p.skipModuleAux(off); err != nil {
				return err
			}
		case rdbOpFunction2:
			// A function library: its source code in one string. Skipped:
			// backups hold keys only (as the SCAN path does).
			if err := p.skipString(); err != nil {
				return err
			}
		case rdbOpFunctionPreGA:
			return &rdbError{off: off, err: errRDBUnsupported, msg: "functions in the format of Redis 7.0 release candidates (which Redis 7.0 itself refuses to load)"}
		default:
			if !selected {
				selected = true
				if err := sink.selectDB(db); err != nil {
					return err
				}
			}
			if err := p.keyValue(sink, off, t, expireAt); err != nil {
				return err
			}
			expireAt = -1
		}
	}
}

// keyValue reads the key and value of type t that starts at off.
func (p *rdbParser) keyValue(sink rdbSink, off int64, t byte, expireAt int64) error {
	var err error
	if p.key, err = p.readString(p.key, maxKeyLen-1); err != nil {
		return err
	}
	if !rdbKnownType(t) || (p.unsupported != nil && p.unsupported(t)) {
		what := fmt.Sprintf("RDB type %d, unknown to this build", t)
		if t == rdbTypeModule || t == rdbTypeModule2 {
			what = fmt.Sprintf("a module type, RDB type %d", t)
		}
		return &rdbError{off: off, err: errRDBUnsupported, msg: fmt.Sprintf("key %s has %s", quoteKey(p.key), what)}
	}
	dst, err := sink.key(p.key, expireAt, t)
	if err != nil {
		return err
	}
	if dst == nil {
		return p.skipValue(t)
	}
	start := len(*dst)
	*dst = append(*dst, t)
	p.rd.startCapture(dst)
	err = p.skipValue(t)
	p.rd.stopCapture()
	if err != nil {
		return err
	}
	*dst = binary.LittleEndian.AppendUint16(*dst, uint16(p.version))
	*dst = binary.LittleEndian.AppendUint64(*dst, crc64(0, (*dst)[start:]))
	return sink.value((*dst)[start:])
}

func rdbKnownType(t byte) bool {
	switch t {
	case rdbTypeString, rdbTypeList, rdbTypeSet, rdbTypeZSet, rdbTypeHash, rdbTypeZSet2,
		rdbTypeHashZipmap, rdbTypeListZiplist, rdbTypeSetIntset, rdbTypeZSetZiplist, rdbTypeHashZiplist,
		rdbTypeListQuicklist, rdbTypeStreamListpacks, rdbTypeHashListpack, rdbTypeZSetListpack,
		rdbTypeListQuicklist2, rdbTypeStreamListpacks2, rdbTypeSetListpack, rdbTypeStreamListpacks3:
		return true
	}
	return false
}

// quoteKey quotes a key for an error message, shortened if long.
func quoteKey(k []byte) string {
	if len(k) > 100 {
		return strconv.Quote(string(k[:100])) + "…"
	}
	return strconv.Quote(string(k))
}

// skipValue consumes a value of type t (a known type).
func (p *rdbParser) skipValue(t byte) error {
	switch t {
	case rdbTypeString, rdbTypeHashZipmap, rdbTypeListZiplist, rdbTypeSetIntset, rdbTypeZSetZiplist,
		rdbTypeHashZiplist, rdbTypeHashListpack, rdbTypeZSetListpack, rdbTypeSetListpack:
		// A string, or one blob (ziplist, listpack, intset, zipmap).
		return p.skipString()
	case rdbTypeList, rdbTypeSet, rdbTypeListQuicklist:
		return p.skipStrings(1)
	case rdbTypeHash:
		return p.skipStrings(2)
	case rdbTypeZSet, rdbTypeZSet2:
		n, err := p.count()
		if err != nil {
			return err
		}
		for range n {
			if err := p.skipString(); err != nil {
				return err
			}
			if t == rdbTypeZSet2 {
				err = p.rd.skip(8) // binary double
			} else {
				err = p.skipStringDouble()
			}
			if err != nil {
				return err
			}
		}
		return nil
	case rdbTypeListQuicklist2:
		n, err := p.count()
		if err != nil {
			return err
		}
		for range n {
			off := p.rd.offset()
			c, err := p.plainLen() // container: 1 plain, 2 packed
			if err != nil {
				return err
			}
			if c != 1 && c != 2 {
				return p.corrupt(off, "quicklist container %d", c)
			}
			if err := p.skipString(); err != nil {
				return err
			}
		}
		return nil
	case rdbTypeStreamListpacks, rdbTypeStreamListpacks2, rdbTypeStreamListpacks3:
		return p.skipStream(t)
	}
	return p.corrupt(p.rd.offset(), "value type %d", t)
}

// skipStrings consumes a count and count×per strings.
func (p *rdbParser) skipStrings(per int) error {
	n, err := p.count()
	if err != nil {
		return err
	}
	for range n {
		for range per {
			if err := p.skipString(); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipStringDouble consumes a double in text form (the old zset type): a
// length byte (253 NaN, 254 +inf, 255 -inf) and that many characters.
func (p *rdbParser) skipStringDouble() error {
	n, err := p.rd.readByte()
	if err != nil {
		return err
	}
	if n >= 253 {
		return nil
	}
	return p.rd.skip(uint64(n))
}

// skipLens consumes n lengths.
func (p *rdbParser) skipLens(n int) error {
	for range n {
		if _, err := p.plainLen(); err != nil {
			return err
		}
	}
	return nil
}

// skipStream consumes a stream: its listpacks, counters and consumer
// groups with their pending entries and consumers (rdbSaveObject).
func (p *rdbParser) skipStream(t byte) error {
	rd := p.rd
	nodes, err := p.count()
	if err != nil {
		return err
	}
	for range nodes {
		// The node's master ID (a 16-byte string) and its listpack.
		if err := p.skipString(); err != nil {
			return err
		}
		if err := p.skipString(); err != nil {
			return err
		}
	}
	// Length, last ID; from v2: first ID, max deleted ID, entries added.
	lens := 3
	if t >= rdbTypeStreamListpacks2 {
		lens += 5
	}
	if err := p.skipLens(lens); err != nil {
		return err
	}
	groups, err := p.count()
	if err != nil {
		return err
	}
	for range groups {
		if err := p.skipString(); err != nil { // name
			return err
		}
		lens := 2 // last delivered ID
		if t >= rdbTypeStreamListpacks2 {
			lens++ // entries read
		}
		if err := p.skipLens(lens); err != nil {
			return err
		}
		pel, err := p.count()
		if err != nil {
			return err
		}
		for range pel {
			// Raw ID (16 bytes), delivery time (8 bytes), delivery count.
			if err := rd.skip(24); err != nil {
				return err
			}
			if _, err := p.plainLen(); err != nil {
				return err
			}
		}
		consumers, err := p.count()
		if err != nil {
			return err
		}
		for range consumers {
			if err := p.skipString(); err != nil { // name
				return err
			}
			times := uint64(8) // seen time; from v3 also active time
			if t >= rdbTypeStreamListpacks3 {
				times += 8
			}
			if err := rd.skip(times); err != nil {
				return err
			}
			ids, err := p.count()
			if err != nil {
				return err
			}
			if err := rd.skip(16 * ids); err != nil { // raw IDs of its pending entries
				return err
			}
		}
	}
	return nil
}

// Module value opcodes (RDB_MODULE_OPCODE_*).
const (
	moduleOpEOF    = 0
	moduleOpSInt   = 1
	moduleOpUInt   = 2
	moduleOpFloat  = 3
	moduleOpDouble = 4
	moduleOpString = 5
)

// skipModuleAux consumes a module's auxiliary data (not tied to a key):
// module id, when (as a UINT opcode and its value), then opcode-tagged
// values up to the EOF opcode.
func (p *rdbParser) skipModuleAux(off int64) error {
	if _, err := p.plainLen(); err != nil { // module id
		return err
	}
	op, err := p.plainLen()
	if err != nil {
		return err
	}
	if op != moduleOpUInt {
		return p.corrupt(off, "module aux data: when opcode %d", op)
	}
	if _, err := p.plainLen(); err != nil {
		return err
	}
	for {
		at := p.rd.offset()
		op, err := p.plainLen()
		if err != nil {
			return err
		}
		switch op {
		case moduleOpEOF:
			return nil
		case moduleOpSInt, moduleOpUInt:
			_, err = p.plainLen()
		case moduleOpFloat:
			err = p.rd.skip(4)
		case moduleOpDouble:
			err = p.rd.skip(8)
		case moduleOpString:
			err = p.skipString()
		default:
			return p.corrupt(at, "module aux data: opcode %d", op)
		}
		if err != nil {
			return err
		}
	}
}

// lzfDecompress decompresses src (LZF, as liblzf writes it) into dst, which
// must have exactly the uncompressed length.
func lzfDecompress(dst, src []byte) error {
	ip, op := 0, 0
	for ip < len(src) {
		ctrl := int(src[ip])
		ip++
		if ctrl < 32 { // a literal run of ctrl+1 bytes
			n := ctrl + 1
			if ip+n > len(src) || op+n > len(dst) {
				return errors.New("literal run past the end")
			}
			copy(dst[op:], src[ip:ip+n])
			ip += n
			op += n
			continue
		}
		n := ctrl >> 5 // a back reference
		if n == 7 {
			if ip >= len(src) {
				return errors.New("truncated back reference")
			}
			n += int(src[ip])
			ip++
		}
		if ip >= len(src) {
			return errors.New("truncated back reference")
		}
		ref := op - (ctrl&0x1f)<<8 - int(src[ip]) - 1
		ip++
		n += 2
		if ref < 0 || op+n > len(dst) {
			return errors.New("back reference out of range")
		}
		for range n { // may overlap: byte by byte
			dst[op] = dst[ref]
			op++
			ref++
		}
	}
	if op != len(dst) {
		return fmt.Errorf("decompressed to %d bytes, want %d", op, len(dst))
	}
	return nil
}
