package redis

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/sourcetest"
)

// The conformance dataset lives in databases 0 and 3 of a new redis-server.
const (
	dataDB  = 0
	otherDB = 3
)

// gen is a deterministic generator of values.
type gen struct{ r *rand.ChaCha8 }

func newGen(seed byte) *gen { return &gen{rand.NewChaCha8([32]byte{seed})} }

func (g *gen) bytes(n int) string {
	b := make([]byte, n)
	_, _ = g.r.Read(b)
	return string(b)
}

func (g *gen) intn(n int) int { return int(g.r.Uint64() % uint64(n)) }

// pipe runs fill's commands in pipelines and fails t on any error.
func pipe(t *testing.T, cl *goredis.Client, fill func(p goredis.Pipeliner)) {
	t.Helper()
	cmds, err := cl.Pipelined(ctxb(), func(p goredis.Pipeliner) error { fill(p); return nil })
	if err != nil {
		for _, c := range cmds {
			if c.Err() != nil {
				t.Fatalf("%v: %v", c.Args(), c.Err())
			}
		}
		t.Fatal(err)
	}
}

// loadDataset writes several MiB of every type into databases 0 and 3:
// strings (some with a TTL), hashes, lists, sets, sorted sets, streams, a
// 2 MiB string and a set and hash big enough for hash table encoding.
func loadDataset(t *testing.T, c source.Conn) {
	t.Helper()
	g := newGen(1)
	db0 := testClient(t, c, dataDB)
	for chunk := 0; chunk < 2000; chunk += 250 {
		pipe(t, db0, func(p goredis.Pipeliner) {
			for i := chunk; i < chunk+250; i++ {
				k := fmt.Sprintf("str:%05d", i)
				p.Set(ctxb(), k, g.bytes(512+g.intn(1024)), 0)
				if i%10 == 0 {
					p.Do(ctxb(), "EXPIRE", k, 3600+i)
				}
			}
		})
	}
	pipe(t, db0, func(p goredis.Pipeliner) {
		for i := range 250 {
			args := []any{"HSET", fmt.Sprintf("hash:%04d", i)}
			for f := range 20 {
				args = append(args, fmt.Sprintf("f%02d", f), g.bytes(40))
			}
			p.Do(ctxb(), args...)
		}
		for i := range 150 {
			l := []any{"RPUSH", fmt.Sprintf("list:%04d", i)}
			s := []any{"SADD", fmt.Sprintf("set:%04d", i)}
			z := []any{"ZADD", fmt.Sprintf("zset:%04d", i)}
			for e := range 30 {
				l = append(l, g.bytes(30))
				s = append(s, g.bytes(30))
				z = append(z, float64(g.intn(1000))/7, fmt.Sprintf("m%02d-%s", e, hex.EncodeToString([]byte(g.bytes(8)))))
			}
			p.Do(ctxb(), l...)
			p.Do(ctxb(), s...)
			p.Do(ctxb(), z...)
			if i%15 == 0 {
				p.Do(ctxb(), "PEXPIRE", fmt.Sprintf("set:%04d", i), 7_200_000)
			}
		}
		for i := range 40 {
			k := fmt.Sprintf("stream:%03d", i)
			for e := 1; e <= 20; e++ {
				p.Do(ctxb(), "XADD", k, fmt.Sprintf("1700000000000-%d", e), "event", fmt.Sprint(e), "payload", hex.EncodeToString([]byte(g.bytes(16))))
			}
		}
		p.Set(ctxb(), "big:blob", g.bytes(2<<20), 0)
		bs := []any{"SADD", "big:set"}
		for i := range 2000 {
			bs = append(bs, fmt.Sprintf("member-%d", i))
		}
		p.Do(ctxb(), bs...)
		bh := []any{"HSET", "big:hash"}
		for i := range 1000 {
			bh = append(bh, fmt.Sprintf("field-%d", i), g.bytes(20))
		}
		p.Do(ctxb(), bh...)
		p.Do(ctxb(), "HSET", "user:1", "name", "alice", "plan", "pro")
		p.Do(ctxb(), "SADD", "user:1:roles", "admin", "billing")
	})
	db3 := testClient(t, c, otherDB)
	pipe(t, db3, func(p goredis.Pipeliner) {
		for i := range 1000 {
			k := fmt.Sprintf("cache:%05d", i)
			p.Set(ctxb(), k, g.bytes(1024), 0)
			if i%10 == 0 {
				p.Do(ctxb(), "PEXPIRE", k, 3_600_000+i)
			}
		}
		for i := range 100 {
			p.Do(ctxb(), "INCRBY", fmt.Sprintf("counter:%d", i), i*1000)
		}
	})
}

// mutate changes about 1% of the dataset: rewrites 1 in 100 strings
// (keeping their TTL), adds 1 new key per 100 and deletes a few.
func mutate(t *testing.T, c source.Conn) {
	t.Helper()
	g := newGen(2)
	pipe(t, testClient(t, c, dataDB), func(p goredis.Pipeliner) {
		for i := 0; i < 2000; i += 100 {
			p.Do(ctxb(), "SET", fmt.Sprintf("str:%05d", i+7), g.bytes(700), "KEEPTTL")
		}
		for i := range 25 {
			p.Set(ctxb(), fmt.Sprintf("new:%03d", i), g.bytes(600), 0)
		}
		p.Do(ctxb(), "HSET", "hash:0100", "f03", "changed")
		p.Do(ctxb(), "DEL", "list:0042", "zset:0099")
	})
	pipe(t, testClient(t, c, otherDB), func(p goredis.Pipeliner) {
		for i := 0; i < 1000; i += 100 {
			p.Set(ctxb(), fmt.Sprintf("cache:%05d", i+3), g.bytes(1024), 0)
		}
		for i := range 10 {
			p.Set(ctxb(), fmt.Sprintf("fresh:%d", i), g.bytes(100), 0)
		}
	})
}

// fingerprint digests every key of every database canonically: database,
// key, type, value (sets and hashes sorted) and whether it has a TTL.
// It does not use DUMP: a hash table encoded set or hash dumps its members
// in an order that differs between servers.
func fingerprint(t *testing.T, c source.Conn) string {
	t.Helper()
	var lines []string
	for db := range 16 {
		cl := testClient(t, c, db)
		seen := map[string]bool{}
		var cursor uint64
		for {
			keys, next, err := cl.Scan(ctxb(), cursor, "", 1000).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if seen[k] {
					continue
				}
				seen[k] = true
				typ := cl.Type(ctxb(), k).Val()
				var v any
				switch typ {
				case "string":
					v = cl.Get(ctxb(), k).Val()
				case "list":
					v = cl.LRange(ctxb(), k, 0, -1).Val()
				case "set":
					m := cl.SMembers(ctxb(), k).Val()
					sort.Strings(m)
					v = m
				case "hash":
					m := cl.HGetAll(ctxb(), k).Val()
					fs := make([]string, 0, len(m))
					for f, x := range m {
						fs = append(fs, fmt.Sprintf("%q=%q", f, x))
					}
					sort.Strings(fs)
					v = fs
				case "zset":
					v = cl.ZRangeWithScores(ctxb(), k, 0, -1).Val()
				case "stream":
					v = cl.XRange(ctxb(), k, "-", "+").Val()
				default:
					t.Fatalf("key %q has type %s", k, typ)
				}
				sum := sha256.Sum256(fmt.Appendf(nil, "%#v", v))
				ttl := cl.PTTL(ctxb(), k).Val() > 0
				lines = append(lines, fmt.Sprintf("%d %q %s %x %v", db, k, typ, sum[:8], ttl))
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return fmt.Sprintf("%d keys %x", len(lines), sum[:12])
}

// TestConformance runs the suite with each mode: the SCAN path, and the
// PSYNC path (mode psync: it fails rather than fall back).
func TestConformance(t *testing.T) {
	t.Setenv("COFFRE_TEST_REDIS_BAD_PASSWORD", "not-the-password-123")
	for _, mode := range []string{modeScan, modePSync} {
		t.Run(mode, func(t *testing.T) { conformance(t, mode) })
	}
}

func conformance(t *testing.T, mode string) {
	sourcetest.Run(t, sourcetest.Harness{
		Adapter: Adapter{},
		Source: func(t *testing.T) source.Conn {
			c := startServer(t).conn("mode", mode)
			loadDataset(t, c)
			return c
		},
		Mutate:    mutate,
		NewTarget: func(t *testing.T) source.Conn { return startServer(t).conn() },
		Fill: func(t *testing.T, c source.Conn) {
			mustDo(t, testClient(t, c, 0), "SET", "already:here", "1")
		},
		Fingerprint: fingerprint,
		BadCredentials: func(c source.Conn) source.Conn {
			return c.With(map[string]string{"password": "env:COFFRE_TEST_REDIS_BAD_PASSWORD"})
		},
		Kill: func(t *testing.T, c source.Conn) {
			// Shut the (dedicated) source down while the backup reads it.
			// Not testClient: this runs outside the test's goroutine.
			cl := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + c.Settings["port"], Password: mustSecret(t, c), Protocol: 2, DisableIdentity: true})
			defer cl.Close()
			if err := cl.Do(context.Background(), "SHUTDOWN", "NOSAVE").Err(); err == nil {
				t.Errorf("SHUTDOWN NOSAVE answered: the server still runs")
			}
		},
		Checks: []source.Check{
			{Name: "user name", Query: "HGET user:1 name", Expect: "alice"},
			{Name: "big set size", Query: "SCARD big:set", Expect: "2000"},
			{Name: "is admin", Query: "SISMEMBER user:1:roles admin", Expect: "1"},
			{Name: "plan", Query: "HMGET user:1 plan name", Expect: "pro\nalice"},
		},
		FailingCheck: &source.Check{Name: "absent key", Query: "GET no:such:key", Expect: "present"},
	})
}
