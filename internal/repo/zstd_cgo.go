//go:build cgo

package repo

/*
#include <malloc.h>
*/
import "C"

import (
	"runtime"

	ddzstd "github.com/DataDog/zstd"
)

// cEncoder compresses with the reference zstd library (DataDog/zstd bundles
// its C sources, so the binary has no run-time dependency). Compression
// contexts are kept in a small fixed pool: a context holds ~1-2 MB of C
// memory that the Go garbage collector neither sees nor limits, so they are
// neither created per call nor dropped at every GC as a sync.Pool would.
type cEncoder struct {
	level int
	ctxs  chan ddzstd.Ctx
}

func newEncoder(level int) encoder {
	return &cEncoder{level: level, ctxs: make(chan ddzstd.Ctx, 4*runtime.GOMAXPROCS(0))}
}

func (e *cEncoder) encode(dst, src []byte) ([]byte, error) {
	var cx ddzstd.Ctx
	select {
	case cx = <-e.ctxs:
	default:
		cx = ddzstd.NewCtx()
	}
	out, err := cx.CompressLevel(dst[:cap(dst)], src, e.level)
	select {
	case e.ctxs <- cx:
	default: // freed by its finalizer
	}
	return out, err
}

func init() {
	// glibc gives each thread that calls malloc its own arena; cgo calls
	// run on many threads, and every arena keeps freed memory resident.
	// Two arenas are plenty for a few compression contexts.
	C.mallopt(C.M_ARENA_MAX, 2)
}
