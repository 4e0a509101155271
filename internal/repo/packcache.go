package repo

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
)

// Tree packs are read whole and kept in memory: a walk of a recovery point
// (an incremental backup comparing with its parent, a restore, ls, check)
// loads its trees one after the other, and they sit together in a few small
// packs. One read of a pack replaces a read per tree: one open and read on a
// local vault, one GET instead of hundreds on S3. The cached bytes are still
// sealed; every blob taken from them is decrypted and verified as a blob read
// alone is, so a cache can only hold what the backend returned.
const (
	// treePackCacheMax bounds the bytes of cached tree packs.
	treePackCacheMax = 32 << 20
	// treePackCacheOne is the biggest pack read whole (tree packs are
	// TreePackSize, 4 MiB by default, plus at most one blob); bigger ones
	// are read blob by blob.
	treePackCacheOne = 8 << 20
)

// packCache holds whole packs, least recently used first out. A pack being
// read is waited for, not read twice.
type packCache struct {
	max, one int64

	mu   sync.Mutex
	size int64
	m    map[crypto.ID]*cachedPack
	lru  list.List // of *cachedPack, most recent at the front
}

type cachedPack struct {
	id   crypto.ID
	done chan struct{} // closed when data or err is set
	data []byte
	err  error
	elem *list.Element // nil while loading or after eviction
}

func newPackCache(max, one int64) *packCache {
	return &packCache{max: max, one: one, m: map[crypto.ID]*cachedPack{}}
}

// get returns the whole pack h (id), loading it from be unless cached. It
// returns ok == false, and nothing, when the pack is too big to cache.
func (c *packCache) get(ctx context.Context, be blob.Storage, h blob.Handle, id crypto.ID) (data []byte, ok bool, err error) {
	c.mu.Lock()
	p := c.m[id]
	if p != nil {
		if p.elem != nil {
			c.lru.MoveToFront(p.elem)
		}
		c.mu.Unlock()
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
		if p.err != nil {
			return nil, true, p.err
		}
		return p.data, p.data != nil, nil
	}
	p = &cachedPack{id: id, done: make(chan struct{})}
	c.m[id] = p
	c.mu.Unlock()

	p.data, p.err = c.load(ctx, be, h)
	c.mu.Lock()
	switch {
	case p.err != nil:
		delete(c.m, id) // the next caller tries again
	case p.data != nil:
		p.elem = c.lru.PushFront(p)
		c.size += int64(len(p.data))
		for c.size > c.max && c.lru.Len() > 1 {
			old := c.lru.Remove(c.lru.Back()).(*cachedPack)
			old.elem = nil
			c.size -= int64(len(old.data))
			delete(c.m, old.id)
		}
	}
	c.mu.Unlock()
	close(p.done)
	return p.data, p.data != nil, p.err
}

// load reads the whole pack, or returns nil, nil when it is too big.
func (c *packCache) load(ctx context.Context, be blob.Storage, h blob.Handle) ([]byte, error) {
	fi, err := be.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if fi.Size > c.one || fi.Size <= 0 {
		return nil, nil
	}
	b, err := blob.LoadRange(ctx, be, h, 0, fi.Size, nil)
	if err != nil {
		return nil, fmt.Errorf("read pack %s whole: %w", h.Name, err)
	}
	return b, nil
}
