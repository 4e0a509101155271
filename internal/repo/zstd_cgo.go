//go:build cgo

package repo

/*
#include <stdlib.h>
#include <malloc.h>

// The few functions of the reference zstd library used here, from its
// zstd.h (ZSTD_getCParams, ZSTD_estimateCCtxSize_usingCParams and
// ZSTD_initStaticCCtx are in its static-linking section;
// ZSTD_compressionParameters is copied from it). The library itself is
// compiled and linked in by the github.com/DataDog/zstd package.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct {
    unsigned windowLog, chainLog, hashLog, searchLog, minMatch, targetLength;
    int strategy;
} ZSTD_compressionParameters;
ZSTD_compressionParameters ZSTD_getCParams(int compressionLevel, unsigned long long estimatedSrcSize, size_t dictSize);
size_t ZSTD_estimateCCtxSize_usingCParams(ZSTD_compressionParameters cParams);
ZSTD_CCtx* ZSTD_initStaticCCtx(void* workspace, size_t workspaceSize);
size_t ZSTD_compressCCtx(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize, int compressionLevel);
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);
size_t ZSTD_compressBound(size_t srcSize);
*/
import "C"

import (
	"errors"
	"runtime"
	"unsafe"

	ddzstd "github.com/DataDog/zstd" // also compiles and links the library called above

	"github.com/coffre/coffre/internal/repo/chunker"
)

// cEncoder compresses with the reference zstd library (DataDog/zstd bundles
// its C sources, so the binary has no run-time dependency).
//
// Its compression contexts are static: each lives in one C allocation
// sized once, by the library, for the largest input up to staticMax at the
// encoder's level, and kept in a small fixed pool (neither created per
// call nor dropped at every GC as a sync.Pool would; the Go garbage
// collector neither sees nor limits C memory). A context the library manages itself re-sizes its
// workspace to each input: chunks of mixed sizes made it free and allocate
// a fresh workspace, and zero its match tables, every few dozen calls (32
// times in 745 calls in an incremental backup of the bench tree), and that
// zeroing of fresh pages was 3-4% of the backup's CPU time. A larger input
// (a tree blob of a huge directory) is compressed with a context of its
// own, made and freed by the library.
type cEncoder struct {
	level int
	size  C.size_t // of one context's workspace
	ctxs  chan *C.ZSTD_CCtx
}

// staticMax is the largest input compressed with a pooled context: the
// largest chunk of the default chunker parameters (file content; stream
// chunks are smaller).
var staticMax = chunker.DefaultParams.MaxSize

func newEncoder(level int) encoder {
	// The largest workspace over the library's parameter tiers (inputs of
	// ≤ 16 KiB, ≤ 128 KiB, ≤ 256 KiB, more), as ZSTD_estimateCCtxSize
	// computes it, but for inputs of at most staticMax bytes: at high
	// levels, unbounded inputs would need a window, and tables, of
	// hundreds of MiB.
	var size C.size_t
	for _, tier := range []C.ulonglong{16 << 10, 128 << 10, 256 << 10, C.ulonglong(staticMax)} {
		size = max(size, C.ZSTD_estimateCCtxSize_usingCParams(C.ZSTD_getCParams(C.int(level), tier, 0)))
	}
	return &cEncoder{level: level, size: size, ctxs: make(chan *C.ZSTD_CCtx, 4*runtime.GOMAXPROCS(0))}
}

// newCtx makes a static context in a new C allocation; the context is at
// the start of its workspace, so C.free of it frees both.
func (e *cEncoder) newCtx() (*C.ZSTD_CCtx, error) {
	ws := C.malloc(e.size)
	if ws == nil {
		return nil, errors.New("zstd: out of memory for a compression context")
	}
	cx := C.ZSTD_initStaticCCtx(ws, e.size)
	if cx == nil {
		C.free(ws)
		return nil, errors.New("zstd: cannot make a compression context")
	}
	return cx, nil
}

func (e *cEncoder) encode(dst, src []byte) ([]byte, error) {
	if len(src) > staticMax {
		return ddzstd.CompressLevel(dst[:cap(dst)], src, e.level)
	}
	var cx *C.ZSTD_CCtx
	select {
	case cx = <-e.ctxs:
	default:
		var err error
		if cx, err = e.newCtx(); err != nil {
			return nil, err
		}
	}
	if bound := int(C.ZSTD_compressBound(C.size_t(len(src)))); cap(dst) < bound {
		dst = make([]byte, bound)
	}
	dst = dst[:cap(dst)]
	var sp unsafe.Pointer
	if len(src) > 0 {
		sp = unsafe.Pointer(&src[0])
	}
	n := C.ZSTD_compressCCtx(cx, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), sp, C.size_t(len(src)), C.int(e.level))
	select {
	case e.ctxs <- cx:
	default:
		C.free(unsafe.Pointer(cx))
	}
	if C.ZSTD_isError(n) != 0 {
		return nil, errors.New("zstd: " + C.GoString(C.ZSTD_getErrorName(n)))
	}
	return dst[:n], nil
}

func init() {
	// glibc gives each thread that calls malloc its own arena; cgo calls
	// run on many threads, and every arena keeps freed memory resident.
	// Two arenas are plenty for a few compression contexts.
	C.mallopt(C.M_ARENA_MAX, 2)
}
