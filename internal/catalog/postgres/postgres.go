// Package postgres is coffre's shared catalog: several coffre servers use one PostgreSQL database, coordinating through row locks and optimistic state checks.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/coffre/coffre/internal/catalog/sqlstore"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the embedded schema migrations, in order.
func Migrations() ([]sqlstore.Migration, error) {
	return sqlstore.LoadMigrations(migrationFS, "migrations")
}

// Catalog is the PostgreSQL catalog; it implements catalog.Catalog.
type Catalog struct {
	*sqlstore.Store
	pool *pgxpool.Pool
}

// lockKey is the advisory-lock key coffre's catalog uses ("coffre" in ASCII).
const lockKey = 0x636f66667265

var dialect = sqlstore.Dialect{
	Name:           "postgres",
	Dollar:         true,
	ClaimLock:      " FOR UPDATE SKIP LOCKED",
	ClaimSerialize: "SELECT pg_advisory_xact_lock(" + strconv.Itoa(lockKey+2) + ")",
	AuditLock:      "SELECT pg_advisory_xact_lock(" + strconv.Itoa(lockKey+1) + ")",
	MigrationLock:  "SELECT pg_advisory_xact_lock(" + strconv.Itoa(lockKey) + ")",
	IsUnique: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505"
	},
}

var dsnPassword = regexp.MustCompile(`(^|\s)password\s*=`)

// ErrPasswordInDSN: the DSN carries a password, which coffre refuses.
var ErrPasswordInDSN = errors.New("catalog: the PostgreSQL DSN contains a password")

// Open connects to the catalog database named by dsn (libpq key=value or
// postgres:// URL form) and applies pending migrations.
//
// The DSN must not contain a password, since DSNs end up in config files,
// process lists and logs: give it by reference instead, in the PGPASSWORD
// environment variable or a passfile (PGPASSFILE, default ~/.pgpass, mode
// 0600), both read by the driver. An unreachable server gives an error
// naming host:port with a hint. Unless the DSN sets connect_timeout, a
// connection attempt gives up after 10 seconds.
func Open(ctx context.Context, dsn string, clk clock.Clock) (*Catalog, error) {
	if hasPassword(dsn) {
		return nil, hint.With(ErrPasswordInDSN,
			"remove the password from the DSN and set PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass) instead")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, hint.With(fmt.Errorf("catalog: parse PostgreSQL DSN: %w", err),
			`write it as "host=H port=P user=U dbname=D sslmode=…" or postgres://user@host:port/db`)
	}
	if !strings.Contains(dsn, "connect_timeout") {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	addr := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("catalog: PostgreSQL at %s: %w", addr, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, hint.With(fmt.Errorf("catalog: cannot reach PostgreSQL at %s (user %q, database %q): %w",
			addr, cfg.ConnConfig.User, cfg.ConnConfig.Database, err),
			"check that PostgreSQL runs and listens on "+addr+", that the DSN's host and port are right, "+
				"and that PGPASSWORD or the passfile holds this user's password")
	}
	c := &Catalog{Store: sqlstore.New(stdlib.OpenDBFromPool(pool), dialect, clk), pool: pool}
	ms, err := Migrations()
	if err == nil {
		err = c.Migrate(ctx, ms)
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("catalog at %s: %w", addr, err)
	}
	return c, nil
}

// Close closes the connections.
func (c *Catalog) Close() error {
	err := c.Store.Close()
	c.pool.Close()
	return err
}

func hasPassword(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return false // ParseConfig reports it
		}
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Has("password")
	}
	return dsnPassword.MatchString(dsn)
}
