package redis

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

const (
	metaPath    = "meta.json"
	metaVersion = 1
)

// meta is meta.json: what the backup saw, for Restore and Validate.
type meta struct {
	Format       int    `json:"format"`
	RedisVersion string `json:"redis_version"`
	RunID        string `json:"run_id"`
	// Started is the backup's start on the server's clock; restored TTLs
	// are relative to it.
	Started   time.Time `json:"started"`
	StartedMS int64     `json:"started_ms"`
	Finished  time.Time `json:"finished"`
	// Expiry is how expiries were read: "pexpiretime" or "pttl" (TIME +
	// PTTL) by the SCAN path, "rdb" (the snapshot's absolute expiries) by
	// the PSYNC path.
	Expiry string   `json:"expiry"`
	Shards int      `json:"shards"`
	DBs    []dbMeta `json:"dbs"`

	// Mode is the path that read the keys: "scan" or "psync" (points
	// written before PSYNC existed have none and are SCAN points).
	Mode string `json:"mode,omitempty"`
	// Fallback says why a backup in mode auto used SCAN: the server's
	// refusal of PSYNC, or what the RDB parser could not read.
	Fallback string `json:"fallback,omitempty"`
	// PSYNC only: the replication id and offset of the snapshot (the
	// server's +FULLRESYNC reply), its RDB format and how it was sent
	// ("diskless" or "disk").
	ReplID     string `json:"repl_id,omitempty"`
	ReplOffset int64  `json:"repl_offset,omitempty"`
	RDBVersion int    `json:"rdb_version,omitempty"`
	Transfer   string `json:"transfer,omitempty"`
}

// Modes of backup.
const (
	modeAuto  = "auto"
	modeScan  = "scan"
	modePSync = "psync"
)

// mode returns the path that made the point.
func (m *meta) mode() string {
	if m.Mode == "" {
		return modeScan
	}
	return m.Mode
}

// dbMeta describes one database of the recovery point.
type dbMeta struct {
	DB int `json:"db"`
	// Keys is the number of distinct keys stored: what DBSIZE of a
	// restored database is.
	Keys int64 `json:"keys"`
	// Records counts the records of the shard files: Keys + Duplicates.
	Records    int64 `json:"records"`
	Duplicates int64 `json:"duplicates,omitempty"`
	// Vanished counts keys SCAN returned that were gone when dumped, or,
	// for a PSYNC point, keys of the snapshot that had already expired
	// when the backup started (Redis deletes expired keys lazily).
	Vanished int64 `json:"vanished,omitempty"`
	Expires  int64 `json:"expires"`       // stored keys with a TTL
	Bytes    int64 `json:"payload_bytes"` // sum of DUMP payload sizes
	// KeysAtStart is INFO keyspace's count when the backup started.
	KeysAtStart int64    `json:"keys_at_start"`
	Files       []string `json:"files"`
	Sample      []sample `json:"sample,omitempty"`
	// SampleChanged (PSYNC) counts sampled keys left out of Sample because
	// they changed between the snapshot and the moment they were read.
	SampleChanged int64 `json:"sample_changed,omitempty"`
}

// sample is a key read atomically at backup with its value's digest.
type sample struct {
	Key    []byte `json:"key"` // base64 in JSON: keys are binary
	Type   string `json:"type"`
	Digest string `json:"sha256"` // see valueDigest
	TTL    bool   `json:"ttl"`
}

func loadMeta(ctx context.Context, r *repo.Repository, m *snapshot.Manifest) (*meta, error) {
	var mt meta
	if err := source.ReadJSON(ctx, r, m, "redis", metaPath, &mt); err != nil {
		return nil, err
	}
	if mt.Format != metaVersion {
		return nil, fmt.Errorf("recovery point %s: redis format %d, this build reads %d: upgrade coffre", m.ID.Short(), mt.Format, metaVersion)
	}
	return &mt, nil
}

// keyRead is a key read atomically with its value.
type keyRead struct {
	exists   bool
	typ      string
	payload  []byte
	expireAt int64  // Unix ms, -1: no expiry
	digest   string // valueDigest
}

// readKey reads key in one MULTI/EXEC: its type, DUMP payload, expiry and
// its value through every type's read command (all but one fail with
// WRONGTYPE, which is expected), so that payload and value agree.
func readKey(ctx context.Context, c *goredis.Client, key string, pexpiretime bool) (keyRead, error) {
	var (
		typ                     *goredis.StatusCmd
		dump, exp, tm           *goredis.Cmd
		get, lr, sm, hg, zr, xr *goredis.Cmd
	)
	_, err := c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		typ = p.Type(ctx, key)
		dump = p.Do(ctx, "DUMP", key)
		if pexpiretime {
			exp = p.Do(ctx, "PEXPIRETIME", key)
		} else {
			tm = p.Do(ctx, "TIME")
			exp = p.Do(ctx, "PTTL", key)
		}
		get = p.Do(ctx, "GET", key)
		lr = p.Do(ctx, "LRANGE", key, 0, -1)
		sm = p.Do(ctx, "SMEMBERS", key)
		hg = p.Do(ctx, "HGETALL", key)
		zr = p.Do(ctx, "ZRANGE", key, 0, -1, "WITHSCORES")
		xr = p.Do(ctx, "XRANGE", key, "-", "+")
		return nil
	})
	if typ == nil || typ.Err() != nil {
		if err == nil {
			err = typ.Err()
		}
		return keyRead{}, err
	}
	kr := keyRead{typ: typ.Val()}
	if kr.typ == "none" {
		return kr, nil
	}
	d, err := dump.Text()
	if err == goredis.Nil {
		return kr, nil
	}
	if err != nil {
		return kr, fmt.Errorf("DUMP: %w", err)
	}
	kr.exists, kr.payload = true, []byte(d)
	if kr.expireAt, err = expiry(exp, tm); err != nil {
		return kr, err
	}
	if kr.expireAt == -2 {
		kr.exists = false
		return kr, nil
	}
	var v any
	switch kr.typ {
	case "string":
		v, err = get.Result()
	case "list":
		v, err = lr.Result()
	case "set":
		v, err = sm.Result()
		if err == nil {
			v = sortedStrings(v)
		}
	case "hash":
		v, err = hg.Result()
		if err == nil {
			v = sortedPairs(v)
		}
	case "zset":
		v, err = zr.Result()
	case "stream":
		v, err = xr.Result()
	default:
		// A module type (or one newer than this build): its payload is its
		// only canonical form we have.
		v = d
	}
	if err != nil {
		return kr, fmt.Errorf("read %s value: %w", kr.typ, err)
	}
	kr.digest = valueDigest(kr.typ, v)
	return kr, nil
}

// expiry turns a PEXPIRETIME reply, or a TIME and a PTTL reply, into an
// absolute expiry in Unix ms: -1 no expiry, -2 no key.
func expiry(exp, tm *goredis.Cmd) (int64, error) {
	n, err := exp.Int64()
	if err != nil {
		return 0, err
	}
	if tm == nil || n < 0 {
		return n, nil
	}
	now, err := timeReply(tm)
	if err != nil {
		return 0, err
	}
	return now + n, nil
}

// timeReply converts a TIME reply to Unix ms.
func timeReply(tm *goredis.Cmd) (int64, error) {
	parts, err := tm.StringSlice()
	if err != nil || len(parts) != 2 {
		return 0, fmt.Errorf("TIME: unexpected reply %v (%v)", tm.Val(), err)
	}
	sec, err1 := strconv.ParseInt(parts[0], 10, 64)
	usec, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("TIME: unexpected reply %v", parts)
	}
	return sec*1000 + usec/1000, nil
}

func sortedStrings(v any) any {
	a, _ := v.([]any)
	s := make([]string, 0, len(a))
	for _, e := range a {
		s = append(s, fmt.Sprint(e))
	}
	sort.Strings(s)
	out := make([]any, len(s))
	for i, e := range s {
		out[i] = e
	}
	return out
}

func sortedPairs(v any) any {
	a, _ := v.([]any)
	type pair struct{ k, v string }
	ps := make([]pair, 0, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		ps = append(ps, pair{fmt.Sprint(a[i]), fmt.Sprint(a[i+1])})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	out := make([]any, 0, 2*len(ps))
	for _, p := range ps {
		out = append(out, p.k, p.v)
	}
	return out
}

// valueDigest is the hex SHA-256 of a key's type and its value in a
// canonical form: the RESP2 reply of the type's read command (GET, LRANGE,
// SMEMBERS sorted, HGETALL sorted by field, ZRANGE WITHSCORES, XRANGE),
// every element length-prefixed; for other types the DUMP payload.
func valueDigest(typ string, v any) string {
	h := sha256.New()
	var buf [binary.MaxVarintLen64 + 1]byte
	var enc func(v any)
	put := func(tag byte, n uint64) {
		buf[0] = tag
		k := binary.PutUvarint(buf[1:], n)
		h.Write(buf[:1+k])
	}
	enc = func(v any) {
		switch x := v.(type) {
		case string:
			put('s', uint64(len(x)))
			io.WriteString(h, x)
		case int64:
			s := strconv.FormatInt(x, 10)
			put('i', uint64(len(s)))
			io.WriteString(h, s)
		case []any:
			put('a', uint64(len(x)))
			for _, e := range x {
				enc(e)
			}
		case nil:
			put('n', 0)
		default:
			s := fmt.Sprint(x)
			put('?', uint64(len(s)))
			io.WriteString(h, s)
		}
	}
	enc(typ)
	enc(v)
	return hex.EncodeToString(h.Sum(nil))
}
