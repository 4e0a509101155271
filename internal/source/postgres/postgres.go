// Package postgres backs up PostgreSQL databases logically (schema through pg_dump, table data through parallel COPY under one exported snapshot, streamed into the vault), restores them into a new database in parallel, and validates row counts and user checks.
//
// # Backup
//
// A backup is one recovery point written through archiver.BackupStreams, so
// that any failure commits nothing:
//
//  1. A coordinator connection opens a REPEATABLE READ READ ONLY transaction,
//     exports its snapshot (pg_export_snapshot) and keeps the transaction open
//     until the end. It reads the server's version, the database's encoding
//     and locale, the list of tables (regular tables and leaf partitions
//     outside the system schemas, not members of an extension) with their
//     sizes and primary keys, the sequences and the large objects, all in the
//     snapshot, then takes ACCESS SHARE locks on every table as pg_dump does,
//     so that no table is rewritten, truncated or dropped while it is read.
//  2. pg_dump --snapshot=<id> --section=pre-data --section=post-data
//     --format=custom --compress=0 writes the schema (types, tables,
//     functions, views, large objects' metadata, then indexes, constraints,
//     triggers, policies, materialized view refreshes), with owners and
//     privileges, straight into the stream schema.pgdump: no temporary file.
//     The custom format, rather than plain SQL, lets a restore choose whether
//     to apply owners and privileges (pg_restore --no-owner --no-privileges)
//     and build indexes in parallel (pg_restore -j). A non-zero exit of
//     pg_dump fails the backup with the tail of its standard error.
//  3. Parallel workers (Adapter.Parallel) each open a connection, import the
//     snapshot (SET TRANSACTION SNAPSHOT) and take tables, biggest first:
//     LOCK TABLE … NOWAIT (like pg_dump -j, so that a DDL statement queued
//     behind the coordinator's lock fails the backup instead of deadlocking
//     it), then COPY … TO STDOUT piped into the stream
//     data/<schema>.<table>.copy, in the table's format (see COPY formats
//     below). The setting order chooses the rows' order:
//     - range (the default): a table of at least rangeMinBytes (128 MiB)
//     copied in binary whose primary key is one smallint, integer or
//     bigint column is read with one sequential scan, key column first,
//     and each row goes to the stream of its key range,
//     data/<schema>.<table>.part<NNNN>.copy (part i: keys k with
//     k>>shift == first+i; shift is the smallest that makes at most one
//     range per 64 MiB of table and at most 16, so ranges start at
//     multiples of 1<<shift and hold the same keys every day), in
//     the order the rows lie in the table. An UPDATE moves a row within its
//     range's stream only, so a day's changes dirty chunks near the changed
//     keys and among the range's few strays, not all over the table; and
//     the server scans the table sequentially instead of through the index
//     (half the time on the bench machine: see ranges.go). The parts are
//     loaded in parallel at restore. Other tables are sorted as with key.
//     - key: COPY (SELECT columns FROM ONLY table ORDER BY primary key),
//     one worker per table. An UPDATE changes rows where they are in the
//     stream, so unchanged rows stay in unchanged chunks from one day to
//     the next and the vault deduplicates them. A table without a primary
//     key is copied in physical order (a warning in meta.json).
//     - physical: the rows as they lie in the table, the cheapest scan for
//     the server. On PostgreSQL 14 and later a table bigger than one part
//     (partBlocks, 128 MiB) is split into parts of that many blocks,
//     data/<schema>.<table>.part<NNNN>.copy, read with TID range scans
//     (WHERE ctid >= '(from,0)' AND ctid < '(to,0)'; the last part
//     open-ended) by all the workers at once, and loaded in parallel at
//     restore. Parts start at fixed block numbers. But an UPDATE puts the
//     new row version wherever the table has free space, so a day's updates
//     dirty chunks all over the streams: it deduplicates much worse (see
//     orderPhysical). For append-mostly tables on servers with cores to
//     spare.
//     Generated columns are left out (the restore recomputes them). Sessions
//     run with row_security off: a table whose rows a policy would hide from
//     the backup's role fails the backup rather than being copied in part,
//     and with synchronize_seqscans off (as pg_dump's): a sequential scan
//     always starts at the table's first block, instead of joining another
//     session's scan mid-table, so rows come in the same order every day.
//     The row count of each table (and part) is the number of rows in its
//     COPY stream (text format: one newline per row; binary format: the
//     tuples of its framing, which must end with the trailer, else the
//     backup fails), hence exactly the snapshot's.
//  4. Large objects are streamed by the workers into lobs/<oid> with
//     lo_get(oid, offset, length) in the snapshot; their metadata (owner,
//     privileges) is in the schema. Sequence values (read after the snapshot
//     was taken, as pg_dump does: sequences are not transactional) are
//     recorded in meta.json.
//  5. With the setting roles=true, pg_dumpall --roles-only
//     --no-role-passwords (which works on managed servers such as RDS) is
//     stored as roles.sql; if it fails the backup goes on and meta.json says
//     why roles are missing.
//  6. The coordinator then commits: if its connection was lost (killed,
//     database dropped), the backup fails. meta.json (see Meta) is written
//     last. Any failed COPY, lost connection or failed pg_dump makes its
//     stream's Add fail, and BackupStreams commits nothing.
//
// COPY formats: the setting copy_format chooses COPY's format per table.
// With "auto" (the default) a table is copied in binary (COPY … (FORMAT
// binary)) when every copied column's type has a portable binary form, in
// text otherwise; "binary" fails the backup, naming the tables and
// columns, when one has not; "text" copies every table in text, as pg_dump
// does. The server produces and parses the binary format with much less
// CPU (pgbench_accounts: 9.8 s in text, 6.2 s in binary). A type has a
// portable binary form when it has send and receive functions and is not
// a reg* type (whose binary form is an OID); a domain when its base type
// has, a range when its subtype has, an array when its element type has
// and is built in (OID below 10000: array_send writes the element type's
// OID, and servers before PostgreSQL 14 refuse another), a composite when
// all its attributes' types have and are built in (record_send writes
// their OIDs), recursively; multiranges are copied as text. meta.json
// records each table's format (Table.Format; points made before it have
// none: text); the parts of a table share it. Binary COPY ties a restore to
// servers that read the same binary representation of the types: the
// built-in types' are stable across major versions, an extension's type
// is as stable as its send and receive functions; copy_format = "text" is
// the choice for points that may be restored into a server where that may
// not hold.
//
// A recovery point's files:
//
//	meta.json                      Meta: versions, encoding, locale, tables with their COPY format and row counts, sequences, warnings
//	schema.pgdump                  pg_dump custom archive, pre-data and post-data sections
//	data/<schema>.<table>.copy     COPY stream (binary or text, see Table.Format) of one table ('%', '/', '.' in names escaped as %XX)
//	data/<schema>.<table>.partNNNN.copy  COPY stream of one part of a big table (order=physical: a block range; order=range: a key range), in its table's format
//	lobs/<oid>                     content of one large object
//	roles.sql                      pg_dumpall --roles-only --no-role-passwords (roles=true)
//
// Servers from PostgreSQL 9.6 on are supported (tested with 15); pg_dump
// must be at least as new as the server.
//
// Connections: the settings are host, port (5432), user, database
// (required), password (a reference, "env:NAME" or "file:PATH", read with
// Conn.Secret), sslmode (prefer), roles ("true"), order ("range", "key" or
// "physical", see above), copy_format ("auto", "binary" or "text", see above)
// and lock_wait_timeout
// (60s; how long the coordinator and pg_dump wait for a table lock, "0" for
// ever); restore targets also take maintenance_work_mem (64MB, see
// defaultIndexMem; "server" keeps the server's), the memory of each index
// build. The password goes to the driver through its configuration and to
// pg_dump, pg_restore, pg_dumpall and psql only through the PGPASSWORD
// variable of the child's environment: never on a command line, in a log,
// a manifest or an error. Ambient libpq variables (PGHOST, PGPASSWORD,
// PGSERVICE…) are removed from the children's environment so that only the
// settings count; without a password setting no password is sent (trust,
// peer, certificate authentication or a passfile).
//
// # Restore
//
// The target's database must not exist, or exist without tables, views,
// sequences or large objects, unless RestoreOptions.Overwrite, which drops
// it and creates it again; otherwise Restore returns an error wrapping
// source.ErrTargetNotEmpty before writing anything. The schema archive is
// read (verified) into a temporary file, the database is created (TEMPLATE
// template0 with the source's encoding and locale), then: pre-data with
// pg_restore in one transaction, table data (the block-range parts of a big table in
// parallel too) with COPY FROM STDIN in each table's format over
// RestoreOptions.Parallel connections (default 2) fed from the verified
// streams, large objects, sequence values, and post-data with pg_restore -j.
// As pg_restore -j does, a table's own indexes and primary key, unique and
// exclusion constraints are built by the session that loaded its last rows,
// while other tables still load (pg_restore --use-list with the archive's
// entries for the OIDs the backup recorded, Table.IndexOIDs and
// ConstraintOIDs); the final post-data skips them. The key ranges of a
// table split by key are loaded in key order by one session.
// By default objects are owned by the restoring user and privileges are not
// restored (pg_restore --no-owner --no-privileges), so that a restore works
// on any server; target setting owners=keep restores owners and privileges
// (the roles must exist), and roles=true first runs roles.sql (roles that
// already exist are reported, not fatal; passwords are not restored) and
// implies owners=keep. Database-level settings (ALTER DATABASE … SET),
// comments and privileges are not restored. A failure at any step leaves the
// new database as it is and returns an error naming the step and the table,
// with the hint to drop it before retrying.
//
// # Validate
//
// Validate connects to the restored database (which proves the server runs
// and accepts the target's credentials), compares every table's count(*)
// with the count recorded at backup time (a failed check "rows
// schema.table" per mismatch or missing table; the tables are counted
// biggest first by two sessions, with JIT off) and the number of large
// objects, then runs each user check in a read-only transaction: its single
// value, as text ("NULL" for null), must equal Expect.
//
// A restore asked to validate (RestoreOptions.Validate, as restore jobs do)
// makes the same validation itself: each table's count(*) is taken by the
// session that completed the table (its rows loaded and its early indexes
// built), while the other sessions still load, instead of all at the end.
package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/source"
)

// Adapter backs up PostgreSQL databases; it implements source.Adapter.
type Adapter struct {
	// Parallel is the number of tables copied at once during a backup
	// (default 2). Restores use RestoreOptions.Parallel.
	Parallel int
	// BinDir is where pg_dump, pg_restore, pg_dumpall and psql live
	// (default: the PATH, then the newest /usr/lib/postgresql/*/bin; the
	// latter first when the PATH has Debian's pg_wrapper, whose own pick is
	// the newest version).
	BinDir string
}

var _ source.Adapter = Adapter{}

// Type returns "postgres".
func (Adapter) Type() string { return "postgres" }

// Application names of coffre's sessions, visible in pg_stat_activity.
const (
	appBackup   = "coffre-backup"
	appRestore  = "coffre-restore"
	appValidate = "coffre-validate"
)

// settings are a Conn's parsed connection settings (never the password).
type settings struct {
	resource    string
	host        string
	port        int
	user        string
	database    string
	sslmode     string
	roles       bool
	owners      string // restore: "none" or "keep"
	maintenance string // restore: database to connect to for CREATE DATABASE
	lockWait    string // pg_dump --lock-wait-timeout and the coordinator's lock_timeout
	indexMem    string // restore: maintenance_work_mem of the index builds; "" keeps the server's
	order       string // backup: "physical" or "key"; "" for the default
	copyFormat  string // backup: copyAuto, "binary" or "text"
}

func parseSettings(c source.Conn) (settings, error) {
	s := settings{
		resource:    c.Resource,
		host:        c.Settings["host"],
		port:        5432,
		user:        c.Settings["user"],
		database:    c.Settings["database"],
		sslmode:     c.Settings["sslmode"],
		owners:      c.Settings["owners"],
		maintenance: c.Settings["maintenance_database"],
		lockWait:    c.Settings["lock_wait_timeout"],
		indexMem:    c.Settings["maintenance_work_mem"],
	}
	bad := func(format string, args ...any) (settings, error) {
		return settings{}, hint.With(fmt.Errorf("resource %s: "+format+": %w", append(append([]any{c.Resource}, args...), source.ErrSettings)...),
			"PostgreSQL settings: host, port, user, database, password (env:NAME or file:PATH), sslmode, roles, order (range, key or physical), copy_format (auto, binary or text), lock_wait_timeout, maintenance_work_mem")
	}
	if s.database == "" {
		return bad("setting database is required")
	}
	var err error
	if s.port, err = c.Port(5432); err != nil {
		return settings{}, err
	}
	if s.sslmode, err = c.SSLMode(); err != nil {
		return settings{}, err
	}
	switch o := c.Settings["order"]; o {
	case "", orderPhysical, orderKey, orderRange:
		s.order = o
	default:
		return bad("order %q: want range, key or physical", o)
	}
	switch f := c.Settings["copy_format"]; f {
	case "", copyAuto:
		s.copyFormat = copyAuto
	case formatBinary, formatText:
		s.copyFormat = f
	default:
		return bad("copy_format %q: want auto, binary or text", f)
	}
	switch r := c.Settings["roles"]; r {
	case "", "false":
	case "true":
		s.roles = true
	default:
		return bad("roles %q: want true or false", r)
	}
	switch s.owners {
	case "":
		s.owners = "none"
		if s.roles {
			s.owners = "keep"
		}
	case "none", "keep":
	default:
		return bad("owners %q: want none or keep", s.owners)
	}
	if s.maintenance == "" {
		s.maintenance = "postgres"
	}
	if s.lockWait == "" {
		s.lockWait = "60s"
	}
	if strings.ContainsAny(s.lockWait, "'\\") {
		return bad("lock_wait_timeout %q: want a duration such as 60s", s.lockWait)
	}
	switch {
	case s.indexMem == "":
		s.indexMem = defaultIndexMem
	case s.indexMem == "server":
		s.indexMem = ""
	case !memSetting.MatchString(s.indexMem):
		return bad("maintenance_work_mem %q: want an amount such as 64MB, 1GB or 262144 (kB), or \"server\" for the server's own", s.indexMem)
	}
	return s, nil
}

// defaultIndexMem is the maintenance_work_mem of a restore's index builds
// unless the target's settings say otherwise: PostgreSQL's own default. On
// the bench server (512MB configured), the primary key of a 10-million-row
// copy of pgbench_accounts built in 8.2-8.8 s with 512MB, 6.8 s with 256MB,
// 5.0 s with 128MB and 3.9-4.4 s with 16-64MB: each build allocates its
// sort memory afresh, and on a VM where touching a new page costs ~20 µs
// that alone is seconds; the run-sized sorts also stay in the CPU's caches.
const defaultIndexMem = "64MB"

// memSetting is a PostgreSQL memory amount (the server checks its range).
var memSetting = regexp.MustCompile(`^[0-9]{1,10}(kB|MB|GB|TB)?$`)

// withIndexMem returns a child's environment (childEnv) for a pg_restore
// run that builds indexes: with the restore's maintenance_work_mem.
func (s settings) withIndexMem(env []string) []string {
	if s.indexMem != "" {
		env = append(env, "PGOPTIONS=-c maintenance_work_mem="+s.indexMem)
	}
	return env
}

// addr is host:port for messages.
func (s settings) addr() string {
	h := s.host
	if h == "" {
		h = "localhost"
	}
	return net.JoinHostPort(h, strconv.Itoa(s.port))
}

// conninfo quotes a libpq keyword/value setting.
func conninfo(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// connect opens a session to database db (s.database when empty) with
// coffre's session settings plus params.
func connect(ctx context.Context, s settings, password, db, app string, params map[string]string) (*pgx.Conn, error) {
	if db == "" {
		db = s.database
	}
	var b strings.Builder
	if s.host != "" {
		b.WriteString("host=" + conninfo(s.host) + " ")
	}
	b.WriteString("port=" + strconv.Itoa(s.port) + " dbname=" + conninfo(db) + " sslmode=" + s.sslmode)
	if s.user != "" {
		b.WriteString(" user=" + conninfo(s.user))
	}
	cfg, err := pgx.ParseConfig(b.String())
	if err != nil {
		return nil, fmt.Errorf("resource %s: connection settings: %w", s.resource, err)
	}
	// The password comes from the settings only, never from PGPASSWORD.
	cfg.Password = password
	cfg.ConnectTimeout = 10 * time.Second
	// Only the settings count: drop what the driver took from PGOPTIONS,
	// PGTZ or PGAPPNAME.
	delete(cfg.RuntimeParams, "options")
	set := func(k, v string) {
		for old := range cfg.RuntimeParams {
			if strings.EqualFold(old, k) {
				delete(cfg.RuntimeParams, old)
			}
		}
		cfg.RuntimeParams[k] = v
	}
	set("application_name", app)
	set("standard_conforming_strings", "on")
	// The server's default is the database's encoding: ask for UTF-8, so
	// that names and COPY text are UTF-8 whatever the database's encoding.
	set("client_encoding", "UTF8")
	for k, v := range params {
		set(k, v)
	}
	cfg.BuildFrontend = bufferedFrontend
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(s, db, err)
	}
	return conn, nil
}

// readBuffer is how much a connection reads from the server at a time. The
// driver's own reader asks the socket for at most 8 KiB (often less: what is
// left of its buffer), and a COPY of the bench database took 230,000 reads;
// a read costs ~5 µs of system time on the bench VM, and the server queues
// up to the socket's send buffer (~200 KiB) while coffre compresses.
const readBuffer = 256 << 10

// bufferedFrontend is the driver's frontend reading through a readBuffer.
// Only the frontend reads the connection (coffre never takes the raw
// connection back with Hijack), so the bytes buffered here are never missed.
func bufferedFrontend(r io.Reader, w io.Writer) *pgproto3.Frontend {
	return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBuffer), w)
}

func connectError(s settings, db string, err error) error {
	e := fmt.Errorf("connect to PostgreSQL at %s (user %q, database %q): %w", s.addr(), s.user, db, err)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000"):
		return hint.With(fmt.Errorf("%w: %w", source.ErrAuth, e), "check the user setting and the password its reference (env:NAME or file:PATH) points to")
	case errors.As(err, &pe) && pe.Code == "3D000":
		return hint.With(e, "check the database setting: the database does not exist (or was dropped)")
	case errors.As(err, &pe):
		return e
	}
	return hint.With(e, "check that PostgreSQL runs and listens on "+s.addr()+" and that host, port and sslmode are right")
}

// sessionParams are the settings of backup and restore sessions: stable,
// exact and locale-independent COPY text, no timeouts, no search path
// tricks.
func sessionParams(encoding string) map[string]string {
	p := map[string]string{
		"DateStyle":                           "ISO",
		"IntervalStyle":                       "postgres",
		"TimeZone":                            "UTC",
		"extra_float_digits":                  "3",
		"bytea_output":                        "hex",
		"search_path":                         "pg_catalog",
		"statement_timeout":                   "0",
		"lock_timeout":                        "0",
		"idle_in_transaction_session_timeout": "0",
	}
	// A SQL_ASCII database holds bytes in no particular encoding: read and
	// write them unconverted (UTF8 otherwise, see connect).
	if encoding == "SQL_ASCII" {
		p["client_encoding"] = "SQL_ASCII"
	}
	return p
}

// childEnv is the environment of a PostgreSQL client program: coffre's
// environment without libpq's variables (except the TLS certificate ones),
// plus the connection settings and the password.
func childEnv(s settings, password, db, app string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") && !(strings.HasPrefix(k, "PGSSL") && k != "PGSSLMODE") {
			continue
		}
		env = append(env, kv)
	}
	if s.host != "" {
		env = append(env, "PGHOST="+s.host)
	}
	if s.user != "" {
		env = append(env, "PGUSER="+s.user)
	}
	if db == "" {
		db = s.database
	}
	env = append(env, "PGPORT="+strconv.Itoa(s.port), "PGDATABASE="+db, "PGSSLMODE="+s.sslmode,
		"PGAPPNAME="+app, "PGCONNECT_TIMEOUT=10")
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
}

// tool returns the path of a PostgreSQL client program.
func (a Adapter) tool(name string) (string, error) {
	if a.BinDir != "" {
		p := filepath.Join(a.BinDir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", hint.With(fmt.Errorf("%s not found in %s", name, a.BinDir),
				"set the PostgreSQL adapter's BinDir to the directory of the PostgreSQL client programs")
		}
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err == nil && !isPgWrapper(p) {
		return p, nil
	}
	// Debian's /usr/bin/pg_* run a Perl script, pg_wrapper, that picks a
	// version and execs it: 60-120 ms per call, and a restore makes one
	// call per table with indexes. Its pick, when no cluster is named, is
	// the newest version installed: take it directly.
	if d := newestDebianBin(name); d != "" {
		return d, nil
	}
	if err == nil {
		return p, nil
	}
	return "", hint.With(fmt.Errorf("%s not found in PATH nor in /usr/lib/postgresql/*/bin", name),
		"install the PostgreSQL client programs (a version at least the server's) or set BinDir")
}

// isPgWrapper says whether p is Debian's pg_wrapper script.
func isPgWrapper(p string) bool {
	r, err := filepath.EvalSymlinks(p)
	return err == nil && filepath.Base(r) == "pg_wrapper"
}

// newestDebianBin returns the program name of the newest PostgreSQL under
// /usr/lib/postgresql/*/bin, or "".
func newestDebianBin(name string) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// tail keeps the last bytes written to it (a child's standard error).
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 2048

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailMax {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailMax:]...)
	}
	return len(p), nil
}

// String returns the tail on one line, with secret removed.
func (t *tail) String(secret string) string {
	t.mu.Lock()
	s := string(bytes.TrimSpace(t.buf))
	t.mu.Unlock()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "***")
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}

// toolError describes a failed client program.
func toolError(name string, err error, stderr *tail, secret string) error {
	msg := stderr.String(secret)
	if msg == "" {
		msg = "no error output"
	}
	e := fmt.Errorf("%s failed (%v): %s", name, err, msg)
	if strings.Contains(msg, "version mismatch") {
		return hint.With(e, "use PostgreSQL client programs at least as new as the server (set BinDir)")
	}
	return e
}

// runTool runs a client program to its end.
func runTool(ctx context.Context, path string, args, env []string, secret string) error {
	_, err := toolOutput(ctx, path, args, env, secret)
	return err
}

// toolOutput is runTool returning the tool's standard output.
func toolOutput(ctx context.Context, path string, args, env []string, secret string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var stderr tail
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return nil, toolError(filepath.Base(path), err, &stderr, secret)
	}
	return out, nil
}

// qi quotes an identifier.
func qi(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// ql quotes a string literal (standard_conforming_strings is on).
func ql(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// group runs functions and keeps the first error, cancelling the others.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func newGroup(ctx context.Context) *group {
	g := &group{}
	g.ctx, g.cancel = context.WithCancel(ctx)
	return g
}

func (g *group) Go(f func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = err
				g.cancel()
			}
			g.mu.Unlock()
		}
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}

// closeConn closes a session, giving up after a few seconds.
func closeConn(c *pgx.Conn) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
