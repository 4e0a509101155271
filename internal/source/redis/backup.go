package redis

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// Backup stores one recovery point of the server c names: every database
// that holds keys, or only the one of the `db` setting. See the package doc.
func (a Adapter) Backup(ctx context.Context, arch *archiver.Archiver, c source.Conn) (*snapshot.Manifest, error) {
	s, ctl, si, err := connect(ctx, c)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	if si.Cluster {
		return nil, hint.With(fmt.Errorf("redis %s: cluster mode is enabled, which this adapter does not back up", s.addr()),
			"back up each shard's primary (or replica) endpoint as its own resource, or use a cluster-mode-disabled replication group")
	}
	src := snapshot.Source{Type: a.Type(), Resource: c.Resource}
	var fallback string
	if s.mode != modeScan {
		m, why, err := a.tryPSync(ctx, arch, src, s, ctl, si)
		if why == "" {
			return m, err
		}
		// Mode auto: a failed attempt committed nothing (and the archiver
		// may run again; its progress counters include the attempt).
		fallback = why
		a.log().Info("redis backup: PSYNC not possible, reading the keys with SCAN instead",
			"resource", c.Resource, "server", s.addr(), "reason", why)
	}
	return a.backupScan(ctx, arch, src, s, ctl, si, fallback)
}

// backupScan backs up through SCAN, DUMP and PEXPIRETIME (or PTTL).
func (a Adapter) backupScan(ctx context.Context, arch *archiver.Archiver, src snapshot.Source, s *settings, ctl *goredis.Client, si *serverInfo, fallback string) (*snapshot.Manifest, error) {
	var dbs []int
	if s.hasDB {
		dbs = []int{s.db}
	} else {
		for db, d := range si.DBs {
			if d.Keys > 0 {
				dbs = append(dbs, db)
			}
		}
		sort.Ints(dbs)
	}
	startMS, err := serverTimeMS(ctx, s, ctl)
	if err != nil {
		return nil, err
	}
	pexp := versionAtLeast(si.Version, 7, 0) && !a.usePTTL
	mt := a.newMeta(si, startMS)
	mt.Mode, mt.Fallback, mt.Expiry = modeScan, fallback, "pttl"
	if pexp {
		mt.Expiry = "pexpiretime"
	}
	return arch.BackupStreams(ctx, src, func(ctx context.Context, st *archiver.Streams) error {
		for _, db := range dbs {
			dm, err := a.backupDB(ctx, s, st, db, si.DBs[db].Keys, pexp)
			if err != nil {
				return err
			}
			mt.DBs = append(mt.DBs, dm)
		}
		// A restart or failover while we read would have handed us a
		// different keyspace half way through.
		end, err := info(ctx, s, ctl)
		if err != nil {
			return err
		}
		if end.RunID != si.RunID {
			return fmt.Errorf("redis %s: the server restarted or failed over during the backup (run_id %s, then %s): not committing a mixed keyspace", s.addr(), si.RunID, end.RunID)
		}
		return finishMeta(ctx, s, ctl, st, mt)
	})
}

// finishMeta stamps mt with the server's time at the end of the backup and
// stores it as meta.json, the last stream of a point.
func finishMeta(ctx context.Context, s *settings, ctl *goredis.Client, st *archiver.Streams, mt *meta) error {
	endMS, err := serverTimeMS(ctx, s, ctl)
	if err != nil {
		return err
	}
	mt.Finished = time.UnixMilli(endMS).UTC()
	b, err := json.MarshalIndent(mt, "", "  ")
	if err != nil {
		return err
	}
	return st.AddBytes(metaPath, b)
}

// firstError keeps the first error and cancels a context with it.
type firstError struct {
	mu     sync.Mutex
	err    error
	cancel context.CancelCauseFunc
}

func (f *firstError) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
		f.cancel(err)
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// errStreamClosed unblocks a shard writer whose stream reader is gone.
var errStreamClosed = errors.New("shard stream closed")

// backupDB writes database db's shard files; keysAtStart is INFO
// keyspace's count, which sizes the sample.
func (a Adapter) backupDB(ctx context.Context, s *settings, st *archiver.Streams, db int, keysAtStart int64, pexp bool) (dbMeta, error) {
	n := a.parallel()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fe := &firstError{cancel: cancel}

	cl := s.client(db, n+1)
	defer cl.Close()
	if err := cl.Ping(ctx).Err(); err != nil {
		return dbMeta{}, s.fail(fmt.Sprintf("select database %d", db), err)
	}

	var sampled atomic.Int64
	seed := maphash.MakeSeed()
	workers := make([]*shardWorker, n)
	var wg sync.WaitGroup
	for i := range workers {
		w := &shardWorker{
			s: s, cl: cl, db: db, pexp: pexp, seed: seed,
			keys:      make(chan []string, 1),
			threshold: sampleThreshold(keysAtStart, a.sampleSize()),
			maxSample: int64(2 * a.sampleSize()),
			sampled:   &sampled,
		}
		workers[i] = w
		path := shardPath(db, i)
		pr, pw := io.Pipe()
		wg.Add(2)
		go func() {
			defer wg.Done()
			err := st.Add(path, pr)
			fe.set(err)
			if err == nil {
				err = errStreamClosed
			}
			pr.CloseWithError(err)
		}()
		go func() {
			defer wg.Done()
			err := w.run(ctx, pw)
			fe.set(err)
			pw.CloseWithError(err) // nil: EOF
		}()
	}

	count := int64(a.scanCount())
	var cursor uint64
scan:
	for {
		keys, next, err := cl.Scan(ctx, cursor, "", count).Result()
		if err != nil {
			fe.set(s.fail(fmt.Sprintf("SCAN database %d", db), err))
			break
		}
		if a.afterScan != nil {
			a.afterScan(db, keys)
		}
		parts := make([][]string, n)
		for _, k := range keys {
			i := shardOf(k, n)
			parts[i] = append(parts[i], k)
		}
		for i, p := range parts {
			if len(p) == 0 {
				continue
			}
			select {
			case workers[i].keys <- p:
			case <-ctx.Done():
				break scan
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	for _, w := range workers {
		close(w.keys)
	}
	wg.Wait()
	if err := fe.get(); err != nil {
		return dbMeta{}, err
	}

	dm := dbMeta{DB: db, KeysAtStart: keysAtStart, Sample: []sample{}}
	for i, w := range workers {
		dm.Records += w.records
		dm.Vanished += w.vanished
		dm.Expires += w.expires
		dm.Bytes += w.bytes
		slices.Sort(w.hashes)
		for j := 1; j < len(w.hashes); j++ {
			if w.hashes[j] == w.hashes[j-1] {
				dm.Duplicates++
			}
		}
		dm.Files = append(dm.Files, shardPath(db, i))
		dm.Sample = append(dm.Sample, w.sample...)
	}
	dm.Keys = dm.Records - dm.Duplicates
	sort.Slice(dm.Sample, func(i, j int) bool { return string(dm.Sample[i].Key) < string(dm.Sample[j].Key) })
	// A key SCAN returned twice, if sampled twice, is listed once.
	dm.Sample = slices.CompactFunc(dm.Sample, func(x, y sample) bool { return string(x.Key) == string(y.Key) })
	return dm, nil
}

// sampleThreshold returns the hash value below which a key is sampled, for
// about size keys out of keys.
func sampleThreshold(keys int64, size int) uint64 {
	if keys <= int64(size) {
		return math.MaxUint64
	}
	return math.MaxUint64 / uint64(keys) * uint64(size)
}

func sampleHash[K ~string | ~[]byte](key K) uint64 {
	s := sha256.Sum256([]byte(key))
	return binary.BigEndian.Uint64(s[:8])
}

// shardWorker dumps the keys of one shard of a database, in the order they
// arrive, into its shard file.
type shardWorker struct {
	s         *settings
	cl        *goredis.Client
	db        int
	pexp      bool
	seed      maphash.Seed
	keys      chan []string
	threshold uint64
	maxSample int64
	sampled   *atomic.Int64

	records, vanished, expires, bytes int64
	hashes                            []uint64
	sample                            []sample
}

func (w *shardWorker) run(ctx context.Context, out io.Writer) error {
	rw, err := newRecordWriter(out)
	if err != nil {
		return err
	}
	for batch := range w.keys {
		if err := w.batch(ctx, rw, batch); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return rw.close()
}

// batch dumps keys with one pipeline (sampled keys with one MULTI/EXEC
// each) and writes their records in order.
func (w *shardWorker) batch(ctx context.Context, rw *recordWriter, keys []string) error {
	type cmds struct{ dump, exp *goredis.Cmd }
	got := make([]cmds, len(keys))
	sampled := make([]bool, len(keys))
	var tm *goredis.Cmd
	plain := 0
	for i, k := range keys {
		if sampleHash(k) <= w.threshold && w.sampled.Add(1) <= w.maxSample {
			sampled[i] = true
		} else {
			plain++
		}
	}
	if plain > 0 {
		// Errors are per command; a broken connection shows in every one.
		_, _ = w.cl.Pipelined(ctx, func(p goredis.Pipeliner) error {
			if !w.pexp {
				tm = p.Do(ctx, "TIME")
			}
			for i, k := range keys {
				if sampled[i] {
					continue
				}
				got[i].dump = p.Do(ctx, "DUMP", k)
				if w.pexp {
					got[i].exp = p.Do(ctx, "PEXPIRETIME", k)
				} else {
					got[i].exp = p.Do(ctx, "PTTL", k)
				}
			}
			return nil
		})
	}
	for i, k := range keys {
		var (
			payload  []byte
			expireAt int64
		)
		if sampled[i] {
			kr, err := readKey(ctx, w.cl, k, w.pexp)
			if err != nil {
				return w.dumpErr(ctx, k, err)
			}
			if !kr.exists {
				w.vanished++
				continue
			}
			payload, expireAt = kr.payload, kr.expireAt
			w.sample = append(w.sample, sample{Key: []byte(k), Type: kr.typ, Digest: kr.digest, TTL: kr.expireAt >= 0})
		} else {
			d, err := got[i].dump.Text()
			if err == goredis.Nil {
				w.vanished++
				continue
			}
			if err != nil {
				return w.dumpErr(ctx, k, err)
			}
			if expireAt, err = expiry(got[i].exp, tm); err != nil {
				return w.dumpErr(ctx, k, err)
			}
			if expireAt == -2 { // deleted (or expired) right after DUMP
				w.vanished++
				continue
			}
			payload = []byte(d)
		}
		if err := rw.write([]byte(k), payload, expireAt); err != nil {
			return err
		}
		w.records++
		w.bytes += int64(len(payload))
		if expireAt >= 0 {
			w.expires++
		}
		w.hashes = append(w.hashes, maphash.String(w.seed, k))
	}
	return nil
}

// dumpErr describes a failure to read key: the server's refusal names the
// key and its type; a connection failure names the server.
func (w *shardWorker) dumpErr(ctx context.Context, key string, err error) error {
	var re goredis.Error
	if errors.As(err, &re) && !isAuthError(err.Error()) {
		typ, terr := w.cl.Type(ctx, key).Result()
		if terr != nil {
			typ = "unknown"
		}
		return fmt.Errorf("redis %s: dump key %q (type %s) of database %d: %w", w.s.addr(), key, typ, w.db, err)
	}
	return w.s.fail(fmt.Sprintf("dump database %d", w.db), err)
}
