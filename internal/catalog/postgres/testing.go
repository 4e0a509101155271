package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Test helpers for packages whose tests need a PostgreSQL catalog.

// TestDSN returns COFFRE_TEST_PG_DSN (scripts/services.sh writes it), or
// skips — unless COFFRE_TEST_REQUIRE_SERVICES or CI is set, then it fails.
func TestDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("COFFRE_TEST_PG_DSN")
	if dsn == "" {
		if os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" || os.Getenv("CI") != "" {
			t.Fatal("COFFRE_TEST_PG_DSN is not set; run: scripts/services.sh start ENVFILE && set -a && . ENVFILE && set +a")
		}
		t.Skip("COFFRE_TEST_PG_DSN not set; start PostgreSQL with scripts/services.sh")
	}
	return dsn
}

// TestSchemaDSN creates an empty schema, dropped when t ends, and returns a
// DSN whose search_path points at it.
func TestSchemaDSN(t testing.TB) string {
	t.Helper()
	dsn := TestDSN(t)
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "coffre_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("cleanup connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	if strings.Contains(dsn, "://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "search_path=" + schema
	}
	return dsn + " search_path=" + schema
}
