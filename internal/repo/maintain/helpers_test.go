package maintain_test

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/testutil"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	srcfs "github.com/coffre/coffre/internal/source/fs"
)

const testSecret = "maintain test passphrase"

func keyProvider() crypto.KeyProvider {
	return &crypto.Passphrase{Secret: testSecret, Params: crypto.TestKDF}
}

func initOptions() repo.InitOptions {
	o := repo.DefaultInitOptions
	o.PackSize = 1 << 20
	return o
}

// newLocalVault creates a vault in a new directory and returns its storage
// and an open handle.
func newLocalVault(t *testing.T) (*local.Storage, *repo.Repository) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vault")
	be, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, keyProvider(), initOptions(), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return be, r
}

// openLocal opens the vault at dir with a fresh storage and handle, like a
// new process would. The index is not loaded.
func openLocal(t *testing.T, dir string) (*local.Storage, *repo.Repository) {
	t.Helper()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := openRepo(t, be, repo.Options{})
	return be, r
}

func openRepo(t *testing.T, be blob.Storage, o repo.Options) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), be, keyProvider(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func loadIndex(t *testing.T, r *repo.Repository) {
	t.Helper()
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// randBytes returns n deterministic pseudo-random (incompressible) bytes.
func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// writeTree creates the files (slash paths) under a new directory.
func writeTree(t *testing.T, files map[string][]byte) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, root, files)
	return root
}

func backupDir(t *testing.T, r *repo.Repository, dir string) *snapshot.Manifest {
	t.Helper()
	src, err := srcfs.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := archiver.New(r, archiver.Options{}).Backup(context.Background(), src,
		snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{src.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != snapshot.StatusCompleted {
		t.Fatalf("backup of %s: status %s, errors %v", dir, m.Status, m.Errors)
	}
	return m
}

// restoreErr restores m into a new directory and compares it with want.
func restoreErr(t *testing.T, r *repo.Repository, m *snapshot.Manifest, want map[string][]byte) error {
	t.Helper()
	target := filepath.Join(t.TempDir(), "restore")
	if _, err := srcfs.Restore(context.Background(), r, m, srcfs.RestoreOptions{Target: target}); err != nil {
		return err
	}
	got := testutil.ReadFiles(t, target)
	if len(got) != len(want) {
		t.Errorf("restore of %s: %d files, want %d (%v)", m.ID.Short(), len(got), len(want), keys(got))
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("restore of %s: %s missing", m.ID.Short(), p)
			continue
		}
		if !bytes.Equal(g, w) {
			t.Errorf("restore of %s: %s differs (%d bytes, want %d)", m.ID.Short(), p, len(g), len(w))
		}
	}
	return nil
}

func restoreAndCompare(t *testing.T, r *repo.Repository, m *snapshot.Manifest, want map[string][]byte) {
	t.Helper()
	if err := restoreErr(t, r, m, want); err != nil {
		t.Errorf("restore of %s: %v", m.ID.Short(), err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fileBlobs returns the content blob ids of the file at path p in m.
func fileBlobs(t *testing.T, r *repo.Repository, m *snapshot.Manifest, p string) []crypto.ID {
	t.Helper()
	var ids []crypto.ID
	found := false
	err := tree.Walk(context.Background(), r, m.Tree, func(path string, n *tree.Node) error {
		if path == p {
			found = true
			ids = append(ids, n.Content...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found || len(ids) == 0 {
		t.Fatalf("file %s not found (or empty) in recovery point %s", p, m.ID.Short())
	}
	return ids
}

// locate returns where the index says a blob is.
func locate(t *testing.T, r *repo.Repository, typ pack.BlobType, id crypto.ID) index.Location {
	t.Helper()
	l, ok := r.Index().Lookup(typ, id)
	if !ok {
		t.Fatalf("%s blob %s not in the index", typ, id.Short())
	}
	return l
}

func packPath(be *local.Storage, typ pack.BlobType, id crypto.ID) string {
	k := blob.KindData
	if typ == pack.TreeBlob {
		k = blob.KindTree
	}
	return be.Path(blob.Handle{Kind: k, Name: id.String()})
}

// flipByte inverts the byte at off (from the end when negative) of a file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	if off < 0 || off >= int64(len(b)) {
		t.Fatalf("flip byte %d of %s: file has %d bytes", off, path, len(b))
	}
	b[off] ^= 0xff
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// listFiles returns every file below the vault root with its size.
func listFiles(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// packNames returns the names of the packs of kind k stored.
func packNames(t *testing.T, be blob.Storage, k blob.Kind) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := be.List(context.Background(), k, func(fi blob.FileInfo) error { out[fi.Name] = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func check(t *testing.T, r *repo.Repository, readData bool) *maintain.CheckResult {
	t.Helper()
	res, err := maintain.Check(context.Background(), r, maintain.CheckOptions{ReadData: readData})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	return res
}

// checkClean opens a fresh handle on be and requires a clean check with
// ReadData.
func checkClean(t *testing.T, be blob.Storage) *maintain.CheckResult {
	t.Helper()
	r, err := repo.Open(context.Background(), be, keyProvider(), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := check(t, r, true)
	if !res.OK() {
		t.Errorf("check found problems: %s", describeProblems(res))
	}
	return res
}

func describeProblems(res *maintain.CheckResult) string {
	var b strings.Builder
	for _, p := range res.Problems {
		b.WriteString("\n  " + p.Object + ": " + p.Err)
		for _, a := range p.Affects {
			b.WriteString("\n    affects " + a)
		}
	}
	return b.String()
}

// problemFor returns the problems whose Object starts with prefix.
func problemsFor(res *maintain.CheckResult, prefix string) []maintain.Problem {
	var out []maintain.Problem
	for _, p := range res.Problems {
		if strings.HasPrefix(p.Object, prefix) {
			out = append(out, p)
		}
	}
	return out
}

func allAffects(res *maintain.CheckResult) []string {
	var out []string
	for _, p := range res.Problems {
		out = append(out, p.Affects...)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedIDs(ms ...*snapshot.Manifest) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID.String())
	}
	sort.Strings(out)
	return out
}
