package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/testutil"
)

// saveTrees stores n distinct tree blobs of a few KiB and returns them by id.
func saveTrees(t *testing.T, r *repo.Repository, n int) map[crypto.ID][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[crypto.ID][]byte{}
	for i := range n {
		b := fmt.Appendf(nil, `{"nodes":[{"name":"f%d","type":"file"}]}`, i)
		b = append(b, testutil.Text(1<<10+i*7)...)
		id, _, err := r.SaveBlob(ctx, pack.TreeBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = b
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return out
}

// Trees are read from their packs read whole, each pack once, however many
// walkers ask for its trees at the same time.
func TestTreePacksReadWhole(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(mem.New())
	r := repo.TestInit(t, f, repo.TestInitOptions(), repo.Options{})
	trees := saveTrees(t, r, 600)
	packs := map[crypto.ID]bool{}
	for id := range trees {
		l, ok := r.Index().Lookup(pack.TreeBlob, id)
		if !ok {
			t.Fatalf("tree %s not indexed", id.Short())
		}
		packs[l.Pack] = true
	}

	r2 := repo.TestOpen(t, f, repo.Options{})
	f.ResetCalls()
	ids := make([]crypto.ID, 0, len(trees))
	for id := range trees {
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for pass := range 2 {
				for i := w; i < len(ids); i += 8 {
					got, err := r2.LoadBlob(ctx, pack.TreeBlob, ids[i], nil)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, trees[ids[i]]) {
						errs <- fmt.Errorf("pass %d: tree %s read back different", pass, ids[i].Short())
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.CallsOf(faulty.OpLoad, blob.KindTree); got != len(packs) {
		t.Errorf("%d loads of tree packs for %d trees in %d packs, read twice: want one load per pack", got, len(trees), len(packs))
	}
}

// A damaged byte in a tree pack read whole fails the tree it belongs to,
// named with its pack, and no other; a failed read is not remembered.
func TestTreePackReadWholeFaults(t *testing.T) {
	ctx := context.Background()
	be := mustLocal(t)
	r := repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{})
	trees := saveTrees(t, r, 50)
	var bad, good crypto.ID
	var l index.Location
	for id := range trees {
		loc, _ := r.Index().Lookup(pack.TreeBlob, id)
		if bad == (crypto.ID{}) {
			bad, l = id, loc
			continue
		}
		if loc.Pack == l.Pack && good == (crypto.ID{}) {
			good = id
		}
	}
	if good == (crypto.ID{}) {
		t.Fatal("want two trees in one pack")
	}
	name := l.Pack.String()
	p := filepath.Join(be.Root(), "tree", name[:2], name)
	flipByteAt(t, p, int64(l.Entry.Offset)+int64(l.Entry.Length)/2)

	r2 := repo.TestOpen(t, be, repo.Options{})
	_, err := r2.LoadBlob(ctx, pack.TreeBlob, bad, nil)
	checkBlobError(t, err, bad, l.Pack)
	if be := (*repo.BlobError)(nil); errors.As(err, &be) && be.Type != pack.TreeBlob {
		t.Errorf("BlobError names a %v blob, want a tree", be.Type)
	}
	if !errors.Is(err, crypto.ErrAuth) {
		t.Errorf("error %v does not wrap crypto.ErrAuth", err)
	}
	for range 2 { // the second from the cache: decryption left it intact
		got, err := r2.LoadBlob(ctx, pack.TreeBlob, good, nil)
		if err != nil || !bytes.Equal(got, trees[good]) {
			t.Fatalf("undamaged tree of the same pack: %v", err)
		}
	}

	// A read that fails is tried again by the next load.
	f := faulty.New(be)
	r3 := repo.TestOpen(t, f, repo.Options{})
	boom := errors.New("injected load failure")
	f.FailLoad(func(h blob.Handle) error {
		if h.Kind == blob.KindTree {
			return boom
		}
		return nil
	})
	if _, err := r3.LoadBlob(ctx, pack.TreeBlob, good, nil); !errors.Is(err, boom) {
		t.Fatalf("load with the pack unreadable: %v, want the injected error", err)
	}
	f.FailLoad(nil)
	if got, err := r3.LoadBlob(ctx, pack.TreeBlob, good, nil); err != nil || !bytes.Equal(got, trees[good]) {
		t.Fatalf("load after the failure went away: %v", err)
	}
}
