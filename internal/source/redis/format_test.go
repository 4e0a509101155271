package redis

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCRC64MatchesRedis(t *testing.T) {
	// The check value of Redis's crc64 (src/crc64.c test).
	if got := crc64(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(123456789) = %x, want e9c6d914c4b8d9ca", got)
	}
}

func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		"foo":       12182, // CLUSTER KEYSLOT foo
		"123456789": 0x31c3,
		"{user1}.a": keySlot("user1"),
		"{}x":       keySlot("{}x"), // empty tag: the whole key
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if keySlot("{user1}.a") != keySlot("{user1}.b") {
		t.Error("keys with the same hash tag are in different slots")
	}
	seen := map[int]bool{}
	for i := range 1000 {
		s := shardOf(strings.Repeat("k", i%7)+string(rune('a'+i%26))+strings.Repeat("x", i/26), 4)
		if s < 0 || s >= 4 {
			t.Fatalf("shard %d of 4", s)
		}
		seen[s] = true
	}
	if len(seen) != 4 {
		t.Errorf("1000 keys fell into %d of 4 shards", len(seen))
	}
}

func encode(t testing.TB, recs []record) []byte {
	var b bytes.Buffer
	w, err := newRecordWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.write(r.Key, r.Payload, r.ExpireAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decode(b []byte) ([]record, error) {
	rr, err := newRecordReader(bytes.NewReader(b), "shard")
	if err != nil {
		return nil, err
	}
	var out []record
	for {
		var r record
		err := rr.next(&r)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

var sampleRecords = []record{
	{Key: []byte("a"), ExpireAt: -1, Payload: bytes.Repeat([]byte{1}, 12)},
	{Key: []byte(""), ExpireAt: 1_700_000_000_000, Payload: bytes.Repeat([]byte{2}, 100)},
	{Key: []byte("bin\x00\xff"), ExpireAt: 0, Payload: bytes.Repeat([]byte{3}, 3<<20)},
}

func TestRecordsRoundTrip(t *testing.T) {
	b := encode(t, sampleRecords)
	got, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sampleRecords) {
		t.Fatalf("%d records, want %d", len(got), len(sampleRecords))
	}
	for i, r := range got {
		w := sampleRecords[i]
		if !bytes.Equal(r.Key, w.Key) || r.ExpireAt != w.ExpireAt || !bytes.Equal(r.Payload, w.Payload) {
			t.Errorf("record %d: key %q expire %d payload %d bytes, want %q %d %d", i, r.Key, r.ExpireAt, len(r.Payload), w.Key, w.ExpireAt, len(w.Payload))
		}
	}
	if got, err := decode(encode(t, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty shard: %v %v", got, err)
	}
}

func TestRecordsRefuseDamage(t *testing.T) {
	b := encode(t, sampleRecords[:2])
	for name, bad := range map[string][]byte{
		"truncated":       b[:len(b)-13],
		"no trailer":      b[:len(b)-12],
		"wrong count":     append(append([]byte(nil), b[:len(b)-1]...), 9),
		"trailing data":   append(append([]byte(nil), b...), 0),
		"bad magic":       append([]byte("XXDUMP\x00\x01"), b[8:]...),
		"future version":  append([]byte("CRDUMP\x00\x02"), b[8:]...),
		"empty":           nil,
		"short payload":   encode(t, []record{{Key: []byte("k"), ExpireAt: -1, Payload: []byte("x")}}),
		"negative expiry": encode(t, []record{{Key: []byte("k"), ExpireAt: -5, Payload: bytes.Repeat([]byte{1}, 10)}}),
	} {
		_, err := decode(bad)
		if err == nil {
			t.Errorf("%s: decoded without error", name)
			continue
		}
		if name == "truncated" && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want unexpected EOF", name, err)
		}
	}
}

func TestPayloadVersions(t *testing.T) {
	p := make([]byte, 20)
	p[len(p)-10] = 10
	if v := payloadRDBVersion(p); v != 10 {
		t.Errorf("payloadRDBVersion = %d, want 10", v)
	}
	if got := maxRDBFor("7.0.15"); got != 10 {
		t.Errorf("maxRDBFor(7.0.15) = %d, want 10", got)
	}
	if got := maxRDBFor("6.2.1"); got != 9 {
		t.Errorf("maxRDBFor(6.2.1) = %d, want 9", got)
	}
	if got := redisForRDB(11); got != "Redis 7.2 or later" {
		t.Errorf("redisForRDB(11) = %q", got)
	}
}

// FuzzRecordReader: no input makes the reader panic or loop, and what it
// decodes re-encodes to the same bytes.
func FuzzRecordReader(f *testing.F) {
	f.Add(encode(f, sampleRecords[:2]))
	f.Add(encode(f, nil))
	f.Add([]byte("CRDUMP\x00\x01\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decode(b)
		if err != nil {
			return
		}
		if again := encode(t, recs); !bytes.Equal(again, b) {
			t.Fatalf("decoded %d records that re-encode differently", len(recs))
		}
	})
}

// Records assembled in memory (the PSYNC path) are byte for byte what
// recordWriter.write makes of the same records.
func TestEncodedRecordsMatchWrite(t *testing.T) {
	var mem []byte
	for _, r := range sampleRecords {
		var lenAt int
		var err error
		if mem, lenAt, err = appendRecordHead(mem, r.Key, r.ExpireAt); err != nil {
			t.Fatal(err)
		}
		mem = append(mem, r.Payload...)
		setPayloadLen(mem, lenAt, len(r.Payload))
	}
	var b bytes.Buffer
	w, err := newRecordWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.writeEncoded(mem, len(sampleRecords)); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), encode(t, sampleRecords)) {
		t.Fatal("records encoded in memory differ from recordWriter.write's")
	}
}

// A recovery point written before the PSYNC path has no mode: a SCAN point.
func TestMetaModeDefaultsToScan(t *testing.T) {
	var old, psync meta
	if err := json.Unmarshal([]byte(`{"format":1,"redis_version":"7.0.15","dbs":[]}`), &old); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"format":1,"mode":"psync","dbs":[]}`), &psync); err != nil {
		t.Fatal(err)
	}
	if old.mode() != modeScan || psync.mode() != modePSync {
		t.Fatalf("modes %q and %q, want scan and psync", old.mode(), psync.mode())
	}
}
