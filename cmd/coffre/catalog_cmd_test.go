package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source/fs"
	"github.com/coffre/coffre/internal/testutil"
)

// withCatalog opens the SQLite catalog in dir, runs fn and closes it (the
// CLI cannot open it meanwhile).
func withCatalog(t *testing.T, dir string, fn func(catalog.Catalog)) {
	t.Helper()
	cat, err := sqlite.Open(dir, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	fn(cat)
}

func TestCatalogRebuildCommand(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	v := catalog.Vault{Name: "main", Location: filepath.Join(t.TempDir(), "vault")}
	withCatalog(t, dataDir, func(cat catalog.Catalog) {
		if err := cat.PutVault(ctx, v); err != nil {
			t.Fatal(err)
		}
	})
	// A recovery point made by the control plane, with the default keyring
	// (DATA_DIR/keys), which the catalog does not list yet.
	r, err := (&jobs.Opener{Keys: &jobs.Keyring{Dir: filepath.Join(dataDir, "keys")}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, src, map[string][]byte{"a.txt": testutil.Text(5000)})
	fsrc, err := fs.New(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	m, err := archiver.New(r, archiver.Options{Lifecycle: &snapshot.Lifecycle{Plan: "daily", Rule: "r1", Job: "job-1", DeleteAfterDays: 7}}).
		Backup(ctx, fsrc, snapshot.Source{Type: snapshot.SourceFilesystem, Resource: "arn:coffre:filesystem:local:src", Paths: []string{fsrc.Path()}})
	lock.Unlock()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}

	code, out, errs := runPolicy(t, "catalog", "rebuild", "--vault", "main", "--catalog", dataDir)
	if code != 0 || !strings.Contains(out, "catalog index of vault main rebuilt: 1 added, 0 updated, 0 removed, 0 unreadable") {
		t.Fatalf("rebuild: exit %d\n%s%s", code, out, errs)
	}
	withCatalog(t, dataDir, func(cat catalog.Catalog) {
		rp, err := cat.GetRecoveryPoint(ctx, "main", m.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if rp.Plan != "daily" || rp.Rule != "r1" || rp.JobID != "job-1" || rp.Resource != "arn:coffre:filesystem:local:src" ||
			!rp.CreatedAt.Equal(m.Time) || !rp.DeleteAt.Equal(m.Time.Add(7*24*time.Hour)) || rp.Tier != catalog.TierWarm {
			t.Fatalf("rebuilt row: %+v", rp)
		}
	})

	code, out, errs = runPolicy(t, "catalog", "rebuild", "--vault", "main", "--catalog", dataDir, "--json")
	var j struct{ Added, Updated, Removed, Unreadable int }
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.Added+j.Updated+j.Removed+j.Unreadable != 0 {
		t.Fatalf("second rebuild --json: exit %d, %+v\n%s%s", code, j, out, errs)
	}

	// A vault the catalog does not know.
	code, out, errs = runPolicy(t, "catalog", "rebuild", "--vault", "nope", "--catalog", dataDir)
	if code != exitFailure || !strings.Contains(errs, `vault "nope" is not in the catalog`) || !strings.Contains(errs, "declare it in HCL and run `coffre apply`") {
		t.Fatalf("unknown vault: exit %d\n%s%s", code, out, errs)
	}
	// No --vault.
	if code, out, errs = runPolicy(t, "catalog", "rebuild", "--catalog", dataDir); code != exitUsage {
		t.Fatalf("without --vault: exit %d\n%s%s", code, out, errs)
	}
	// A catalog vault with nothing at its location: refused, and nothing
	// is created there.
	ghost := catalog.Vault{Name: "ghost", Location: filepath.Join(t.TempDir(), "gone")}
	withCatalog(t, dataDir, func(cat catalog.Catalog) {
		if err := cat.PutVault(ctx, ghost); err != nil {
			t.Fatal(err)
		}
	})
	code, out, errs = runPolicy(t, "catalog", "rebuild", "--vault", "ghost", "--catalog", dataDir)
	if code != exitFailure || !strings.Contains(errs, "vault ghost") {
		t.Fatalf("vault without data: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(ghost.Location); !os.IsNotExist(err) {
		t.Fatalf("rebuild created something at the ghost vault's location: %v", err)
	}
}
