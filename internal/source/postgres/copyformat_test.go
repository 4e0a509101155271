package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// typesSQL is a table of many types, all with a portable binary form, and
// rows full of the values text formats trip on.
const typesSQL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(12, 3) CHECK (VALUE >= 0);
CREATE TYPE point2 AS (x int, y double precision, label text, tags text[]);
CREATE TABLE kinds (
	id int PRIMARY KEY, s int2, i int4, b int8, n numeric, t text, raw bytea, jb jsonb, js json,
	ts timestamptz, tsl timestamp, d date, tm time, iv interval, u uuid, ip inet, ok bool, f float8, r real,
	ia int[], ta text[], m2 int8[], m mood, p price, pt point2, rg int4range, c char(3), v varchar(10)
);
INSERT INTO kinds SELECT i, (i % 30000)::int2, i * 7, i::int8 * 1000000007, i / 7.0, 'row ' || i || repeat(' pad', i % 20),
	decode(md5(i::text), 'hex'), jsonb_build_object('i', i, 'a', jsonb_build_array(i, 'x')), ('{"i": ' || i || ', "s": "v"}')::json,
	timestamptz '2020-01-01 00:00:00+00' + i * interval '1 hour 7 seconds', timestamp '1999-12-31 23:59:59.123456' + i * interval '1 day',
	date '2000-02-29' + i, time '01:02:03.456789' + i * interval '1 second', i * interval '1 day 2 hours 3.5 seconds',
	md5(i::text)::uuid, ('10.' || (i % 256) || '.0.' || (i % 200) || '/24')::inet, i % 3 = 0, i / 3.0, i / 9.0,
	ARRAY[i, i + 1, NULL], ARRAY['a' || i, NULL, E'b\n,"c'], ARRAY[[i, 2], [3, NULL]]::int8[],
	(ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood, (i * 1.5)::price, ROW(i, i / 2.0, 'l' || i, ARRAY['t', NULL])::point2,
	int4range(i, i + 10), 'c' || (i % 10), 'v' || i
FROM generate_series(1, 3000) AS i;
INSERT INTO kinds (id) VALUES (-1);
INSERT INTO kinds (id, t, raw, f, r, n, ts, d, ia, ta, m2, jb, js, pt, iv) VALUES
	(-2, E'tab\there\nnew line \\ backslash \\N \\. end\r\n', '\x00ff005c0a00'::bytea, 'NaN', 'Infinity', 'NaN',
	'infinity', '-infinity', '{}', '{{"x y","\\\\"},{NULL,""}}', '[0:1][2:3]={{1,2},{3,4}}', '{"a": [null, 1.5e300, "\u00e9"]}',
	'[1, 2.50, "\\\\n"]', ROW(NULL, 'NaN', E'\n', '{}'), '-1 year 2 mons -3 days 04:05:06.789'),
	(-3, '', '', '-Infinity', '-Infinity', '-1e-1000', '1900-01-01 00:00:00+00', '4713-01-01 BC', NULL, '{NULL}', '{}', 'null', 'null',
	ROW(NULL, NULL, NULL, NULL), '0');
`

// rowsDigest digests a table's rows in id order.
func rowsDigest(t *testing.T, db, table string) string {
	t.Helper()
	var s string
	if err := dbConnect(t, db).QueryRow(ctxb(), "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM "+table+" t").Scan(&s); err != nil {
		t.Fatalf("digest of %s: %v", table, err)
	}
	return s
}

// restoreInto restores m into a new database and returns its connection.
func restoreInto(t *testing.T, r *repo.Repository, m *snapshot.Manifest, prefix string) source.Conn {
	t.Helper()
	dst := connFor(t, newDBName(t, prefix))
	if _, err := (Adapter{}).Restore(ctxb(), r, m, dst, source.RestoreOptions{Parallel: 3}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if v, err := (Adapter{}).Validate(ctxb(), r, m, dst, nil); err != nil || !v.OK {
		t.Fatalf("validate: %v %+v", err, v)
	}
	return dst
}

// TestBinaryRoundTrip: under copy_format auto (the default) a table of many
// types is copied in binary, whole (order=key) or in parts
// (order=physical), and comes back the same.
func TestBinaryRoundTrip(t *testing.T) {
	db := newDBName(t, "types")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db))
	mustExec(t, dbConnect(t, db), typesSQL)
	src := connFor(t, db)
	want := rowsDigest(t, db, "kinds")
	wantAll := fingerprint(t, src)

	defer func(old int64) { partBlocks = old }(partBlocks)
	partBlocks = 8
	for _, order := range []string{"key", "physical"} {
		t.Run(order, func(t *testing.T) {
			r, _ := repo.TestRepository(t)
			m := mustBackup(t, Adapter{Parallel: 3}, r, src.With(map[string]string{"order": order}))
			meta, err := ReadMeta(ctxb(), r, m)
			if err != nil {
				t.Fatal(err)
			}
			k := findTable(t, meta, "public", "kinds")
			if k.Format != "binary" || k.Rows != 3003 {
				t.Fatalf("kinds: format %q, %d rows: want binary, 3003", k.Format, k.Rows)
			}
			if !strings.Contains(string(readFile(t, r, m, metaPath)), `"format": "binary"`) {
				t.Error(`meta.json has no "format": "binary"`)
			}
			paths := []string{k.Path}
			if order == "physical" {
				if len(k.Parts) < 2 {
					t.Fatalf("kinds: %d parts, want several", len(k.Parts))
				}
				paths = paths[:0]
				var rows int64
				for _, p := range k.Parts {
					paths = append(paths, p.Path)
					rows += p.Rows
				}
				if rows != 3003 {
					t.Errorf("the parts hold %d rows, want 3003", rows)
				}
			}
			// Every stream is a whole binary COPY stream, its rows counted.
			for _, p := range paths {
				b := readFile(t, r, m, p)
				var br binaryRows
				if err := br.feed(b); err != nil || br.end() != nil {
					t.Fatalf("%s: %v %v", p, err, br.end())
				}
				if !strings.HasPrefix(string(b), copySignature) {
					t.Errorf("%s starts %q", p, b[:min(len(b), 11)])
				}
			}
			dst := restoreInto(t, r, m, "types")
			if got := rowsDigest(t, dst.Settings["database"], "kinds"); got != want {
				t.Fatalf("restored rows differ: got %s, want %s", got, want)
			}
			if got := fingerprint(t, dst); got != wantAll {
				t.Fatal("restored database differs from the source")
			}
		})
	}
}

// noBinarySQL has tables whose column types have no portable binary form:
// aclitem (no send or receive function), regclass (an OID), an array of an
// enum and a composite holding one (the OIDs of types that are not built
// in), an array of aclitem; and one table that has a portable form.
const noBinarySQL = `
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TYPE tagged AS (n int, m mood);
CREATE TABLE acl (id int PRIMARY KEY, a aclitem, aa aclitem[]);
INSERT INTO acl SELECT i, format('%I=r/%I', current_user, current_user)::aclitem, ARRAY[format('%I=rw/%I', current_user, current_user)::aclitem]
	FROM generate_series(1, 3) AS i;
CREATE TABLE refs (id int PRIMARY KEY, rel regclass, typ regtype);
INSERT INTO refs VALUES (1, 'acl', 'mood'), (2, 'refs', 'tagged');
CREATE TABLE moods (id int PRIMARY KEY, ms mood[], t tagged);
INSERT INTO moods VALUES (1, '{sad,ok}', '(1,ok)'), (2, NULL, NULL);
CREATE TABLE fine (id int PRIMARY KEY, m mood);
INSERT INTO fine VALUES (1, 'ok');
`

// TestCopyFormatFallback: under auto, a table with a column type without a
// portable binary form is copied in text and restored (into a database
// where the types have other OIDs); under copy_format=binary the backup
// fails naming the tables and columns.
func TestCopyFormatFallback(t *testing.T) {
	db := newDBName(t, "nobin")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db))
	mustExec(t, dbConnect(t, db), noBinarySQL)
	src := connFor(t, db)
	want := fingerprint(t, src)

	r, _ := repo.TestRepository(t)
	m := mustBackup(t, Adapter{}, r, src)
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	for name, format := range map[string]string{"acl": "text", "refs": "text", "moods": "text", "fine": "binary"} {
		if tb := findTable(t, meta, "public", name); tb.Format != format {
			t.Errorf("table %s: format %q, want %s", name, tb.Format, format)
		}
	}
	// The restore gives the types new OIDs, and the regclass values name
	// the restored tables.
	dst := restoreInto(t, r, m, "nobin")
	if got := fingerprint(t, dst); got != want {
		t.Fatal("restored database differs from the source")
	}

	r2, _ := repo.TestRepository(t)
	_, err = backupOnce(t, Adapter{}, r2, src.With(map[string]string{"copy_format": "binary"}))
	if err == nil {
		t.Fatal("backup with copy_format=binary succeeded")
	}
	t.Logf("error: %v (hint: %s)", err, hint.Of(err))
	for _, w := range []string{
		"table public.acl column a (type aclitem): type aclitem has no binary send and receive functions",
		"column aa (type aclitem[]): type aclitem has no binary",
		"table public.refs column rel (type regclass): its binary form is an OID",
		"column typ (type regtype)",
		"table public.moods column ms (type public.mood[]): its binary form holds the OID of type public.mood, which is not built in",
		"column t (type public.tagged): its binary form holds the OID of type public.mood",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q: want it to say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "public.fine") || !strings.Contains(hint.Of(err), "copy_format") {
		t.Errorf("error %q (hint %q): want table fine left out and a hint about copy_format", err, hint.Of(err))
	}
	if n := points(t, r2); n != 0 {
		t.Errorf("%d recovery points after a failed backup", n)
	}
}

// TestCopyFormatText: copy_format=text copies every table in text, and a
// recovery point whose meta.json has no format (made before binary COPY)
// restores as text.
func TestCopyFormatText(t *testing.T) {
	src := connFor(t, sourceDB(t)).With(map[string]string{"copy_format": "text"})
	want := fingerprint(t, src)
	r, _ := repo.TestRepository(t)
	m := mustBackup(t, Adapter{Parallel: 3}, r, src)
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range meta.Tables {
		if tb.Format != "text" {
			t.Errorf("table %s: format %q, want text", tb, tb.Format)
		}
	}
	acc := findTable(t, meta, "app", "accounts")
	if s := string(readFile(t, r, m, acc.Path)); !strings.HasPrefix(s, "1\tuser1@example.com\t") ||
		!strings.Contains(s, `tab\there\nnew line \\ backslash \\N \\. end`) {
		t.Errorf("accounts stream starts %q, want COPY text", s[:min(200, len(s))])
	}
	if got := fingerprint(t, restoreInto(t, r, m, "text")); got != want {
		t.Fatal("restored database differs from the source")
	}

	// The same point with meta.json as coffre wrote it before the format
	// existed.
	old := rewriteMeta(t, r, m, meta, func(js map[string]any) {
		for _, tb := range js["tables"].([]any) {
			delete(tb.(map[string]any), "format")
		}
	})
	oldMeta, err := ReadMeta(ctxb(), r, old)
	if err != nil {
		t.Fatal(err)
	}
	if raw := string(readFile(t, r, old, metaPath)); strings.Contains(raw, `"format": "text"`) || oldMeta.Tables[0].Format != "" {
		t.Fatalf("rewritten meta.json still has formats: %.300s", raw)
	}
	if got := fingerprint(t, restoreInto(t, r, old, "old")); got != want {
		t.Fatal("restore of a point without formats differs from the source")
	}

	// An unknown format is refused before anything is written.
	future := rewriteMeta(t, r, m, meta, func(js map[string]any) {
		js["tables"].([]any)[0].(map[string]any)["format"] = "csv"
	})
	dst := connFor(t, newDBName(t, "future"))
	_, err = (Adapter{}).Restore(ctxb(), r, future, dst, source.RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), `table app.accounts: COPY format "csv"`) || hint.Of(err) == "" {
		t.Fatalf("restore of an unknown format: %v (hint %q)", err, hint.Of(err))
	}
	var exists bool
	if err := dbConnect(t, "postgres").QueryRow(ctxb(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dst.Settings["database"]).Scan(&exists); err != nil || exists {
		t.Errorf("the refused restore created the database (%v)", err)
	}
}

// rewriteMeta stores a copy of recovery point m whose meta.json edit
// changed.
func rewriteMeta(t *testing.T, r *repo.Repository, m *snapshot.Manifest, meta *Meta, edit func(map[string]any)) *snapshot.Manifest {
	t.Helper()
	var js map[string]any
	if err := json.Unmarshal(readFile(t, r, m, metaPath), &js); err != nil {
		t.Fatal(err)
	}
	edit(js)
	raw, err := json.MarshalIndent(js, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{meta.Schema}
	for _, d := range meta.dataStreams() {
		_, p, _ := d.describe()
		paths = append(paths, p)
	}
	for _, l := range meta.LargeObjects {
		paths = append(paths, l.Path)
	}
	if meta.Roles.Included {
		paths = append(paths, meta.Roles.Path)
	}
	if err := r.LoadIndex(ctxb()); err != nil {
		t.Fatal(err)
	}
	m2, err := archiver.New(r, archiver.Options{}).BackupStreams(ctxb(), m.Source, func(ctx context.Context, st *archiver.Streams) error {
		for _, p := range paths {
			if err := st.AddBytes(p, readFile(t, r, m, p)); err != nil {
				return err
			}
		}
		return st.AddBytes(metaPath, raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m2
}

// TestCopyFormatSetting: bad values are refused, auto is the default.
func TestCopyFormatSetting(t *testing.T) {
	_, err := parseSettings(source.Conn{Resource: "r", Settings: map[string]string{"database": "d", "copy_format": "csv"}})
	if err == nil || !strings.Contains(err.Error(), `copy_format "csv": want auto, binary or text`) || !errors.Is(err, source.ErrSettings) ||
		!strings.Contains(hint.Of(err), "copy_format (auto, binary or text)") {
		t.Errorf("copy_format csv: %v (hint %q)", err, hint.Of(err))
	}
	for in, want := range map[string]string{"": "auto", "auto": "auto", "binary": "binary", "text": "text"} {
		s, err := parseSettings(source.Conn{Settings: map[string]string{"database": "d", "copy_format": in}})
		if err != nil || s.copyFormat != want {
			t.Errorf("copy_format %q: %q %v, want %q", in, s.copyFormat, err, want)
		}
	}
}
