package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/stream"
)

// restoreBatchBytes bounds the DUMP payloads of one RESTORE pipeline.
const restoreBatchBytes = 8 << 20

// Restore writes recovery point m into the server to names. The databases it
// writes must be empty unless opts.Overwrite (then keys are replaced with
// RESTORE … REPLACE; other keys are left alone). Each key gets the TTL it had
// left when the backup started (its expiry minus the backup's start, both on
// the source's clock), so a restore rebuilds the cache as it was, whatever
// time has passed since; keys without a TTL get none.
func (a Adapter) Restore(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, to source.Conn, opts source.RestoreOptions) (*source.RestoreResult, error) {
	mt, s, ctl, si, dbmap, err := openTarget(ctx, r, m, to)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	if si.Cluster {
		return nil, fmt.Errorf("redis %s: cluster mode is enabled: restore into a cluster-mode-disabled server", s.addr())
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = a.parallel()
	}

	// Every database to be written must be empty before anything is written.
	clients := map[int]*goredis.Client{}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var busy []string
	for _, d := range mt.DBs {
		tdb := dbmap[d.DB]
		cl := s.client(tdb, parallel)
		clients[tdb] = cl
		n, err := cl.DBSize(ctx).Result()
		if err != nil {
			return nil, s.fail(fmt.Sprintf("database %d", tdb), err)
		}
		if n > 0 {
			busy = append(busy, fmt.Sprintf("database %d holds %d keys", tdb, n))
		}
	}
	if len(busy) > 0 && !opts.Overwrite {
		return nil, hint.With(fmt.Errorf("redis %s: %w: %s", s.addr(), source.ErrTargetNotEmpty, strings.Join(busy, ", ")),
			"restore into a new Redis instance or an empty database (target setting db), or allow overwriting")
	}

	type job struct {
		db, tdb int
		file    string
	}
	var jobs []job
	for _, d := range mt.DBs {
		for _, f := range d.Files {
			jobs = append(jobs, job{d.DB, dbmap[d.DB], f})
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fe := &firstError{cancel: cancel}
	var (
		mu           sync.Mutex
		keys, nbytes int64
		wg           sync.WaitGroup
	)
	ch := make(chan job)
	for range min(parallel, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				rs := &shardRestorer{
					s: s, cl: clients[j.tdb], tdb: j.tdb, meta: mt, target: si.Version,
					overwrite: opts.Overwrite, batch: a.scanCount(),
				}
				err := rs.run(ctx, r, m.Tree, j.file)
				mu.Lock()
				keys += rs.keys
				nbytes += rs.bytes
				mu.Unlock()
				if err != nil {
					fe.set(err)
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err := fe.get(); err != nil {
		if keys > 0 {
			return nil, hint.With(err, fmt.Sprintf("%d keys were restored before the failure: empty the target's databases (FLUSHDB) before restoring again", keys))
		}
		return nil, err
	}
	return &source.RestoreResult{
		Summary: fmt.Sprintf("restored %d keys (%s of DUMP payloads) into %d database(s) of redis %s at %s", keys, humanBytes(nbytes), len(mt.DBs), si.Version, s.addr()),
		Items:   keys,
		Bytes:   nbytes,
	}, nil
}

// openTarget reads point m's meta.json, connects to the target and maps the
// point's databases to the target's: what Restore and Validate start with.
// The caller closes ctl.
func openTarget(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, to source.Conn) (mt *meta, s *settings, ctl *goredis.Client, si *serverInfo, dbmap map[int]int, err error) {
	if mt, err = loadMeta(ctx, r, m); err != nil {
		return nil, nil, nil, nil, nil, err
	}
	if s, ctl, si, err = connect(ctx, to); err != nil {
		return nil, nil, nil, nil, nil, err
	}
	if dbmap, err = mapDBs(mt, s); err != nil {
		ctl.Close()
		return nil, nil, nil, nil, nil, err
	}
	return mt, s, ctl, si, dbmap, nil
}

// mapDBs maps the recovery point's databases to the target's: the same
// numbers, or the target's `db` setting for a single-database point.
func mapDBs(mt *meta, s *settings) (map[int]int, error) {
	out := map[int]int{}
	if s.hasDB {
		if len(mt.DBs) > 1 {
			var l []string
			for _, d := range mt.DBs {
				l = append(l, fmt.Sprint(d.DB))
			}
			return nil, hint.With(fmt.Errorf("recovery point holds databases %s: the target setting db maps only a single-database recovery point", strings.Join(l, ", ")),
				"remove the db setting to restore each database into the same number")
		}
		for _, d := range mt.DBs {
			out[d.DB] = s.db
		}
		return out, nil
	}
	for _, d := range mt.DBs {
		out[d.DB] = d.DB
	}
	return out, nil
}

// shardRestorer replays one shard file into a target database.
type shardRestorer struct {
	s         *settings
	cl        *goredis.Client
	tdb       int
	meta      *meta
	target    string // the target's Redis version
	overwrite bool
	batch     int

	keys, bytes int64
}

func (rs *shardRestorer) run(ctx context.Context, r *repo.Repository, root crypto.ID, file string) error {
	n, err := stream.Lookup(ctx, r, root, file)
	if err != nil {
		return fmt.Errorf("recovery point: %w", err)
	}
	rr, err := newRecordReader(stream.NewReader(ctx, r, n), file)
	if err != nil {
		return err
	}
	var (
		recs []record
		size int
	)
	for {
		var rec record
		err := rr.next(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		recs = append(recs, rec)
		size += len(rec.Payload)
		if len(recs) >= rs.batch || size >= restoreBatchBytes {
			if err := rs.flush(ctx, recs); err != nil {
				return err
			}
			recs, size = recs[:0], 0
		}
	}
	return rs.flush(ctx, recs)
}

// ttl is the RESTORE ttl argument of a record: what the key had left when
// the backup started, 0 for no expiry.
func (rs *shardRestorer) ttl(rec *record) int64 {
	if rec.ExpireAt < 0 {
		return 0
	}
	return max(rec.ExpireAt-rs.meta.StartedMS, 1)
}

// flush restores recs with one pipeline. A key that already exists (a
// record SCAN produced twice) is restored again with REPLACE: the later
// record wins.
func (rs *shardRestorer) flush(ctx context.Context, recs []record) error {
	if len(recs) == 0 {
		return nil
	}
	restore := func(recs []record, replace bool) []*goredis.Cmd {
		out := make([]*goredis.Cmd, len(recs))
		_, _ = rs.cl.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := range recs {
				args := []any{"RESTORE", recs[i].Key, rs.ttl(&recs[i]), recs[i].Payload}
				if replace {
					args = append(args, "REPLACE")
				}
				out[i] = p.Do(ctx, args...)
			}
			return nil
		})
		return out
	}
	cmds := restore(recs, rs.overwrite)
	var again []record
	for i, c := range cmds {
		err := c.Err()
		if err != nil && !rs.overwrite && strings.HasPrefix(err.Error(), "BUSYKEY") {
			again = append(again, recs[i])
			continue
		}
		if err != nil {
			return rs.restoreErr(&recs[i], err)
		}
		rs.keys++
		rs.bytes += int64(len(recs[i].Payload))
	}
	if len(again) > 0 {
		for i, c := range restore(again, true) {
			if err := c.Err(); err != nil {
				return rs.restoreErr(&again[i], err)
			}
			rs.bytes += int64(len(again[i].Payload))
		}
	}
	return nil
}

// restoreErr explains why the target refused a key.
func (rs *shardRestorer) restoreErr(rec *record, err error) error {
	var re goredis.Error
	if !errors.As(err, &re) || isAuthError(err.Error()) {
		return rs.s.fail(fmt.Sprintf("restore into database %d", rs.tdb), err)
	}
	msg := err.Error()
	v := payloadRDBVersion(rec.Payload)
	switch {
	case strings.Contains(msg, "payload version or checksum are wrong"):
		reads := "an unknown RDB version"
		if mx := maxRDBFor(rs.target); mx > 0 {
			reads = fmt.Sprintf("RDB format %d at most", mx)
		}
		return hint.With(fmt.Errorf("redis %s: restore key %q into database %d: the target (redis %s, reads %s) cannot read its DUMP payload (RDB format %d, written by redis %s; %s): %w",
			rs.s.addr(), rec.Key, rs.tdb, rs.target, reads, v, rs.meta.RedisVersion, redisForRDB(v), err),
			fmt.Sprintf("restore into redis %s or later (the version that was backed up)", rs.meta.RedisVersion))
	case strings.Contains(msg, "Bad data format"):
		return hint.With(fmt.Errorf("redis %s: restore key %q into database %d: the target (redis %s) does not know the key's type (%s; backed up from redis %s): %w",
			rs.s.addr(), rec.Key, rs.tdb, rs.target, payloadType(rec.Payload), rs.meta.RedisVersion, err),
			"restore into a server of the source's version that loads the same modules")
	}
	return fmt.Errorf("redis %s: restore key %q (%s) into database %d: %w", rs.s.addr(), rec.Key, payloadType(rec.Payload), rs.tdb, err)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
