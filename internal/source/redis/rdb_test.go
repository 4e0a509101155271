package redis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/source"
)

// ---------------------------------------------------------------- a synthetic RDB writer

// rlen encodes an RDB length.
func rlen(n uint64) []byte {
	switch {
	case n < 1<<6:
		return []byte{byte(n)}
	case n < 1<<14:
		return []byte{0x40 | byte(n>>8), byte(n)}
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32([]byte{0x80}, uint32(n))
	}
	return binary.BigEndian.AppendUint64([]byte{0x81}, n)
}

// rlen64 encodes a length in the 64-bit form whatever its size.
func rlen64(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{0x81}, n) }

func rstr(s string) []byte { return append(rlen(uint64(len(s))), s...) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// rdbBuild writes an RDB stream and the records the parser must make of it.
type rdbBuild struct {
	b       []byte
	version int
	db      int
	want    []testRec
}

func newRDBBuild(version int) *rdbBuild {
	return &rdbBuild{b: fmt.Appendf(nil, "REDIS%04d", version), version: version}
}

func (w *rdbBuild) add(parts ...[]byte) { w.b = append(w.b, cat(parts...)...) }

func (w *rdbBuild) selectDB(db int) {
	w.db = db
	w.add([]byte{rdbOpSelectDB}, rlen(uint64(db)))
}

// kv writes a key (rawKey as stored, key decoded) of type typ whose value
// serialises to value, with an expiry in ms (-1: none).
func (w *rdbBuild) kv(typ byte, rawKey []byte, key string, expireAt int64, value []byte) {
	if expireAt >= 0 {
		w.add([]byte{rdbOpExpireMS}, le64(uint64(expireAt)))
	}
	w.add([]byte{typ}, rawKey, value)
	p := append([]byte{typ}, value...)
	p = binary.LittleEndian.AppendUint16(p, uint16(w.version))
	p = binary.LittleEndian.AppendUint64(p, crc64(0, p))
	w.want = append(w.want, testRec{db: w.db, key: key, expireAt: expireAt, payload: p})
}

func (w *rdbBuild) end(checksum bool) []byte {
	w.add([]byte{rdbOpEOF})
	sum := crc64(0, w.b)
	if !checksum {
		sum = 0
	}
	return append(w.b, le64(sum)...)
}

// streamValue serialises a stream of type t: two nodes, a consumer group
// with two pending entries and two consumers.
func streamValue(t byte) []byte {
	id := func(ms, seq uint64) string {
		return string(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, ms), seq))
	}
	v := cat(rlen(2),
		rstr(id(1, 0)), rstr("listpack-bytes-one"),
		rstr(id(5, 0)), rstr("listpack-bytes-two"),
		rlen(7), rlen(9), rlen(1)) // length, last id
	if t >= rdbTypeStreamListpacks2 {
		v = cat(v, rlen(1), rlen(0), rlen(3), rlen(2), rlen(12)) // first id, max deleted, entries added
	}
	v = cat(v, rlen(1), rstr("group"), rlen(5), rlen(0)) // one group, last delivered id
	if t >= rdbTypeStreamListpacks2 {
		v = cat(v, rlen(4)) // entries read
	}
	v = cat(v, rlen(2), // PEL: raw id, delivery time, delivery count
		[]byte(id(1, 0)), le64(1700000000000), rlen(1),
		[]byte(id(5, 0)), le64(1700000000001), rlen(3))
	consumer := func(name string, ids ...string) []byte {
		c := cat(rstr(name), le64(1700000000002))
		if t >= rdbTypeStreamListpacks3 {
			c = cat(c, le64(1700000000003))
		}
		c = cat(c, rlen(uint64(len(ids))))
		for _, x := range ids {
			c = append(c, x...)
		}
		return c
	}
	return cat(v, rlen(2), consumer("alice", id(1, 0)), consumer("bob", id(5, 0)))
}

// syntheticRDB writes a stream with every opcode and every value type and
// string encoding the parser knows, in RDB format version; one string value
// has big bytes (above 16383: a 32-bit length).
func syntheticRDB(version, big int) *rdbBuild {
	w := newRDBBuild(version)
	w.add([]byte{rdbOpAux}, rstr("redis-ver"), rstr("7.2.0"))
	w.add([]byte{rdbOpAux}, rstr("redis-bits"), []byte{0xc0, 64}) // an int8-encoded value
	w.add([]byte{rdbOpAux}, rstr("ctime"), []byte{0xc2}, binary.LittleEndian.AppendUint32(nil, 1700000000))
	w.add([]byte{rdbOpAux}, rstr("lua"), rstr("return redis.call('get', KEYS[1])")) // skipped
	w.add([]byte{rdbOpModuleAux}, rlen(0x123456789), rlen(moduleOpUInt), rlen(2),
		rlen(moduleOpSInt), rlen(5), rlen(moduleOpUInt), rlen(70000), rlen(moduleOpFloat), []byte{1, 2, 3, 4},
		rlen(moduleOpDouble), le64(math.Float64bits(2.5)), rlen(moduleOpString), rstr("module data"), rlen(moduleOpEOF))
	w.add([]byte{rdbOpFunction2}, rstr("#!lua name=lib\nredis.register_function('f', function() return 1 end)"))
	w.selectDB(0)
	w.add([]byte{rdbOpResizeDB}, rlen(30), rlen(2))

	// Strings in every encoding, as values and as keys.
	w.kv(rdbTypeString, rstr("plain"), "plain", -1, rstr("value"))
	w.kv(rdbTypeString, rstr("empty"), "empty", -1, rstr(""))
	w.kv(rdbTypeString, rstr("int8"), "int8", -1, []byte{0xc0, 0xf9})
	w.kv(rdbTypeString, rstr("int16"), "int16", -1, []byte{0xc1, 0xd4, 0xfe})
	w.kv(rdbTypeString, rstr("int32"), "int32", -1, []byte{0xc2, 0xa0, 0x86, 0x01, 0x00})
	abc := []byte{0xc3, 7, 12, 2, 'a', 'b', 'c', 0xe0, 0, 2} // LZF: "abc", then 9 bytes from 3 back
	w.kv(rdbTypeString, rstr("lzf"), "lzf", -1, abc)
	w.kv(rdbTypeString, []byte{0xc0, 0x85}, "-123", -1, rstr("an int8 key"))
	w.kv(rdbTypeString, []byte{0xc1, 0x39, 0x30}, "12345", -1, rstr("an int16 key"))
	w.kv(rdbTypeString, []byte{0xc2, 0xd2, 0x02, 0x96, 0x49}, "1234567890", -1, rstr("an int32 key"))
	w.kv(rdbTypeString, abc, "abcabcabcabc", -1, rstr("an LZF key"))
	w.kv(rdbTypeString, rstr(strings.Repeat("k", 100)), strings.Repeat("k", 100), -1, rstr(strings.Repeat("v", big)))
	w.kv(rdbTypeString, rstr("ttl"), "ttl", 1700000000123, rstr("x"))
	w.add([]byte{rdbOpExpireSec}, binary.LittleEndian.AppendUint32(nil, 1700000000))
	w.kv(rdbTypeString, rstr("ttl-seconds"), "ttl-seconds", -1, rstr("x"))
	w.want[len(w.want)-1].expireAt = 1700000000000
	w.add([]byte{rdbOpFreq, 7})
	w.kv(rdbTypeString, rstr("lfu"), "lfu", -1, rstr("x"))
	w.add([]byte{rdbOpIdle}, rlen(3600))
	w.kv(rdbTypeString, rstr("lru"), "lru", -1, rstr("x"))

	// Collections in their old, generic forms.
	w.kv(rdbTypeList, rstr("list"), "list", -1, cat(rlen64(3), rstr("a"), []byte{0xc0, 1}, abc))
	w.kv(rdbTypeSet, rstr("set"), "set", -1, cat(rlen(2), rstr("x"), rstr("y")))
	w.kv(rdbTypeZSet, rstr("zset"), "zset", -1, cat(rlen(4),
		rstr("a"), rstr("1.5"), rstr("b"), []byte{253}, rstr("c"), []byte{254}, rstr("d"), []byte{255}))
	w.kv(rdbTypeHash, rstr("hash"), "hash", -1, cat(rlen(2), rstr("f1"), rstr("v1"), rstr("f2"), []byte{0xc0, 2}))
	w.kv(rdbTypeZSet2, rstr("zset2"), "zset2", -1, cat(rlen(2),
		rstr("a"), le64(math.Float64bits(1.5)), rstr("b"), le64(math.Float64bits(math.Inf(-1)))))
	// One-blob encodings.
	for _, typ := range []byte{rdbTypeHashZipmap, rdbTypeListZiplist, rdbTypeSetIntset, rdbTypeZSetZiplist,
		rdbTypeHashZiplist, rdbTypeHashListpack, rdbTypeZSetListpack, rdbTypeSetListpack} {
		k := "blob-" + strconv.Itoa(int(typ))
		w.kv(typ, rstr(k), k, -1, rstr("encoded blob of type "+strconv.Itoa(int(typ))))
	}
	w.kv(rdbTypeListQuicklist, rstr("quicklist"), "quicklist", -1, cat(rlen(2), rstr("ziplist one"), abc))
	w.kv(rdbTypeListQuicklist2, rstr("quicklist2"), "quicklist2", 1800000000000, cat(rlen(3),
		rlen(2), rstr("listpack"), rlen(1), rstr(strings.Repeat("plain node ", 20)), rlen(2), abc))

	w.selectDB(3)
	for _, typ := range []byte{rdbTypeStreamListpacks, rdbTypeStreamListpacks2, rdbTypeStreamListpacks3} {
		k := "stream-" + strconv.Itoa(int(typ))
		w.kv(typ, rstr(k), k, -1, streamValue(typ))
	}
	return w
}

// ---------------------------------------------------------------- parser tests

func TestRDBParsesEveryEncoding(t *testing.T) {
	for _, checksum := range []bool{true, false} {
		w := syntheticRDB(11, 70000)
		b := w.end(checksum)
		recs, p, err := parseRDB(b)
		if err != nil {
			t.Fatalf("checksum %v: %v", checksum, err)
		}
		if p.version != 11 || p.aux["redis-ver"] != "7.2.0" || p.aux["redis-bits"] != "64" || p.aux["ctime"] != "1700000000" || len(p.aux) != 3 {
			t.Errorf("version %d, aux %v", p.version, p.aux)
		}
		if len(recs) != len(w.want) {
			t.Fatalf("%d keys, want %d", len(recs), len(w.want))
		}
		for i, r := range recs {
			want := w.want[i]
			if r.db != want.db || r.key != want.key || r.expireAt != want.expireAt || !bytes.Equal(r.payload, want.payload) {
				t.Errorf("key %d: db %d %q expire %d payload %x\nwant db %d %q expire %d payload %x",
					i, r.db, r.key, r.expireAt, clipBytes(r.payload), want.db, want.key, want.expireAt, clipBytes(want.payload))
			}
		}
	}
}

func clipBytes(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func TestLZFDecompress(t *testing.T) {
	out := make([]byte, 12)
	if err := lzfDecompress(out, []byte{2, 'a', 'b', 'c', 0xe0, 0, 2}); err != nil || string(out) != "abcabcabcabc" {
		t.Fatalf("got %q, %v", out, err)
	}
	for name, in := range map[string][]byte{
		"reference before the start": {0, 'a', 0x20, 5},
		"literal past the end":       {5, 'a'},
		"truncated reference":        {0, 'a', 0xe0},
		"too short":                  {0, 'a'},
	} {
		if err := lzfDecompress(make([]byte, 12), in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// The parser refuses what it cannot read with errRDBUnsupported, naming
// the key and type, and malformed streams with errRDBCorrupt.
func TestRDBRefusals(t *testing.T) {
	module := newRDBBuild(10)
	module.selectDB(0)
	module.kv(rdbTypeString, rstr("fine"), "fine", -1, rstr("x"))
	module.add([]byte{rdbTypeModule2}, rstr("json:doc"), rlen(42))
	future := newRDBBuild(10)
	future.selectDB(0)
	future.add([]byte{22}, rstr("hash:with:ttls"), rlen(0))
	preGA := newRDBBuild(10)
	preGA.add([]byte{rdbOpFunctionPreGA}, rstr("lib"))
	for name, tc := range map[string]struct {
		b    []byte
		want error
		msg  string
	}{
		"module type":          {module.end(true), errRDBUnsupported, `key "json:doc" has a module type, RDB type 7`},
		"type from the future": {future.end(true), errRDBUnsupported, `key "hash:with:ttls" has RDB type 22, unknown to this build`},
		"pre-GA functions":     {preGA.end(true), errRDBUnsupported, "release candidates"},
		"RDB 12":               {newRDBBuild(12).end(true), errRDBUnsupported, "RDB format 12 (written by Redis 7.4 or later)"},
		"RDB 5":                {newRDBBuild(5).end(true), errRDBUnsupported, "RDB format 5"},
		"not an RDB":           {[]byte("REDIX0010\xff"), errRDBCorrupt, "not an RDB stream"},
		"bad version":          {[]byte("REDIS00x0\xff"), errRDBCorrupt, "not an RDB stream"},
		"empty":                {nil, io.ErrUnexpectedEOF, "truncated"},
	} {
		_, _, err := parseRDB(tc.b)
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", name, err, tc.want, tc.msg)
		}
	}
}

// damage checks that every one-byte change and every truncation of an RDB
// fails to parse with an error (and never panics); a change inside a
// string's bytes is caught by the checksum, naming its offset.
func damage(t *testing.T, b []byte, inString int) {
	t.Helper()
	if _, _, err := parseRDB(b); err != nil {
		t.Fatalf("the undamaged stream: %v", err)
	}
	bad := append([]byte(nil), b...)
	for i := range bad {
		bad[i] ^= 0x5a
		if _, _, err := parseRDB(bad); err == nil {
			t.Fatalf("byte %d of %d changed: parsed without error", i, len(b))
		}
		bad[i] = b[i]
	}
	bad[inString] ^= 1
	_, _, err := parseRDB(bad)
	t.Logf("byte %d changed: %v", inString, err)
	if !errors.Is(err, errRDBCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), fmt.Sprintf("RDB offset %d", len(b)-8)) {
		t.Errorf("a changed string byte: %v, want a checksum mismatch at offset %d", err, len(b)-8)
	}
	for n := range len(b) {
		_, _, err := parseRDB(b[:n])
		if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("truncated to %d of %d bytes: %v, want a truncation error", n, len(b), err)
		}
	}
}

func TestRDBDamageIsDetected(t *testing.T) {
	b := syntheticRDB(10, 20).end(true)
	damage(t, b, bytes.Index(b, []byte("vvvvv"))+2)
}

// A real snapshot (every type, small values) is checked the same way.
func TestRDBDamageIsDetectedInARealSnapshot(t *testing.T) {
	src := psyncServer(t).conn()
	loadSmallTypes(t, src)
	b, _ := fetchRDB(t, src)
	t.Logf("snapshot of %d bytes", len(b))
	damage(t, b, bytes.Index(b, []byte("hello world"))+3)
}

// loadSmallTypes writes a small key of every type and encoding.
func loadSmallTypes(t *testing.T, c source.Conn) {
	cl := testClient(t, c, 0)
	text := strings.Repeat("compressible text ", 10)
	for _, cmd := range [][]any{
		{"SET", "s", "hello world"}, {"SET", "n", 42}, {"SET", "z", text}, {"SET", text, "lzf key"},
		{"SET", "ttl", "x", "PX", 3_600_000},
		{"RPUSH", "l", "a", "b", 1, text}, {"SADD", "si", 1, 2, 3}, {"SADD", "ss", "a", "b"},
		{"ZADD", "zl", 1.5, "a", "-inf", "b"}, {"HSET", "hl", "f", "v"},
		{"XADD", "x", "1-1", "f", "v"}, {"XGROUP", "CREATE", "x", "g", "0"},
		{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "x", ">"},
	} {
		mustDo(t, cl, cmd...)
	}
	zs := []any{"ZADD", "zs"}
	hs := []any{"HSET", "hs"}
	for i := range 200 {
		zs = append(zs, i, fmt.Sprint("m", i))
		hs = append(hs, fmt.Sprint("f", i), i)
	}
	mustDo(t, cl, zs...)
	mustDo(t, cl, hs...)
}

// FuzzRDB: no input makes the parser panic, loop or allocate beyond its
// input; what it accepts has valid DUMP payloads.
func FuzzRDB(f *testing.F) {
	for _, v := range []int{9, 10, 11} {
		f.Add(syntheticRDB(v, 20).end(true))
		f.Add(syntheticRDB(v, 20).end(false))
	}
	f.Add([]byte("REDIS0010\xff\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, p, err := parseRDB(b)
		if err != nil {
			return
		}
		for _, r := range recs {
			n := len(r.payload)
			if n < 11 || crc64(0, r.payload[:n-8]) != binary.LittleEndian.Uint64(r.payload[n-8:]) || payloadRDBVersion(r.payload) != p.version {
				t.Fatalf("key %q: invalid payload %x", r.key, clipBytes(r.payload))
			}
		}
	})
}

// BenchmarkRDBParse parses a snapshot of 100,000 keys (strings and
// listpack hashes) into records as the backup does, without the archiver.
func BenchmarkRDBParse(b *testing.B) {
	g := newGen(3)
	w := newRDBBuild(10)
	w.selectDB(0)
	for i := range 100_000 {
		key := rstr(fmt.Sprintf("user:%08d", i))
		if i%5 == 0 {
			w.add([]byte{rdbTypeHashListpack}, key, rstr(g.bytes(150)))
		} else {
			w.add([]byte{rdbTypeString}, key, rstr(g.bytes(100+i%100)))
		}
	}
	rdb := w.end(true)
	b.SetBytes(int64(len(rdb)))
	b.ResetTimer()
	for range b.N {
		k := &benchSink{}
		if err := newRDBParser(newRDBReader(bytes.NewReader(rdb), 1<<20)).parse(k); err != nil {
			b.Fatal(err)
		}
		if k.n != 100_000 {
			b.Fatalf("%d keys", k.n)
		}
	}
}

// benchSink builds shard records in batches as psyncSink does.
type benchSink struct {
	batches [4][]byte
	cur     int
	lenAt   int
	n       int
	sampled int
}

func (k *benchSink) selectDB(int) error { return nil }

func (k *benchSink) key(key []byte, expireAt int64, typ byte) (*[]byte, error) {
	k.cur = shardOf(key, 4)
	if sampleHash(key) < math.MaxUint64/1000 {
		k.sampled++
	}
	var err error
	k.batches[k.cur], k.lenAt, err = appendRecordHead(k.batches[k.cur], key, expireAt)
	return &k.batches[k.cur], err
}

func (k *benchSink) value(p []byte) error {
	setPayloadLen(k.batches[k.cur], k.lenAt, len(p))
	k.n++
	if len(k.batches[k.cur]) >= psyncBatchBytes {
		k.batches[k.cur] = k.batches[k.cur][:0]
	}
	return nil
}

func BenchmarkCRC64(b *testing.B) {
	p := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	b.SetBytes(int64(len(p)))
	for range b.N {
		crc64(0, p)
	}
}

// ---------------------------------------------------------------- handshake

// fakeMaster serves one replication connection: it answers AUTH and
// REPLCONF, then replies to PSYNC with reply (raw bytes).
func fakeMaster(t *testing.T, replconf string, reply []byte) *settings {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			args, err := readCommand(br)
			if err != nil {
				return
			}
			switch strings.ToUpper(args[0]) {
			case "AUTH":
				if len(args) == 3 && args[1] == "backup" && args[2] == "s3cret" {
					io.WriteString(c, "+OK\r\n")
				} else {
					io.WriteString(c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
				}
			case "REPLCONF":
				if args[1] == "rdb-only" {
					io.WriteString(c, replconf)
				} else {
					io.WriteString(c, "+OK\r\n")
				}
			case "PSYNC":
				c.Write(reply)
				return
			}
		}
	}()
	return &settings{resource: "fake", host: "127.0.0.1", port: l.Addr().(*net.TCPAddr).Port, username: "backup", password: "s3cret"}
}

func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	args := make([]string, n)
	for i := range args {
		if _, err := br.ReadString('\n'); err != nil {
			return nil, err
		}
		a, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args[i] = strings.TrimRight(a, "\r\n")
	}
	return args, nil
}

// The handshake skips keepalive newlines, tolerates a refused REPLCONF
// option, and reads both transfer forms to their exact end.
func TestReplHandshake(t *testing.T) {
	w := syntheticRDB(10, 70000)
	rdb := w.end(true)
	mark := strings.Repeat("0123456789", 4)
	replID := strings.Repeat("ab", 20)
	full := "\n+FULLRESYNC " + replID + " 4242\r\n\n\n\n"
	for name, tc := range map[string]struct {
		replconf string
		reply    []byte
		err      string // from the handshake, or the end check
	}{
		"diskless":                {"+OK\r\n", cat([]byte(full+"$EOF:"+mark+"\r\n"), rdb, []byte(mark)), ""},
		"disk":                    {"-ERR Unrecognized REPLCONF option: rdb-only\r\n", cat([]byte(full+"$"+strconv.Itoa(len(rdb))+"\r\n"), rdb), ""},
		"wrong end mark":          {"+OK\r\n", cat([]byte(full+"$EOF:"+mark+"\r\n"), rdb, []byte(strings.Repeat("x", 40))), "end mark"},
		"longer than the RDB":     {"+OK\r\n", cat([]byte(full+"$"+strconv.Itoa(len(rdb)+3)+"\r\n"), rdb, []byte("abc")), "ends before"},
		"closed in mid-transfer":  {"+OK\r\n", cat([]byte(full+"$"+strconv.Itoa(len(rdb))+"\r\n"), rdb[:len(rdb)/2]), "truncated"},
		"refused":                 {"+OK\r\n", []byte("-ERR unknown command 'PSYNC', with args beginning with: \r\n"), "refused: ERR unknown command"},
		"closed instead of reply": {"+OK\r\n", nil, "refused: the server closed the connection in reply to PSYNC"},
		"closed before snapshot":  {"+OK\r\n", []byte(full), "refused: the server closed the connection before sending its snapshot"},
	} {
		t.Run(name, func(t *testing.T) {
			s := fakeMaster(t, tc.replconf, tc.reply)
			l, err := openRepl(context.Background(), s)
			if err == nil {
				defer l.close()
				if l.replID != replID || l.offset != 4242 {
					t.Errorf("replication id %s offset %d", l.replID, l.offset)
				}
				rd := newRDBReader(l.payload(), 4096)
				var c collectSink
				if err = newRDBParser(rd).parse(&c); err == nil {
					err = l.finish(rd)
				}
				if err == nil && len(c.recs) != len(w.want) {
					t.Errorf("%d keys, want %d", len(c.recs), len(w.want))
				}
			}
			var rf *replRefused
			if errors.As(err, &rf) {
				err = fmt.Errorf("refused: %w", err)
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("%v, want %q", err, tc.err)
			}
			if name == "disk" && (len(l.notes) != 1 || !strings.Contains(l.notes[0], "rdb-only")) {
				t.Errorf("notes %q: want the refused rdb-only", l.notes)
			}
		})
	}

	s := fakeMaster(t, "+OK\r\n", nil)
	s.password = "wrong"
	_, err := openRepl(context.Background(), s)
	if !errors.Is(err, source.ErrAuth) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password: %v, want ErrAuth without the password", err)
	}
}
