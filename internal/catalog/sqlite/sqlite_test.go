package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/catalogtest"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
)

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) catalogtest.Opener {
		dir := t.TempDir()
		return func(clk clock.Clock) (catalog.Catalog, error) { return Open(dir, clk) }
	})
}

func TestSecondServerOnSameDirFails(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(catalogtest.Base)
	first, err := Open(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, clk)
	if !errors.Is(err, ErrLocked) {
		_ = first.Close()
		t.Fatalf("second Open on the same dir: got %v, want ErrLocked", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, dir) || !strings.Contains(msg, "pid "+strconv.Itoa(os.Getpid())) || hint.Of(err) == "" {
		t.Fatalf("error %q (hint %q) should name the dir and the holder's pid, with a hint", msg, hint.Of(err))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir, clk)
	if err != nil {
		t.Fatalf("reopen after the holder closed: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFileLayoutAndWAL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, err := Open(dir, clock.NewFake(catalogtest.Base))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(filepath.Join(dir, "catalog.db")); err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := c.DB().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	var timeout int
	if err := c.DB().QueryRow("PRAGMA busy_timeout").Scan(&timeout); err != nil || timeout < 1000 {
		t.Fatalf("busy_timeout = %d, %v", timeout, err)
	}
	var version int
	if err := c.DB().QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&version); err != nil || version != 2 {
		t.Fatalf("schema version %d, %v", version, err)
	}
}
