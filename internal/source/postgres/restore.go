package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

type restore struct {
	s         settings
	pw        string
	meta      *Meta
	files     *files
	parallel  int
	pgRestore string
	psql      string
	schema    string         // temporary copy of the schema archive
	toc       []string       // pg_restore --list of the schema, when tables record their index OIDs
	tocByOID  map[string]int // "INDEX <oid>" or "CONSTRAINT <oid>": its line in toc
	tocMu     sync.Mutex
	tocDone   []bool // toc entries already built (buildEarly)
	rows      atomic.Int64
	bytes     atomic.Int64
	notes     []string

	// With RestoreOptions.Validate, each table's rows are counted by the
	// session that completes it (its rows and early indexes in), while
	// other sessions still load; nil otherwise.
	countMu sync.Mutex
	counts  map[*Table]rowCount
}

// Restore writes recovery point m into a new database (see the package
// documentation).
func (a Adapter) Restore(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, to source.Conn, opts source.RestoreOptions) (*source.RestoreResult, error) {
	s, err := parseSettings(to)
	if err != nil {
		return nil, err
	}
	pw, err := to.Secret("password")
	if err != nil {
		return nil, err
	}
	meta, err := ReadMeta(ctx, r, m)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	for _, t := range meta.Tables {
		if t.Format != "" && t.Format != formatText && t.Format != formatBinary {
			return nil, hint.With(fmt.Errorf("restore: table %s: COPY format %q in %s, this coffre reads text and binary", t, t.Format, metaPath),
				"restore with the coffre version that made the recovery point, or a newer one")
		}
	}
	rs := &restore{s: s, pw: pw, meta: meta, files: newFiles(ctx, r, m.Tree), parallel: opts.Parallel}
	if opts.Validate {
		rs.counts = map[*Table]rowCount{}
	}
	if rs.parallel <= 0 {
		rs.parallel = 2
	}
	if rs.pgRestore, err = a.tool("pg_restore"); err != nil {
		return nil, err
	}
	if s.roles {
		if !meta.Roles.Included {
			return nil, fmt.Errorf("restore roles: recovery point %s has none (%s)", m.ID.Short(), meta.Roles.Reason)
		}
		if rs.psql, err = a.tool("psql"); err != nil {
			return nil, err
		}
	}
	return rs.run(ctx, opts)
}

func (rs *restore) run(ctx context.Context, opts source.RestoreOptions) (*source.RestoreResult, error) {
	db := rs.s.database
	maint := rs.s.maintenance
	if maint == db {
		maint = "template1"
	}
	admin, err := connect(ctx, rs.s, rs.pw, maint, appRestore, nil)
	var pe *pgconn.PgError
	if err != nil && maint == "postgres" && errors.As(err, &pe) && pe.Code == "3D000" {
		maint = "template1" // a server without the postgres database
		admin, err = connect(ctx, rs.s, rs.pw, maint, appRestore, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer closeConn(admin)

	// Refuse a target with data before writing anything.
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return nil, fmt.Errorf("restore: look for database %s: %w", db, err)
	}
	drop := false
	if exists {
		holds, err := rs.contents(ctx)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if holds != "" {
			if !opts.Overwrite {
				return nil, hint.With(fmt.Errorf("restore into database %s on %s: %w (it holds %s)", db, rs.s.addr(), source.ErrTargetNotEmpty, holds),
					"restore into a new database name, or allow overwriting to drop this database and create it again")
			}
			drop = true
		}
	}

	// Read the schema before creating anything, so that a damaged vault
	// fails the restore with nothing written.
	if err := rs.spoolSchema(ctx); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(rs.schema)

	if drop {
		if _, err := admin.Exec(ctx, "DROP DATABASE "+qi(db)); err != nil {
			return nil, hint.With(fmt.Errorf("restore: drop database %s to overwrite it: %w", db, err),
				"close the other sessions connected to it, or drop it yourself")
		}
	}
	created := !exists || drop
	if created {
		if _, err := admin.Exec(ctx, rs.createDatabase()); err != nil {
			return nil, hint.With(fmt.Errorf("restore: create database %s: %w", db, err),
				"the role needs CREATEDB, and the server the recovery point's encoding and locale ("+rs.meta.Encoding+", "+rs.meta.Collate+")")
		}
	}
	fail := func(step string, err error) error {
		h := fmt.Sprintf("database %s was left as it is: drop it (DROP DATABASE %s) before restoring again", db, qi(db))
		if !created {
			h = fmt.Sprintf("database %s was left as it is: empty it or drop it before restoring again", db)
		}
		return hint.With(fmt.Errorf("restore into database %s: %s: %w", db, step, err), h)
	}

	if rs.s.roles {
		if err := rs.restoreRoles(ctx, maint); err != nil {
			return nil, fail("roles", err)
		}
	}
	if err := rs.pgRestoreSection(ctx, "pre-data"); err != nil {
		return nil, fail("schema (pre-data)", err)
	}
	if err := rs.readTOC(ctx); err != nil {
		return nil, fail("schema (list)", err)
	}
	if err := rs.loadData(ctx); err != nil {
		return nil, fail("data", err)
	}
	if err := rs.setSequences(ctx); err != nil {
		return nil, fail("sequences", err)
	}
	if err := rs.pgRestoreSection(ctx, "post-data"); err != nil {
		return nil, fail("indexes, constraints and triggers (post-data)", err)
	}

	var v *source.Validation
	if opts.Validate {
		// Only a validation that could not run is an error here; the
		// caller then validates on its own (and reports why that fails).
		v, _ = rs.validate(ctx, opts.Checks)
	}

	m := rs.meta
	sum := fmt.Sprintf("restored PostgreSQL database %s of %s into %s: %d tables (%d rows, %d bytes), %d sequences, %d large objects",
		m.Database, m.Time.Format(time.RFC3339), db, len(m.Tables), rs.rows.Load(), rs.bytes.Load(), len(m.Sequences), len(m.LargeObjects))
	if rs.s.owners == "none" {
		rs.notes = append(rs.notes, "owners and privileges not restored (owners=keep restores them)")
	}
	if len(rs.notes) > 0 {
		sum += "; " + strings.Join(rs.notes, "; ")
	}
	return &source.RestoreResult{Summary: sum, Items: int64(len(m.Tables) + len(m.LargeObjects)), Bytes: rs.bytes.Load(), Validation: v}, nil
}

// countDone counts the rows of table t, complete, on the session that
// completed it, when the restore validates.
func (rs *restore) countDone(ctx context.Context, conn *pgx.Conn, t *Table) error {
	if rs.counts == nil {
		return nil
	}
	c, err := countTable(ctx, conn, t)
	if err != nil {
		return err
	}
	rs.countMu.Lock()
	rs.counts[t] = c
	rs.countMu.Unlock()
	return nil
}

// validate validates the restored database with the counts made during
// the load; a table not counted then (none, normally) is counted now.
func (rs *restore) validate(ctx context.Context, checks []source.Check) (*source.Validation, error) {
	counts := make([]rowCount, len(rs.meta.Tables))
	var rest []Table
	var at []int
	for i := range rs.meta.Tables {
		c, ok := rs.counts[&rs.meta.Tables[i]]
		if !ok {
			rest, at = append(rest, rs.meta.Tables[i]), append(at, i)
		}
		counts[i] = c
	}
	if len(rest) > 0 {
		late, err := countRows(ctx, rs.s, rs.pw, rest)
		if err != nil {
			return nil, err
		}
		for k, i := range at {
			counts[i] = late[k]
		}
	}
	return validate(ctx, rs.s, rs.pw, rs.meta, counts, checks)
}

// contents describes what the existing target database holds ("" if it is
// empty: no relation outside the system schemas, no large object).
func (rs *restore) contents(ctx context.Context) (string, error) {
	conn, err := connect(ctx, rs.s, rs.pw, "", appRestore, nil)
	if err != nil {
		return "", err
	}
	defer closeConn(conn)
	var rels, lobs int64
	err = conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND `+userNamespace+` AND `+notExtensionMember+`),
		(SELECT count(*) FROM pg_catalog.pg_largeobject_metadata)`).Scan(&rels, &lobs)
	if err != nil {
		return "", fmt.Errorf("inspect database %s: %w", rs.s.database, err)
	}
	var what []string
	if rels > 0 {
		what = append(what, fmt.Sprintf("%d tables, views or sequences", rels))
	}
	if lobs > 0 {
		what = append(what, fmt.Sprintf("%d large objects", lobs))
	}
	return strings.Join(what, " and "), nil
}

func (rs *restore) createDatabase() string {
	m := rs.meta
	q := "CREATE DATABASE " + qi(rs.s.database) + " TEMPLATE template0"
	if m.Encoding != "" {
		q += " ENCODING " + ql(m.Encoding)
	}
	if m.Collate != "" {
		q += " LC_COLLATE " + ql(m.Collate)
	}
	if m.Ctype != "" {
		q += " LC_CTYPE " + ql(m.Ctype)
	}
	switch m.LocaleProvider {
	case "i":
		q += " LOCALE_PROVIDER icu ICU_LOCALE " + ql(m.Locale)
	case "b":
		q += " LOCALE_PROVIDER builtin BUILTIN_LOCALE " + ql(m.Locale)
	}
	return q
}

// spoolSchema copies the schema archive (verified) into a temporary file:
// pg_restore -j needs a seekable archive. It holds no table data.
func (rs *restore) spoolSchema(ctx context.Context) error {
	rd, err := rs.files.open(ctx, rs.meta.Schema)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "coffre-pg-schema-*.pgdump")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rd)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("read the schema: %w", err)
	}
	rs.schema = f.Name()
	return nil
}

// pgRestoreSection runs pg_restore for one section of the schema; for
// post-data, the entries not built early (see earlyEntries).
func (rs *restore) pgRestoreSection(ctx context.Context, section string) error {
	args := rs.pgRestoreArgs(section)
	switch {
	case section == "pre-data":
		args = append(args, "--single-transaction")
	case rs.parallel > 1:
		args = append(args, "--jobs="+strconv.Itoa(rs.parallel))
	}
	if section == "post-data" && rs.toc != nil {
		rs.tocMu.Lock()
		lines := slices.Clone(rs.toc)
		for i := range lines {
			if rs.tocDone[i] {
				lines[i] = ";" + lines[i]
			}
		}
		rs.tocMu.Unlock()
		list, err := rs.writeList(lines)
		if err != nil {
			return err
		}
		defer os.Remove(list)
		args = append(args, "--use-list="+list)
	}
	env := childEnv(rs.s, rs.pw, "", appRestore)
	if section == "post-data" {
		env = rs.s.withIndexMem(env)
	}
	return runTool(ctx, rs.pgRestore, append(args, rs.schema), env, rs.pw)
}

func (rs *restore) pgRestoreArgs(section string) []string {
	args := []string{"--section=" + section, "--exit-on-error", "--no-password", "--dbname=dbname=" + conninfo(rs.s.database)}
	if rs.s.owners == "none" {
		args = append(args, "--no-owner", "--no-privileges")
	}
	return args
}

// readTOC lists the schema archive's entries (pg_restore --list), so that
// a table's indexes and key constraints can be built as soon as its rows
// are in, while other tables still load (as pg_restore -j does): an INDEX
// or CONSTRAINT entry is matched to its table by the object's OID in the
// source, which the backup recorded (Table.IndexOIDs, ConstraintOIDs).
// Recovery points without them build everything after the data.
func (rs *restore) readTOC(ctx context.Context) error {
	recorded := false
	for _, t := range rs.meta.Tables {
		recorded = recorded || len(t.IndexOIDs) > 0 || len(t.ConstraintOIDs) > 0
	}
	if !recorded {
		return nil
	}
	out, err := toolOutput(ctx, rs.pgRestore, []string{"--list", rs.schema}, childEnv(rs.s, rs.pw, "", appRestore), rs.pw)
	if err != nil {
		return err
	}
	rs.setTOC(strings.Split(strings.TrimRight(string(out), "\n"), "\n"))
	return nil
}

// setTOC takes a pg_restore --list and indexes its INDEX and CONSTRAINT
// entries by the object's OID.
func (rs *restore) setTOC(toc []string) {
	rs.toc, rs.tocDone, rs.tocByOID = toc, make([]bool, len(toc)), map[string]int{}
	for i, line := range toc {
		// "<dump id>; <catalog oid> <object oid> <description> <schema> <tag> <owner>"
		if strings.HasPrefix(line, ";") {
			continue
		}
		_, rest, ok := strings.Cut(line, "; ")
		if !ok {
			continue
		}
		f := strings.SplitN(rest, " ", 4)
		if len(f) < 4 {
			continue
		}
		switch {
		case f[2] == "INDEX" && !strings.HasPrefix(f[3], "ATTACH "):
			rs.tocByOID["INDEX "+f[1]] = i
		case f[2] == "CONSTRAINT":
			rs.tocByOID["CONSTRAINT "+f[1]] = i
		}
	}
}

// earlyEntries returns the indices in rs.toc of table t's indexes and
// key constraints, in the order of the list.
func (rs *restore) earlyEntries(t *Table) []int {
	var idx []int
	for _, o := range t.IndexOIDs {
		if i, ok := rs.tocByOID["INDEX "+strconv.FormatUint(uint64(o), 10)]; ok {
			idx = append(idx, i)
		}
	}
	for _, o := range t.ConstraintOIDs {
		if i, ok := rs.tocByOID["CONSTRAINT "+strconv.FormatUint(uint64(o), 10)]; ok {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	return idx
}

// buildEarly builds table t's indexes and key constraints, once its rows
// are all in.
func (rs *restore) buildEarly(ctx context.Context, t *Table) error {
	if rs.toc == nil {
		return nil
	}
	idx := rs.earlyEntries(t)
	if len(idx) == 0 {
		return nil
	}
	lines := make([]string, 0, len(idx))
	for _, i := range idx {
		lines = append(lines, rs.toc[i])
	}
	list, err := rs.writeList(lines)
	if err != nil {
		return err
	}
	defer os.Remove(list)
	args := append(rs.pgRestoreArgs("post-data"), "--use-list="+list, rs.schema)
	if err := runTool(ctx, rs.pgRestore, args, rs.s.withIndexMem(childEnv(rs.s, rs.pw, "", appRestore)), rs.pw); err != nil {
		return fmt.Errorf("indexes and key constraints of table %s: %w", t, err)
	}
	rs.tocMu.Lock()
	for _, i := range idx {
		rs.tocDone[i] = true
	}
	rs.tocMu.Unlock()
	return nil
}

// writeList writes a pg_restore --use-list file.
func (rs *restore) writeList(lines []string) (string, error) {
	f, err := os.CreateTemp("", "coffre-pg-list-*.txt")
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// restoreRoles runs roles.sql; roles that exist already, and other
// statements the user may not run, are reported in the summary.
func (rs *restore) restoreRoles(ctx context.Context, maint string) error {
	rd, err := rs.files.open(ctx, rs.meta.Roles.Path)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, rs.psql, "-X", "-q", "-v", "ON_ERROR_STOP=0", "--no-password", "-f", "-")
	cmd.Env = childEnv(rs.s, rs.pw, maint, appRestore)
	cmd.Stdin = rd
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		var t tail
		_, _ = t.Write(stderr.Bytes())
		return toolError("psql", err, &t, rs.pw)
	}
	var exist, failed int
	first := ""
	for _, line := range strings.Split(stderr.String(), "\n") {
		if !strings.Contains(line, "ERROR:") {
			continue
		}
		if strings.Contains(line, "already exists") {
			exist++
			continue
		}
		failed++
		if first == "" {
			first = strings.TrimSpace(line[strings.Index(line, "ERROR:")+len("ERROR:"):])
		}
	}
	if exist > 0 {
		rs.notes = append(rs.notes, fmt.Sprintf("%d roles existed already", exist))
	}
	if failed > 0 {
		rs.notes = append(rs.notes, fmt.Sprintf("%d role statements failed (first: %s)", failed, first))
	}
	return nil
}

// loadData loads the tables and large objects over parallel sessions,
// biggest tables first.
func (rs *restore) loadData(ctx context.Context) error {
	// One job per table or block-range part of a table (such parts load in
	// parallel), biggest first. The key ranges of a table split by key are
	// one job, loaded in key order by one session: concurrent COPYs into
	// one table contend for its extension lock, and rows loaded in key
	// order make the primary key's index build faster.
	type job struct {
		ds   []dataStream
		l    *LargeObject
		size int64
	}
	var work []job
	for _, d := range rs.meta.dataStreams() {
		size := d.t.Bytes
		if d.p != nil {
			size = d.p.Bytes
		}
		if d.t.ranged() && d.p != &d.t.Parts[0] {
			w := &work[len(work)-1]
			w.ds, w.size = append(w.ds, d), w.size+size
			continue
		}
		work = append(work, job{ds: []dataStream{d}, size: size})
	}
	// left counts each table's streams still to load: the session that
	// loads the last one builds the table's indexes and key constraints.
	left := map[*Table]*atomic.Int64{}
	for _, w := range work {
		for _, d := range w.ds {
			if left[d.t] == nil {
				left[d.t] = new(atomic.Int64)
			}
			left[d.t].Add(1)
		}
	}
	sort.SliceStable(work, func(i, j int) bool { return work[i].size > work[j].size })
	jobs := make(chan job, len(work)+len(rs.meta.LargeObjects))
	for _, w := range work {
		jobs <- w
	}
	for i := range rs.meta.LargeObjects {
		jobs <- job{l: &rs.meta.LargeObjects[i]}
	}
	close(jobs)
	params := sessionParams(rs.meta.Encoding)
	params["synchronous_commit"] = "off" // post-data's commits flush it all
	g := newGroup(ctx)
	for range min(rs.parallel, len(jobs)) {
		g.Go(func(ctx context.Context) error {
			conn, err := connect(ctx, rs.s, rs.pw, "", appRestore, params)
			if err != nil {
				return err
			}
			defer closeConn(conn)
			if rs.counts != nil {
				if err := jitOff(ctx, conn); err != nil {
					return err
				}
			}
			for j := range jobs {
				if err := ctx.Err(); err != nil {
					return err
				}
				if j.l != nil {
					if err := rs.loadLargeObject(ctx, conn, j.l); err != nil {
						return err
					}
				}
				for _, d := range j.ds {
					if err := rs.loadTable(ctx, conn, d); err != nil {
						return err
					}
					if left[d.t].Add(-1) == 0 {
						if err := rs.buildEarly(ctx, d.t); err != nil {
							return err
						}
						if err := rs.countDone(ctx, conn, d.t); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// loadTable loads a table's rows, or those of one of its parts.
func (rs *restore) loadTable(ctx context.Context, conn *pgx.Conn, d dataStream) error {
	what, path, rows := d.describe()
	rd, err := rs.files.open(ctx, path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	cr := &countingReader{r: rd}
	tag, err := conn.PgConn().CopyFrom(ctx, cr, d.t.copyIn())
	if err != nil {
		var pe *pgconn.PgError
		if d.t.binary() && errors.As(err, &pe) && (pe.Code == "22P03" || pe.Code == "42804") {
			// invalid_binary_representation, datatype_mismatch
			return fmt.Errorf("%s (stored in COPY's binary format, which this server reads differently; "+
				"back up with copy_format = \"text\" to restore here): %w", what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() != rows {
		return fmt.Errorf("%s: loaded %d rows, the recovery point recorded %d", what, tag.RowsAffected(), rows)
	}
	rs.rows.Add(rows)
	rs.bytes.Add(cr.n)
	return nil
}

func (rs *restore) loadLargeObject(ctx context.Context, conn *pgx.Conn, l *LargeObject) error {
	rd, err := rs.files.open(ctx, l.Path)
	if err != nil {
		return fmt.Errorf("large object %d: %w", l.OID, err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// pre-data created it with its owner and privileges; create it if
		// the archive did not.
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.lo_create($1) WHERE NOT EXISTS
			(SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1)`, l.OID); err != nil {
			return err
		}
		buf := make([]byte, lobPiece)
		var off int64
		for {
			n, rerr := io.ReadFull(rd, buf)
			if n > 0 {
				if _, err := tx.Exec(ctx, "SELECT pg_catalog.lo_put($1, $2, $3)", l.OID, off, buf[:n]); err != nil {
					return err
				}
				off += int64(n)
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break
			}
			if rerr != nil {
				return rerr
			}
		}
		if off != l.Bytes {
			return fmt.Errorf("wrote %d bytes, the recovery point recorded %d", off, l.Bytes)
		}
		rs.bytes.Add(off)
		return nil
	})
	if err != nil {
		return fmt.Errorf("large object %d: %w", l.OID, err)
	}
	return nil
}

// setSequences sets every sequence to its recorded state.
func (rs *restore) setSequences(ctx context.Context) error {
	if len(rs.meta.Sequences) == 0 {
		return nil
	}
	conn, err := connect(ctx, rs.s, rs.pw, "", appRestore, sessionParams(rs.meta.Encoding))
	if err != nil {
		return err
	}
	defer closeConn(conn)
	const batch = 100
	seqs := rs.meta.Sequences
	for i := 0; i < len(seqs); i += batch {
		var q strings.Builder
		for _, s := range seqs[i:min(i+batch, len(seqs))] {
			fmt.Fprintf(&q, "SELECT pg_catalog.setval(%s, %d, %t);\n", ql(s.qname()), s.LastValue, s.IsCalled)
		}
		if _, err := conn.Exec(ctx, q.String()); err != nil {
			return err
		}
	}
	return nil
}
