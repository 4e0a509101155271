// Package redis backs up Redis and ElastiCache, through the replication stream (PSYNC) where the server allows it and through SCAN, DUMP and PTTL where it does not (ElastiCache: no SYNC or BGSAVE needed), restores into a new instance or an empty database with RESTORE, and validates key counts and sampled values.
//
// # Backup
//
// The setting `mode` chooses the path: "psync", "scan", or "auto" (the
// default), which tries PSYNC and falls back to SCAN, logging why at Info
// and recording it in meta.json (fallback), when the server refuses
// replication (ElastiCache and most managed services answer PSYNC with an
// error; an ACL user may lack +psync or +replconf), writes an RDB format
// newer than this build reads (Redis 7.4 and later), or holds a key the
// RDB parser cannot delimit (a module type). Mode psync fails instead, with
// an error wrapping source.ErrSettings and a hint. Both paths write the
// same shard files and meta.json (its `mode` says which made the point),
// so Restore and Validate do not care. A cluster-enabled server is refused
// by both, with a clear error: back up each shard's primary or replica
// endpoint as its own resource.
//
// # PSYNC path
//
// On its own connection (TLS, AUTH with or without username as the
// clients), the adapter asks for a snapshot only, as redis-cli --rdb does
// (REPLCONF capa eof, REPLCONF rdb-only 1 on Redis 7.0+, so the server
// keeps no replica and sends no replication stream), then PSYNC ? -1. The
// server forks and sends an RDB: diskless (the default since 7.0: streamed
// by the fork after repl-diskless-sync-delay, 5 s by default, and ended by
// a 40-byte mark) or written to its disk first then sent with its length.
// The fork costs the server copy-on-write memory while it runs, as BGSAVE
// does; the SCAN path never forks.
//
// A streaming parser (rdb.go) reads the RDB once, in constant memory but
// one value at a time, and turns every key into the DUMP payload the server
// would return (type byte, the value's bytes as in the RDB, RDB version,
// CRC-64) without decoding values; the records go to the shard writers in
// batches, as the SCAN path's. It reads RDB formats 6 to 11 (Redis 2.6 to
// 7.2, Valkey 7.2 and 8.0): every value type and encoding, streams with
// their consumer groups and pending entries. It skips functions (FUNCTION2:
// not backed up, as with SCAN), module auxiliary data, LRU/LFU hints and
// keys of other databases than the `db` setting's (the snapshot always
// holds them all). The RDB's checksum is verified; a mismatch, a truncated
// transfer or a malformed stream fails the backup and commits nothing.
//
// Consistency: the snapshot is the whole keyspace at one instant (the
// fork). Keys that had expired when the backup started but were still in
// memory are skipped and counted (vanished). The sample for Validate is
// read from the live server while the snapshot streams in, in one
// MULTI/EXEC per key as the SCAN path does, and a sampled key whose DUMP
// payload differs from the snapshot's (it changed since) is left out and
// counted, so that the sample always describes what was stored.
//
// Memory: a 1 MiB read buffer and a few batches of records of about 512 KiB
// per shard writer; a big value is held whole in its batch.
//
// # SCAN path
//
// For every database that INFO keyspace lists (or only the one of the `db`
// setting), one goroutine SCANs the keyspace and hands each batch of keys to
// Parallel shard workers by the keys' hash slots; each worker pipelines
// DUMP and PEXPIRETIME (TIME + PTTL before Redis 7.0) for its part of the
// batch, on its own connection, and writes the records to its shard file
// through a pipe into archiver.Streams.Add. Only commands that ElastiCache
// allows are used: INFO, SCAN, DUMP, PEXPIRETIME/PTTL, TIME, TYPE and reads,
// MULTI/EXEC. CONFIG, BGSAVE and DEBUG are never called (nor SYNC/PSYNC
// outside the PSYNC path).
//
// Consistency: each key is read atomically, the keyspace is not: a key
// written during the backup may be seen before or after the write, a key
// created during the backup may be missing, a key deleted during it may be
// present. Keys that vanish between SCAN and DUMP are skipped and counted.
// The backup fails (and nothing is committed) if the server restarts or
// fails over while it runs (its run_id changes).
//
// Memory: one batch of DUMP payloads per shard worker (a big key is held
// whole: DUMP returns the entire value), plus 8 bytes per key to count keys
// that SCAN returned twice.
//
// A deterministic sample of about SampleSize keys per database (those whose
// SHA-256 falls below a threshold) is read in one MULTI/EXEC each with
// their type and value; meta.json keeps a digest of the value in a canonical
// form (sets and hashes sorted), which Validate compares, since the DUMP
// payload of a hash table encoded set or hash differs between servers.
//
// # Record format
//
// See format.go: per database and shard a file db<N>/shard-<SS>.rdbdump of
// length-prefixed records (key length u32, key, expire-at i64 Unix ms or -1,
// payload length u64, DUMP payload), with a header and a counted trailer,
// and meta.json.
//
// # Restore
//
// Restore replays the records with pipelined RESTORE into a target whose
// databases to be written are empty (ErrTargetNotEmpty otherwise, before
// writing, unless Overwrite, which then uses RESTORE … REPLACE). A key gets
// the TTL it had left when the backup started. Several databases restore
// into the same numbers; the target setting `db` maps a single-database
// recovery point into another database.
//
// # Settings
//
//	host      default 127.0.0.1
//	port      default 6379
//	username  ACL user (optional)
//	password  reference to the password or AUTH token (env:NAME or file:PATH)
//	tls       "true" for TLS (ElastiCache in-transit encryption); server name = host
//	db        only this database (backup), or the database to restore a
//	          single-database point into and to run checks in (target)
//	mode      backup path: auto (default: PSYNC, else SCAN), psync or scan.
//	          PSYNC needs the ACL permissions +psync +replconf (and those
//	          of the sample: the SCAN path's read commands)
package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/source"
)

// Adapter is the Redis source. The zero value is ready to use.
type Adapter struct {
	// Parallel is the number of shards a database is split into at backup
	// (and so of connections reading it), and of shards restored at once
	// when RestoreOptions.Parallel is 0. Default 4.
	Parallel int
	// ScanCount is the COUNT hint of SCAN, hence the batch size. Default 1000.
	ScanCount int
	// SampleSize is about how many keys per database the backup samples for
	// Validate. Default 100.
	SampleSize int

	// Log receives what the adapter decides on its own (mode auto falling
	// back to SCAN). Default slog.Default().
	Log *slog.Logger

	// afterScan, for tests, is called with every SCAN batch before its keys
	// are dumped.
	afterScan func(db int, keys []string)
	// rdbUnsupported, for tests, makes the RDB parser treat value types as
	// unknown.
	rdbUnsupported func(typ byte) bool
	// usePTTL, for tests, reads expiries with TIME + PTTL as for servers
	// older than 7.0.
	usePTTL bool
}

var _ source.Adapter = Adapter{}

// Type returns "redis".
func (Adapter) Type() string { return "redis" }

func (a Adapter) parallel() int {
	if a.Parallel > 0 {
		return a.Parallel
	}
	return 4
}

func (a Adapter) scanCount() int {
	if a.ScanCount > 0 {
		return a.ScanCount
	}
	return 1000
}

func (a Adapter) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

func (a Adapter) sampleSize() int {
	if a.SampleSize > 0 {
		return a.SampleSize
	}
	return 100
}

// settings are a Conn's parsed settings.
type settings struct {
	resource string
	host     string
	port     int
	username string
	password string
	tls      bool
	db       int
	hasDB    bool
	mode     string // modeAuto, modeScan or modePSync
}

func parseSettings(c source.Conn) (*settings, error) {
	s := &settings{resource: c.Resource, host: "127.0.0.1", port: 6379}
	if h := c.Settings["host"]; h != "" {
		s.host = h
	}
	var err error
	if s.port, err = c.Port(6379); err != nil {
		return nil, err
	}
	s.username = c.Settings["username"]
	switch v := c.Settings["tls"]; v {
	case "", "false":
	case "true":
		s.tls = true
	default:
		return nil, fmt.Errorf("resource %s: setting tls %q: want true or false: %w", c.Resource, v, source.ErrSettings)
	}
	if v, ok := c.Settings["db"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("resource %s: setting db %q: want a database number (0, 1…): %w", c.Resource, v, source.ErrSettings)
		}
		s.db, s.hasDB = n, true
	}
	switch v := c.Settings["mode"]; v {
	case "", modeAuto:
		s.mode = modeAuto
	case modeScan, modePSync:
		s.mode = v
	default:
		return nil, fmt.Errorf("resource %s: setting mode %q: want auto, scan or psync: %w", c.Resource, v, source.ErrSettings)
	}
	pw, err := c.Secret("password")
	if err != nil {
		return nil, err
	}
	s.password = pw
	return s, nil
}

func (s *settings) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// client returns a client of database db with pool connections.
func (s *settings) client(db, pool int) *goredis.Client {
	o := &goredis.Options{
		Addr:     s.addr(),
		Username: s.username,
		Password: s.password,
		DB:       db,
		// RESP2: what every Redis and ElastiCache version speaks; replies
		// are then plain strings, integers and arrays.
		Protocol:        2,
		DisableIdentity: true, // no CLIENT SETINFO, which older servers refuse
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
		PoolSize:        pool,
		MaxRetries:      3,
		DialTimeout:     10 * time.Second,
		ReadTimeout:     5 * time.Minute, // a pipeline of big DUMPs is read under one deadline
		WriteTimeout:    time.Minute,
		PoolTimeout:     5 * time.Minute,
		MinRetryBackoff: 50 * time.Millisecond,
	}
	if s.tls {
		o.TLSConfig = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
	}
	return goredis.NewClient(o)
}

// fail wraps err from talking to the server into an error for people: it
// names the server, never contains the password, and carries a hint for
// authentication and connection failures.
func (s *settings) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis %s: %s: %w", s.addr(), op, err)
	}
	msg := err.Error()
	if len(s.password) >= 4 {
		msg = strings.ReplaceAll(msg, s.password, "[password]")
	}
	e := &redisError{msg: fmt.Sprintf("redis %s: %s: %s", s.addr(), op, msg), err: err}
	switch {
	case isAuthError(msg):
		e.msg = fmt.Sprintf("redis %s: authentication failed: %s", s.addr(), firstLine(msg))
		e.auth = true
		return hint.With(e, "check the username and password settings of resource "+s.resource+" (the password setting references the secret: env:NAME or file:PATH)")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		e.msg = fmt.Sprintf("redis %s: %s: connection lost (%s)", s.addr(), op, msg)
		return hint.With(e, "the server closed the connection (restart, failover, CLIENT KILL, timeout or maxclients): try again once it is back")
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"), strings.Contains(msg, "i/o timeout"):
		return hint.With(e, "check the host and port settings, that the server runs and that this machine may reach it (security groups for ElastiCache)")
	case strings.Contains(msg, "NOPERM"):
		return hint.With(e, "the ACL user of resource "+s.resource+" needs INFO, SCAN, DUMP, PEXPIRETIME, PTTL, TIME, TYPE, MULTI and read commands to back up, and RESTORE and DBSIZE to restore")
	case strings.Contains(msg, "DB index is out of range"):
		return hint.With(e, "the server has fewer databases than the db setting or the recovery point needs (redis.conf: databases)")
	}
	return e
}

// redisError keeps the server's error for errors.Is/As while its message is
// scrubbed of the password.
type redisError struct {
	msg  string
	err  error
	auth bool // an authentication failure: also source.ErrAuth
}

func (e *redisError) Error() string { return e.msg }
func (e *redisError) Unwrap() []error {
	if e.auth {
		return []error{e.err, source.ErrAuth}
	}
	return []error{e.err}
}

func isAuthError(msg string) bool {
	for _, s := range []string{"WRONGPASS", "NOAUTH", "invalid password", "invalid username-password", "without any password configured"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// serverInfo is what INFO tells about the server.
type serverInfo struct {
	Version string
	RunID   string
	Cluster bool
	DBs     map[int]dbInfo
}

type dbInfo struct {
	Keys, Expires int64
}

// info reads INFO server, cluster and keyspace (one section per command:
// servers before 7.0 take only one).
// connect parses c's settings, opens a control connection (db 0) and reads
// the server's INFO. The caller closes the client.
func connect(ctx context.Context, c source.Conn) (*settings, *goredis.Client, *serverInfo, error) {
	s, err := parseSettings(c)
	if err != nil {
		return nil, nil, nil, err
	}
	ctl := s.client(0, 1)
	if err := ctl.Ping(ctx).Err(); err != nil {
		ctl.Close()
		return nil, nil, nil, s.fail("connect", err)
	}
	si, err := info(ctx, s, ctl)
	if err != nil {
		ctl.Close()
		return nil, nil, nil, err
	}
	return s, ctl, si, nil
}

func info(ctx context.Context, s *settings, c *goredis.Client) (*serverInfo, error) {
	si := &serverInfo{DBs: map[int]dbInfo{}}
	for _, section := range []string{"server", "cluster", "keyspace"} {
		txt, err := c.Info(ctx, section).Result()
		if err != nil {
			return nil, s.fail("INFO "+section, err)
		}
		for _, line := range strings.Split(txt, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			switch {
			case k == "redis_version":
				si.Version = v
			case k == "run_id":
				si.RunID = v
			case k == "cluster_enabled":
				si.Cluster = v == "1"
			case strings.HasPrefix(k, "db"):
				n, err := strconv.Atoi(k[2:])
				if err != nil {
					continue
				}
				var d dbInfo
				for _, kv := range strings.Split(v, ",") {
					name, val, _ := strings.Cut(kv, "=")
					x, _ := strconv.ParseInt(val, 10, 64)
					switch name {
					case "keys":
						d.Keys = x
					case "expires":
						d.Expires = x
					}
				}
				si.DBs[n] = d
			}
		}
	}
	if si.Version == "" {
		return nil, fmt.Errorf("redis %s: INFO server has no redis_version: is this a Redis server?", s.addr())
	}
	return si, nil
}

// versionAtLeast reports whether Redis version v is at least major.minor.
func versionAtLeast(v string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(v, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// serverTimeMS returns the server's clock in Unix milliseconds.
func serverTimeMS(ctx context.Context, s *settings, c *goredis.Client) (int64, error) {
	t, err := c.Time(ctx).Result()
	if err != nil {
		return 0, s.fail("TIME", err)
	}
	return t.UnixMilli(), nil
}
