package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// userNamespace selects the namespaces n that hold user objects.
const userNamespace = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'`

// notExtensionMember excludes the relations c created by an extension
// (CREATE EXTENSION creates them again).
const notExtensionMember = `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
	WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')`

// Row orders of the backup (setting order).
const (
	// orderKey sorts each table by its primary key (the server reads it
	// through the index): an UPDATE changes the rows where they are in the
	// stream, so the next day's backup re-stores only the chunks around
	// them.
	orderKey = "key"
	// orderPhysical copies rows as they lie in the table, the cheapest scan
	// for the server, and splits big tables into parts that all workers
	// copy (and restore) at once. But an UPDATE writes the new row version
	// wherever the table has free space, so a day's updates dirty chunks
	// all over the stream: on the issue-4 benchmark the second day stored
	// 63.5 MB instead of 7.1 MB with key order, and on 2 cores the backup
	// was no faster (docs/performance.md). For append-mostly tables on
	// servers with cores to spare.
	orderPhysical = "physical"
	// orderRange (the default) splits a big table whose primary key is a
	// single integer column into key ranges read with one sequential scan
	// (see ranges.go), and sorts the other tables like orderKey.
	orderRange = "range"
)

// copyAuto (the default of the setting copy_format) copies a table in
// COPY's binary format when all its copied columns' types have a portable
// binary form (see binaryCheck), in text otherwise; the other values are
// formatBinary and formatText (see the package documentation).
const copyAuto = "auto"

// binaryCheck finds the column types without a portable binary COPY form:
// bad(root, why) for every type of a table column (root) that, or whose
// parts, has no send or receive function, is a reg* type (its binary form
// is an OID, which names another object in the restored database), is a
// multirange (copied as text: simpler, and rare), or embeds in its binary
// form the OID of a type that is not built in (OID >= 10000, assigned
// anew by a restore): array_send writes the element type's OID and
// record_send each attribute's, and servers before PostgreSQL 14 reject a
// mismatch. Domains are their base type, ranges their subtype, arrays
// (typelem set, typlen -1) their element, composites their attributes,
// recursively. Catalog only: PostgreSQL 9.6 to 17.
const binaryCheck = `WITH RECURSIVE walk(root, typ, embedded) AS (
	SELECT DISTINCT a.atttypid, a.atttypid, false
	FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
	WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
	UNION
	SELECT w.root, x.typ, x.embedded
	FROM walk w JOIN pg_catalog.pg_type t ON t.oid = w.typ
	CROSS JOIN LATERAL (
		SELECT t.typbasetype, w.embedded WHERE t.typtype = 'd'
		UNION ALL SELECT t.typelem, true WHERE t.typtype = 'b' AND t.typelem <> 0 AND t.typlen = -1
		UNION ALL SELECT a.atttypid, true FROM pg_catalog.pg_attribute a
			WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL SELECT r.rngsubtype, w.embedded FROM pg_catalog.pg_range r WHERE t.typtype = 'r' AND r.rngtypid = t.oid
	) AS x(typ, embedded)
), bad(root, why) AS (
	SELECT w.root, pg_catalog.min(CASE
		WHEN w.embedded AND w.typ >= 10000 THEN 'its binary form holds the OID of type ' || pg_catalog.format_type(w.typ, NULL) || ', which is not built in'
		WHEN t.typsend::oid = 0 OR t.typreceive::oid = 0 THEN 'type ' || pg_catalog.format_type(w.typ, NULL) || ' has no binary send and receive functions'
		WHEN t.typtype = 'm' THEN 'multirange types are copied as text'
		ELSE 'its binary form is an OID, meaningless in another database' END)
	FROM walk w JOIN pg_catalog.pg_type t ON t.oid = w.typ
	WHERE (w.embedded AND w.typ >= 10000) OR t.typsend::oid = 0 OR t.typreceive::oid = 0 OR t.typtype = 'm'
		OR (t.typnamespace = 11 AND t.typname IN ('regproc', 'regprocedure', 'regoper', 'regoperator', 'regclass', 'regtype',
			'regrole', 'regnamespace', 'regconfig', 'regdictionary', 'regcollation'))
	GROUP BY w.root
)
`

// partBlocks is the size of a table part in blocks (128 MiB with 8 KiB
// blocks). Parts start at multiples of it so that a day's part holds the
// same blocks as the day before's. A variable for tests.
var partBlocks int64 = 16384

// lobPiece is how much of a large object is read or written at a time.
const lobPiece = 1 << 20

var snapshotID = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// testHookCopy, when set, is called by a backup worker when the first bytes
// of a table's COPY stream arrive (tests kill connections there).
var testHookCopy func(schema, table string)

const lostHint = "sessions were terminated or the database dropped during the backup; nothing was stored: run the backup again"

// errStopped ends a COPY whose stream was abandoned.
var errStopped = errors.New("stream abandoned")

type backup struct {
	s         settings
	pw        string
	parallel  int
	pgDump    string
	pgDumpall string
	coord     *pgx.Conn
	meta      Meta
	roles     []byte
}

// Backup stores one recovery point of the database c names (see the package
// documentation).
func (a Adapter) Backup(ctx context.Context, arch *archiver.Archiver, c source.Conn) (*snapshot.Manifest, error) {
	s, err := parseSettings(c)
	if err != nil {
		return nil, err
	}
	pw, err := c.Secret("password")
	if err != nil {
		return nil, err
	}
	b := &backup{s: s, pw: pw, parallel: a.Parallel}
	if b.parallel <= 0 {
		b.parallel = 2
	}
	if b.pgDump, err = a.tool("pg_dump"); err != nil {
		return nil, err
	}
	if s.roles {
		if b.pgDumpall, err = a.tool("pg_dumpall"); err != nil {
			return nil, err
		}
	}
	defer closeConn(b.coord)
	if err := b.prepare(ctx); err != nil {
		return nil, fmt.Errorf("back up PostgreSQL database %s: %w", s.database, err)
	}
	src := snapshot.Source{Type: "postgres", Resource: c.Resource}
	return arch.BackupStreams(ctx, src, func(ctx context.Context, st *archiver.Streams) error {
		if err := b.fill(ctx, st); err != nil {
			return fmt.Errorf("database %s: %w", s.database, err)
		}
		return nil
	})
}

// prepare opens the coordinator's transaction, exports its snapshot, reads
// what the snapshot holds and locks the tables.
func (b *backup) prepare(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, b.pgDump, "--version").Output()
	if err != nil {
		return hint.With(fmt.Errorf("run %s --version: %w", b.pgDump, err), "check BinDir and the PostgreSQL client installation")
	}
	b.meta = Meta{Format: MetaFormat, PgDump: strings.TrimSpace(string(out)), Schema: schemaPath,
		Tables: []Table{}, Sequences: []Sequence{}, LargeObjects: []LargeObject{}}

	if b.coord, err = connect(ctx, b.s, b.pw, "", appBackup, sessionParams("")); err != nil {
		return err
	}
	c := b.coord
	if _, err := c.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("begin the snapshot transaction: %w", err)
	}
	m := &b.meta
	var snapTime time.Time
	err = c.QueryRow(ctx, `SELECT pg_catalog.pg_export_snapshot(), pg_catalog.now(),
		pg_catalog.current_setting('server_version'), pg_catalog.current_setting('server_version_num')::int,
		pg_catalog.current_database()::text, pg_catalog.pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text
		FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()`).
		Scan(&m.Snapshot, &snapTime, &m.ServerVersion, &m.ServerVersionNum, &m.Database, &m.Encoding, &m.Collate, &m.Ctype)
	if err != nil {
		return fmt.Errorf("export a snapshot: %w", err)
	}
	if !snapshotID.MatchString(m.Snapshot) {
		return fmt.Errorf("unexpected snapshot id %q", m.Snapshot)
	}
	m.Time = snapTime.UTC()
	if m.ServerVersionNum >= 150000 {
		loc := "daticulocale"
		if m.ServerVersionNum >= 170000 {
			loc = "datlocale"
		}
		err = c.QueryRow(ctx, `SELECT d.datlocprovider::text, coalesce(d.`+loc+`::text, '')
			FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()`).Scan(&m.LocaleProvider, &m.Locale)
		if err != nil {
			return fmt.Errorf("read the database's locale: %w", err)
		}
	}
	if err := b.listTables(ctx); err != nil {
		return err
	}
	if err := b.lockTables(ctx); err != nil {
		return err
	}
	if err := b.readSequences(ctx); err != nil {
		return err
	}
	rows, err := c.Query(ctx, "SELECT oid FROM pg_catalog.pg_largeobject_metadata ORDER BY oid")
	if err != nil {
		return fmt.Errorf("list large objects: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return fmt.Errorf("list large objects: %w", err)
	}
	for _, oid := range oids {
		m.LargeObjects = append(m.LargeObjects, LargeObject{OID: oid, Path: lobPath(oid)})
	}
	if b.s.roles {
		b.dumpRoles(ctx)
	} else {
		m.Roles = Roles{Reason: "not requested (setting roles=true includes them)"}
	}
	return nil
}

// listTables reads the tables to copy, biggest first, and warns about the
// data it leaves out.
func (b *backup) listTables(ctx context.Context) error {
	gen := "true"
	if b.meta.ServerVersionNum >= 120000 {
		gen = "a.attgenerated = ''"
	}
	rows, err := b.coord.Query(ctx, binaryCheck+`SELECT n.nspname::text, c.relname::text, pg_catalog.pg_table_size(c.oid),
		pg_catalog.pg_relation_size(c.oid, 'main') / pg_catalog.current_setting('block_size')::bigint,
		coalesce((SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND `+gen+`), '{}'),
		coalesce((SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index i
			CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
		coalesce((SELECT pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, NULL) ORDER BY k.ord) FROM pg_catalog.pg_index i
			CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
		CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = c.oid) THEN '{}'::oid[] ELSE
			coalesce((SELECT pg_catalog.array_agg(i.indexrelid ORDER BY i.indexrelid) FROM pg_catalog.pg_index i
				WHERE i.indrelid = c.oid AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)), '{}') END,
		CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = c.oid) THEN '{}'::oid[] ELSE
			coalesce((SELECT pg_catalog.array_agg(k.oid ORDER BY k.oid) FROM pg_catalog.pg_constraint k
				WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x')), '{}') END,
		coalesce((SELECT pg_catalog.array_agg(pg_catalog.format('column %I (type %s): %s', a.attname,
				pg_catalog.format_type(a.atttypid, a.atttypmod), bad.why) ORDER BY a.attnum)
			FROM pg_catalog.pg_attribute a JOIN bad ON bad.root = a.atttypid
			WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND `+gen+`), '{}')
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND `+userNamespace+` AND `+notExtensionMember)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	type listed struct {
		t      Table
		size   int64
		blocks int64
		pkey   []string
		ptypes []string // the primary key columns' types
		text   []string // the columns without a portable binary form, and why
	}
	var ts []listed
	for rows.Next() {
		var l listed
		if err := rows.Scan(&l.t.Schema, &l.t.Name, &l.size, &l.blocks, &l.t.Columns, &l.pkey, &l.ptypes, &l.t.IndexOIDs, &l.t.ConstraintOIDs, &l.text); err != nil {
			rows.Close()
			return fmt.Errorf("list tables: %w", err)
		}
		l.t.Path = tablePath(l.t.Schema, l.t.Name)
		ts = append(ts, l)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	sort.SliceStable(ts, func(i, j int) bool {
		if ts[i].size != ts[j].size {
			return ts[i].size > ts[j].size
		}
		return ts[i].t.Path < ts[j].t.Path
	})
	b.meta.Order = b.s.order
	if b.meta.Order == "" {
		b.meta.Order = orderRange
	}
	// Splitting needs TID range scans (PostgreSQL 14): before, each part
	// would read the whole table.
	split := b.meta.Order == orderPhysical && b.meta.ServerVersionNum >= 140000
	var physical, notBinary []string
	for _, l := range ts {
		l.t.Format = formatText
		if b.s.copyFormat != formatText && len(l.text) == 0 {
			l.t.Format = formatBinary
		}
		if b.s.copyFormat == formatBinary && len(l.text) > 0 {
			notBinary = append(notBinary, "table "+l.t.String()+" "+strings.Join(l.text, ", "))
		}
		if b.meta.Order == orderKey || b.meta.Order == orderRange {
			l.t.OrderBy = l.pkey
			if len(l.pkey) == 0 {
				physical = append(physical, l.t.String())
			}
		}
		if n := (l.blocks + partBlocks - 1) / partBlocks; split && n > 1 && len(l.t.Columns) > 0 {
			for i := range n {
				p := Part{Path: partPath(l.t.Schema, l.t.Name, int(i)), FromBlock: i * partBlocks, ToBlock: (i + 1) * partBlocks}
				if i == n-1 {
					p.ToBlock = 0 // the table may have grown since it was measured
				}
				l.t.Parts = append(l.t.Parts, p)
			}
			l.t.Path = ""
		}
		if b.meta.Order == orderRange && l.size >= rangeMinBytes && l.t.Format == formatBinary &&
			len(l.pkey) == 1 && rangeKeyTypes[l.ptypes[0]] > 0 {
			if err := b.splitByKey(ctx, &l.t, l.pkey[0], l.ptypes[0], l.size); err != nil {
				return err
			}
		}
		b.meta.Tables = append(b.meta.Tables, l.t)
	}
	if len(notBinary) > 0 {
		return hint.With(fmt.Errorf("copy_format binary: no portable binary form for %s", strings.Join(notBinary, "; ")),
			`set copy_format to "auto" (binary where the column types allow it, text for these tables) or to "text"`)
	}
	if len(physical) > 0 {
		b.meta.Warnings = append(b.meta.Warnings, fmt.Sprintf(
			"tables without a primary key are copied in physical order and deduplicate less well where rows change: %s",
			strings.Join(physical, ", ")))
	}
	rows, err = b.coord.Query(ctx, `SELECT e.extname::text || ': ' || c.oid::pg_catalog.regclass::text
		FROM pg_catalog.pg_extension e CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS x(oid)
		JOIN pg_catalog.pg_class c ON c.oid = x.oid WHERE c.relkind = 'r' ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("list extension configuration tables: %w", err)
	}
	ext, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list extension configuration tables: %w", err)
	}
	if len(ext) > 0 {
		b.meta.Warnings = append(b.meta.Warnings, "rows added to extension configuration tables are not backed up: "+strings.Join(ext, ", "))
	}
	return nil
}

// splitByKey reads the smallest and biggest key of table t in the snapshot
// and splits t by key ranges (an empty table stays whole, sorted).
func (b *backup) splitByKey(ctx context.Context, t *Table, key, keyType string, size int64) error {
	var lo, hi *int64
	q := "SELECT pg_catalog.min(" + qi(key) + ")::bigint, pg_catalog.max(" + qi(key) + ")::bigint FROM ONLY " + t.qname()
	if err := b.coord.QueryRow(ctx, q).Scan(&lo, &hi); err != nil {
		return fmt.Errorf("table %s: read the range of its key %s: %w", t, key, err)
	}
	if lo == nil || hi == nil {
		return nil
	}
	keyRanges(t, key, keyType, size, *lo, *hi)
	return nil
}

// lockTables takes ACCESS SHARE locks on every table, as pg_dump does, so
// that none is dropped, truncated or rewritten before it is read.
func (b *backup) lockTables(ctx context.Context) error {
	if _, err := b.coord.Exec(ctx, "SET LOCAL lock_timeout = "+ql(b.s.lockWait)); err != nil {
		return fmt.Errorf("lock_wait_timeout %q: %w", b.s.lockWait, err)
	}
	const batch = 200
	for i := 0; i < len(b.meta.Tables); i += batch {
		var names []string
		for _, t := range b.meta.Tables[i:min(i+batch, len(b.meta.Tables))] {
			names = append(names, t.qname())
		}
		if _, err := b.coord.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS SHARE MODE"); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" {
				return hint.With(fmt.Errorf("lock the tables: %w", err),
					"another session holds an exclusive lock (ALTER TABLE, VACUUM FULL, a migration…): retry later or raise lock_wait_timeout")
			}
			return fmt.Errorf("lock the tables: %w", err)
		}
	}
	return nil
}

// readSequences records every sequence's state.
func (b *backup) readSequences(ctx context.Context) error {
	rows, err := b.coord.Query(ctx, `SELECT n.nspname::text, c.relname::text
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND `+userNamespace+` AND `+notExtensionMember+` ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Sequence, error) {
		var s Sequence
		return s, r.Scan(&s.Schema, &s.Name)
	})
	if err != nil {
		return fmt.Errorf("list sequences: %w", err)
	}
	for i := range seqs {
		s := &seqs[i]
		if err := b.coord.QueryRow(ctx, "SELECT last_value, is_called FROM "+s.qname()).Scan(&s.LastValue, &s.IsCalled); err != nil {
			return fmt.Errorf("read sequence %s.%s: %w", s.Schema, s.Name, err)
		}
	}
	b.meta.Sequences = append(b.meta.Sequences, seqs...)
	return nil
}

// dumpRoles reads the roles with pg_dumpall; a failure (a managed server
// that hides them) is recorded in meta.json, not fatal.
func (b *backup) dumpRoles(ctx context.Context) {
	cmd := exec.CommandContext(ctx, b.pgDumpall, "--roles-only", "--no-role-passwords", "--no-password", "--database="+b.s.database)
	cmd.Env = childEnv(b.s, b.pw, "", appBackup)
	var out bytes.Buffer
	var stderr tail
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		reason := toolError("pg_dumpall", err, &stderr, b.pw).Error()
		b.meta.Roles = Roles{Reason: reason}
		b.meta.Warnings = append(b.meta.Warnings, "roles not included: "+reason)
		return
	}
	b.roles = out.Bytes()
	b.meta.Roles = Roles{Included: true, Path: rolesPath}
}

// fill writes the streams: the schema, the tables and large objects in
// parallel, then meta.json once the snapshot's transaction is known intact.
func (b *backup) fill(ctx context.Context, st *archiver.Streams) error {
	g := newGroup(ctx)
	g.Go(func(ctx context.Context) error { return b.dumpSchema(ctx, st) })
	if b.roles != nil {
		g.Go(func(ctx context.Context) error { return st.AddBytes(rolesPath, b.roles) })
	}
	type job struct {
		d dataStream
		l *LargeObject
	}
	streams := b.meta.copyJobs()
	jobs := make(chan job, len(streams)+len(b.meta.LargeObjects))
	for _, d := range streams {
		jobs <- job{d: d}
	}
	for i := range b.meta.LargeObjects {
		jobs <- job{l: &b.meta.LargeObjects[i]}
	}
	close(jobs)
	params := sessionParams(b.meta.Encoding)
	params["row_security"] = "off" // fail rather than silently miss rows hidden by a policy
	// A sequential scan joins one already running on the same table, and
	// then starts mid-table: rows would come in an order that moves from
	// one backup to the next. pg_dump turns this off too.
	params["synchronize_seqscans"] = "off"
	for range min(b.parallel, len(jobs)) {
		g.Go(func(ctx context.Context) error {
			conn, err := connect(ctx, b.s, b.pw, "", appBackup, params)
			if err != nil {
				return err
			}
			defer closeConn(conn)
			if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT "+ql(b.meta.Snapshot)); err != nil {
				return hint.With(fmt.Errorf("import the backup's snapshot: %w", err), lostHint)
			}
			for j := range jobs {
				if err := ctx.Err(); err != nil {
					return err
				}
				if j.l == nil {
					err = b.copyTable(ctx, conn, st, j.d)
				} else {
					err = b.copyLargeObject(ctx, conn, st, j.l)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// When sessions are killed or the database dropped, the first error
		// may come from any of them (a late snapshot import, pg_dump…): say
		// what happened.
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if perr := b.coord.Ping(pctx); perr != nil {
			return hint.With(fmt.Errorf("the backup's sessions were lost (%v): %w", perr, err), lostHint)
		}
		return err
	}
	if _, err := b.coord.Exec(ctx, "COMMIT"); err != nil {
		return hint.With(fmt.Errorf("the backup's sessions were lost: the snapshot's transaction failed: %w", err), lostHint)
	}
	for i := range b.meta.Tables {
		t := &b.meta.Tables[i]
		for _, p := range t.Parts {
			t.Rows += p.Rows
			t.Bytes += p.Bytes
		}
	}
	js, err := json.MarshalIndent(&b.meta, "", "  ")
	if err != nil {
		return err
	}
	return st.AddBytes(metaPath, append(js, '\n'))
}

// dumpSchema streams pg_dump's archive of the schema into the vault.
func (b *backup) dumpSchema(ctx context.Context, st *archiver.Streams) error {
	args := []string{"--format=custom", "--compress=0", "--section=pre-data", "--section=post-data",
		"--snapshot=" + b.meta.Snapshot, "--no-password"}
	if b.s.lockWait != "0" {
		args = append(args, "--lock-wait-timeout="+b.s.lockWait)
	}
	cmd := exec.CommandContext(ctx, b.pgDump, args...)
	cmd.Env = childEnv(b.s, b.pw, "", appBackup)
	var stderr tail
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return hint.With(fmt.Errorf("start pg_dump: %w", err), "check BinDir and the PostgreSQL client installation")
	}
	aerr := st.Add(schemaPath, out)
	if aerr != nil {
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	if aerr != nil {
		return fmt.Errorf("store the schema: %w", aerr)
	}
	if werr != nil {
		return fmt.Errorf("dump the schema: %w", toolError("pg_dump", werr, &stderr, b.pw))
	}
	return nil
}

// copyBuffer is how much COPY output is gathered before it goes through the
// pipe to the vault.
const copyBuffer = 256 << 10

// copyCounter counts the rows and bytes of a COPY stream: in text format
// the newlines (COPY's text format escapes those in values), in binary
// format the tuples (bin follows the framing).
type copyCounter struct {
	w     io.Writer
	first func()
	bin   *binaryRows // nil: text format
	rows  int64
	bytes int64
}

func (c *copyCounter) Write(p []byte) (int, error) {
	if c.first != nil {
		f := c.first
		c.first = nil
		f()
	}
	if c.bin != nil {
		if err := c.bin.feed(p); err != nil {
			return 0, err
		}
	}
	n, err := c.w.Write(p)
	if c.bin != nil {
		c.rows = c.bin.rows
	} else {
		c.rows += int64(bytes.Count(p[:n], []byte{'\n'}))
	}
	c.bytes += int64(n)
	return n, err
}

// end checks, once COPY is done, that a binary stream was complete.
func (c *copyCounter) end() error {
	if c.bin == nil {
		return nil
	}
	return c.bin.end()
}

// copyTable streams one table's rows, or those of one of its parts, into
// the vault.
func (b *backup) copyTable(ctx context.Context, conn *pgx.Conn, st *archiver.Streams, d dataStream) error {
	t, p := d.t, d.p
	if _, err := conn.Exec(ctx, "LOCK TABLE "+t.qname()+" IN ACCESS SHARE MODE NOWAIT"); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55P03" {
			return hint.With(fmt.Errorf("lock table %s: %w", t, err),
				"a session asked for an exclusive lock on it (ALTER TABLE, TRUNCATE, VACUUM FULL…) during the backup: retry when it is done")
		}
		return fmt.Errorf("lock table %s: %w", t, err)
	}
	if t.ranged() {
		return b.copyRanges(ctx, conn, st, t)
	}
	pr, pw := io.Pipe()
	// PostgreSQL sends one CopyData message per row: batching them before
	// the pipe turns millions of goroutine handoffs into a few thousand.
	bw := bufio.NewWriterSize(pw, copyBuffer)
	cw := &copyCounter{w: bw}
	if t.binary() {
		cw.bin = &binaryRows{}
	}
	if hook := testHookCopy; hook != nil {
		cw.first = func() { hook(t.Schema, t.Name) }
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.PgConn().CopyTo(ctx, cw, t.copyOut(p))
		if err == nil {
			err = cw.end()
		}
		if cw.bin != nil && cw.bin.err != nil {
			err = hint.With(cw.bin.err, `PostgreSQL sent a malformed binary COPY stream: set copy_format to "text" for this resource, and report it`)
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	what, path, _ := d.describe()
	aerr := st.Add(path, pr)
	pr.CloseWithError(errStopped)
	cerr := <-done
	switch {
	case cerr != nil && !errors.Is(cerr, errStopped):
		return fmt.Errorf("copy %s: %w", what, cerr)
	case aerr != nil:
		return fmt.Errorf("store %s: %w", what, aerr)
	}
	if p != nil {
		p.Rows, p.Bytes = cw.rows, cw.bytes
	} else {
		t.Rows, t.Bytes = cw.rows, cw.bytes
	}
	return nil
}

// copyLargeObject streams one large object into the vault.
func (b *backup) copyLargeObject(ctx context.Context, conn *pgx.Conn, st *archiver.Streams, l *LargeObject) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	var size int64
	go func() {
		var err error
		for {
			var piece []byte
			if err = conn.QueryRow(ctx, "SELECT pg_catalog.lo_get($1, $2, $3)", l.OID, size, int32(lobPiece)).Scan(&piece); err != nil {
				break
			}
			if len(piece) > 0 {
				if _, err = pw.Write(piece); err != nil {
					break
				}
			}
			size += int64(len(piece))
			if len(piece) < lobPiece {
				break
			}
		}
		pw.CloseWithError(err)
		done <- err
	}()
	aerr := st.Add(l.Path, pr)
	pr.CloseWithError(errStopped)
	cerr := <-done
	switch {
	case cerr != nil && !errors.Is(cerr, errStopped):
		return fmt.Errorf("read large object %d: %w", l.OID, cerr)
	case aerr != nil:
		return fmt.Errorf("store large object %d: %w", l.OID, aerr)
	}
	l.Bytes = size
	return nil
}
