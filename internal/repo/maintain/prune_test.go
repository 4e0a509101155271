package maintain_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

// pruneVault: A = keep.bin + drop.bin + a.txt, B = keep.bin (deduplicated
// into A's data pack) + b.txt, C = c.bin. Deleting A leaves A's data pack
// mixed: keep.bin used (by B), drop.bin and a.txt unused.
type pruneVault struct {
	be                     *local.Storage
	a, b, c                *snapshot.Manifest
	filesA, filesB, filesC map[string][]byte
	packA                  crypto.ID // A's data pack
	treePackA              crypto.ID
	dropBlob, keepBlob     crypto.ID
}

func newPruneVault(t *testing.T) *pruneVault {
	t.Helper()
	be, r := newLocalVault(t)
	keep := randBytes(10, 60<<10)
	v := &pruneVault{be: be}
	v.filesA = map[string][]byte{"keep.bin": keep, "drop.bin": randBytes(11, 200<<10), "a.txt": []byte("A only\n")}
	v.filesB = map[string][]byte{"dir/keep.bin": keep, "b.txt": []byte("B only\n")}
	v.filesC = map[string][]byte{"c.bin": randBytes(12, 40<<10)}
	v.a = backupDir(t, r, writeTree(t, v.filesA))
	v.b = backupDir(t, r, writeTree(t, v.filesB))
	v.c = backupDir(t, r, writeTree(t, v.filesC))
	v.keepBlob = fileBlobs(t, r, v.a, "keep.bin")[0]
	v.dropBlob = fileBlobs(t, r, v.a, "drop.bin")[0]
	v.packA = locate(t, r, pack.DataBlob, v.dropBlob).Pack
	if got := locate(t, r, pack.DataBlob, v.keepBlob).Pack; got != v.packA {
		t.Fatalf("keep.bin and drop.bin in different packs (%s, %s)", got.Short(), v.packA.Short())
	}
	v.treePackA = locate(t, r, pack.TreeBlob, v.a.Tree).Pack
	if locate(t, r, pack.TreeBlob, v.b.Tree).Pack == v.treePackA {
		t.Fatal("A and B share a tree pack; the test needs separate ones")
	}
	return v
}

func (v *pruneVault) deleteA(t *testing.T) {
	t.Helper()
	_, r := openLocal(t, v.be.Root())
	if err := snapshot.Delete(context.Background(), r, v.a.ID); err != nil {
		t.Fatal(err)
	}
}

// verifyRemaining requires B and C to restore byte for byte and a clean
// check of all data, with fresh handles on be.
func verifyRemaining(t *testing.T, be blob.Storage, v *pruneVault) {
	t.Helper()
	checkClean(t, be)
	r, err := repo.Open(context.Background(), be, keyProvider(), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	loadIndex(t, r)
	restoreAndCompare(t, r, v.b, v.filesB)
	restoreAndCompare(t, r, v.c, v.filesC)
}

func prune(t *testing.T, r *repo.Repository, o maintain.PruneOptions) *maintain.PruneStats {
	t.Helper()
	st, err := maintain.Prune(context.Background(), r, o)
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	return st
}

func TestPruneRemovesUnreferencedPacks(t *testing.T) {
	be, r := newLocalVault(t)
	filesA := map[string][]byte{"a1.bin": randBytes(20, 100<<10), "a2.txt": []byte("a2\n")}
	filesB := map[string][]byte{"b1.bin": randBytes(21, 100<<10)}
	a := backupDir(t, r, writeTree(t, filesA))
	b := backupDir(t, r, writeTree(t, filesB))
	a1Blob := fileBlobs(t, r, a, "a1.bin")[0]
	dataA := locate(t, r, pack.DataBlob, a1Blob).Pack
	treeA := locate(t, r, pack.TreeBlob, a.Tree).Pack
	dataB := locate(t, r, pack.DataBlob, fileBlobs(t, r, b, "b1.bin")[0]).Pack
	treeB := locate(t, r, pack.TreeBlob, b.Tree).Pack
	before := listFiles(t, be.Root())

	if err := snapshot.Delete(context.Background(), r, a.ID); err != nil {
		t.Fatal(err)
	}
	_, r2 := openLocal(t, be.Root())
	st := prune(t, r2, maintain.PruneOptions{})
	if st.Snapshots != 1 || st.PacksDeleted != 2 || st.PacksRepacked != 0 || st.PacksUnindexed != 0 {
		t.Errorf("stats %+v: want 1 recovery point, 2 packs deleted, none repacked", st)
	}
	if st.BytesFreed <= 0 || st.BlobsRemoved < 3 {
		t.Errorf("stats %+v: want bytes freed and at least 3 blobs removed", st)
	}
	for _, p := range []struct {
		typ pack.BlobType
		id  crypto.ID
	}{{pack.DataBlob, dataA}, {pack.TreeBlob, treeA}} {
		if _, err := os.Stat(packPath(be, p.typ, p.id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s pack %s of the deleted recovery point still there (%v)", p.typ, p.id.Short(), err)
		}
	}
	for _, p := range []struct {
		typ pack.BlobType
		id  crypto.ID
	}{{pack.DataBlob, dataB}, {pack.TreeBlob, treeB}} {
		if _, err := os.Stat(packPath(be, p.typ, p.id)); err != nil {
			t.Errorf("%s pack %s of the remaining recovery point removed: %v", p.typ, p.id.Short(), err)
		}
	}
	if n := len(packNames(t, be, blob.KindIndex)); n != 1 {
		t.Errorf("%d index files after prune, want 1", n)
	}
	after := listFiles(t, be.Root())
	if sum(after) >= sum(before) {
		t.Errorf("vault not smaller after prune: %d bytes, before %d", sum(after), sum(before))
	}

	_, r3 := openLocal(t, be.Root())
	loadIndex(t, r3)
	if r3.Index().Has(pack.DataBlob, a1Blob) {
		t.Error("the index still lists a blob of the deleted recovery point")
	}
	restoreAndCompare(t, r3, b, filesB)
	checkClean(t, be)

	// A second prune has nothing to do.
	_, r4 := openLocal(t, be.Root())
	st = prune(t, r4, maintain.PruneOptions{})
	if st.PacksDeleted != 0 || st.PacksRepacked != 0 || st.PacksUnindexed != 0 {
		t.Errorf("second prune did something: %+v", st)
	}
}

func TestPruneRepacksMixedPack(t *testing.T) {
	v := newPruneVault(t)
	v.deleteA(t)
	dataBefore := sum(sizesUnder(t, filepath.Join(v.be.Root(), "data")))
	_, r := openLocal(t, v.be.Root())
	st := prune(t, r, maintain.PruneOptions{RepackThreshold: 0.01})
	if st.PacksRepacked != 1 || st.BlobsRepacked != 1 || st.PacksDeleted != 1 {
		t.Errorf("stats %+v: want A's data pack repacked (1 blob kept) and A's tree pack deleted", st)
	}
	if st.BytesRepacked <= 0 {
		t.Errorf("stats %+v: no bytes repacked", st)
	}
	for _, p := range []string{packPath(v.be, pack.DataBlob, v.packA), packPath(v.be, pack.TreeBlob, v.treePackA)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after prune (%v)", p, err)
		}
	}
	if after := sum(sizesUnder(t, filepath.Join(v.be.Root(), "data"))); after >= dataBefore {
		t.Errorf("data packs not smaller: %d bytes, before %d", after, dataBefore)
	}
	_, r2 := openLocal(t, v.be.Root())
	loadIndex(t, r2)
	if r2.Index().Has(pack.DataBlob, v.dropBlob) {
		t.Error("unused blob drop.bin still indexed after the repack")
	}
	l := locate(t, r2, pack.DataBlob, v.keepBlob)
	if l.Pack == v.packA {
		t.Error("keep.bin still indexed in the removed pack")
	}
	verifyRemaining(t, v.be, v)
}

func TestPruneKeepsPackBelowRepackThreshold(t *testing.T) {
	v := newPruneVault(t)
	v.deleteA(t)
	// A's data pack is about 78% unused: below a threshold of 0.9.
	_, r := openLocal(t, v.be.Root())
	st := prune(t, r, maintain.PruneOptions{RepackThreshold: 0.9})
	if st.PacksRepacked != 0 || st.PacksDeleted != 1 {
		t.Errorf("stats %+v: want no repack, A's tree pack deleted", st)
	}
	if _, err := os.Stat(packPath(v.be, pack.DataBlob, v.packA)); err != nil {
		t.Errorf("A's data pack removed although below the threshold: %v", err)
	}
	verifyRemaining(t, v.be, v)
}

// A prune by the same handle that made the backups (a long-running process
// that backs up and prunes): the repack must not put packs it wrote earlier
// (and is about to delete) into the new index.
func TestPruneRepackWithHandleThatWroteBackups(t *testing.T) {
	be, r := newLocalVault(t)
	keep := randBytes(30, 60<<10)
	filesA := map[string][]byte{"keep.bin": keep, "drop.bin": randBytes(31, 200<<10)}
	filesB := map[string][]byte{"keep.bin": keep, "b.txt": []byte("b\n")}
	a := backupDir(t, r, writeTree(t, filesA))
	b := backupDir(t, r, writeTree(t, filesB))
	if err := snapshot.Delete(context.Background(), r, a.ID); err != nil {
		t.Fatal(err)
	}
	st := prune(t, r, maintain.PruneOptions{RepackThreshold: 0.01})
	if st.PacksRepacked != 1 {
		t.Fatalf("stats %+v: want one pack repacked", st)
	}
	checkClean(t, be)
	_, r2 := openLocal(t, be.Root())
	loadIndex(t, r2)
	restoreAndCompare(t, r2, b, filesB)
}

func TestPruneDryRunChangesNothing(t *testing.T) {
	v := newPruneVault(t)
	v.deleteA(t)
	before := listFiles(t, v.be.Root())
	_, r := openLocal(t, v.be.Root())
	st := prune(t, r, maintain.PruneOptions{DryRun: true, RepackThreshold: 0.01})
	if !st.DryRun || st.PacksRepacked != 1 || st.PacksDeleted != 1 || st.BytesFreed <= 0 {
		t.Errorf("dry run stats %+v: want 1 pack to repack, 1 to delete, bytes to free", st)
	}
	after := listFiles(t, v.be.Root())
	if !reflect.DeepEqual(before, after) {
		t.Errorf("dry run changed the vault:\nbefore %v\nafter  %v", before, after)
	}
	// The real prune then does what the dry run announced.
	_, r2 := openLocal(t, v.be.Root())
	real := prune(t, r2, maintain.PruneOptions{RepackThreshold: 0.01})
	if real.PacksRepacked != st.PacksRepacked || real.PacksDeleted != st.PacksDeleted || real.BlobsRemoved != st.BlobsRemoved || real.BlobsRepacked != st.BlobsRepacked {
		t.Errorf("prune %+v differs from its dry run %+v", real, st)
	}
	verifyRemaining(t, v.be, v)
}

// TestPruneCrashSafety interrupts a prune at every storage write and every
// removal; after each interruption the vault must check clean, every
// remaining recovery point must restore, and a second prune must finish.
func TestPruneCrashSafety(t *testing.T) {
	v := newPruneVault(t)
	v.deleteA(t)
	// An unindexed pack old enough for prune to delete it (left by a crashed
	// backup long ago).
	orphan := crypto.Hash([]byte("orphan pack")).String()
	orphanPath := v.be.Path(blob.Handle{Kind: blob.KindData, Name: orphan})
	ri := openIndexed(t, v.be)
	copyFile(t, packPath(v.be, pack.DataBlob, locate(t, ri, pack.DataBlob, fileBlobs(t, ri, v.c, "c.bin")[0]).Pack), orphanPath)
	old := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(orphanPath, old, old); err != nil {
		t.Fatal(err)
	}
	template := v.be.Root()
	opts := maintain.PruneOptions{RepackThreshold: 0.01}

	// Count the writes and removals of an undisturbed prune.
	fb, _ := faultyCopy(t, template)
	r := openRepo(t, fb, repo.Options{})
	fb.ResetCalls()
	st := prune(t, r, opts)
	saves, removes := fb.Calls(faulty.OpSave), fb.Calls(faulty.OpRemove)
	if st.PacksRepacked != 1 || st.PacksUnindexed != 1 || saves < 3 || removes < 5 {
		t.Fatalf("undisturbed prune: stats %+v, %d saves, %d removes", st, saves, removes)
	}
	t.Logf("prune makes %d saves and %d removes", saves, removes)

	after := func(t *testing.T, inner blob.Storage, pruneErr error) {
		t.Helper()
		if pruneErr == nil {
			t.Fatal("prune succeeded despite the injected fault")
		}
		verifyRemaining(t, inner, v)
		r2 := openRepo(t, inner, repo.Options{})
		st2, err := maintain.Prune(context.Background(), r2, opts)
		if err != nil {
			t.Fatalf("second prune after the fault: %v", err)
		}
		_ = st2
		verifyRemaining(t, inner, v)
		r3 := openRepo(t, inner, repo.Options{})
		loadIndex(t, r3)
		if r3.Index().Has(pack.DataBlob, v.dropBlob) {
			t.Error("second prune left the unused blob drop.bin indexed")
		}
		if _, err := os.Stat(filepath.Join(inner.Location(), "data", orphan[:2], orphan)); !errors.Is(err, os.ErrNotExist) {
			t.Error("second prune left the old orphan pack")
		}
	}

	for n := 0; n <= saves; n++ {
		t.Run(fmt.Sprintf("crash-after-%d-saves", n), func(t *testing.T) {
			fb, inner := faultyCopy(t, template)
			r := openRepo(t, fb, repo.Options{})
			fb.CrashAfter(n)
			_, err := maintain.Prune(context.Background(), r, opts)
			if err != nil && !errors.Is(err, faulty.ErrCrashed) {
				t.Errorf("prune failed with %v, want the simulated crash", err)
			}
			after(t, inner, err)
		})
	}
	for n := 0; n < saves; n++ {
		t.Run(fmt.Sprintf("save-%d-fails", n), func(t *testing.T) {
			fb, inner := faultyCopy(t, template)
			r := openRepo(t, fb, repo.Options{})
			fb.FailSave(failNth(n, errors.New("injected save failure")))
			_, err := maintain.Prune(context.Background(), r, opts)
			after(t, inner, err)
		})
	}
	for n := 0; n < removes; n++ {
		t.Run(fmt.Sprintf("remove-%d-fails", n), func(t *testing.T) {
			fb, inner := faultyCopy(t, template)
			r := openRepo(t, fb, repo.Options{})
			// The nth removal and every later one fail: the process died.
			var mu sync.Mutex
			k := 0
			fb.FailRemove(func(blob.Handle) error {
				mu.Lock()
				defer mu.Unlock()
				k++
				if k > n {
					return faulty.ErrCrashed
				}
				return nil
			})
			_, err := maintain.Prune(context.Background(), r, opts)
			after(t, inner, err)
		})
	}
}

// failNth fails the nth call (counting from 0) only.
func failNth(n int, err error) func(blob.Handle) error {
	var mu sync.Mutex
	k := 0
	return func(blob.Handle) error {
		mu.Lock()
		defer mu.Unlock()
		k++
		if k == n+1 {
			return err
		}
		return nil
	}
}

func TestPruneRefusedWhileBackupHoldsLock(t *testing.T) {
	be, r := newLocalVault(t)
	ctx := context.Background()
	backupLock, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	_, r2 := openLocal(t, be.Root())
	_, err = r2.Lock(ctx, true, "prune")
	if !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("exclusive lock while a backup holds a shared one: err %v, want ErrLocked", err)
	}
	var le *repo.LockError
	if !errors.As(err, &le) || le.Holder.Operation != "backup" || le.Holder.Exclusive {
		t.Errorf("lock error does not describe the backup's shared lock: %v", err)
	}
	if n := len(packNames(t, be, blob.KindLock)); n != 1 {
		t.Errorf("%d lock files after the refused prune lock, want only the backup's", n)
	}
	// A second backup may run alongside the first.
	l2, err := r2.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := backupLock.Unlock(); err != nil {
		t.Fatal(err)
	}
	pl, err := r2.Lock(ctx, true, "prune")
	if err != nil {
		t.Fatalf("exclusive lock after the backup finished: %v", err)
	}
	// And now a backup must wait for the prune.
	if _, err := r.Lock(ctx, false, "backup"); !errors.Is(err, repo.ErrLocked) {
		t.Errorf("shared lock during a prune: err %v, want ErrLocked", err)
	}
	if err := pl.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// A backup running concurrently (in another process, whose shared lock
// has been judged stale, or before taking its lock) has stored a pack but
// not yet its index file: prune must leave that pack alone during the grace
// period, and remove it afterwards.
func TestPruneGraceProtectsUnindexedPack(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(time.Date(2031, 5, 4, 3, 2, 1, 0, time.UTC))
	fb := faulty.New(mem.New(mem.WithClock(fc)))
	r, err := repo.Init(ctx, fb, keyProvider(), initOptions(), repo.Options{Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"f.bin": randBytes(40, 50<<10)}
	m := backupDir(t, r, writeTree(t, files))
	fc.Advance(2 * time.Hour)

	// The concurrent backup: its pack is stored, its index file not yet.
	bk := openRepo(t, fb, repo.Options{Clock: fc})
	loadIndex(t, bk)
	blobID, added, err := bk.SaveBlob(ctx, pack.DataBlob, randBytes(41, 30<<10))
	if err != nil || !added {
		t.Fatalf("save blob: added %v, %v", added, err)
	}
	fb.FailSave(func(h blob.Handle) error {
		if h.Kind == blob.KindIndex {
			return errors.New("not yet")
		}
		return nil
	})
	if err := bk.Flush(ctx); err == nil {
		t.Fatal("flush succeeded although the index could not be written")
	}
	fb.Reset()
	young := unindexedPacks(t, fb)
	if len(young) != 1 {
		t.Fatalf("%d unindexed packs, want the backup's one", len(young))
	}

	fc.Advance(10 * time.Minute)
	st := prune(t, openRepo(t, fb, repo.Options{Clock: fc}), maintain.PruneOptions{})
	if st.PacksKeptRecent != 1 || st.PacksUnindexed != 0 {
		t.Errorf("stats %+v: want the young unindexed pack kept", st)
	}
	if got := unindexedPacks(t, fb); !reflect.DeepEqual(got, young) {
		t.Fatalf("the young pack of a running backup was deleted: %v, want %v", got, young)
	}
	// The backup's blob is still readable from its pack, e.g. for a backup
	// that now writes its index file.
	if _, err := bk.LoadBlob(ctx, pack.DataBlob, blobID, nil); err != nil {
		t.Errorf("blob of the running backup unreadable after prune: %v", err)
	}

	fc.Advance(time.Hour)
	st = prune(t, openRepo(t, fb, repo.Options{Clock: fc}), maintain.PruneOptions{})
	if st.PacksUnindexed != 1 || st.PacksKeptRecent != 0 {
		t.Errorf("stats %+v: want the old unindexed pack deleted", st)
	}
	if got := unindexedPacks(t, fb); len(got) != 0 {
		t.Errorf("unindexed packs left after the grace period: %v", got)
	}
	checkClean(t, fb)
	r2 := openRepo(t, fb, repo.Options{Clock: fc})
	loadIndex(t, r2)
	restoreAndCompare(t, r2, m, files)
}

// The same on a local vault, with the file's modification time as its age.
func TestPruneGraceLocalMtime(t *testing.T) {
	v := newPruneVault(t)
	r := openIndexed(t, v.be)
	src := locate(t, r, pack.DataBlob, fileBlobs(t, r, v.c, "c.bin")[0]).Pack
	name := crypto.Hash([]byte("pack of a running backup")).String()
	p := v.be.Path(blob.Handle{Kind: blob.KindData, Name: name})
	copyFile(t, packPath(v.be, pack.DataBlob, src), p)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		t.Fatal(err)
	}
	_, r1 := openLocal(t, v.be.Root())
	st := prune(t, r1, maintain.PruneOptions{Grace: time.Hour})
	if st.PacksKeptRecent != 1 || st.PacksUnindexed != 0 {
		t.Errorf("stats %+v: want the young pack kept", st)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("young unindexed pack deleted: %v", err)
	}
	old := now.Add(-2 * time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	_, r2 := openLocal(t, v.be.Root())
	st = prune(t, r2, maintain.PruneOptions{Grace: time.Hour})
	if st.PacksUnindexed != 1 || st.PacksKeptRecent != 0 {
		t.Errorf("stats %+v: want the old pack deleted", st)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old unindexed pack not deleted: %v", err)
	}
	verifyRemaining(t, v.be, v)
	restoreAndCompare(t, openIndexed(t, v.be), v.a, v.filesA)
}

// unindexedPacks lists the data and tree packs no index file lists.
func unindexedPacks(t *testing.T, be blob.Storage) []string {
	t.Helper()
	r := openRepo(t, be, repo.Options{})
	loadIndex(t, r)
	var out []string
	for _, k := range []blob.Kind{blob.KindData, blob.KindTree} {
		for name := range packNames(t, be, k) {
			id, err := crypto.ParseID(name)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Index().HasPack(id) {
				out = append(out, string(k)+"/"+name)
			}
		}
	}
	return out
}

func openIndexed(t *testing.T, be *local.Storage) *repo.Repository {
	t.Helper()
	_, r := openLocal(t, be.Root())
	loadIndex(t, r)
	return r
}

// faultyCopy copies the vault directory template and wraps the copy.
func faultyCopy(t *testing.T, template string) (*faulty.Storage, *local.Storage) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "vault")
	err := filepath.WalkDir(template, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(template, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		copyFile(t, p, target)
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		return os.Chtimes(target, fi.ModTime(), fi.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := local.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	return faulty.New(inner), inner
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func sizesUnder(t *testing.T, dir string) map[string]int64 { return listFiles(t, dir) }

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
