package repo

import (
	"bytes"
	"context"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/testutil"
)

// The cache keeps at most its budget of bytes, evicting the least recently
// used pack, and leaves packs over its one-pack limit to range reads.
func TestPackCacheBudget(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	files := map[crypto.ID][]byte{}
	var ids []crypto.ID
	for i := range 6 {
		data := testutil.RandomBytes(uint64(i), 1000)
		var id crypto.ID
		id[0] = byte(i + 1)
		if err := be.Save(ctx, blob.Handle{Kind: blob.KindTree, Name: id.String()}, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		files[id] = data
		ids = append(ids, id)
	}
	big := testutil.RandomBytes(9, 5000)
	var bigID crypto.ID
	bigID[0] = 0xff
	if err := be.Save(ctx, blob.Handle{Kind: blob.KindTree, Name: bigID.String()}, bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}

	c := newPackCache(3000, 4000)
	get := func(id crypto.ID) ([]byte, bool) {
		t.Helper()
		b, ok, err := c.get(ctx, be, blob.Handle{Kind: blob.KindTree, Name: id.String()}, id)
		if err != nil {
			t.Fatal(err)
		}
		return b, ok
	}
	for _, id := range ids {
		b, ok := get(id)
		if !ok || !bytes.Equal(b, files[id]) {
			t.Fatalf("pack %s: cached %v, right bytes %v", id.Short(), ok, bytes.Equal(b, files[id]))
		}
		if c.size > c.max {
			t.Fatalf("cache holds %d bytes, budget %d", c.size, c.max)
		}
	}
	if _, ok := c.m[ids[0]]; ok {
		t.Error("the least recently used pack was not evicted")
	}
	if _, ok := c.m[ids[5]]; !ok {
		t.Error("the newest pack is not cached")
	}
	if b, ok := get(ids[0]); !ok || !bytes.Equal(b, files[ids[0]]) {
		t.Error("an evicted pack does not load again")
	}
	if b, ok := get(bigID); ok || b != nil {
		t.Errorf("a %d-byte pack over the %d-byte limit was cached", len(big), c.one)
	}
}
