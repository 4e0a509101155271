package redis

// The PSYNC path: a full resynchronisation over the replication protocol,
// as `redis-cli --rdb` does it, with the snapshot parsed on the fly into
// the same shard files the SCAN path writes.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// replIdleTimeout is how long the replication connection may stay silent.
// While it prepares the snapshot the server sends a newline every second.
const replIdleTimeout = 2 * time.Minute

// replRefused is the server's refusal of replication (an error reply to
// PSYNC, or the connection closed instead of a reply).
type replRefused struct{ reply string }

func (e *replRefused) Error() string { return e.reply }

// replyError is an error reply of the server on the replication connection.
type replyError string

func (e replyError) Error() string { return string(e) }

// idleConn bounds every read and write of a connection by a deadline.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// replLink is a replication connection whose PSYNC the server answered
// with a full resynchronisation; the snapshot follows.
type replLink struct {
	s      *settings
	nc     net.Conn
	br     *bufio.Reader
	stop   func() bool
	replID string
	offset int64
	// The snapshot is either size bytes (disk-based transfer) or, diskless,
	// an RDB stream followed by eofMark.
	size    int64
	eofMark []byte
	// notes are the server's refusals of REPLCONF options (older servers
	// lack rdb-only), for the log.
	notes []string
}

// openRepl connects to the server like the go-redis clients do (TLS,
// AUTH with or without a username), asks for the snapshot only (REPLCONF
// capa eof, rdb-only 1, as redis-cli --rdb does) and sends PSYNC ? -1. It
// returns once the snapshot's header arrived, or *replRefused. Cancelling
// ctx closes the connection.
func openRepl(ctx context.Context, s *settings) (*replLink, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	var (
		nc  net.Conn
		err error
	)
	if s.tls {
		td := &tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}}
		nc, err = td.DialContext(ctx, "tcp", s.addr())
	} else {
		nc, err = d.DialContext(ctx, "tcp", s.addr())
	}
	if err != nil {
		return nil, s.fail("open a replication connection", err)
	}
	l := &replLink{s: s, nc: nc, size: -1}
	l.stop = context.AfterFunc(ctx, func() { nc.Close() })
	l.br = bufio.NewReaderSize(&idleConn{Conn: nc, idle: replIdleTimeout}, 64<<10)
	fail := func(op string, err error) (*replLink, error) {
		l.close()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, s.fail(op, err)
	}

	if s.password != "" {
		args := []string{"AUTH", s.password}
		if s.username != "" {
			args = []string{"AUTH", s.username, s.password}
		}
		if _, err := l.command(args...); err != nil {
			return fail("authenticate the replication connection", err)
		}
	}
	for _, args := range [][]string{{"REPLCONF", "capa", "eof"}, {"REPLCONF", "rdb-only", "1"}} {
		if _, err := l.command(args...); err != nil {
			var re replyError
			if !errors.As(err, &re) {
				return fail("replication handshake", err)
			}
			// Not fatal: servers before 7.0 lack rdb-only (they then send
			// the replication stream after the snapshot, which is not
			// read); a refusal of REPLCONF itself is PSYNC's to report.
			l.notes = append(l.notes, fmt.Sprintf("%s: %s", strings.Join(args, " "), re))
		}
	}

	if err := l.send("PSYNC", "?", "-1"); err != nil {
		return fail("PSYNC", err)
	}
	line, err := l.readLine()
	if isClosed(err) && ctx.Err() == nil {
		l.close()
		return nil, &replRefused{reply: "the server closed the connection in reply to PSYNC"}
	}
	if err != nil {
		return fail("PSYNC", err)
	}
	if strings.HasPrefix(line, "-") {
		l.close()
		return nil, &replRefused{reply: line[1:]}
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "+FULLRESYNC" {
		return fail("PSYNC", fmt.Errorf("unexpected reply %q", clip(line)))
	}
	l.replID = f[1]
	if l.offset, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return fail("PSYNC", fmt.Errorf("unexpected reply %q", clip(line)))
	}

	// The server forks and writes the snapshot (diskless: after
	// repl-diskless-sync-delay seconds), sending newlines meanwhile.
	line, err = l.readLine()
	if isClosed(err) && ctx.Err() == nil {
		l.close()
		return nil, &replRefused{reply: "the server closed the connection before sending its snapshot (see its log: fork or BGSAVE failure?)"}
	}
	if err != nil {
		return fail("wait for the snapshot", err)
	}
	switch {
	case strings.HasPrefix(line, "$EOF:") && len(line) == 5+rdbEOFMarkLen:
		l.eofMark = []byte(line[5:])
	case strings.HasPrefix(line, "$"):
		if l.size, err = strconv.ParseInt(line[1:], 10, 64); err != nil || l.size < 0 {
			return fail("wait for the snapshot", fmt.Errorf("unexpected snapshot header %q", clip(line)))
		}
	case strings.HasPrefix(line, "-"):
		l.close()
		return nil, &replRefused{reply: line[1:]}
	default:
		return fail("wait for the snapshot", fmt.Errorf("unexpected snapshot header %q", clip(line)))
	}
	return l, nil
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func (l *replLink) close() {
	l.stop()
	l.nc.Close()
}

// send writes a command in RESP.
func (l *replLink) send(args ...string) error {
	var b []byte
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, err := (&idleConn{Conn: l.nc, idle: replIdleTimeout}).Write(b)
	return err
}

// command sends a command and reads its one-line reply; an error reply is
// a replyError.
func (l *replLink) command(args ...string) (string, error) {
	if err := l.send(args...); err != nil {
		return "", err
	}
	line, err := l.readLine()
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "-") {
		return "", replyError(line[1:])
	}
	return line, nil
}

// readLine reads a reply line, skipping the newlines that keep the link
// alive.
func (l *replLink) readLine() (string, error) {
	for {
		line, err := l.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return "", errors.New("reply line too long")
		}
		if err != nil {
			return "", err
		}
		if s := strings.TrimRight(string(line), "\r\n"); s != "" {
			return s, nil
		}
	}
}

// payload returns the snapshot's bytes (diskless: up to its end mark and
// beyond; see finish).
func (l *replLink) payload() io.Reader {
	if l.eofMark == nil {
		return io.LimitReader(l.br, l.size)
	}
	return l.br
}

func (l *replLink) transfer() string {
	if l.eofMark != nil {
		return "diskless"
	}
	return "disk"
}

// finish checks that the RDB rd parsed ended where the transfer does.
func (l *replLink) finish(rd *rdbReader) error {
	if l.eofMark != nil {
		m, err := rd.next(rdbEOFMarkLen)
		if err != nil {
			return err
		}
		if string(m) != string(l.eofMark) {
			return &rdbError{off: rd.offset() - rdbEOFMarkLen, err: errRDBCorrupt, msg: "the diskless transfer does not end with its end mark after the RDB"}
		}
		return nil
	}
	if rd.offset() != l.size {
		return &rdbError{off: rd.offset(), err: errRDBCorrupt, msg: fmt.Sprintf("the RDB ends before the %d bytes the transfer announced", l.size)}
	}
	return nil
}

// ---------------------------------------------------------------- backup

// tryPSync backs up through PSYNC. It returns a reason instead (and no
// error) when mode auto should fall back to SCAN: the server refused
// replication, writes an RDB format this build does not read, or holds a
// key the parser cannot delimit (a module type).
func (a Adapter) tryPSync(ctx context.Context, arch *archiver.Archiver, src snapshot.Source, s *settings, ctl *goredis.Client, si *serverInfo) (*snapshot.Manifest, string, error) {
	refuse := func(why, fix string) (*snapshot.Manifest, string, error) {
		if s.mode == modeAuto {
			return nil, why, nil
		}
		return nil, "", hint.With(fmt.Errorf("redis %s: mode psync: %s: %w", s.addr(), why, source.ErrSettings), fix)
	}
	if v := maxRDBFor(si.Version); v > rdbMaxVersion {
		return refuse(fmt.Sprintf("redis %s writes RDB format %d, newer than this build reads (%d)", si.Version, v, rdbMaxVersion),
			"set the resource's mode to auto or scan (SCAN + DUMP reads any version), or upgrade coffre")
	}
	if s.hasDB {
		// The snapshot holds every database: check the one asked for exists.
		cl := s.client(s.db, 1)
		err := cl.Ping(ctx).Err()
		cl.Close()
		if err != nil {
			return nil, "", s.fail(fmt.Sprintf("select database %d", s.db), err)
		}
	}
	startMS, err := serverTimeMS(ctx, s, ctl)
	if err != nil {
		return nil, "", err
	}
	l, err := openRepl(ctx, s)
	var rf *replRefused
	if errors.As(err, &rf) {
		return refuse("the server refused replication: "+rf.reply,
			"the server does not allow PSYNC (ElastiCache and most managed services; or an ACL user without +psync and +replconf): set the resource's mode to auto or scan")
	}
	if err != nil {
		return nil, "", err
	}
	if len(l.notes) > 0 {
		a.log().Debug("redis replication handshake", "server", s.addr(), "refused", strings.Join(l.notes, "; "))
	}
	m, err := a.backupPSync(ctx, arch, src, s, ctl, si, l, startMS)
	if err != nil && s.mode == modeAuto && errors.Is(err, errRDBUnsupported) {
		why := err.Error()
		var re *rdbError
		if errors.As(err, &re) {
			why = "the snapshot holds what this build cannot parse: " + re.Error()
		}
		return nil, why, nil
	}
	return m, "", err
}

// backupPSync reads the snapshot l delivers into a recovery point.
func (a Adapter) backupPSync(ctx context.Context, arch *archiver.Archiver, src snapshot.Source, s *settings, ctl *goredis.Client, si *serverInfo, l *replLink, startMS int64) (*snapshot.Manifest, error) {
	defer l.close()
	mt := a.newMeta(si, startMS)
	mt.Mode, mt.Expiry, mt.ReplID, mt.ReplOffset, mt.Transfer = modePSync, "rdb", l.replID, l.offset, l.transfer()
	return arch.BackupStreams(ctx, src, func(ctx context.Context, st *archiver.Streams) error {
		stop := context.AfterFunc(ctx, func() { l.nc.Close() })
		defer stop()
		k := &psyncSink{a: a, s: s, st: st, ctx: ctx, si: si, startMS: startMS,
			pexp: versionAtLeast(si.Version, 7, 0), seen: map[int]bool{}}
		rd := newRDBReader(l.payload(), 1<<20)
		p := newRDBParser(rd)
		p.unsupported = a.rdbUnsupported
		err := p.parse(k)
		if err == nil {
			err = l.finish(rd)
		}
		if err == nil {
			err = k.closeDB(nil)
		}
		if err == nil && s.hasDB && !k.seen[s.db] {
			// The database asked for is empty: empty shard files, as SCAN.
			if err = k.openDB(s.db); err == nil {
				err = k.closeDB(nil)
			}
		}
		if err != nil {
			k.closeDB(err)
			return a.psyncErr(ctx, s, rd, err)
		}
		l.close() // the server drops an rdb-only replica anyway
		mt.DBs, mt.RDBVersion = k.dbs, p.version
		return finishMeta(ctx, s, ctl, st, mt)
	})
}

// psyncErr describes a failure to read the snapshot.
func (a Adapter) psyncErr(ctx context.Context, s *settings, rd *rdbReader, err error) error {
	if ctx.Err() != nil && (rd.err != nil || errors.Is(err, context.Canceled)) {
		// The connection was closed because ctx ended.
		return s.fail("read the snapshot", context.Cause(ctx))
	}
	switch {
	case errors.Is(err, errRDBUnsupported):
		err = fmt.Errorf("redis %s: %w", s.addr(), err)
		if s.mode == modePSync {
			return hint.With(fmt.Errorf("%w (mode psync: %w)", err, source.ErrSettings),
				"set the resource's mode to auto or scan: SCAN + DUMP backs up every type the server knows")
		}
		return err
	case errors.Is(err, errRDBCorrupt):
		return fmt.Errorf("redis %s: the snapshot from the replication stream is damaged: %w", s.addr(), err)
	case rd.err != nil && rd.err != io.EOF && errors.Is(err, rd.err),
		errors.Is(err, io.ErrUnexpectedEOF):
		return s.fail("read the snapshot", err)
	}
	return err
}

// newMeta starts a recovery point's meta.json.
func (a Adapter) newMeta(si *serverInfo, startMS int64) *meta {
	return &meta{
		Format: metaVersion, RedisVersion: si.Version, RunID: si.RunID,
		Started: time.UnixMilli(startMS).UTC(), StartedMS: startMS,
		Shards: a.parallel(), DBs: []dbMeta{},
	}
}

// psyncBatchBytes is about how many bytes of records the parser hands a
// shard writer at once.
const psyncBatchBytes = 512 << 10

// recBatch is records encoded for a shard file, n of them.
type recBatch struct {
	data []byte
	n    int
}

// psyncShard feeds one shard file of a database.
type psyncShard struct {
	cur  *recBatch      // being filled by the parser
	ch   chan *recBatch // to the writer
	free chan *recBatch // back from the writer
}

// run writes the batches into the shard file.
func (sh *psyncShard) run(ctx context.Context, out io.Writer) error {
	rw, err := newRecordWriter(out)
	if err != nil {
		return err
	}
	for b := range sh.ch {
		if err := rw.writeEncoded(b.data, b.n); err != nil {
			return err
		}
		if cap(b.data) <= 2*psyncBatchBytes { // a big value's batch is let go
			b.data, b.n = b.data[:0], 0
			select {
			case sh.free <- b:
			default:
			}
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return rw.close()
}

// psyncDB is the database being read.
type psyncDB struct {
	db     int
	ctx    context.Context
	fe     *firstError
	wg     sync.WaitGroup
	shards []*psyncShard
	dm     dbMeta

	threshold             uint64
	candidates, maxSample int64

	cl       *goredis.Client // reads the sampled keys
	samples  chan sampleCand
	sampled  []sample // by the sampler goroutine
	changed  int64    // by the sampler goroutine
	sampleWG sync.WaitGroup
}

// sampleCand is a key of the sample: what the snapshot holds for it.
type sampleCand struct {
	key string
	sum [32]byte // SHA-256 of the payload
	ttl bool
}

// psyncSink turns the parser's keys into shard files, a database at a time.
type psyncSink struct {
	a       Adapter
	s       *settings
	st      *archiver.Streams
	ctx     context.Context
	si      *serverInfo
	startMS int64
	pexp    bool

	dbs  []dbMeta
	seen map[int]bool
	cur  *psyncDB // nil: the keys of this database are skipped

	// The record being read.
	sh        *psyncShard
	lenAt     int
	expireAt  int64
	sampling  bool
	sampleKey []byte
}

func (k *psyncSink) selectDB(db int) error {
	if err := k.closeDB(nil); err != nil {
		return err
	}
	if k.seen[db] {
		return fmt.Errorf("the snapshot selects database %d twice: %w", db, errRDBCorrupt)
	}
	k.seen[db] = true
	if k.s.hasDB && db != k.s.db {
		return nil
	}
	return k.openDB(db)
}

// openDB starts the shard writers of database db, each through a pipe into
// archiver.Streams.Add as the SCAN path's workers, and the sampler.
func (k *psyncSink) openDB(db int) error {
	n := k.a.parallel()
	ctx, cancel := context.WithCancelCause(k.ctx)
	d := &psyncDB{
		db: db, ctx: ctx, fe: &firstError{cancel: cancel},
		dm:        dbMeta{DB: db, KeysAtStart: k.si.DBs[db].Keys, Sample: []sample{}},
		threshold: sampleThreshold(k.si.DBs[db].Keys, k.a.sampleSize()),
		maxSample: int64(2 * k.a.sampleSize()),
		cl:        k.s.client(db, 1),
	}
	d.samples = make(chan sampleCand, d.maxSample)
	d.sampleWG.Add(1)
	go d.sampler(k)
	for i := range n {
		sh := &psyncShard{cur: &recBatch{data: make([]byte, 0, psyncBatchBytes+64<<10)}, ch: make(chan *recBatch, 2), free: make(chan *recBatch, 3)}
		d.shards = append(d.shards, sh)
		path := shardPath(db, i)
		d.dm.Files = append(d.dm.Files, path)
		pr, pw := io.Pipe()
		d.wg.Add(2)
		go func() {
			defer d.wg.Done()
			err := k.st.Add(path, pr)
			d.fe.set(err)
			if err == nil {
				err = errStreamClosed
			}
			pr.CloseWithError(err)
		}()
		go func() {
			defer d.wg.Done()
			err := sh.run(ctx, pw)
			d.fe.set(err)
			pw.CloseWithError(err) // nil: EOF
		}()
	}
	k.cur = d
	return nil
}

// sampler reads the sampled keys from the live server as the parser finds
// them, and keeps those whose value is still the snapshot's.
//
// Validate compares a restored key with a digest of its value in a
// canonical form (sets and hashes sorted; see readKey), which only the
// server can produce without this package decoding every encoding. So the
// sample is read from the live server, in one MULTI/EXEC per key with the
// key's DUMP, like the SCAN path's; a key whose DUMP payload (or whether it
// has a TTL) differs from the snapshot's changed since the snapshot, and is
// left out (counted in sample_changed): every sample entry then describes
// exactly the value stored, which keeps Validate correct.
func (d *psyncDB) sampler(k *psyncSink) {
	defer d.sampleWG.Done()
	for c := range d.samples {
		if d.ctx.Err() != nil {
			continue
		}
		kr, err := readKey(d.ctx, d.cl, c.key, k.pexp)
		if err != nil {
			d.fe.set(k.s.fail(fmt.Sprintf("read sampled key %q of database %d", c.key, d.db), err))
			continue
		}
		if kr.exists && sha256.Sum256(kr.payload) == c.sum && (kr.expireAt >= 0) == c.ttl {
			d.sampled = append(d.sampled, sample{Key: []byte(c.key), Type: kr.typ, Digest: kr.digest, TTL: c.ttl})
		} else {
			d.changed++
		}
	}
}

func (k *psyncSink) key(key []byte, expireAt int64, typ byte) (*[]byte, error) {
	d := k.cur
	if d == nil {
		return nil, nil
	}
	if expireAt >= 0 && expireAt <= k.startMS {
		d.dm.Vanished++ // expired, not yet deleted
		return nil, nil
	}
	sh := d.shards[shardOf(key, len(d.shards))]
	var err error
	if sh.cur.data, k.lenAt, err = appendRecordHead(sh.cur.data, key, expireAt); err != nil {
		return nil, err
	}
	k.sh, k.expireAt = sh, expireAt
	k.sampling = d.candidates < d.maxSample && sampleHash(key) <= d.threshold
	if k.sampling {
		d.candidates++
		k.sampleKey = append(k.sampleKey[:0], key...)
	}
	return &sh.cur.data, nil
}

func (k *psyncSink) value(payload []byte) error {
	d, sh := k.cur, k.sh
	b := sh.cur
	setPayloadLen(b.data, k.lenAt, len(payload))
	b.n++
	d.dm.Records++
	d.dm.Bytes += int64(len(payload))
	if k.expireAt >= 0 {
		d.dm.Expires++
	}
	if k.sampling {
		// The channel holds maxSample candidates: this never waits.
		d.samples <- sampleCand{key: string(k.sampleKey), sum: sha256.Sum256(payload), ttl: k.expireAt >= 0}
	}
	if len(b.data) >= psyncBatchBytes {
		return k.send(d, sh)
	}
	return nil
}

// send hands sh's batch to its writer and starts a new one.
func (k *psyncSink) send(d *psyncDB, sh *psyncShard) error {
	select {
	case sh.ch <- sh.cur:
	case <-d.ctx.Done():
		return context.Cause(d.ctx)
	}
	select {
	case sh.cur = <-sh.free:
	default:
		sh.cur = &recBatch{data: make([]byte, 0, psyncBatchBytes+64<<10)}
	}
	return nil
}

// closeDB finishes the current database: flushes and closes its shard
// files, waits for its sample, and records its dbMeta. With abort, it
// only stops its goroutines.
func (k *psyncSink) closeDB(abort error) error {
	d := k.cur
	if d == nil {
		return nil
	}
	k.cur = nil
	if abort != nil {
		d.fe.set(abort)
	}
	var err error
	for _, sh := range d.shards {
		if err == nil && abort == nil && sh.cur.n > 0 {
			err = k.send(d, sh)
		}
		close(sh.ch)
	}
	if err != nil {
		d.fe.set(err)
	}
	close(d.samples)
	d.wg.Wait()
	d.sampleWG.Wait()
	d.cl.Close()
	d.fe.cancel(nil)
	if err := d.fe.get(); err != nil {
		return err
	}
	dm := d.dm
	dm.Keys = dm.Records // a snapshot holds every key once
	dm.Sample = append(dm.Sample, d.sampled...)
	sort.Slice(dm.Sample, func(i, j int) bool { return string(dm.Sample[i].Key) < string(dm.Sample[j].Key) })
	dm.Sample = slices.CompactFunc(dm.Sample, func(x, y sample) bool { return string(x.Key) == string(y.Key) })
	dm.SampleChanged = d.changed
	k.dbs = append(k.dbs, dm)
	return nil
}
