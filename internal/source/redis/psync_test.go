package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/testutil"
)

// testRec is a key the RDB parser produced.
type testRec struct {
	db       int
	key      string
	expireAt int64
	payload  []byte
}

// collectSink keeps every key of a parsed stream.
type collectSink struct {
	db   int
	recs []testRec
	cur  testRec
	buf  []byte
}

func (c *collectSink) selectDB(db int) error { c.db = db; return nil }

func (c *collectSink) key(key []byte, expireAt int64, typ byte) (*[]byte, error) {
	c.cur = testRec{db: c.db, key: string(key), expireAt: expireAt}
	c.buf = c.buf[:0]
	return &c.buf, nil
}

func (c *collectSink) value(p []byte) error {
	c.cur.payload = bytes.Clone(p)
	c.recs = append(c.recs, c.cur)
	return nil
}

// parseRDB parses a whole RDB held in memory.
func parseRDB(b []byte) ([]testRec, *rdbParser, error) {
	rd := newRDBReader(bytes.NewReader(b), 4096)
	p := newRDBParser(rd)
	var c collectSink
	err := p.parse(&c)
	if err == nil && rd.offset() != int64(len(b)) {
		err = fmt.Errorf("parse ended at offset %d of %d", rd.offset(), len(b))
	}
	return c.recs, p, err
}

// fetchRDB runs the replication handshake against the server c names and
// returns its snapshot's RDB bytes and how it was sent.
func fetchRDB(t *testing.T, c source.Conn) ([]byte, string) {
	t.Helper()
	s, err := parseSettings(c)
	if err != nil {
		t.Fatal(err)
	}
	l, err := openRepl(ctxb(), s)
	if err != nil {
		t.Fatalf("replication handshake: %v", err)
	}
	defer l.close()
	var raw bytes.Buffer
	rd := newRDBReader(io.TeeReader(l.payload(), &raw), 1<<16)
	if err := newRDBParser(rd).parse(&collectSink{}); err != nil {
		t.Fatalf("parse the snapshot: %v", err)
	}
	end := rd.offset()
	if err := l.finish(rd); err != nil {
		t.Fatalf("end of the transfer: %v", err)
	}
	return raw.Bytes()[:end], l.transfer()
}

// psyncServer starts a server for the PSYNC tests: DEBUG allowed (to keep
// expired keys and make plain quicklist nodes), inner list nodes compressed.
func psyncServer(t *testing.T, extra ...string) *testServer {
	return startServer(t, append([]string{"enable-debug-command yes", "list-compress-depth 1"}, extra...)...)
}

// loadTypes writes a key of every type and encoding redis 7.0 has, into
// databases 0 and 2, plus a function library and an expired key that is
// still in memory ("exp:gone"); the keys with a TTL are named "ttl:…".
func loadTypes(t *testing.T, c source.Conn) {
	t.Helper()
	g := newGen(7)
	cl := testClient(t, c, 0)
	text := strings.Repeat("the quick brown fox jumps over the lazy dog ", 40)
	big := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fmt.Sprintf("member-%05d-%s", i, text[:i%50])
		}
		return out
	}
	pipe(t, cl, func(p goredis.Pipeliner) {
		// Strings: raw, empty, integers of every width, LZF-compressed,
		// incompressible, big; odd keys (an integer key, an LZF key, binary).
		p.Set(ctxb(), "s:short", "hello", 0)
		p.Set(ctxb(), "s:empty", "", 0)
		p.Set(ctxb(), "s:int8", "7", 0)
		p.Set(ctxb(), "s:int16", "-300", 0)
		p.Set(ctxb(), "s:int32", "100000", 0)
		p.Set(ctxb(), "s:int64", "12345678901234", 0)
		p.Set(ctxb(), "s:compressible", text, 0)
		p.Set(ctxb(), "s:random", g.bytes(5000), 0)
		p.Set(ctxb(), "s:big", g.bytes(3<<20), 0)
		p.Set(ctxb(), "s:big-text", strings.Repeat(text, 600), 0)
		p.Set(ctxb(), "12345", "integer key", 0)
		p.Set(ctxb(), strings.Repeat("long-key-", 30), "LZF key", 0)
		p.Set(ctxb(), "bin\x00\xff\r\n", g.bytes(30), 0)
		p.Set(ctxb(), "ttl:string", "x", time.Hour)

		// Lists: one listpack node; many nodes, the inner ones compressed.
		p.RPush(ctxb(), "l:small", "a", "b", "c", 1, 2, 3, -70000)
		p.RPush(ctxb(), "l:big", big(5000)...)
		// Sets: intset, hash tables of integers and of strings.
		p.SAdd(ctxb(), "set:ints", 1, 2, 3, -5, 100000, 1<<40)
		ints := make([]any, 1000)
		for i := range ints {
			ints[i] = i * 7
		}
		p.SAdd(ctxb(), "set:many-ints", ints...)
		p.SAdd(ctxb(), "set:small", "a", "b", "c")
		p.SAdd(ctxb(), "set:big", big(2000)...)
		// Sorted sets: listpack and skiplist, odd scores.
		p.ZAdd(ctxb(), "z:small",
			goredis.Z{Score: 1.5, Member: "a"}, goredis.Z{Score: math.Inf(-1), Member: "b"},
			goredis.Z{Score: math.Inf(1), Member: "c"}, goredis.Z{Score: 1.0 / 7, Member: "d"},
			goredis.Z{Score: 0, Member: "e"}, goredis.Z{Score: 1e300, Member: "f"}, goredis.Z{Score: -42, Member: "g"})
		zs := make([]goredis.Z, 500)
		for i := range zs {
			zs[i] = goredis.Z{Score: float64(i) / 3, Member: fmt.Sprintf("m%04d", i)}
		}
		p.ZAdd(ctxb(), "z:big", zs...)
		// Hashes: listpack, hash table by size and by value length.
		p.HSet(ctxb(), "h:small", "name", "alice", "age", 42, "neg", -1)
		hs := make([]any, 0, 2000)
		for i := range 1000 {
			hs = append(hs, fmt.Sprintf("field-%d", i), g.bytes(20))
		}
		p.HSet(ctxb(), "h:big", hs...)
		p.HSet(ctxb(), "h:long-value", "f", strings.Repeat("v", 100))
		p.HSet(ctxb(), "ttl:hash", "f", "v")
		p.PExpire(ctxb(), "ttl:hash", 24*time.Hour)
	})
	// A stream over several listpack nodes, with deleted entries, two
	// consumer groups, pending entries of two consumers and acks.
	pipe(t, cl, func(p goredis.Pipeliner) {
		for i := 1; i <= 300; i++ {
			fields := []any{"event", fmt.Sprint(i), "payload", g.bytes(8)}
			if i%50 == 0 {
				fields = []any{"other", "fields", "n", i}
			}
			p.XAdd(ctxb(), &goredis.XAddArgs{Stream: "stream:events", ID: fmt.Sprintf("1700000000000-%d", i), Values: fields})
		}
		p.XDel(ctxb(), "stream:events", "1700000000000-5", "1700000000000-150")
		p.XGroupCreate(ctxb(), "stream:events", "g1", "0")
		p.XGroupCreate(ctxb(), "stream:events", "g2", "$")
		p.XAdd(ctxb(), &goredis.XAddArgs{Stream: "stream:empty", ID: "1-1", Values: []any{"a", "b"}})
		p.XDel(ctxb(), "stream:empty", "1-1")
		p.XGroupCreate(ctxb(), "stream:empty", "idle", "0")
	})
	for _, consumer := range []string{"c1", "c2"} {
		if err := cl.XReadGroup(ctxb(), &goredis.XReadGroupArgs{Group: "g1", Consumer: consumer, Streams: []string{"stream:events", ">"}, Count: 20}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mustDo(t, cl, "XACK", "stream:events", "g1", "1700000000000-1", "1700000000000-2")

	// A list with plain (unpacked) nodes: elements above the threshold.
	mustDo(t, cl, "DEBUG", "QUICKLIST-PACKED-THRESHOLD", "1000")
	mustDo(t, cl, "RPUSH", "l:plain", "small", strings.Repeat("p", 2000), "tiny", g.bytes(3000))
	// A function library (skipped by the backup).
	mustDo(t, cl, "FUNCTION", "LOAD", "#!lua name=coffretest\nredis.register_function('one', function(keys, args) return 1 end)")
	// An expired key that stays in memory: active expiry off, never read.
	mustDo(t, cl, "DEBUG", "SET-ACTIVE-EXPIRE", "0")
	mustDo(t, cl, "SET", "exp:gone", "x", "PX", 1)
	time.Sleep(20 * time.Millisecond)

	db2 := testClient(t, c, 2)
	mustDo(t, db2, "SET", "other:db", "2")
	mustDo(t, db2, "HSET", "other:hash", "a", "1")
}

// Every payload the parser builds from a real snapshot is byte for byte
// what DUMP returns for the key.
func TestPSyncPayloadsMatchDUMP(t *testing.T) {
	src := psyncServer(t).conn()
	loadTypes(t, src)
	rdb, transfer := fetchRDB(t, src)
	recs, p, err := parseRDB(rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d bytes, RDB format %d, %s transfer, %d keys, aux %v", len(rdb), p.version, transfer, len(recs), p.aux)
	if p.version != 10 {
		t.Errorf("RDB format %d from redis 7.0, want 10", p.version)
	}
	types := map[byte]int{}
	now := time.Now().UnixMilli()
	var expired int
	for _, r := range recs {
		types[r.payload[0]]++
		if r.expireAt >= 0 && r.expireAt < now {
			if r.key != "exp:gone" {
				t.Errorf("key %q expired at %d", r.key, r.expireAt)
			}
			expired++
			continue
		}
		dump, err := testClient(t, src, r.db).Dump(ctxb(), r.key).Result()
		if err != nil {
			t.Errorf("DUMP %q: %v", r.key, err)
			continue
		}
		if !bytes.Equal(r.payload, []byte(dump)) {
			t.Errorf("key %q (%s, %d bytes): payload differs from DUMP (%d bytes)", r.key, payloadType(r.payload), len(r.payload), len(dump))
		}
		if strings.HasPrefix(r.key, "ttl:") != (r.expireAt >= 0) {
			t.Errorf("key %q: expire-at %d", r.key, r.expireAt)
		}
	}
	if expired != 1 {
		t.Errorf("%d expired keys in the snapshot, want exp:gone", expired)
	}
	// Every type redis 7.0 writes for these keys.
	for _, typ := range []byte{rdbTypeString, rdbTypeSet, rdbTypeHash, rdbTypeZSet2, rdbTypeSetIntset,
		rdbTypeHashListpack, rdbTypeZSetListpack, rdbTypeListQuicklist2, rdbTypeStreamListpacks2} {
		if types[typ] == 0 {
			t.Errorf("no key of RDB type %d (%s) in the snapshot", typ, payloadType([]byte{typ}))
		}
	}
	// DBSIZE counts exp:gone too: expired, not yet deleted.
	if n, want := len(recs), int(keyCount(t, src)); n != want {
		t.Errorf("%d keys parsed, the server holds %d", n, want)
	}
}

// keyCount is the number of keys in every database of the server c names.
func keyCount(t *testing.T, c source.Conn) int64 {
	t.Helper()
	var n int64
	for db := range 16 {
		n += testClient(t, c, db).DBSize(ctxb()).Val()
	}
	return n
}

// A PSYNC backup of every type restores to the same data, validates, and
// records how it was made; the expired key is skipped and counted.
func TestPSyncBackupRestoresEveryType(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := psyncServer(t).conn("mode", "psync")
	loadTypes(t, src)
	a := Adapter{SampleSize: 1000} // every key sampled
	m := backupOf(t, a, r, src)
	mt := metaOf(t, r, m)
	t.Logf("meta: mode %s, transfer %s, RDB %d, repl %s:%d", mt.Mode, mt.Transfer, mt.RDBVersion, mt.ReplID, mt.ReplOffset)
	if mt.Mode != modePSync || mt.Expiry != "rdb" || mt.RDBVersion != 10 || mt.Transfer != "diskless" || len(mt.ReplID) != 40 || mt.Fallback != "" {
		t.Errorf("meta %+v: want a diskless PSYNC point of RDB format 10", mt)
	}
	if len(mt.DBs) != 2 || mt.DBs[0].DB != 0 || mt.DBs[1].DB != 2 {
		t.Fatalf("meta databases %+v: want 0 and 2", mt.DBs)
	}
	d0 := mt.DBs[0]
	if d0.Vanished != 1 || d0.Expires != 2 || d0.Keys != d0.Records || len(d0.Files) != a.parallel() {
		t.Errorf("database 0: %d keys, %d expired, %d with a TTL, files %v: want exp:gone expired, 2 TTLs", d0.Keys, d0.Vanished, d0.Expires, d0.Files)
	}
	if int64(len(d0.Sample)) != d0.Keys || d0.SampleChanged != 0 {
		t.Errorf("database 0: %d sampled of %d keys, %d changed: want all", len(d0.Sample), d0.Keys, d0.SampleChanged)
	}
	want := fingerprint(t, src) // deletes exp:gone
	target := startServer(t).conn()
	res, err := a.Restore(ctxb(), r, m, target, source.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Items != d0.Keys+mt.DBs[1].Keys {
		t.Errorf("restored %d keys, want %d", res.Items, d0.Keys+mt.DBs[1].Keys)
	}
	if got := fingerprint(t, target); got != want {
		t.Fatalf("restored data differs: %s, want %s", got, want)
	}
	v, err := a.Validate(ctxb(), r, m, target, nil)
	if err != nil || !v.OK {
		t.Fatalf("validate: %v %+v", err, v)
	}
	// The stream's consumer groups came along.
	sc, tc := testClient(t, src, 0), testClient(t, target, 0)
	for _, q := range [][]any{{"XINFO", "GROUPS", "stream:events"}, {"XPENDING", "stream:events", "g1"}, {"XINFO", "GROUPS", "stream:empty"}} {
		if got, want := fmt.Sprint(mustDo(t, tc, q...)), fmt.Sprint(mustDo(t, sc, q...)); got != want {
			t.Errorf("%v after restore: %s, want %s", q, got, want)
		}
	}
	// Functions are not backed up (as with SCAN).
	if got := fmt.Sprint(mustDo(t, tc, "FUNCTION", "LIST")); got != "[]" {
		t.Errorf("FUNCTION LIST after restore: %s", got)
	}
}

// aclUser creates an ACL user on ts without the replication commands and
// returns a connection as that user.
func aclUser(t *testing.T, ts *testServer, kv ...string) source.Conn {
	t.Helper()
	pw := randomHex(t, 12)
	pwFile := filepath.Join(ts.dir, "limited-password")
	if err := os.WriteFile(pwFile, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDo(t, testClient(t, ts.conn(), 0), "ACL", "SETUSER", "limited", "on", ">"+pw, "~*", "&*", "+@all", "-psync", "-sync", "-replconf")
	return ts.conn(append([]string{"username", "limited", "password", "file:" + pwFile}, kv...)...)
}

// Mode auto falls back to SCAN when the server refuses PSYNC (here through
// ACL, as ElastiCache does for everyone), logging the refusal; mode psync
// fails at once with a settings error and a hint.
func TestPSyncRefusedFallsBackToScan(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	loadDataset(t, ts.conn())
	want := fingerprint(t, ts.conn())

	var logs testutil.LockedBuffer
	a := Adapter{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	m := backupOf(t, a, r, aclUser(t, ts))
	mt := metaOf(t, r, m)
	t.Logf("fallback: %s", mt.Fallback)
	if mt.Mode != modeScan || !strings.Contains(mt.Fallback, "NOPERM") || !strings.Contains(mt.Fallback, "refused replication") {
		t.Errorf("meta mode %q, fallback %q: want scan, naming the refusal", mt.Mode, mt.Fallback)
	}
	if l := logs.String(); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "PSYNC not possible") || !strings.Contains(l, "NOPERM") {
		t.Errorf("log %q: want the fallback at Info with the server's refusal", l)
	}
	target := startServer(t).conn()
	if _, err := a.Restore(ctxb(), r, m, target, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, target); got != want {
		t.Fatalf("restore of the fallback point differs: %s, want %s", got, want)
	}

	before, _ := r.List(ctxb(), blob.KindSnapshot)
	_, err := a.Backup(ctxb(), archiver.New(r, archiver.Options{}), aclUser(t, ts, "mode", "psync"))
	t.Logf("mode psync: %v (hint: %s)", err, hint.Of(err))
	if err == nil || !errors.Is(err, source.ErrSettings) || !strings.Contains(err.Error(), "NOPERM") || hint.Of(err) == "" {
		t.Fatalf("mode psync on a server that refuses it: %v, want a settings error naming the refusal, with a hint", err)
	}
	if after, _ := r.List(ctxb(), blob.KindSnapshot); len(after) != len(before) {
		t.Fatalf("a refused backup added a recovery point")
	}

	// An invalid mode is a settings error.
	if _, err := a.Backup(ctxb(), archiver.New(r, archiver.Options{}), ts.conn("mode", "fast")); !errors.Is(err, source.ErrSettings) {
		t.Fatalf("mode fast: %v, want ErrSettings", err)
	}
}

// A key the parser cannot read (a module type; here a stream, through the
// test hook) makes mode auto start again with SCAN, after the PSYNC attempt
// already wrote shard files; mode psync fails naming the key and its type.
func TestPSyncUnreadableTypeFallsBackToScan(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	c := ts.conn()
	loadDataset(t, c)
	want := fingerprint(t, c)
	streams := func(typ byte) bool { return typ == rdbTypeStreamListpacks2 }

	a := Adapter{rdbUnsupported: streams, Log: slog.New(slog.DiscardHandler)}
	m := backupOf(t, a, r, c)
	mt := metaOf(t, r, m)
	t.Logf("fallback: %s", mt.Fallback)
	if mt.Mode != modeScan || !strings.Contains(mt.Fallback, `"stream:`) || !strings.Contains(mt.Fallback, "RDB type 19") {
		t.Errorf("meta mode %q, fallback %q: want scan, naming the stream key and its type", mt.Mode, mt.Fallback)
	}
	if ids, _ := r.List(ctxb(), blob.KindSnapshot); len(ids) != 1 {
		t.Fatalf("%d recovery points, want 1", len(ids))
	}
	target := startServer(t).conn()
	if _, err := a.Restore(ctxb(), r, m, target, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, target); got != want {
		t.Fatalf("restore differs: %s, want %s", got, want)
	}
	if v, err := a.Validate(ctxb(), r, m, target, nil); err != nil || !v.OK {
		t.Fatalf("validate: %v %+v", err, v)
	}

	_, err := a.Backup(ctxb(), archiver.New(r, archiver.Options{}), ts.conn("mode", "psync"))
	t.Logf("mode psync: %v", err)
	if err == nil || !errors.Is(err, source.ErrSettings) || !strings.Contains(err.Error(), `key "stream:`) || !strings.Contains(err.Error(), "RDB type 19") {
		t.Fatalf("mode psync with an unreadable type: %v, want an error naming the key and type", err)
	}
	if ids, _ := r.List(ctxb(), blob.KindSnapshot); len(ids) != 1 {
		t.Fatalf("%d recovery points after a failed backup, want 1", len(ids))
	}
}

// Diskless transfers (the default of redis 7.0, after its 5 s delay) and
// disk-based ones (the server writes an RDB file, then sends it) both back
// up; the server's configuration is put back afterwards.
func TestPSyncDisklessAndDiskTransfers(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	c := ts.conn("mode", "psync")
	cl := testClient(t, c, 0)
	loadDataset(t, c)
	want := fingerprint(t, c)
	conf := func(k string) string { return fmt.Sprint(mustDo(t, cl, "CONFIG", "GET", k)) }
	saved := map[string]string{}
	for _, k := range []string{"repl-diskless-sync", "repl-diskless-sync-delay"} {
		v := mustDo(t, cl, "CONFIG", "GET", k).([]any)
		saved[k] = v[1].(string)
	}
	t.Cleanup(func() {
		for k, v := range saved {
			mustDo(t, cl, "CONFIG", "SET", k, v)
		}
	})

	for _, tc := range []struct {
		name, transfer string
		config         []any
	}{
		{"diskless, default delay", "diskless", []any{"repl-diskless-sync", "yes", "repl-diskless-sync-delay", "5"}},
		{"disk", "disk", []any{"repl-diskless-sync", "no"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustDo(t, cl, append([]any{"CONFIG", "SET"}, tc.config...)...)
			start := time.Now()
			m := backupOf(t, Adapter{}, r, c)
			mt := metaOf(t, r, m)
			t.Logf("%s transfer: backup in %v (%s, %s)", mt.Transfer, time.Since(start).Round(time.Millisecond), conf("repl-diskless-sync"), conf("repl-diskless-sync-delay"))
			if mt.Mode != modePSync || mt.Transfer != tc.transfer {
				t.Fatalf("meta mode %q, transfer %q: want psync, %s", mt.Mode, mt.Transfer, tc.transfer)
			}
			target := startServer(t).conn()
			if _, err := (Adapter{}).Restore(ctxb(), r, m, target, source.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := fingerprint(t, target); got != want {
				t.Fatalf("restore differs: %s, want %s", got, want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(ts.dir, "dump.rdb")); err != nil {
		t.Errorf("the disk-based transfer left no RDB file in the server's directory: %v", err)
	}
}

// Cancelling the backup closes the replication connection: the backup
// returns the cancellation, commits nothing, and the server carries on.
func TestPSyncCancel(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	c := ts.conn("mode", "psync")
	loadDataset(t, c)
	ctx, cancel := context.WithCancel(ctxb())
	defer cancel()
	n := 0
	a := Adapter{rdbUnsupported: func(byte) bool {
		if n++; n == 100 {
			cancel()
		}
		return false
	}}
	_, err := a.Backup(ctx, archiver.New(r, archiver.Options{}), c)
	t.Logf("cancelled: %v", err)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v, want context.Canceled", err)
	}
	if ids, _ := r.List(ctxb(), blob.KindSnapshot); len(ids) != 0 {
		t.Fatalf("%d recovery points after a cancelled backup", len(ids))
	}
	m := backupOf(t, Adapter{}, r, c)
	if mt := metaOf(t, r, m); mt.Mode != modePSync {
		t.Fatalf("backup after the cancelled one: mode %s", mt.Mode)
	}
}
