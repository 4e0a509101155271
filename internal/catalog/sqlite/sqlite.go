// Package sqlite is coffre's default, embedded catalog: one SQLite file (pure Go, no cgo) in the data directory, held by a single server at a time.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

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

// ErrLocked: another server holds the data directory.
var ErrLocked = errors.New("catalog data directory is in use")

// Catalog is the SQLite catalog; it implements catalog.Catalog.
type Catalog struct {
	*sqlstore.Store
	dir  string
	lock *os.File
}

var dialect = sqlstore.Dialect{
	Name: "sqlite",
	IsUnique: func(err error) bool {
		var e *sqlitedrv.Error
		return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE)
	},
}

// Open opens (creating if needed) the catalog in dir: the database is
// dir/catalog.db, in WAL mode with a busy timeout, and every transaction
// takes the write lock when it begins. dir/lock is flock'ed for as long as
// the catalog is open, so a second server on the same directory fails with
// ErrLocked naming the holder's pid. Pending migrations are applied; a
// catalog written by a newer coffre is refused.
func Open(dir string, clk clock.Clock) (*Catalog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	dsn := (&url.URL{Scheme: "file", Path: filepath.Join(dir, "catalog.db"), RawQuery: url.Values{
		"_pragma": {"busy_timeout(15000)", "journal_mode(WAL)", "synchronous(NORMAL)"},
		"_txlock": {"immediate"},
	}.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("catalog: open %s: %w", dir, err)
	}
	c := &Catalog{Store: sqlstore.New(db, dialect, clk), dir: dir, lock: lock}
	ms, err := Migrations()
	if err == nil {
		err = c.Migrate(context.Background(), ms)
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("catalog %s: %w", dir, err)
	}
	return c, nil
}

// Close closes the database and releases the data-directory lock.
func (c *Catalog) Close() error {
	err := c.Store.Close()
	if c.lock != nil {
		err = errors.Join(err, c.lock.Close()) // closing the descriptor drops the flock
		c.lock = nil
	}
	return err
}

// lockDir takes an exclusive flock on dir/lock and writes our pid into it.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("catalog: lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("catalog: lock %s: %w", path, err)
		}
		holder := "unknown pid"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "pid " + strconv.Itoa(pid)
			}
		}
		return nil, hint.With(fmt.Errorf("catalog: %w: %s is held by another coffre server (%s)", ErrLocked, dir, holder),
			"stop the other server, or give this one its own data directory; to share one catalog between servers, use a PostgreSQL catalog")
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("catalog: lock %s: write pid: %w", path, err)
		}
	}
	return f, nil
}
