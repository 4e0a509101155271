package redis

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

func backupOf(t *testing.T, a Adapter, r *repo.Repository, c source.Conn) *snapshot.Manifest {
	t.Helper()
	m, err := a.Backup(ctxb(), archiver.New(r, archiver.Options{}), c)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if m.Status != snapshot.StatusCompleted {
		t.Fatalf("backup status %s", m.Status)
	}
	return m
}

func metaOf(t *testing.T, r *repo.Repository, m *snapshot.Manifest) *meta {
	t.Helper()
	mt, err := loadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	return mt
}

// The next day's backup after a ~1% change stores little: measured as what
// the second backup added to the vault (Manifest.Stats.StoredAdded counts
// everything the repository handle stored so far).
func TestNextDayBackupDeduplicates(t *testing.T) {
	for _, mode := range []string{modeScan, modePSync} {
		t.Run(mode, func(t *testing.T) { testNextDay(t, mode) })
	}
}

func testNextDay(t *testing.T, mode string) {
	r, _ := repo.TestRepository(t)
	c := startServer(t).conn("mode", mode)
	loadDataset(t, c)
	fingerprint(t, c) // reads every key: the server finishes rehashing its tables
	backupOf(t, Adapter{}, r, c)
	first := r.Stats().StoredAdded
	mutate(t, c)
	want := fingerprint(t, c)
	m2 := backupOf(t, Adapter{}, r, c)
	second := r.Stats().StoredAdded - first
	t.Logf("first backup stored %d bytes, the next day's %d (%.0f%%)", first, second, 100*float64(second)/float64(first))
	if second*2 > first {
		t.Errorf("second backup after a 1%% change stored %d bytes, first %d: want at most half", second, first)
	}
	target := startServer(t).conn()
	if _, err := (Adapter{}).Restore(ctxb(), r, m2, target, source.RestoreOptions{Parallel: 1}); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, target); got != want {
		t.Fatalf("restore of the second point: %s, want %s", got, want)
	}
}

func TestTTLsArePreserved(t *testing.T) {
	t.Run("PEXPIRETIME", func(t *testing.T) { testTTLs(t, Adapter{}, modeScan, "pexpiretime") })
	t.Run("TIME+PTTL", func(t *testing.T) { testTTLs(t, Adapter{usePTTL: true}, modeScan, "pttl") })
	t.Run("PSYNC", func(t *testing.T) { testTTLs(t, Adapter{}, modePSync, "rdb") })
}

func testTTLs(t *testing.T, a Adapter, mode, expiry string) {
	r, _ := repo.TestRepository(t)
	src := startServer(t).conn("mode", mode)
	cl := testClient(t, src, 0)
	mustDo(t, cl, "SET", "hour", "x", "PX", 3_600_000)
	mustDo(t, cl, "SET", "ten-minutes", "x", "PX", 600_000)
	mustDo(t, cl, "HSET", "hash-day", "f", "v")
	mustDo(t, cl, "PEXPIRE", "hash-day", 86_400_000)
	mustDo(t, cl, "SET", "forever", "x")
	ttlKeys := []string{"hour", "ten-minutes", "hash-day"}

	start := time.Now()
	before := map[string]int64{}
	for _, k := range ttlKeys {
		before[k] = cl.PTTL(ctxb(), k).Val().Milliseconds()
	}
	m := backupOf(t, a, r, src)
	if mt := metaOf(t, r, m); mt.Expiry != expiry || mt.Mode != mode {
		t.Fatalf("meta expiry %q, mode %q, want %q, %q", mt.Expiry, mt.Mode, expiry, mode)
	}
	target := startServer(t).conn()
	if _, err := a.Restore(ctxb(), r, m, target, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	tc := testClient(t, target, 0)
	after := map[string]int64{}
	for _, k := range ttlKeys {
		after[k] = tc.PTTL(ctxb(), k).Val().Milliseconds()
	}
	elapsed := time.Since(start).Milliseconds()
	for _, k := range ttlKeys {
		// A key gets what it had left when the backup started: no more than
		// it had before the backup, and no less than that minus the time
		// the test took (+2 ms for the servers' millisecond rounding).
		if after[k] > before[k] || after[k] < before[k]-elapsed-2 {
			t.Errorf("%s: PTTL %d ms after restore, %d ms before backup, %d ms apart", k, after[k], before[k], elapsed)
		}
	}
	if ttl := tc.PTTL(ctxb(), "forever").Val(); ttl != -1 {
		t.Errorf("forever: PTTL %v after restore, want no expiry (-1)", ttl)
	}
}

// Keys deleted between SCAN and DUMP are skipped and counted, on the
// pipelined path and on the sampled (MULTI/EXEC) path.
func TestVanishedKeysAreSkipped(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := serviceConn(t, 1).With(map[string]string{"mode": modeScan})
	cl := testClient(t, src, 1)
	const n = 300
	pipe(t, cl, func(p goredis.Pipeliner) {
		for i := range n {
			p.Set(ctxb(), fmt.Sprintf("k:%03d", i), fmt.Sprint(i), 0)
		}
	})
	a := Adapter{SampleSize: 60}
	thr := sampleThreshold(n, a.sampleSize())
	var gone []string
	var plain, sampled int
	for i := 0; i < n && (plain < 3 || sampled < 3); i++ {
		k := fmt.Sprintf("k:%03d", i)
		if sampleHash(k) <= thr && sampled < 3 {
			sampled++
			gone = append(gone, k)
		} else if sampleHash(k) > thr && plain < 3 {
			plain++
			gone = append(gone, k)
		}
	}
	var once sync.Once
	a.afterScan = func(db int, keys []string) {
		once.Do(func() { mustDo(t, cl, append([]any{"DEL"}, toAny(gone)...)...) })
	}
	m := backupOf(t, a, r, src)
	mt := metaOf(t, r, m)
	if len(mt.DBs) != 1 || mt.DBs[0].DB != 1 || mt.DBs[0].Vanished != 6 || mt.DBs[0].Keys != n-6 {
		t.Fatalf("meta databases %+v: want database 1 with %d keys and 6 vanished", mt.DBs, n-6)
	}
	target := startServer(t).conn()
	res, err := (Adapter{}).Restore(ctxb(), r, m, target, source.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Items != n-6 {
		t.Errorf("restored %d keys, want %d", res.Items, n-6)
	}
	tc := testClient(t, target, 1)
	if got := tc.Exists(ctxb(), gone...).Val(); got != 0 {
		t.Errorf("%d of the vanished keys exist after restore", got)
	}
	v, err := (Adapter{}).Validate(ctxb(), r, m, target, nil)
	if err != nil || !v.OK {
		t.Fatalf("validate: %v %+v", err, v)
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// The target setting db maps a single-database point; only the databases
// written must be empty; Overwrite replaces.
func TestDatabaseMappingAndEmptiness(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := serviceConn(t, 4)
	sc := testClient(t, src, 4)
	mustDo(t, sc, "SET", "a", "1")
	mustDo(t, sc, "RPUSH", "l", "x", "y")
	m := backupOf(t, Adapter{}, r, src)

	ts := startServer(t)
	tc0 := testClient(t, ts.conn(), 0)
	mustDo(t, tc0, "SET", "unrelated", "keep")
	target := ts.conn("db", "7")
	res, err := (Adapter{}).Restore(ctxb(), r, m, target, source.RestoreOptions{})
	if err != nil {
		t.Fatalf("restore into empty database 7 of a server whose database 0 has data: %v", err)
	}
	if res.Items != 2 {
		t.Errorf("restored %d keys, want 2", res.Items)
	}
	tc7 := testClient(t, target, 7)
	if got := tc7.Get(ctxb(), "a").Val(); got != "1" {
		t.Errorf("database 7 key a = %q, want 1", got)
	}
	if n := tc0.DBSize(ctxb()).Val(); n != 1 {
		t.Errorf("database 0 has %d keys after a restore into 7, want 1", n)
	}
	v, err := (Adapter{}).Validate(ctxb(), r, m, target, []source.Check{{Name: "len", Query: "LLEN l", Expect: "2"}})
	if err != nil || !v.OK {
		t.Fatalf("validate database 7: %v %+v", err, v)
	}

	// Database 7 now holds data: refused, and nothing changes.
	mustDo(t, tc7, "SET", "a", "changed")
	_, err = (Adapter{}).Restore(ctxb(), r, m, target, source.RestoreOptions{})
	if !errors.Is(err, source.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "database 7 holds 2 keys") {
		t.Fatalf("restore into non-empty database 7: %v, want ErrTargetNotEmpty naming it", err)
	}
	if got := tc7.Get(ctxb(), "a").Val(); got != "changed" {
		t.Fatalf("refused restore changed key a to %q", got)
	}
	if _, err := (Adapter{}).Restore(ctxb(), r, m, target, source.RestoreOptions{Overwrite: true}); err != nil {
		t.Fatalf("restore with overwrite: %v", err)
	}
	if got := tc7.Get(ctxb(), "a").Val(); got != "1" {
		t.Fatalf("overwrite left key a = %q, want 1", got)
	}

	// A database the server does not have.
	_, err = (Adapter{}).Backup(ctxb(), archiver.New(r, archiver.Options{}), src.With(map[string]string{"db": "99"}))
	if err == nil || !strings.Contains(err.Error(), "DB index is out of range") {
		t.Fatalf("backup of database 99: %v", err)
	}

	// A point of several databases cannot be mapped into one.
	multi := startServer(t).conn()
	mustDo(t, testClient(t, multi, 0), "SET", "x", "0")
	mustDo(t, testClient(t, multi, 2), "SET", "y", "2")
	mm := backupOf(t, Adapter{}, r, multi)
	_, err = (Adapter{}).Restore(ctxb(), r, mm, startServer(t).conn("db", "5"), source.RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "databases 0, 2") {
		t.Fatalf("restore of a two-database point with db set: %v", err)
	}
}

func TestAuthenticationErrors(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	t.Setenv("COFFRE_TEST_REDIS_WRONG", "wrong-secret-value")
	for name, c := range map[string]source.Conn{
		"wrong password": ts.conn("password", "env:COFFRE_TEST_REDIS_WRONG"),
		"no password":    ts.conn("password", ""),
		"unknown user":   ts.conn("username", "nobody"),
	} {
		_, err := (Adapter{}).Backup(ctxb(), archiver.New(r, archiver.Options{}), c)
		t.Logf("%s: %v", name, err)
		if err == nil || !strings.Contains(err.Error(), "authentication failed") || !errors.Is(err, source.ErrAuth) {
			t.Errorf("%s: %v, want authentication failed (source.ErrAuth)", name, err)
			continue
		}
		if strings.Contains(err.Error(), "wrong-secret-value") || strings.Contains(err.Error(), mustSecret(t, ts.conn())) {
			t.Errorf("%s: error %q contains a password", name, err)
		}
	}
	t.Setenv("COFFRE_TEST_REDIS_WRONG", "x")
	if _, err := (Adapter{}).Backup(ctxb(), archiver.New(r, archiver.Options{}), ts.conn("password", "plain-text")); err == nil || !strings.Contains(err.Error(), "must be a reference") || !errors.Is(err, source.ErrSecretUnavailable) {
		t.Errorf("a plain password setting: %v", err)
	}
}

// pointOf stores a recovery point holding the records given, written in the
// shard format, as a backup of a server of version ver would.
func pointOf(t *testing.T, r *repo.Repository, ver string, recs ...record) *snapshot.Manifest {
	t.Helper()
	mt := meta{Format: metaVersion, RedisVersion: ver, StartedMS: time.Now().UnixMilli(), Shards: 1,
		DBs: []dbMeta{{DB: 0, Keys: int64(len(recs)), Records: int64(len(recs)), Files: []string{shardPath(0, 0)}}}}
	var b strings.Builder
	rw, err := newRecordWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if err := rw.write(rec.Key, rec.Payload, rec.ExpireAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := rw.close(); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(&mt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := archiver.New(r, archiver.Options{}).BackupStreams(ctxb(), snapshot.Source{Type: "redis"}, func(ctx context.Context, s *archiver.Streams) error {
		if err := s.AddBytes(shardPath(0, 0), []byte(b.String())); err != nil {
			return err
		}
		return s.AddBytes(metaPath, js)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// withCRC returns payload with its RDB version replaced (if ver ≥ 0) and
// its first byte replaced (if typ ≥ 0), and a valid CRC64.
func withCRC(p []byte, ver, typ int) []byte {
	p = append([]byte(nil), p...)
	if ver >= 0 {
		binary.LittleEndian.PutUint16(p[len(p)-10:], uint16(ver))
	}
	if typ >= 0 {
		p[0] = byte(typ)
	}
	binary.LittleEndian.PutUint64(p[len(p)-8:], crc64(0, p[:len(p)-8]))
	return p
}

// A payload from a newer Redis, or of a type the target does not know,
// fails the restore with an error naming the key and the versions.
func TestRestoreRefusesPayloadsTheTargetCannotRead(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	cl := testClient(t, ts.conn(), 0)
	mustDo(t, cl, "SET", "sample", "value")
	dump, err := cl.Dump(ctxb(), "sample").Result()
	if err != nil {
		t.Fatal(err)
	}
	p := []byte(dump)
	if got, want := crc64(0, p[:len(p)-8]), binary.LittleEndian.Uint64(p[len(p)-8:]); got != want {
		t.Fatalf("crc64 of a real DUMP payload = %x, the payload says %x", got, want)
	}
	ver := cl.Info(ctxb(), "server").Val()
	ver = ver[strings.Index(ver, "redis_version:")+len("redis_version:"):]
	ver = strings.TrimSpace(ver[:strings.IndexByte(ver, '\n')])

	// Sanity: the untouched payload restores.
	ok := pointOf(t, r, ver, record{Key: []byte("fine"), ExpireAt: -1, Payload: p})
	if _, err := (Adapter{}).Restore(ctxb(), r, ok, startServer(t).conn(), source.RestoreOptions{}); err != nil {
		t.Fatalf("restore of a real payload: %v", err)
	}

	newer := pointOf(t, r, "99.0.0", record{Key: []byte("from:the:future"), ExpireAt: -1, Payload: withCRC(p, 99, -1)})
	_, err = (Adapter{}).Restore(ctxb(), r, newer, startServer(t).conn(), source.RestoreOptions{})
	t.Logf("newer payload: %v", err)
	for _, want := range []string{`"from:the:future"`, "RDB format 99", "redis " + ver, "99.0.0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("restore of a payload from a newer Redis: %v, want it to mention %s", err, want)
		}
	}

	unknown := pointOf(t, r, ver, record{Key: []byte("odd:type"), ExpireAt: -1, Payload: withCRC(p, -1, 200)})
	_, err = (Adapter{}).Restore(ctxb(), r, unknown, startServer(t).conn(), source.RestoreOptions{})
	t.Logf("unknown type: %v", err)
	for _, want := range []string{`"odd:type"`, "does not know the key's type", "RDB type 200"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("restore of a payload of an unknown type: %v, want it to mention %s", err, want)
		}
	}
}

func TestClusterModeIsRefused(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t, "cluster-enabled yes", "cluster-config-file nodes.conf")
	_, err := (Adapter{}).Backup(ctxb(), archiver.New(r, archiver.Options{}), ts.conn())
	t.Logf("cluster: %v", err)
	if err == nil || !strings.Contains(err.Error(), "cluster mode") {
		t.Fatalf("backup of a cluster-mode server: %v", err)
	}
	if ids, _ := r.List(ctxb(), blob.KindSnapshot); len(ids) != 0 {
		t.Fatalf("%d recovery points after a refused backup", len(ids))
	}
}

// A server that restarts (here: empty) while the backup reads it fails the
// backup instead of committing a mix of two keyspaces.
func TestServerRestartDuringBackupCommitsNothing(t *testing.T) {
	r, _ := repo.TestRepository(t)
	ts := startServer(t)
	c := ts.conn()
	cl := testClient(t, c, 0)
	pipe(t, cl, func(p goredis.Pipeliner) {
		for i := range 500 {
			p.Set(ctxb(), fmt.Sprintf("k:%d", i), i, 0)
		}
	})
	var once sync.Once
	a := Adapter{ScanCount: 50}
	a.afterScan = func(int, []string) { once.Do(func() { ts.restart(t) }) }
	_, err := a.Backup(ctxb(), archiver.New(r, archiver.Options{}), c.With(map[string]string{"mode": modeScan}))
	t.Logf("restart: %v", err)
	if err == nil || !strings.Contains(err.Error(), "restarted or failed over") {
		t.Fatalf("backup across a restart: %v, want it to fail naming the restart", err)
	}
	if ids, _ := r.List(ctxb(), blob.KindSnapshot); len(ids) != 0 {
		t.Fatalf("%d recovery points after a failed backup", len(ids))
	}
}
