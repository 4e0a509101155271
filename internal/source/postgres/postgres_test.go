package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/sourcetest"
)

// The tests need a PostgreSQL server: COFFRE_TEST_PG_DSN (without password)
// and PGPASSWORD, as scripts/services.sh writes them. Without it they skip,
// unless COFFRE_TEST_REQUIRE_SERVICES or CI is set: then they fail.

func serverConfig(t testing.TB) *pgx.ConnConfig {
	t.Helper()
	dsn := os.Getenv("COFFRE_TEST_PG_DSN")
	if dsn == "" {
		if os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" || os.Getenv("CI") != "" {
			t.Fatal("COFFRE_TEST_PG_DSN is not set; run: scripts/services.sh start ENVFILE && set -a && . ENVFILE && set +a")
		}
		t.Skip("COFFRE_TEST_PG_DSN not set; start PostgreSQL with scripts/services.sh")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse COFFRE_TEST_PG_DSN: %v", err)
	}
	return cfg
}

// dbConnect connects to database db of the test server (the password from
// PGPASSWORD).
func dbConnect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	cfg := serverConfig(t)
	cfg.Database = db
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

func mustExec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + "…"
	}
	return s
}

// newDBName returns a unique database name, dropped (if it exists) when t
// ends.
func newDBName(t testing.TB, prefix string) string {
	t.Helper()
	serverConfig(t)
	var b [5]byte
	_, _ = rand.Read(b[:])
	name := "coffre_pgsrc_" + prefix + "_" + hex.EncodeToString(b[:])
	t.Cleanup(func() { dropDB(t, name) })
	return name
}

func dropDB(t testing.TB, name string) {
	cfg := serverConfig(t)
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Errorf("drop database %s: %v", name, err)
		return
	}
	defer closeConn(conn)
	if err := dropDatabase(context.Background(), conn, name); err != nil {
		t.Errorf("drop database %s: %v", name, err)
	}
}

// dropDatabase ends the test role's sessions on database name (waiting for
// them to exit) and drops it. DROP DATABASE … WITH (FORCE) is no use: a
// role that is not superuser cannot terminate an autovacuum worker, which
// a plain DROP DATABASE waits for. A session that connects in between (a
// backup's late pg_dump) makes the drop fail: end it and try again.
func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	var err error
	for range 10 {
		if _, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity
			WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()`, name); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+qi(name))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55006" {
			return err
		}
	}
	return err
}

// connFor is the adapter's connection to database db of the test server,
// with the password by reference.
func connFor(t testing.TB, db string) source.Conn {
	cfg := serverConfig(t)
	return source.Conn{Resource: "pg-" + db, Settings: map[string]string{
		"host": cfg.Host, "port": strconv.Itoa(int(cfg.Port)), "user": cfg.User, "database": db,
		"password": "env:PGPASSWORD", "sslmode": "disable",
	}}
}

// The dataset: a template database built once per test binary and cloned
// (CREATE DATABASE … TEMPLATE) for every test that needs a source.
const datasetSQL = `
CREATE SCHEMA app;
CREATE SCHEMA "odd schema";

CREATE TABLE app.accounts (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	email text NOT NULL,
	name text,
	balance numeric(14, 2),
	score double precision,
	created timestamptz NOT NULL,
	note text,
	attrs jsonb,
	avatar bytea
);
INSERT INTO app.accounts (email, name, balance, score, created, note, attrs, avatar)
SELECT 'user' || i || '@example.com',
	'Name ' || md5(i::text),
	((i * 7919) % 1000000) / 100.0,
	CASE WHEN i % 9 = 0 THEN NULL ELSE i / 7.0 END,
	timestamptz '2020-01-01 00:00:00+00' + i * interval '17 minutes',
	CASE i % 10 WHEN 0 THEN NULL
		WHEN 1 THEN E'tab\there\nnew line \\ backslash \\N \\. end'
		WHEN 2 THEN 'ünïcødé ✓ ' || i
		ELSE 'note ' || repeat(md5((i * 3)::text), 1 + i % 3) END,
	CASE WHEN i % 5 = 0 THEN NULL ELSE jsonb_build_object('i', i, 'tags', jsonb_build_array('a', 'b', i % 7), 'q', E'quo"te\\') END,
	CASE WHEN i % 4 = 0 THEN NULL ELSE decode(md5(i::text) || md5((i + 1)::text), 'hex') END
FROM generate_series(1, 50000) AS i;
CREATE INDEX accounts_email_idx ON app.accounts (email);
-- A trigger that must not fire while the data is loaded.
CREATE FUNCTION app.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'TRIGGERED'; RETURN NEW; END $$;
CREATE TRIGGER accounts_stamp BEFORE INSERT ON app.accounts FOR EACH ROW EXECUTE FUNCTION app.stamp();

CREATE TABLE app.events (at timestamptz NOT NULL, kind text, payload text);
INSERT INTO app.events SELECT timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', 'kind' || (i % 13), repeat('p', i % 50)
FROM generate_series(1, 20000) AS i;

CREATE TABLE app.orders (
	id serial PRIMARY KEY,
	account_id bigint NOT NULL REFERENCES app.accounts (id),
	qty int NOT NULL,
	price_cents bigint NOT NULL,
	total_cents bigint GENERATED ALWAYS AS (qty * price_cents) STORED
);
INSERT INTO app.orders (account_id, qty, price_cents) SELECT 1 + (i * 31) % 50000, 1 + i % 5, 100 + i % 1000 FROM generate_series(1, 10000) AS i;

CREATE TABLE app.measurements (id bigint NOT NULL, at date NOT NULL, v numeric, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.measurements_2023 PARTITION OF app.measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE app.measurements_2024 PARTITION OF app.measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO app.measurements SELECT i, date '2023-01-01' + (i % 700), i * 1.5 FROM generate_series(1, 5000) AS i;

CREATE TABLE app.legacy (id int PRIMARY KEY, v text);
CREATE TABLE app.legacy_child (extra text) INHERITS (app.legacy);
INSERT INTO app.legacy SELECT i, 'parent ' || i FROM generate_series(1, 100) AS i;
INSERT INTO app.legacy_child SELECT i, 'child ' || i, 'x' FROM generate_series(101, 150) AS i;

CREATE VIEW app.rich AS SELECT id, email FROM app.accounts WHERE balance > 9000;
CREATE MATERIALIZED VIEW app.order_totals AS SELECT account_id, sum(total_cents) AS total FROM app.orders GROUP BY account_id;
CREATE SEQUENCE app.invoice_no START 1000;
SELECT nextval('app.invoice_no') FROM generate_series(1, 42);

CREATE TABLE "odd schema"."Weird.Name/x" ("Col A" text, "ü" int, f real);
INSERT INTO "odd schema"."Weird.Name/x" VALUES ('a', 1, 0.1), (NULL, NULL, 'NaN'), (E'\\.', 3, '-Infinity'), ('.', 4, 1e-38);
CREATE TABLE app.empty (id int PRIMARY KEY);
CREATE TABLE app.documents (id int PRIMARY KEY, body oid NOT NULL);
INSERT INTO app.documents VALUES (1, lo_from_bytea(0, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 6000) AS i)::bytea));
`

// mutateSQL changes about 1% of the dataset, in contiguous ranges as a
// day's work usually does, and changes row counts.
const mutateSQL = `
UPDATE app.accounts SET balance = balance + 1, note = 'changed' WHERE id BETWEEN 20001 AND 20500;
INSERT INTO app.accounts (email, created) SELECT 'new' || i || '@example.com', timestamptz '2025-01-01 00:00:00+00' FROM generate_series(1, 100) AS i;
DELETE FROM app.events WHERE at < timestamptz '2024-01-01 00:03:20+00';
INSERT INTO app.orders (account_id, qty, price_cents) SELECT i, 1, 999 FROM generate_series(1, 50) AS i;
REFRESH MATERIALIZED VIEW app.order_totals;
SELECT nextval('app.invoice_no') FROM generate_series(1, 3);
SELECT lo_put((SELECT body FROM app.documents WHERE id = 1), 1000, 'CHANGED');
`

var template struct {
	once sync.Once
	name string
	err  error
}

// sourceDB returns a new database holding the dataset.
func sourceDB(t testing.TB) string {
	t.Helper()
	cfg := serverConfig(t)
	template.once.Do(func() {
		var b [5]byte
		_, _ = rand.Read(b[:])
		name := "coffre_pgsrc_template_" + hex.EncodeToString(b[:])
		ctx := context.Background()
		cfg.Database = "postgres"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			template.err = err
			return
		}
		defer closeConn(conn)
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+qi(name)); err != nil {
			template.err = err
			return
		}
		template.name = name
		cfg.Database = name
		dc, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			template.err = err
			return
		}
		defer closeConn(dc)
		if _, err := dc.Exec(ctx, datasetSQL); err != nil {
			template.err = fmt.Errorf("create the dataset: %w", err)
		}
	})
	if template.err != nil {
		t.Fatalf("dataset template: %v", template.err)
	}
	name := newDBName(t, "src")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(name)+" TEMPLATE "+qi(template.name))
	return name
}

func TestMain(m *testing.M) {
	code := m.Run()
	if template.name != "" {
		if cfg, err := pgx.ParseConfig(os.Getenv("COFFRE_TEST_PG_DSN")); err == nil {
			cfg.Database = "postgres"
			if conn, err := pgx.ConnectConfig(context.Background(), cfg); err == nil {
				err = dropDatabase(context.Background(), conn, template.name)
				closeConn(conn)
				if err != nil {
					fmt.Fprintln(os.Stderr, "drop the dataset template:", err)
				}
			}
		}
	}
	os.Exit(code)
}

// fingerprint digests everything a restore must bring back: every table's,
// view's and materialized view's rows, indexes, constraints, triggers,
// sequences and large objects.
func fingerprint(t testing.TB, c source.Conn) string {
	t.Helper()
	ctx := context.Background()
	conn := dbConnect(t, c.Settings["database"])
	defer closeConn(conn)
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	rels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, r := range rels {
		var n int64
		var sum string
		if err := conn.QueryRow(ctx, "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM "+r+" t").Scan(&n, &sum); err != nil {
			t.Fatalf("fingerprint %s: %v", r, err)
		}
		parts = append(parts, fmt.Sprintf("%s:%d:%s", r, n, sum))
	}
	for _, q := range []string{
		`SELECT coalesce(string_agg(indexdef, E'\n' ORDER BY indexdef), '') FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`,
		`SELECT coalesce(string_agg(d, E'\n' ORDER BY d), '') FROM (SELECT format('%s %s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)) AS d
			FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) AS x`,
		`SELECT coalesce(string_agg(d, ',' ORDER BY d), '') FROM (SELECT format('%s.%s', tgrelid::regclass, tgname) AS d FROM pg_trigger WHERE NOT tgisinternal) AS x`,
		`SELECT coalesce(string_agg(d, ',' ORDER BY d), '') FROM (SELECT format('%I.%I=%s', schemaname, sequencename, coalesce(last_value::text, 'null')) AS d FROM pg_sequences) AS x`,
		`SELECT coalesce(string_agg(oid || '=' || md5(lo_get(oid)), ',' ORDER BY oid), '') FROM pg_largeobject_metadata`,
	} {
		var s string
		if err := conn.QueryRow(ctx, q).Scan(&s); err != nil {
			t.Fatalf("fingerprint: %s: %v", firstLine(q), err)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

func kill(t *testing.T, c source.Conn) {
	cfg := serverConfig(t)
	cfg.Database = "postgres"
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Errorf("kill: %v", err)
		return
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity
		WHERE datname = $1 AND application_name = $2`, c.Settings["database"], appBackup); err != nil {
		t.Errorf("kill: %v", err)
	}
}

func harness(t *testing.T) sourcetest.Harness {
	t.Setenv("COFFRE_TEST_PG_WRONG_PASSWORD", "not-the-password")
	return sourcetest.Harness{
		Adapter: Adapter{},
		Source:  func(t *testing.T) source.Conn { return connFor(t, sourceDB(t)) },
		Mutate: func(t *testing.T, c source.Conn) {
			mustExec(t, dbConnect(t, c.Settings["database"]), mutateSQL)
		},
		NewTarget: func(t *testing.T) source.Conn { return connFor(t, newDBName(t, "dst")) },
		Fill: func(t *testing.T, c source.Conn) {
			mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(c.Settings["database"]))
			mustExec(t, dbConnect(t, c.Settings["database"]), "CREATE TABLE precious (id int PRIMARY KEY, v text); INSERT INTO precious SELECT i, 'keep ' || i FROM generate_series(1, 10) AS i")
		},
		Fingerprint: func(t *testing.T, c source.Conn) string { return fingerprint(t, c) },
		BadCredentials: func(c source.Conn) source.Conn {
			return c.With(map[string]string{"password": "env:COFFRE_TEST_PG_WRONG_PASSWORD"})
		},
		Kill: kill,
		Checks: []source.Check{
			{Name: "accounts", Query: "SELECT count(*) FROM app.accounts", Expect: "50000"},
			{Name: "invoice number", Query: "SELECT last_value FROM app.invoice_no", Expect: "1041"},
			{Name: "an email", Query: "SELECT email FROM app.accounts WHERE id = 7", Expect: "user7@example.com"},
		},
		FailingCheck: &source.Check{Name: "orders", Query: "SELECT count(*) FROM app.orders", Expect: "1"},
	}
}

func TestConformance(t *testing.T) {
	sourcetest.Run(t, harness(t))
}

// backupOnce stores one recovery point of c in r.
func backupOnce(t *testing.T, a Adapter, r *repo.Repository, c source.Conn) (*snapshot.Manifest, error) {
	t.Helper()
	ctx := context.Background()
	lock, err := r.Lock(ctx, false, "test backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	return a.Backup(ctx, archiver.New(r, archiver.Options{BeforeCommit: lock.Check}), c)
}

func points(t *testing.T, r *repo.Repository) int {
	t.Helper()
	ids, err := r.List(context.Background(), blob.KindSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

// The client programs are run directly, not through Debian's pg_wrapper
// (a Perl script costing 60-120 ms per call), whenever a version's own
// binary is installed.
func TestToolSkipsPgWrapper(t *testing.T) {
	for _, name := range []string{"pg_dump", "pg_restore", "psql"} {
		p, err := (Adapter{}).tool(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Fatalf("%s: %s is not an executable: %v", name, p, err)
		}
		direct := newestDebianBin(name)
		if isPgWrapper(p) && direct != "" {
			t.Errorf("%s: %s runs pg_wrapper, though %s is installed", name, p, direct)
		}
		if lp, err := exec.LookPath(name); err == nil && !isPgWrapper(lp) && p != lp {
			t.Errorf("%s: %s chosen over %s, the first in PATH", name, p, lp)
		}
	}
}
