package lifecycle

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/blob/s3"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/testutil"
)

func TestColdOnLocalDiskOnlyChangesTheTier(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	coldFiles := files(20, "a", "b")
	cold := e.backup(v, coldFiles, &snapshot.Lifecycle{MoveToColdAfterDays: 3, DeleteAfterDays: 100})
	later := e.backup(v, files(21, "c"), &snapshot.Lifecycle{MoveToColdAfterDays: 5, DeleteAfterDays: 100})
	e.register(v, cold)
	e.register(v, later)
	e.run()
	e.advance(3*day - time.Second)
	if res := e.run(); res.MovedToCold != 0 {
		t.Fatalf("moved to cold early: %+v", res)
	}
	if rp, _ := e.row(v.Name, cold.ID.String()); rp.Tier != catalog.TierWarm {
		t.Fatalf("tier before the cold date: %s", rp.Tier)
	}
	e.advance(time.Second)
	res := e.run()
	if res.MovedToCold != 1 || res.PacksMoved != 0 {
		t.Fatalf("at the cold date: %+v", res)
	}
	if rp, _ := e.row(v.Name, cold.ID.String()); rp.Tier != catalog.TierCold {
		t.Fatalf("cold point's tier: %s", rp.Tier)
	}
	if rp, _ := e.row(v.Name, later.ID.String()); rp.Tier != catalog.TierWarm {
		t.Fatalf("later point's tier before its date: %s", rp.Tier)
	}
	const notice = "no cold storage class"
	if n := e.logs.Count(notice); n != 1 {
		t.Fatalf("%q logged %d times:\n%s", notice, n, e.logs)
	}
	e.advance(day)
	if res := e.run(); res.MovedToCold != 0 {
		t.Fatalf("moved again: %+v", res)
	}
	e.advance(day) // the second point's cold date: the notice is not repeated
	if res := e.run(); res.MovedToCold != 1 {
		t.Fatalf("second point: %+v", res)
	}
	if rp, _ := e.row(v.Name, later.ID.String()); rp.Tier != catalog.TierCold {
		t.Fatalf("second point's tier: %s", rp.Tier)
	}
	if n := e.logs.Count(notice); n != 1 {
		t.Fatalf("%q logged %d times", notice, n)
	}
	e.checkVault(v)
	e.restoreMatches(v, cold, coldFiles)
}

// fakeClassStorage is a test double: the mem backend has no storage
// classes, so this wraps it and records the class set on each file (or
// answers like an S3 server without classes). Close does nothing, so the
// in-memory vault outlives the handles the worker opens and closes.
type fakeClassStorage struct {
	*mem.Storage
	unsupported bool

	mu      sync.Mutex
	classes map[blob.Handle]string
}

var _ blob.StorageClass = (*fakeClassStorage)(nil)

func (f *fakeClassStorage) SetStorageClass(ctx context.Context, h blob.Handle, class string) error {
	if _, err := f.Stat(ctx, h); err != nil {
		return err
	}
	if f.unsupported {
		return fmt.Errorf("fake: set class of %v: %w", h, s3.ErrStorageClassUnsupported)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.classes[h] = class
	return nil
}

func (f *fakeClassStorage) Close() error { return nil }

func (f *fakeClassStorage) moved() map[blob.Handle]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.classes)
}

// memVaults opens every vault on one fakeClassStorage.
type memVaults struct {
	be  *fakeClassStorage
	clk clock.Clock
}

func (m *memVaults) Open(ctx context.Context, v catalog.Vault) (*repo.Repository, error) {
	return repo.Open(ctx, m.be, repo.TestKeyProvider(repo.TestPassphrase), repo.Options{Clock: m.clk, Logger: quietLogger()})
}

func newMemVault(t *testing.T, e *env) (catalog.Vault, *fakeClassStorage, *memVaults) {
	t.Helper()
	be := &fakeClassStorage{Storage: mem.New(), classes: map[blob.Handle]string{}}
	repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{Clock: e.clk}).Close()
	v := catalog.Vault{Name: "s3ish", Location: "memory"}
	if err := e.cat.PutVault(e.ctx, v); err != nil {
		t.Fatal(err)
	}
	mv := &memVaults{be: be, clk: e.clk}
	e.vaults = mv
	e.w = e.newWorker(mv)
	return v, be, mv
}

// dataPacksOf returns the data packs m's files read from (their blobs'
// index locations), found with tree.Walk.
func dataPacksOf(t *testing.T, r *repo.Repository, m *snapshot.Manifest) map[blob.Handle]bool {
	t.Helper()
	out := map[blob.Handle]bool{}
	err := tree.Walk(context.Background(), r, m.Tree, func(_ string, n *tree.Node) error {
		for _, c := range n.Content {
			l, ok := r.Index().Lookup(pack.DataBlob, c)
			if !ok {
				t.Fatalf("blob %s not indexed", c.Short())
			}
			out[blob.Handle{Kind: blob.KindData, Name: l.Pack.String()}] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func handles(m map[blob.Handle]bool) []string {
	var out []string
	for h := range m {
		out = append(out, h.String())
	}
	slices.Sort(out)
	return out
}

func TestColdMovesOnlyPacksNoWarmPointUses(t *testing.T) {
	e := newEnv(t)
	v, be, mv := newMemVault(t, e)
	shared := testutil.RandomBytes(30, 3<<20)
	r, err := mv.Open(e.ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	// Two cold-due points first: the shared content lands in the first
	// one's packs, and the warm point then deduplicates against them; the
	// second one's packs are its own.
	coldShared := backupTo(t, r, map[string][]byte{"shared.bin": shared}, "res", &snapshot.Lifecycle{MoveToColdAfterDays: 3})
	coldOwn := backupTo(t, r, map[string][]byte{"cold-only.bin": testutil.RandomBytes(31, 3<<20)}, "res", &snapshot.Lifecycle{MoveToColdAfterDays: 3})
	warm := backupTo(t, r, map[string][]byte{"shared.bin": shared, "warm-only.bin": testutil.RandomBytes(32, 3<<20)}, "res",
		&snapshot.Lifecycle{MoveToColdAfterDays: 30})
	warmPacks := dataPacksOf(t, r, warm)
	coldPacksAll := dataPacksOf(t, r, coldShared)
	maps.Copy(coldPacksAll, dataPacksOf(t, r, coldOwn))
	allData := map[blob.Handle]bool{}
	for _, p := range r.Index().Packs() {
		if p.Type == pack.DataBlob {
			allData[blob.Handle{Kind: blob.KindData, Name: p.ID.String()}] = true
		}
	}
	r.Close()
	for _, m := range []*snapshot.Manifest{coldShared, coldOwn, warm} {
		e.register(v, m)
	}

	want := map[blob.Handle]bool{}
	sharedPacks := 0
	for h := range coldPacksAll {
		if warmPacks[h] {
			sharedPacks++
		} else {
			want[h] = true
		}
	}
	if sharedPacks == 0 || len(want) == 0 {
		t.Fatalf("test setup: %d shared and %d cold-only packs; need both", sharedPacks, len(want))
	}

	e.run()
	e.advance(3 * day)
	res := e.run()
	if res.MovedToCold != 2 || res.PacksMoved != len(want) {
		t.Fatalf("at the cold point's date: %+v (want %d packs)", res, len(want))
	}
	got := map[blob.Handle]bool{}
	for h, class := range be.moved() {
		if class != DefaultColdClass {
			t.Errorf("%v got class %q", h, class)
		}
		got[h] = true
	}
	if !maps.Equal(got, want) {
		t.Fatalf("packs moved:\n%v\nwant (cold-only):\n%v", handles(got), handles(want))
	}
	if rp, _ := e.row(v.Name, warm.ID.String()); rp.Tier != catalog.TierWarm {
		t.Fatalf("warm point's tier %s", rp.Tier)
	}

	// Once the warm point is cold too, the shared packs follow.
	e.advance(27 * day)
	res = e.run()
	if res.MovedToCold != 1 {
		t.Fatalf("at the second point's date: %+v", res)
	}
	got = map[blob.Handle]bool{}
	for h := range be.moved() {
		got[h] = true
	}
	if !maps.Equal(got, allData) {
		t.Fatalf("packs moved:\n%v\nwant every data pack:\n%v", handles(got), handles(allData))
	}
}

func TestColdOnServerWithoutClasses(t *testing.T) {
	e := newEnv(t)
	v, be, mv := newMemVault(t, e)
	be.unsupported = true
	r, err := mv.Open(e.ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	m := backupTo(t, r, files(33, "a"), "res", &snapshot.Lifecycle{MoveToColdAfterDays: 1})
	r.Close()
	e.register(v, m)
	e.run()
	e.advance(day)
	res := e.run()
	if res.MovedToCold != 1 || res.PacksMoved != 0 || len(be.moved()) != 0 {
		t.Fatalf("run: %+v, moved %v", res, be.moved())
	}
	if rp, _ := e.row(v.Name, m.ID.String()); rp.Tier != catalog.TierCold {
		t.Fatalf("tier %s", rp.Tier)
	}
	if n := e.logs.Count("no cold storage class"); n != 1 {
		t.Fatalf("notice logged %d times", n)
	}
}

func TestPointDeletedIsNotMovedToCold(t *testing.T) {
	e := newEnv(t)
	v := e.vault("main", catalog.VaultLock{})
	m := e.backup(v, files(34, "a"), &snapshot.Lifecycle{MoveToColdAfterDays: 1, DeleteAfterDays: 1})
	e.register(v, m)
	e.run()
	e.advance(2 * day)
	if res := e.run(); res.Deleted != 1 || res.MovedToCold != 0 {
		t.Fatalf("run: %+v", res)
	}
	if _, ok := e.row(v.Name, m.ID.String()); ok {
		t.Fatal("row of the deleted point came back")
	}
	if logs := e.logs.String(); strings.Contains(logs, "has no manifest") {
		t.Fatalf("deleted point handled as a cold candidate:\n%s", logs)
	}
}
