package archiver

import (
	"context"
	"sync"

	"github.com/coffre/coffre/internal/repo/bufpool"
)

// memLimit bounds the bytes of chunk buffers in flight, so that peak memory
// does not grow with the number of workers or the size of files.
type memLimit struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	max   int64
}

func newMemLimit(n int64) *memLimit {
	m := &memLimit{avail: n, max: n}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// acquire waits for n bytes (a request larger than the limit waits for all of
// it to be free, then proceeds).
func (m *memLimit) acquire(ctx context.Context, n int64) error {
	if n > m.max {
		n = m.max
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.avail < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.cond.Wait()
	}
	m.avail -= n
	return nil
}

func (m *memLimit) release(n int64) {
	if n > m.max {
		n = m.max
	}
	m.mu.Lock()
	m.avail += n
	m.mu.Unlock()
	m.cond.Broadcast()
}

// wake lets waiters notice a cancelled context.
func (m *memLimit) wake() { m.cond.Broadcast() }

// trySem is a non-blocking semaphore for directory goroutines.
type trySem struct{ ch chan struct{} }

func newTrySem(n int) *trySem { return &trySem{ch: make(chan struct{}, n)} }

func (s *trySem) tryAcquire() bool {
	select {
	case s.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *trySem) release() { <-s.ch }

func getChunk(n int) []byte { return bufpool.Default.Get(n) }

func putChunk(b []byte) { bufpool.Default.Put(b) }
