package postgres

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

// binStream builds a binary COPY stream: header extension ext, then the
// rows (a nil field is NULL), then the trailer.
func binStream(ext string, rows ...[][]byte) []byte {
	var b bytes.Buffer
	b.WriteString(copySignature)
	_ = binary.Write(&b, binary.BigEndian, uint32(0))
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ext)))
	b.WriteString(ext)
	for _, r := range rows {
		_ = binary.Write(&b, binary.BigEndian, int16(len(r)))
		for _, f := range r {
			if f == nil {
				_ = binary.Write(&b, binary.BigEndian, int32(-1))
				continue
			}
			_ = binary.Write(&b, binary.BigEndian, int32(len(f)))
			b.Write(f)
		}
	}
	_ = binary.Write(&b, binary.BigEndian, int16(-1))
	return b.Bytes()
}

// sample is a small stream: a header extension, NULLs, empty values, a
// tuple without fields, values holding newlines and the trailer's bytes.
func sample() []byte {
	return binStream("ext",
		[][]byte{[]byte("one")},
		[][]byte{nil, []byte("two\nlines\n"), {}},
		[][]byte{},
		[][]byte{nil, nil},
		[][]byte{bytes.Repeat([]byte{0xff, '\n'}, 300), []byte("\xff\xff")},
	)
}

const sampleRows = 5

func TestBinaryRowsCounts(t *testing.T) {
	s := sample()
	var b binaryRows
	if err := b.feed(s); err != nil {
		t.Fatal(err)
	}
	if err := b.end(); err != nil || b.rows != sampleRows {
		t.Fatalf("rows %d, end %v: want %d rows and no error", b.rows, err, sampleRows)
	}
	empty := binStream("")
	b = binaryRows{}
	if err := b.feed(empty); err != nil || b.end() != nil || b.rows != 0 {
		t.Fatalf("a stream without rows: %d rows, %v", b.rows, b.end())
	}
}

// TestBinaryRowsSplits feeds the stream one byte at a time and in two
// pieces split at every offset.
func TestBinaryRowsSplits(t *testing.T) {
	s := sample()
	var b binaryRows
	for i := range s {
		if err := b.feed(s[i : i+1]); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
	}
	if err := b.end(); err != nil || b.rows != sampleRows {
		t.Fatalf("byte by byte: rows %d, end %v", b.rows, err)
	}
	for i := 0; i <= len(s); i++ {
		b := binaryRows{}
		if err := b.feed(s[:i]); err != nil {
			t.Fatalf("split at %d: %v", i, err)
		}
		if err := b.feed(s[i:]); err != nil {
			t.Fatalf("split at %d: %v", i, err)
		}
		if err := b.end(); err != nil || b.rows != sampleRows {
			t.Fatalf("split at %d: rows %d, end %v", i, b.rows, err)
		}
	}
}

// TestBinaryRowsTruncated: a stream cut anywhere before its end fails.
func TestBinaryRowsTruncated(t *testing.T) {
	s := sample()
	for i := 0; i < len(s); i++ {
		var b binaryRows
		if err := b.feed(s[:i]); err != nil {
			t.Fatalf("cut at %d: feed: %v", i, err)
		}
		if err := b.end(); err == nil || !strings.Contains(err.Error(), "without its trailer") {
			t.Fatalf("cut at %d: end %v, want a missing trailer", i, err)
		}
	}
}

func TestBinaryRowsMalformed(t *testing.T) {
	s := sample()
	bad := func(name string, p []byte, want string) {
		t.Helper()
		var b binaryRows
		err := b.feed(p)
		if err == nil {
			err = b.end()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error about %q", name, err, want)
		}
		// The error sticks.
		if b.feed([]byte{0}) == nil || b.end() == nil {
			t.Errorf("%s: the error did not stick", name)
		}
	}
	sig := append([]byte(nil), s...)
	sig[7] = '\n' // "PGCOPY\n\n\r\n\x00"
	bad("bad signature", sig, "bad signature")
	bad("text stream", []byte("1\tone\n2\ttwo\n\\.\n"), "bad signature")
	bad("after the trailer", append(append([]byte(nil), s...), 0xff, 0xff), "after the trailer")
	oids := append([]byte(nil), s...)
	oids[12] = 1 // flags 1<<16: tuples with OIDs
	bad("with OIDs", oids, "header flags")
	neg := binStream("", [][]byte{[]byte("x")})
	binary.BigEndian.PutUint32(neg[19+2:], 0xfffffffe) // the field's length: -2
	bad("negative length", neg, "field length -2")
	cnt := binStream("", [][]byte{[]byte("x")})
	binary.BigEndian.PutUint16(cnt[19:], 0xfffe) // the field count: -2
	bad("negative field count", cnt, "field count -2")
}

// TestCopyCounter counts rows of both formats and passes the bytes on.
func TestCopyCounter(t *testing.T) {
	s := sample()
	var out bytes.Buffer
	c := &copyCounter{w: &out, bin: &binaryRows{}}
	for i := 0; i < len(s); i += 7 {
		if _, err := c.Write(s[i:min(i+7, len(s))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.end(); err != nil || c.rows != sampleRows || c.bytes != int64(len(s)) || !bytes.Equal(out.Bytes(), s) {
		t.Fatalf("binary: rows %d bytes %d, end %v", c.rows, c.bytes, err)
	}
	c = &copyCounter{w: io.Discard, bin: &binaryRows{}}
	if _, err := c.Write(s[:len(s)-2]); err != nil || c.end() == nil {
		t.Fatalf("binary without trailer: %v, end %v: want an error at the end", err, c.end())
	}
	c = &copyCounter{w: io.Discard}
	if _, err := c.Write([]byte("1\ta\\nb\n2\t\\N\n")); err != nil || c.end() != nil || c.rows != 2 {
		t.Fatalf("text: rows %d, %v", c.rows, err)
	}
}
