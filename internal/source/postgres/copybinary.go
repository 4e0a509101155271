package postgres

import (
	"encoding/binary"
	"fmt"
)

// copySignature starts every binary COPY stream.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// binaryRows follows the framing of a binary COPY stream fed to it in
// pieces of any size: the signature, int32 flags, an int32 header extension
// length and that many bytes, then tuples, each an int16 field count and per
// field an int32 length (-1: NULL) and that many bytes, and the trailer (a
// field count of -1). It counts the tuples and checks the framing, skipping
// field values by their length: no copy, no allocation.
type binaryRows struct {
	state  int8
	have   int8   // bytes of the signature, or of the current integer, read so far
	acc    uint32 // the current integer's bytes so far
	skip   int64  // bytes left of the header extension or of a field value
	fields int    // fields left in the current tuple
	rows   int64
	off    int64 // bytes consumed, for messages
	err    error
}

// States of binaryRows: what the next bytes are.
const (
	brSignature = iota
	brFlags     // int32
	brExtLen    // int32, the header extension's length
	brExt       // the header extension, skipped
	brCount     // int16, a tuple's field count or -1 for the trailer
	brLen       // int32, a field's length or -1 for NULL
	brValue     // a field's value, skipped
	brEnd       // after the trailer: nothing may follow
)

// feed takes the next bytes of the stream.
func (b *binaryRows) feed(p []byte) error {
	for len(p) > 0 && b.err == nil {
		switch b.state {
		case brSignature:
			for len(p) > 0 && int(b.have) < len(copySignature) {
				if p[0] != copySignature[b.have] {
					return b.fail("not a binary COPY stream (bad signature)")
				}
				p = p[1:]
				b.have++
				b.off++
			}
			if int(b.have) == len(copySignature) {
				b.have, b.state = 0, brFlags
			}
		case brExt, brValue:
			k := min(int64(len(p)), b.skip)
			p = p[k:]
			b.skip -= k
			b.off += k
			if b.skip == 0 {
				if b.state == brExt {
					b.state = brCount
				} else {
					b.fieldDone()
				}
			}
		case brEnd:
			return b.fail("data after the trailer")
		default: // brFlags, brExtLen, brCount, brLen: big-endian integers
			size := int8(4)
			if b.state == brCount {
				size = 2
			}
			var v uint32
			if b.have == 0 && len(p) >= int(size) {
				if size == 2 {
					v = uint32(binary.BigEndian.Uint16(p))
				} else {
					v = binary.BigEndian.Uint32(p)
				}
				p = p[size:]
				b.off += int64(size)
			} else {
				for len(p) > 0 && b.have < size {
					b.acc = b.acc<<8 | uint32(p[0])
					p = p[1:]
					b.have++
					b.off++
				}
				if b.have < size {
					return nil // the rest comes with the next bytes
				}
				v, b.acc, b.have = b.acc, 0, 0
			}
			b.integer(v)
		}
	}
	return b.err
}

// integer handles a complete integer of the framing.
func (b *binaryRows) integer(v uint32) {
	switch b.state {
	case brFlags:
		// Bits 0-15 are critical flags (none defined), bit 16 says that
		// tuples hold OIDs: coffre asks for neither.
		if v&0x1ffff != 0 {
			b.fail(fmt.Sprintf("unexpected header flags %#x", v))
			return
		}
		b.state = brExtLen
	case brExtLen:
		if int32(v) < 0 {
			b.fail(fmt.Sprintf("header extension length %d", int32(v)))
			return
		}
		b.skip, b.state = int64(v), brExt
		if v == 0 {
			b.state = brCount
		}
	case brCount:
		switch n := int16(v); {
		case n == -1:
			b.state = brEnd
		case n < 0:
			b.fail(fmt.Sprintf("field count %d", n))
		case n == 0:
			b.rows++
		default:
			b.rows++
			b.fields, b.state = int(n), brLen
		}
	case brLen:
		switch n := int32(v); {
		case n == -1 || n == 0: // NULL, or an empty value
			b.fieldDone()
		case n < 0:
			b.fail(fmt.Sprintf("field length %d", n))
		default:
			b.skip, b.state = int64(n), brValue
		}
	}
}

func (b *binaryRows) fieldDone() {
	b.fields--
	if b.fields == 0 {
		b.state = brCount
	} else {
		b.state = brLen
	}
}

// end checks that the stream ended right after its trailer.
func (b *binaryRows) end() error {
	if b.err == nil && b.state != brEnd {
		b.fail("the stream ends without its trailer (truncated)")
	}
	return b.err
}

func (b *binaryRows) fail(msg string) error {
	if b.err == nil {
		b.err = fmt.Errorf("binary COPY stream, byte %d: %s", b.off, msg)
	}
	return b.err
}
