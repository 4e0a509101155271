package postgres

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/stream"
)

var ctxb = context.Background

func mustBackup(t *testing.T, a Adapter, r *repo.Repository, c source.Conn) *snapshot.Manifest {
	t.Helper()
	m, err := backupOnce(t, a, r, c)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m
}

func readFile(t *testing.T, r *repo.Repository, m *snapshot.Manifest, p string) []byte {
	t.Helper()
	n, err := stream.Lookup(ctxb(), r, m.Tree, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(stream.NewReader(ctxb(), r, n))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func findTable(t *testing.T, m *Meta, schema, name string) Table {
	t.Helper()
	for _, tb := range m.Tables {
		if tb.Schema == schema && tb.Name == name {
			return tb
		}
	}
	t.Fatalf("table %s.%s not in meta.json", schema, name)
	return Table{}
}

// TestBackupLayout checks what a recovery point holds: streams, row counts
// of the snapshot, ordering by key (small tables under order=range, the
// default), sequences, large objects,
// and no secret.
func TestBackupLayout(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t)) // the default order, range: these small tables are sorted by key
	m := mustBackup(t, Adapter{Parallel: 3}, r, src)
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Database != src.Settings["database"] || meta.Encoding != "UTF8" || meta.ServerVersionNum < 150000 || meta.Snapshot == "" || meta.Order != orderRange {
		t.Errorf("meta: database %q encoding %q version %d snapshot %q order %q", meta.Database, meta.Encoding, meta.ServerVersionNum, meta.Snapshot, meta.Order)
	}
	rows := map[string]int64{
		"app.accounts": 50000, "app.events": 20000, "app.orders": 10000, "app.legacy": 100, "app.legacy_child": 50,
		"app.measurements_2023": 2655, "app.measurements_2024": 2345, "odd schema.Weird.Name/x": 4, "app.empty": 0, "app.documents": 1,
	}
	got := map[string]int64{}
	for _, tb := range meta.Tables {
		got[tb.String()] = tb.Rows
		if b := readFile(t, r, m, tb.Path); int64(len(b)) != tb.Bytes {
			t.Errorf("%s: stream %s holds %d bytes, meta says %d", tb, tb.Path, len(b), tb.Bytes)
		}
	}
	if len(got) != len(rows) {
		t.Errorf("tables %v, want %v (partitioned parents and views have no data stream)", got, rows)
	}
	for k, v := range rows {
		if got[k] != v {
			t.Errorf("rows of %s = %d, want %d", k, got[k], v)
		}
	}
	if tb := meta.Tables[0]; tb.Name != "accounts" {
		t.Errorf("first table %s: want the biggest, app.accounts", tb)
	}
	acc := findTable(t, meta, "app", "accounts")
	if !slices.Equal(acc.OrderBy, []string{"id"}) || acc.Path != "data/app.accounts.copy" {
		t.Errorf("accounts: order by %v, path %s", acc.OrderBy, acc.Path)
	}
	if m := findTable(t, meta, "app", "measurements_2023"); !slices.Equal(m.OrderBy, []string{"id", "at"}) {
		t.Errorf("measurements_2023 ordered by %v, want its primary key (id, at)", m.OrderBy)
	}
	if ev := findTable(t, meta, "app", "events"); len(ev.OrderBy) != 0 || !strings.Contains(strings.Join(meta.Warnings, " "), "app.events") {
		t.Errorf("events (no primary key): order by %v, warnings %q", ev.OrderBy, meta.Warnings)
	}
	if o := findTable(t, meta, "app", "orders"); slices.Contains(o.Columns, "total_cents") || len(o.Columns) != 4 {
		t.Errorf("orders columns %v: want the generated column left out", o.Columns)
	}
	if w := findTable(t, meta, "odd schema", "Weird.Name/x"); w.Path != "data/odd schema.Weird%2EName%2Fx.copy" {
		t.Errorf("odd table's path %q", w.Path)
	}
	// The data streams are in COPY's binary format (every type of the
	// dataset has a portable one: copy_format auto), sorted by primary key:
	// accounts' first tuple has 9 fields, the first the 8 bytes of id 1.
	for _, tb := range meta.Tables {
		if tb.Format != "binary" {
			t.Errorf("%s: format %q, want binary", tb, tb.Format)
		}
	}
	copyBin := readFile(t, r, m, "data/app.accounts.copy")
	if first := "\x00\x09\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x01"; !strings.HasPrefix(string(copyBin), copySignature) ||
		len(copyBin) < 33 || string(copyBin[19:33]) != first {
		t.Errorf("accounts stream starts %q", copyBin[:min(40, len(copyBin))])
	}
	if !slices.ContainsFunc(meta.Sequences, func(s Sequence) bool { return s.Name == "invoice_no" && s.LastValue == 1041 && s.IsCalled }) {
		t.Errorf("sequences %+v: want app.invoice_no at 1041", meta.Sequences)
	}
	if len(meta.LargeObjects) != 1 || meta.LargeObjects[0].Bytes != 192000 {
		t.Fatalf("large objects %+v: want one of 192000 bytes", meta.LargeObjects)
	}
	if lo := readFile(t, r, m, meta.LargeObjects[0].Path); len(lo) != 192000 || string(lo[:32]) != "c4ca4238a0b923820dcc509a6f75849b" {
		t.Errorf("large object stream: %d bytes starting %q", len(lo), lo[:min(32, len(lo))])
	}
	if meta.Roles.Included || meta.Roles.Reason == "" {
		t.Errorf("roles %+v: want not included, with the reason", meta.Roles)
	}
	if b := readFile(t, r, m, schemaPath); !strings.HasPrefix(string(b), "PGDMP") {
		t.Errorf("schema stream starts %q: want a pg_dump custom archive", b[:min(5, len(b))])
	}
	raw := readFile(t, r, m, metaPath)
	if pw := os.Getenv("PGPASSWORD"); len(pw) >= 4 && strings.Contains(string(raw), pw) {
		t.Error("meta.json contains the password")
	}
	if m.Source.Type != "postgres" || m.Source.Resource != src.Resource || m.Status != snapshot.StatusCompleted {
		t.Errorf("manifest source %+v status %s", m.Source, m.Status)
	}
}

// TestPhysicalOrderParts: with order=physical rows are copied in physical
// order, and tables bigger than a part are split into parts by block
// ranges, copied and restored in parallel: every row exactly once, counts
// per part, restore and validation intact, and the next day after a 1%
// change (on a table with no free space to scatter updates into) re-stores
// little.
func TestPhysicalOrderParts(t *testing.T) {
	defer func(old int64) { partBlocks = old }(partBlocks)
	partBlocks = 64 // 512 KiB: app.accounts and app.events span several parts
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	src.Settings["order"] = "physical"
	src.Settings["copy_format"] = "text" // the parts' rows are compared as lines
	want := fingerprint(t, src)
	m := mustBackup(t, Adapter{Parallel: 3}, r, src)
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Order != "physical" || strings.Contains(strings.Join(meta.Warnings, " "), "app.events") {
		t.Errorf("order %q, warnings %q: want physical and no primary-key warning", meta.Order, meta.Warnings)
	}
	acc := findTable(t, meta, "app", "accounts")
	if len(acc.Parts) < 3 || acc.Path != "" || len(acc.OrderBy) != 0 {
		t.Fatalf("accounts: %d parts, path %q, order by %v: want several parts in physical order", len(acc.Parts), acc.Path, acc.OrderBy)
	}
	var rows int64
	var lines []string
	for i, p := range acc.Parts {
		if p.FromBlock != int64(i)*partBlocks || (i < len(acc.Parts)-1) != (p.ToBlock == p.FromBlock+partBlocks) || p.Path != partPath("app", "accounts", i) {
			t.Errorf("part %d: %+v", i, p)
		}
		b := readFile(t, r, m, p.Path)
		if int64(len(b)) != p.Bytes || int64(strings.Count(string(b), "\n")) != p.Rows {
			t.Errorf("part %d: %d bytes and %d lines, meta says %d and %d", i, len(b), strings.Count(string(b), "\n"), p.Bytes, p.Rows)
		}
		rows += p.Rows
		lines = append(lines, strings.SplitAfter(string(b), "\n")...)
	}
	if rows != 50000 || acc.Rows != 50000 {
		t.Errorf("accounts: parts hold %d rows, table %d, want 50000", rows, acc.Rows)
	}
	// Every row once: the parts together are the key-ordered COPY.
	keyed := connFor(t, src.Settings["database"])
	keyed.Settings["order"] = "key"
	keyed.Settings["copy_format"] = "text"
	mk := mustBackup(t, Adapter{}, r, keyed)
	kmeta, err := ReadMeta(ctxb(), r, mk)
	if err != nil {
		t.Fatal(err)
	}
	klines := strings.SplitAfter(string(readFile(t, r, mk, findTable(t, kmeta, "app", "accounts").Path)), "\n")
	empty := func(l string) bool { return l == "" }
	lines, klines = slices.DeleteFunc(lines, empty), slices.DeleteFunc(klines, empty)
	slices.Sort(lines)
	slices.Sort(klines)
	if !slices.Equal(lines, klines) {
		t.Errorf("the parts' rows (%d) differ from the table's (%d)", len(lines), len(klines))
	}

	dst := connFor(t, newDBName(t, "parts"))
	if _, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Parallel: 3}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := fingerprint(t, dst); got != want {
		t.Fatal("restored database differs from the source")
	}
	if v, err := (Adapter{}).Validate(ctxb(), r, m, dst, nil); err != nil || !v.OK {
		t.Fatalf("validate: %v %+v", err, v)
	}

	before := r.Stats().StoredAdded
	mustExec(t, dbConnect(t, src.Settings["database"]), mutateSQL)
	want2 := fingerprint(t, src)
	m2 := mustBackup(t, Adapter{Parallel: 3}, r, src)
	added := r.Stats().StoredAdded - before
	meta2, err := ReadMeta(ctxb(), r, m2)
	if err != nil {
		t.Fatal(err)
	}
	first := int64(0)
	for _, tb := range meta.Tables {
		first += tb.Bytes
	}
	t.Logf("the next day's backup stored %d bytes for %d bytes of COPY text (%.1f%%)", added, first, 100*float64(added)/float64(first))
	if added*10 > first {
		t.Errorf("the next day's backup after a 1%% change stored %d bytes for %d bytes of COPY text: want at most a tenth", added, first)
	}
	dst2 := connFor(t, newDBName(t, "parts2"))
	if _, err := (Adapter{}).Restore(ctxb(), r, m2, dst2, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, dst2); got != want2 {
		t.Fatal("restore of the second point differs from the changed source")
	}
	if a2 := findTable(t, meta2, "app", "accounts"); a2.Rows != 50100 {
		t.Errorf("accounts on day 2: %d rows, want 50100", a2.Rows)
	}
}

// TestNextDayDeduplicates measures what the second backup adds to the vault
// (the repository's counters are cumulative, so the difference).
func TestNextDayDeduplicates(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	mustBackup(t, Adapter{}, r, src)
	first := r.Stats().StoredAdded
	mustExec(t, dbConnect(t, src.Settings["database"]), mutateSQL)
	want := fingerprint(t, src)
	m2 := mustBackup(t, Adapter{}, r, src)
	second := r.Stats().StoredAdded - first
	t.Logf("first backup stored %d bytes, the next day's %d (%.1f%%)", first, second, 100*float64(second)/float64(first))
	if second*10 > first {
		t.Errorf("second backup after a 1%% change stored %d bytes, first %d: want at most a tenth", second, first)
	}
	dst := connFor(t, newDBName(t, "dst"))
	if _, err := (Adapter{}).Restore(ctxb(), r, m2, dst, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, dst); got != want {
		t.Fatal("restore of the second point differs from the changed source")
	}
}

// TestRestoreParallelism restores with 1 and 4 sessions, into a new database
// and into an existing empty one.
func TestRestoreParallelism(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	want := fingerprint(t, src)
	m := mustBackup(t, Adapter{}, r, src)

	empty := newDBName(t, "empty")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(empty))
	for _, tc := range []struct {
		name     string
		db       string
		parallel int
	}{{"new-1", newDBName(t, "p1"), 1}, {"existing-empty-4", empty, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			dst := connFor(t, tc.db)
			res, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Parallel: tc.parallel})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if res.Items != 11 || res.Bytes == 0 || !strings.Contains(res.Summary, "10 tables (85155 rows") {
				t.Errorf("result %+v", res)
			}
			if got := fingerprint(t, dst); got != want {
				t.Fatal("restored database differs from the source")
			}
			v, err := (Adapter{}).Validate(ctxb(), r, m, dst, nil)
			if err != nil || !v.OK || len(v.Checks) != 11 {
				t.Fatalf("validate: %v %+v", err, v)
			}
		})
	}
}

// TestRestoreRefusesDataUnlessOverwrite: a database with data is refused
// before anything is written; Overwrite replaces it.
func TestRestoreRefusesDataUnlessOverwrite(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	want := fingerprint(t, src)
	m := mustBackup(t, Adapter{}, r, src)

	db := newDBName(t, "full")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db))
	conn := dbConnect(t, db)
	mustExec(t, conn, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep')")
	dst := connFor(t, db)
	_, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Parallel: 4})
	if !errors.Is(err, source.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "1 tables") || hint.Of(err) == "" {
		t.Fatalf("restore into a database with a table: %v (hint %q), want ErrTargetNotEmpty with a hint", err, hint.Of(err))
	}
	var v string
	if err := conn.QueryRow(ctxb(), "SELECT string_agg(v, ',') FROM precious").Scan(&v); err != nil || v != "keep" {
		t.Fatalf("the refused restore touched the target: %q %v", v, err)
	}
	closeConn(conn) // Overwrite drops the database: no session may use it

	if _, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Overwrite: true}); err != nil {
		t.Fatalf("restore with Overwrite: %v", err)
	}
	if got := fingerprint(t, dst); got != want {
		t.Fatal("overwritten database differs from the source (the old table must be gone)")
	}
}

// TestRestoreFailureNamesStep: a restore that fails says at which step and
// table, and leaves the database for the user to drop.
func TestRestoreFailureNamesStep(t *testing.T) {
	r, _ := repo.TestRepository(t)
	m := mustBackup(t, Adapter{}, r, connFor(t, sourceDB(t)))
	admin := dbConnect(t, "postgres")

	// An empty database (no relation) that has a schema of the same name.
	clash := newDBName(t, "clash")
	mustExec(t, admin, "CREATE DATABASE "+qi(clash))
	conn := dbConnect(t, clash)
	mustExec(t, conn, "CREATE SCHEMA app")
	closeConn(conn)
	_, err := (Adapter{}).Restore(ctxb(), r, m, connFor(t, clash), source.RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "schema (pre-data)") || !strings.Contains(err.Error(), `schema "app" already exists`) ||
		!strings.Contains(hint.Of(err), "empty it or drop it") {
		t.Errorf("restore into a database with a clashing schema: %v (hint %q)", err, hint.Of(err))
	}

	// A LATIN1 database cannot hold app.accounts' "✓".
	latin1 := newDBName(t, "latin1")
	mustExec(t, admin, "CREATE DATABASE "+qi(latin1)+" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
	_, err = (Adapter{}).Restore(ctxb(), r, m, connFor(t, latin1), source.RestoreOptions{Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), "data: table app.accounts") || !strings.Contains(err.Error(), "LATIN1") {
		t.Errorf("restore into a LATIN1 database: %v", err)
	}
}

// TestNonUTF8Databases: a LATIN1 database (converted to UTF-8 in the
// vault) and a SQL_ASCII one (bytes kept as they are) come back the same.
func TestNonUTF8Databases(t *testing.T) {
	for _, tc := range []struct{ encoding, data string }{
		{"LATIN1", `CREATE TABLE "café" (id int PRIMARY KEY, "naïve" text); INSERT INTO "café" VALUES (1, 'crème brûlée'), (2, E'tab\there')`},
		{"SQL_ASCII", `CREATE TABLE raw (id int PRIMARY KEY, b text); INSERT INTO raw VALUES (1, E'\xff\xfe not utf-8 \xc3'), (2, 'ascii')`},
	} {
		t.Run(tc.encoding, func(t *testing.T) {
			db := newDBName(t, "enc")
			mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db)+" TEMPLATE template0 ENCODING '"+tc.encoding+"' LC_COLLATE 'C' LC_CTYPE 'C'")
			conn := dbConnect(t, db)
			mustExec(t, conn, tc.data)
			closeConn(conn)
			src := connFor(t, db)
			want := fingerprint(t, src)
			r, _ := repo.TestRepository(t)
			m := mustBackup(t, Adapter{}, r, src)
			meta, err := ReadMeta(ctxb(), r, m)
			if err != nil || meta.Encoding != tc.encoding || len(meta.Tables) != 1 || meta.Tables[0].Rows != 2 {
				t.Fatalf("meta %+v: %v", meta, err)
			}
			dst := connFor(t, newDBName(t, "dst"))
			if _, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := fingerprint(t, dst); got != want {
				t.Fatalf("restored %s database differs:\n got  %s\n want %s", tc.encoding, got, want)
			}
			if v, err := (Adapter{}).Validate(ctxb(), r, m, dst, nil); err != nil || !v.OK {
				t.Fatalf("validate: %v %+v", err, v)
			}
		})
	}
}

// TestValidateChecks: mismatches and bad checks are failed checks, not
// errors; checks cannot change the database.
func TestValidateChecks(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	m := mustBackup(t, Adapter{}, r, src)
	dst := connFor(t, newDBName(t, "dst"))
	if _, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	mustExec(t, dbConnect(t, dst.Settings["database"]), "DROP TABLE app.empty; DELETE FROM app.legacy_child WHERE id = 101")
	checks := []source.Check{
		{Name: "null", Query: "SELECT NULL::int", Expect: "NULL"},
		{Name: "text", Query: "SELECT 'a' || 'b'", Expect: "ab"},
		{Name: "two rows", Query: "SELECT 1 UNION ALL SELECT 2", Expect: "1"},
		{Name: "syntax", Query: "SELEC 1", Expect: "1"},
		{Name: "writes", Query: "WITH d AS (DELETE FROM app.orders RETURNING 1) SELECT count(*) FROM d", Expect: "0"},
	}
	v, err := (Adapter{}).Validate(ctxb(), r, m, dst, checks)
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]string{}
	for _, c := range v.Failed() {
		failed[c.Name] = c.Got
	}
	if v.OK || len(failed) != 5 || failed["rows app.legacy_child"] != "49" || !strings.HasPrefix(failed["rows app.empty"], "error: ") ||
		!strings.Contains(failed["two rows"], "2 rows") || !strings.HasPrefix(failed["syntax"], "error: ") ||
		!strings.Contains(failed["writes"], "read-only") {
		t.Fatalf("failed checks %q, summary %q", failed, v.Summary)
	}
	if !strings.Contains(v.Summary, "5 of") {
		t.Errorf("summary %q", v.Summary)
	}
	var n int64
	if err := dbConnect(t, dst.Settings["database"]).QueryRow(ctxb(), "SELECT count(*) FROM app.orders").Scan(&n); err != nil || n != 10000 {
		t.Fatalf("a check changed the database: %d orders, %v", n, err)
	}
	// A target that cannot be reached cannot be validated at all.
	if _, err := (Adapter{}).Validate(ctxb(), r, m, connFor(t, newDBName(t, "missing")), nil); err == nil {
		t.Fatal("validate of a missing database succeeded")
	}
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestBackupFailuresCommitNothing: every fault is a clear error and leaves no
// recovery point.
func TestBackupFailuresCommitNothing(t *testing.T) {
	pw := os.Getenv("PGPASSWORD")
	fails := func(t *testing.T, a Adapter, c source.Conn, want string) error {
		t.Helper()
		r, _ := repo.TestRepository(t)
		_, err := backupOnce(t, a, r, c)
		if err == nil {
			t.Fatal("backup succeeded")
		}
		t.Logf("error: %v (hint: %s)", err, hint.Of(err))
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to mention %q", err, want)
		}
		if len(pw) >= 4 && strings.Contains(err.Error(), pw) {
			t.Errorf("error %q contains the password", err)
		}
		if n := points(t, r); n != 0 {
			t.Fatalf("%d recovery points after a failed backup", n)
		}
		return err
	}

	t.Run("NoPgDump", func(t *testing.T) {
		fails(t, Adapter{BinDir: t.TempDir()}, connFor(t, sourceDB(t)), "pg_dump not found")
	})

	t.Run("PgDumpExitsNonZero", func(t *testing.T) {
		dir := t.TempDir()
		writeScript(t, filepath.Join(dir, "pg_dump"), `
if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 15.99"; exit 0; fi
echo "$@" > "$(dirname "$0")/args"
env > "$(dirname "$0")/env"
printf 'PGDMP partial output'
echo "pg_dump: error: boom, the schema could not be read" >&2
exit 1
`)
		err := fails(t, Adapter{BinDir: dir}, connFor(t, sourceDB(t)), "boom, the schema could not be read")
		if !strings.Contains(err.Error(), "dump the schema") {
			t.Errorf("error %q: want the step", err)
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		env, _ := os.ReadFile(filepath.Join(dir, "env"))
		if !strings.Contains(string(args), "--snapshot=") || (len(pw) >= 4 && strings.Contains(string(args), pw)) {
			t.Errorf("pg_dump arguments %q: want --snapshot and no password", args)
		}
		if !strings.Contains(string(env), "\nPGPASSWORD="+pw+"\n") || !strings.Contains(string(env), "\nPGAPPNAME=coffre-backup\n") {
			t.Error("pg_dump's environment lacks PGPASSWORD or PGAPPNAME")
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		t.Setenv("COFFRE_TEST_PG_WRONG_PASSWORD", "not-the-password")
		c := connFor(t, sourceDB(t)).With(map[string]string{"password": "env:COFFRE_TEST_PG_WRONG_PASSWORD"})
		if err := fails(t, Adapter{}, c, "password authentication failed"); hint.Of(err) == "" || !errors.Is(err, source.ErrAuth) {
			t.Errorf("error %q has no hint or is not source.ErrAuth", err)
		}
	})

	t.Run("PlainPasswordRefused", func(t *testing.T) {
		c := connFor(t, sourceDB(t)).With(map[string]string{"password": "hunter2-plain"})
		if err := fails(t, Adapter{}, c, "must be a reference"); strings.Contains(err.Error(), "hunter2") || !errors.Is(err, source.ErrSecretUnavailable) {
			t.Errorf("error %q contains the plain password", err)
		}
	})

	t.Run("NoSuchDatabase", func(t *testing.T) {
		fails(t, Adapter{}, connFor(t, newDBName(t, "missing")), "does not exist")
	})

	// Killed while app.accounts streams: the hook holds the first bytes
	// until the sessions are gone, so the kill lands mid-stream.
	for _, tc := range []struct {
		name string
		kill func(ctx context.Context, admin *pgx.Conn, db string) error
	}{
		{"ConnectionsKilledMidCopy", func(ctx context.Context, admin *pgx.Conn, db string) error {
			_, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity
				WHERE datname = $1 AND application_name = 'coffre-backup'`, db)
			return err
		}},
		{"DatabaseDroppedMidCopy", dropDatabase},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := sourceDB(t)
			admin := dbConnect(t, "postgres")
			var once sync.Once
			testHookCopy = func(schema, table string) {
				if table != "accounts" {
					return
				}
				once.Do(func() {
					if err := tc.kill(ctxb(), admin, db); err != nil {
						t.Errorf("kill: %v", err)
					}
				})
			}
			t.Cleanup(func() { testHookCopy = nil })
			err := fails(t, Adapter{}, connFor(t, db), "the backup's sessions were lost")
			if hint.Of(err) == "" {
				t.Errorf("error %q has no hint", err)
			}
		})
	}
}

// TestRoles: with roles=true, pg_dumpall's roles are stored and restored on
// request; when pg_dumpall fails the backup goes on with a warning.
func TestRoles(t *testing.T) {
	t.Run("Included", func(t *testing.T) {
		r, _ := repo.TestRepository(t)
		src := connFor(t, sourceDB(t)).With(map[string]string{"roles": "true"})
		want := fingerprint(t, src)
		m := mustBackup(t, Adapter{}, r, src)
		meta, err := ReadMeta(ctxb(), r, m)
		if err != nil {
			t.Fatal(err)
		}
		if !meta.Roles.Included || !strings.Contains(string(readFile(t, r, m, rolesPath)), "CREATE ROLE "+src.Settings["user"]) {
			t.Fatalf("roles %+v: want roles.sql with the backup's role", meta.Roles)
		}
		dst := connFor(t, newDBName(t, "dst")).With(map[string]string{"roles": "true"})
		res, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{})
		if err != nil {
			t.Fatalf("restore with roles and owners: %v", err)
		}
		// The test role may not create roles: the failed statements are
		// reported, not fatal.
		if !strings.Contains(res.Summary, "role statements failed") || strings.Contains(res.Summary, "owners and privileges not restored") {
			t.Errorf("summary %q: want the failed role statements reported and owners kept", res.Summary)
		}
		if got := fingerprint(t, dst); got != want {
			t.Fatal("restored database differs from the source")
		}
	})

	t.Run("UnavailableIsAWarning", func(t *testing.T) {
		pgDump, err := (Adapter{}).tool("pg_dump")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.Symlink(pgDump, filepath.Join(dir, "pg_dump")); err != nil {
			t.Fatal(err)
		}
		writeScript(t, filepath.Join(dir, "pg_dumpall"), `echo "pg_dumpall: error: query failed: ERROR:  permission denied for table pg_authid" >&2; exit 1`)
		r, _ := repo.TestRepository(t)
		m := mustBackup(t, Adapter{BinDir: dir}, r, connFor(t, sourceDB(t)).With(map[string]string{"roles": "true"}))
		meta, err := ReadMeta(ctxb(), r, m)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Roles.Included || !strings.Contains(meta.Roles.Reason, "permission denied for table pg_authid") ||
			!strings.Contains(strings.Join(meta.Warnings, " "), "roles not included") {
			t.Fatalf("roles %+v, warnings %q", meta.Roles, meta.Warnings)
		}
		if _, err := stream.Lookup(ctxb(), r, m.Tree, rolesPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("roles.sql: %v, want none", err)
		}
	})
}

// TestSettings: bad settings are refused before connecting.
func TestSettings(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"host": "h"}, "database is required"},
		{map[string]string{"database": "d", "port": "x"}, "not a TCP port"},
		{map[string]string{"database": "d", "sslmode": "maybe"}, "sslmode"},
		{map[string]string{"database": "d", "roles": "yes"}, "roles"},
		{map[string]string{"database": "d", "owners": "all"}, "owners"},
		{map[string]string{"database": "d", "order": "sorted"}, "want range, key or physical"},
		{map[string]string{"database": "d", "maintenance_work_mem": "lots"}, "maintenance_work_mem \"lots\""},
		{map[string]string{"database": "d", "maintenance_work_mem": "64MB -c fsync=off"}, "maintenance_work_mem"},
	} {
		_, err := parseSettings(source.Conn{Resource: "r", Settings: tc.set})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("settings %v: %v, want an error about %s", tc.set, err, tc.want)
		}
	}
	s, err := parseSettings(source.Conn{Settings: map[string]string{"database": "d"}})
	if err != nil || s.port != 5432 || s.sslmode != "prefer" || s.owners != "none" || s.roles {
		t.Errorf("defaults: %+v %v", s, err)
	}
	if s.indexMem != defaultIndexMem {
		t.Errorf("maintenance_work_mem by default: %q, want %q", s.indexMem, defaultIndexMem)
	}
	for in, want := range map[string]string{"server": "", "1GB": "1GB", "262144": "262144"} {
		s, err := parseSettings(source.Conn{Settings: map[string]string{"database": "d", "maintenance_work_mem": in}})
		if err != nil || s.indexMem != want {
			t.Errorf("maintenance_work_mem %q: %q, %v; want %q", in, s.indexMem, err, want)
		}
	}
	if p := tablePath("a.b", "c"); p == tablePath("a", "b.c") || p != "data/a%2Eb.c.copy" {
		t.Errorf("table paths are ambiguous: %s", p)
	}
}

// TestRestoreIndexMemory: the pg_restore runs that build indexes (each
// table's early ones and the final post-data) get the target's
// maintenance_work_mem (64MB by default, none with "server") through
// PGOPTIONS, and the others do not. pg_restore is the real one, behind a
// script that records its environment.
func TestRestoreIndexMemory(t *testing.T) {
	r, _ := repo.TestRepository(t)
	m := mustBackup(t, Adapter{}, r, connFor(t, sourceDB(t)))
	for _, tc := range []struct{ setting, want string }{
		{"", "-c maintenance_work_mem=64MB"},
		{"8MB", "-c maintenance_work_mem=8MB"},
		{"server", ""},
	} {
		t.Run("setting="+tc.setting, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{"pg_restore", "psql"} {
				real, err := (Adapter{}).tool(name)
				if err != nil {
					t.Fatal(err)
				}
				if name == "psql" {
					if err := os.Symlink(real, filepath.Join(dir, name)); err != nil {
						t.Fatal(err)
					}
					continue
				}
				writeScript(t, filepath.Join(dir, name), `echo "$PGOPTIONS|$*" >> "$(dirname "$0")/calls"
exec `+real+` "$@"
`)
			}
			dst := connFor(t, newDBName(t, "mem"))
			if tc.setting != "" {
				dst = dst.With(map[string]string{"maintenance_work_mem": tc.setting})
			}
			res, err := (Adapter{BinDir: dir}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Validate: true})
			if err != nil {
				t.Fatal(err)
			}
			if v := res.Validation; v == nil || !v.OK {
				t.Fatalf("validation: %+v", v)
			}
			calls, err := os.ReadFile(filepath.Join(dir, "calls"))
			if err != nil {
				t.Fatal(err)
			}
			builds := 0
			for _, l := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
				opts, args, _ := strings.Cut(l, "|")
				want := ""
				if strings.Contains(args, "--section=post-data") {
					want = tc.want
					builds++
				}
				if opts != want {
					t.Errorf("pg_restore %s: PGOPTIONS %q, want %q", args, opts, want)
				}
			}
			if builds < 2 {
				t.Errorf("%d index-building pg_restore runs, want the early ones and the final post-data:\n%s", builds, calls)
			}
		})
	}
}

// TestRestoreValidates: a restore asked to validate counts each table as it
// completes and returns the validation Validate would return afterwards,
// user checks included.
func TestRestoreValidates(t *testing.T) {
	r, _ := repo.TestRepository(t)
	src := connFor(t, sourceDB(t))
	m := mustBackup(t, Adapter{}, r, src)
	dst := connFor(t, newDBName(t, "dst"))
	checks := []source.Check{
		{Name: "orders", Query: "SELECT count(*) FROM app.orders", Expect: "10000"},
		{Name: "wrong", Query: "SELECT 1", Expect: "2"},
	}
	res, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Validate: true, Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	v := res.Validation
	if v == nil {
		t.Fatal("no validation in the result of a restore asked to validate")
	}
	after, err := (Adapter{}).Validate(ctxb(), r, m, dst, checks)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || len(v.Failed()) != 1 || v.Failed()[0].Name != "wrong" {
		t.Fatalf("validation during the restore: OK=%v, failed %+v", v.OK, v.Failed())
	}
	if len(v.Checks) != len(after.Checks) {
		t.Fatalf("%d checks during the restore, %d after it", len(v.Checks), len(after.Checks))
	}
	rows := 0
	for i, c := range v.Checks {
		a := after.Checks[i]
		if c.Name != a.Name || c.Got != a.Got || c.Want != a.Want || c.OK != a.OK {
			t.Errorf("check %d: %+v during the restore, %+v after it", i, c, a)
		}
		if strings.HasPrefix(c.Name, "rows ") {
			rows++
		}
	}
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	if rows != len(meta.Tables) || rows == 0 {
		t.Fatalf("%d row counts for %d tables", rows, len(meta.Tables))
	}
	// Without the option there is none.
	dst2 := connFor(t, newDBName(t, "dst2"))
	if res, err := (Adapter{}).Restore(ctxb(), r, m, dst2, source.RestoreOptions{}); err != nil || res.Validation != nil {
		t.Fatalf("restore without Validate: validation %+v, %v", res, err)
	}
}
