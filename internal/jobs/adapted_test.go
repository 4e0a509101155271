package jobs

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/catalog"
	pgcatalog "github.com/coffre/coffre/internal/catalog/postgres"
)

// redisAddr returns the Redis server scripts/services.sh started, or skips
// (fails when services are required).
func redisAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("COFFRE_TEST_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" || os.Getenv("CI") != "" {
			t.Fatal("COFFRE_TEST_REDIS_ADDR is not set; run: scripts/services.sh start ENVFILE && set -a && . ENVFILE && set +a")
		}
		t.Skip("COFFRE_TEST_REDIS_ADDR not set; start Redis with scripts/services.sh")
	}
	return addr
}

// TestRedisBackupAndRestoreJobs runs a Redis resource through the job
// runner: a backup job, then a restore job into an empty database that is
// validated against the point, then a restore into a database that has
// data, which fails without writing.
func TestRedisBackupAndRestoreJobs(t *testing.T) {
	addr := redisAddr(t)
	e := newEnv(t)
	ctx := context.Background()
	host, port, _ := strings.Cut(addr, ":")
	db := func(n int) *goredis.Client {
		c := goredis.NewClient(&goredis.Options{Addr: addr, Password: os.Getenv("COFFRE_TEST_REDIS_PASSWORD"), DB: n})
		t.Cleanup(func() { c.FlushDB(ctx); c.Close() })
		return c
	}
	src, target, full := db(11), db(12), db(13)
	for _, c := range []*goredis.Client{src, target, full} {
		if err := c.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 500; i++ {
		must(t, src.Set(ctx, "user:"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+strconv.Itoa(i), i, 0).Err())
	}
	must(t, src.HSet(ctx, "session:1", "user", "42", "ttl", "3600").Err())
	must(t, full.Set(ctx, "already", "here", 0).Err())

	res := catalog.Resource{ID: "arn:aws:elasticache:eu-west-1:123456789012:cluster:accessweaver-dev-redis", Type: "redis",
		Settings: map[string]string{"host": host, "port": port, "db": "11", "password": "env:COFFRE_TEST_REDIS_PASSWORD"}}
	must(t, e.cat.PutResource(ctx, res))
	j := e.job(catalog.Job{Resource: res.ID})
	e.runOnce()
	got := e.get(j.ID)
	if got.State != catalog.StateCompleted || got.RecoveryPoint == "" {
		t.Fatalf("redis backup job: %+v", got)
	}
	rj := e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{"recovery_point": got.RecoveryPoint, "target.db": "12"}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateCompleted || !strings.Contains(rj.Message, "validated") {
		t.Fatalf("redis restore job: %+v", rj)
	}
	if n, err := target.DBSize(ctx).Result(); err != nil || n != 501 {
		t.Fatalf("restored db has %d keys (%v), want 501", n, err)
	}
	if v, err := target.HGet(ctx, "session:1", "user").Result(); err != nil || v != "42" {
		t.Fatalf("restored hash field = %q, %v", v, err)
	}
	// A database with data is refused at once (no retry), and left alone.
	rj = e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{"recovery_point": got.RecoveryPoint, "target.db": "13"}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateFailed || rj.Attempt != 1 || !strings.Contains(rj.Message, "not empty") {
		t.Fatalf("restore into a database with data: %+v", rj)
	}
	if n, _ := full.DBSize(ctx).Result(); n != 1 {
		t.Fatalf("refused restore wrote to the target: %d keys", n)
	}
	// A wrong password fails the backup at once, without the secret in the message.
	t.Setenv("COFFRE_TEST_WRONG_REDIS_PASSWORD", "not-the-password")
	res.Settings["password"] = "env:COFFRE_TEST_WRONG_REDIS_PASSWORD"
	must(t, e.cat.PutResource(ctx, res))
	j = e.job(catalog.Job{Resource: res.ID})
	e.runOnce()
	if got = e.get(j.ID); got.State != catalog.StateFailed || got.Attempt != 1 || !strings.Contains(got.Message, "authentication failed") ||
		strings.Contains(got.Message, "not-the-password") {
		t.Fatalf("backup with a wrong password: %+v", got)
	}
}

// TestPostgresBackupAndRestoreJobs runs a PostgreSQL database through the
// job runner: a backup job, a restore job into a new database (validated,
// with a user check), and a restore whose check fails.
func TestPostgresBackupAndRestoreJobs(t *testing.T) {
	dsn := pgcatalog.TestDSN(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	srcDB, dstDB, badDB := "coffre_jobs_src_"+suffix, "coffre_jobs_dst_"+suffix, "coffre_jobs_bad_"+suffix
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+srcDB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, db := range []string{srcDB, dstDB, badDB} {
			_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		}
	})
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = srcDB
	src, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Exec(ctx, `CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, created timestamptz DEFAULT now());
		INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 2000) g;`)
	src.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	res := catalog.Resource{ID: "arn:aws:rds:eu-west-1:123456789012:db:accessweaver-dev", Type: "postgres", Settings: map[string]string{
		"host": cfg.Host, "port": strconv.Itoa(int(cfg.Port)), "user": cfg.User, "database": srcDB, "sslmode": "disable", "password": "env:PGPASSWORD"}}
	must(t, e.cat.PutResource(ctx, res))
	j := e.job(catalog.Job{Resource: res.ID})
	e.runOnce()
	got := e.get(j.ID)
	if got.State != catalog.StateCompleted || got.RecoveryPoint == "" {
		t.Fatalf("postgres backup job: %+v", got)
	}
	rj := e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{
		"recovery_point": got.RecoveryPoint, "target.database": dstDB,
		"check.users": "SELECT count(*) FROM users", "expect.users": "2000"}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateCompleted || !strings.Contains(rj.Message, "validated") {
		t.Fatalf("postgres restore job: %+v", rj)
	}
	cfg.Database = dstDB
	dst, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = dst.QueryRow(ctx, "SELECT count(*) FROM users WHERE email LIKE 'u%@example.com'").Scan(&n)
	dst.Close(ctx)
	if err != nil || n != 2000 {
		t.Fatalf("restored users: %d, %v", n, err)
	}
	// A check with the wrong expectation fails the job, naming it.
	rj = e.job(catalog.Job{Kind: catalog.KindRestore, Resource: res.ID, Params: map[string]string{
		"recovery_point": got.RecoveryPoint, "target.database": badDB,
		"check.users": "SELECT count(*) FROM users", "expect.users": "1999"}})
	e.runOnce()
	if rj = e.get(rj.ID); rj.State != catalog.StateFailed || !strings.Contains(rj.Message, "validation failed") || !strings.Contains(rj.Message, `users: got "2000", want "1999"`) {
		t.Fatalf("restore with a failing check: %+v", rj)
	}
}
