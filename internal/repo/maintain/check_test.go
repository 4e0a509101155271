package maintain_test

import (
	"context"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

// sharedVault has three recovery points: A and B both hold shared.bin (the
// same content, so the same blob, stored once in A's data pack), C holds
// nothing in common with them.
type sharedVault struct {
	be               *local.Storage
	r                *repo.Repository
	a, b, c          *snapshot.Manifest
	filesA, filesB   map[string][]byte
	filesC           map[string][]byte
	sharedPack       string // name of A's data pack (holds shared.bin)
	sharedBlobOffset int64
	sharedBlobLength int64
}

func newSharedVault(t *testing.T) *sharedVault {
	t.Helper()
	be, r := newLocalVault(t)
	shared := randBytes(1, 64<<10)
	v := &sharedVault{be: be, r: r}
	v.filesA = map[string][]byte{
		"shared.bin":        shared,
		"only-a.txt":        []byte("only in A\n"),
		"sub/deeper/a.bin":  randBytes(2, 20<<10),
		"sub/second-a.data": randBytes(3, 3000),
	}
	v.filesB = map[string][]byte{
		"copy/shared.bin": shared,
		"only-b.txt":      []byte("only in B\n"),
	}
	v.filesC = map[string][]byte{
		"c.bin": randBytes(4, 30<<10),
	}
	v.a = backupDir(t, r, writeTree(t, v.filesA))
	v.b = backupDir(t, r, writeTree(t, v.filesB))
	v.c = backupDir(t, r, writeTree(t, v.filesC))
	ids := fileBlobs(t, r, v.a, "shared.bin")
	if len(ids) != 1 {
		t.Fatalf("shared.bin has %d blobs, want 1", len(ids))
	}
	if got := fileBlobs(t, r, v.b, "copy/shared.bin"); !reflect.DeepEqual(got, ids) {
		t.Fatalf("B's copy of shared.bin was not deduplicated: %v vs %v", got, ids)
	}
	l := locate(t, r, pack.DataBlob, ids[0])
	v.sharedPack = l.Pack.String()
	v.sharedBlobOffset, v.sharedBlobLength = int64(l.Entry.Offset), int64(l.Entry.Length)
	return v
}

func (v *sharedVault) sharedPackPath() string {
	return v.be.Path(blob.Handle{Kind: blob.KindData, Name: v.sharedPack})
}

// fresh opens the vault again, like a new process.
func (v *sharedVault) fresh(t *testing.T) *repo.Repository {
	_, r := openLocal(t, v.be.Root())
	return r
}

func TestCheckHealthyVault(t *testing.T) {
	v := newSharedVault(t)
	for _, readData := range []bool{false, true} {
		res := check(t, v.fresh(t), readData)
		if !res.OK() {
			t.Fatalf("ReadData=%v: problems on a healthy vault: %s", readData, describeProblems(res))
		}
		if len(res.AffectedPoints) != 0 || len(res.Notices) != 0 {
			t.Errorf("ReadData=%v: affected %v, notices %v", readData, res.AffectedPoints, res.Notices)
		}
		if res.Snapshots != 3 {
			t.Errorf("ReadData=%v: %d recovery points, want 3", readData, res.Snapshots)
		}
		if res.Packs < 4 || res.DataBlobs < 6 || res.Trees < 3 {
			t.Errorf("ReadData=%v: implausible counts: %d packs, %d data blobs, %d trees", readData, res.Packs, res.DataBlobs, res.Trees)
		}
		if res.DataRead != readData || (res.BytesRead > 0) != readData {
			t.Errorf("ReadData=%v: DataRead %v, BytesRead %d", readData, res.DataRead, res.BytesRead)
		}
	}
}

func TestCheckFlippedByteInDataPack(t *testing.T) {
	cases := []struct {
		name   string
		offset func(v *sharedVault) int64
		inBlob bool
	}{
		{"header magic", func(*sharedVault) int64 { return 0 }, false},
		{"header salt", func(*sharedVault) int64 { return int64(pack.HeaderSize) - 3 }, false},
		{"blob start", func(v *sharedVault) int64 { return v.sharedBlobOffset }, true},
		{"blob middle", func(v *sharedVault) int64 { return v.sharedBlobOffset + v.sharedBlobLength/2 }, true},
		{"blob tag", func(v *sharedVault) int64 { return v.sharedBlobOffset + v.sharedBlobLength - 1 }, true},
		{"trailer", func(*sharedVault) int64 { return -int64(pack.TailSize) - 10 }, false},
		{"tail first byte", func(*sharedVault) int64 { return -int64(pack.TailSize) }, false},
		{"tail last byte", func(*sharedVault) int64 { return -1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newSharedVault(t)
			flipByte(t, v.sharedPackPath(), tc.offset(v))
			res := check(t, v.fresh(t), true)
			if res.OK() {
				t.Fatal("check with ReadData found no problem after a byte of a data pack was flipped")
			}
			if len(problemsFor(res, "data/"+v.sharedPack)) == 0 {
				t.Errorf("no problem names the pack data/%s: %s", v.sharedPack, describeProblems(res))
			}
			if !tc.inBlob {
				// The blobs are intact (the index holds the salt and the
				// offsets): nothing restorable is affected.
				if len(res.AffectedPoints) != 0 {
					t.Errorf("damage outside the blobs attributed to recovery points %v: %s", res.AffectedPoints, describeProblems(res))
				}
				r := v.fresh(t)
				loadIndex(t, r)
				restoreAndCompare(t, r, v.a, v.filesA)
				return
			}
			want := sorted([]string{
				"recovery point " + v.a.ID.Short() + ": shared.bin",
				"recovery point " + v.b.ID.Short() + ": copy/shared.bin",
			})
			var blobProblem bool
			for _, p := range res.Problems {
				if strings.Contains(p.Object, "blob") && strings.Contains(p.Object, v.sharedPack[:8]) {
					blobProblem = true
					if !reflect.DeepEqual(sorted(p.Affects), want) {
						t.Errorf("problem %s: affects %q, want %q", p.Object, p.Affects, want)
					}
				}
			}
			if !blobProblem {
				t.Errorf("no blob-level problem reported: %s", describeProblems(res))
			}
			if got, w := res.AffectedPoints, sortedIDs(v.a, v.b); !reflect.DeepEqual(got, w) {
				t.Errorf("AffectedPoints %v, want exactly %v (C does not use the blob)", got, w)
			}
			for _, a := range allAffects(res) {
				if strings.Contains(a, v.c.ID.Short()) || strings.Contains(a, "only-a.txt") || strings.Contains(a, "a.bin") {
					t.Errorf("intact file reported as affected: %s", a)
				}
			}
		})
	}
}

func TestCheckMissingDataPack(t *testing.T) {
	v := newSharedVault(t)
	if err := os.Remove(v.sharedPackPath()); err != nil {
		t.Fatal(err)
	}
	res := check(t, v.fresh(t), false)
	ps := problemsFor(res, "data/"+v.sharedPack)
	if len(ps) != 1 {
		t.Fatalf("want one problem for data/%s: %s", v.sharedPack, describeProblems(res))
	}
	if !strings.Contains(ps[0].Err, "missing") {
		t.Errorf("problem %q does not say the pack is missing", ps[0].Err)
	}
	a, b := "recovery point "+v.a.ID.Short()+": ", "recovery point "+v.b.ID.Short()+": "
	want := sorted([]string{a + "only-a.txt", a + "shared.bin", a + "sub/deeper/a.bin", a + "sub/second-a.data", b + "copy/shared.bin"})
	if got := sorted(ps[0].Affects); !reflect.DeepEqual(got, want) {
		t.Errorf("affects %q, want %q", got, want)
	}
	if got, w := res.AffectedPoints, sortedIDs(v.a, v.b); !reflect.DeepEqual(got, w) {
		t.Errorf("AffectedPoints %v, want %v", got, w)
	}
	// The same with ReadData: the missing pack is not read, the rest is clean.
	res = check(t, v.fresh(t), true)
	if got, w := res.AffectedPoints, sortedIDs(v.a, v.b); !reflect.DeepEqual(got, w) {
		t.Errorf("ReadData: AffectedPoints %v, want %v", got, w)
	}
}

func TestCheckMissingTreePack(t *testing.T) {
	v := newSharedVault(t)
	l := locate(t, v.r, pack.TreeBlob, v.c.Tree)
	if err := os.Remove(packPath(v.be, pack.TreeBlob, l.Pack)); err != nil {
		t.Fatal(err)
	}
	res := check(t, v.fresh(t), false)
	ps := problemsFor(res, "tree/"+l.Pack.String())
	if len(ps) != 1 {
		t.Fatalf("want one problem for tree/%s: %s", l.Pack, describeProblems(res))
	}
	if !contains(ps[0].Affects, "recovery point "+v.c.ID.Short()+": /") {
		t.Errorf("affects %q, want the root of C", ps[0].Affects)
	}
	if got, w := res.AffectedPoints, sortedIDs(v.c); !reflect.DeepEqual(got, w) {
		t.Errorf("AffectedPoints %v, want %v", got, w)
	}
}

// Two packs missing at once: each problem must list the files of its own
// pack, not those of the other one.
func TestCheckTwoMissingPacksAttribution(t *testing.T) {
	v := newSharedVault(t)
	cBlob := fileBlobs(t, v.r, v.c, "c.bin")[0]
	cPack := locate(t, v.r, pack.DataBlob, cBlob).Pack
	if cPack.String() == v.sharedPack {
		t.Fatal("C's data is in A's pack; the test needs separate packs")
	}
	for _, p := range []string{v.sharedPackPath(), packPath(v.be, pack.DataBlob, cPack)} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	res := check(t, v.fresh(t), false)
	pa := problemsFor(res, "data/"+v.sharedPack)
	pc := problemsFor(res, "data/"+cPack.String())
	if len(pa) != 1 || len(pc) != 1 {
		t.Fatalf("want one problem per missing pack: %s", describeProblems(res))
	}
	a, b := "recovery point "+v.a.ID.Short()+": ", "recovery point "+v.b.ID.Short()+": "
	wantA := sorted([]string{a + "only-a.txt", a + "shared.bin", a + "sub/deeper/a.bin", a + "sub/second-a.data", b + "copy/shared.bin"})
	wantC := []string{"recovery point " + v.c.ID.Short() + ": c.bin"}
	if got := sorted(pa[0].Affects); !reflect.DeepEqual(got, wantA) {
		t.Errorf("problem for pack %s (A's data) affects %q, want %q", v.sharedPack[:8], got, wantA)
	}
	if got := sorted(pc[0].Affects); !reflect.DeepEqual(got, wantC) {
		t.Errorf("problem for pack %s (C's data) affects %q, want %q", cPack.Short(), got, wantC)
	}
	if got, w := res.AffectedPoints, sortedIDs(v.a, v.b, v.c); !reflect.DeepEqual(got, w) {
		t.Errorf("AffectedPoints %v, want %v", got, w)
	}
}

func TestCheckCorruptIndexFile(t *testing.T) {
	be, r := newLocalVault(t)
	files := map[string][]byte{"x.bin": randBytes(7, 10000)}
	backupDir(t, r, writeTree(t, files))
	ids, err := r.List(context.Background(), blob.KindIndex)
	if err != nil || len(ids) != 1 {
		t.Fatalf("want one index file, got %v (%v)", ids, err)
	}
	flipByte(t, be.Path(blob.Handle{Kind: blob.KindIndex, Name: ids[0].String()}), 40)
	for _, readData := range []bool{false, true} {
		_, r2 := openLocal(t, be.Root())
		res := check(t, r2, readData)
		ps := problemsFor(res, "index/"+ids[0].String())
		if len(ps) != 1 {
			t.Fatalf("ReadData=%v: want a problem naming index/%s: %s", readData, ids[0], describeProblems(res))
		}
		if ps[0].Err == "" {
			t.Error("problem without an error text")
		}
	}
}

func TestCheckCorruptManifest(t *testing.T) {
	v := newSharedVault(t)
	flipByte(t, v.be.Path(blob.Handle{Kind: blob.KindSnapshot, Name: v.c.ID.String()}), 30)
	for _, readData := range []bool{false, true} {
		res := check(t, v.fresh(t), readData)
		ps := problemsFor(res, "snapshots/"+v.c.ID.String())
		if len(ps) != 1 {
			t.Fatalf("ReadData=%v: want a problem naming snapshots/%s: %s", readData, v.c.ID, describeProblems(res))
		}
		if want := []string{"recovery point " + v.c.ID.Short()}; !reflect.DeepEqual(ps[0].Affects, want) {
			t.Errorf("affects %q, want %q", ps[0].Affects, want)
		}
		if len(res.Problems) != 1 {
			t.Errorf("ReadData=%v: other recovery points reported damaged: %s", readData, describeProblems(res))
		}
		if got, w := res.AffectedPoints, sortedIDs(v.c); !reflect.DeepEqual(got, w) {
			t.Errorf("AffectedPoints %v, want %v", got, w)
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
