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
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);
size_t ZSTD_compressBound(size_t srcSize);
size_t ZSTD_CCtx_setCParams(ZSTD_CCtx* cctx, ZSTD_compressionParameters cparams);
size_t ZSTD_CCtx_reset(ZSTD_CCtx* cctx, int reset);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);

// ZSTD_dfast, from zstd.h's ZSTD_strategy.
#define COFFRE_ZSTD_DFAST 2

// coffre_tuned_params is what coffre compresses srcSize bytes with at
// level: the library's parameters for that level and size, and for its
// double-fast strategy (levels 3 and 4 on most inputs) a minimum match of
// at least 5 bytes and both match tables together capped at 1 MiB (the
// larger one halved until they fit). See tunedParams in zstd_cgo.go.
static ZSTD_compressionParameters coffre_tuned_params(int level, unsigned long long srcSize) {
    ZSTD_compressionParameters p = ZSTD_getCParams(level, srcSize, 0);
    if (p.strategy == COFFRE_ZSTD_DFAST) {
        if (p.minMatch < 5) p.minMatch = 5;
        while ((4ull << p.hashLog) + (4ull << p.chainLog) > (1ull << 20)) {
            if (p.hashLog >= p.chainLog) p.hashLog--; else p.chainLog--;
        }
    }
    return p;
}

// coffre_compress compresses src into dst with the tuned parameters, on a
// context (static or not) that is at the start of a frame.
static size_t coffre_compress(ZSTD_CCtx* cx, void* dst, size_t dstCapacity, const void* src, size_t srcSize, int level) {
    // Session and parameters: a session cut short by an error would refuse
    // new parameters, and a static context starts with all of them zero
    // (no content size in the frame header) until they are reset.
    size_t r = ZSTD_CCtx_reset(cx, 3);  // ZSTD_reset_session_and_parameters
    if (ZSTD_isError(r)) return r;
    // The level first: fields of the parameters left 0 fall back to it.
    r = ZSTD_CCtx_setParameter(cx, 100, level);  // ZSTD_c_compressionLevel
    if (ZSTD_isError(r)) return r;
    r = ZSTD_CCtx_setCParams(cx, coffre_tuned_params(level, srcSize));
    if (ZSTD_isError(r)) return r;
    return ZSTD_compress2(cx, dst, dstCapacity, src, srcSize);
}
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
// It uses the library's parameters for its level and each input's size,
// tuned for the double-fast strategy (levels 3 and 4 on most inputs) in two
// ways, both measured on the benchmark tree A (JSON, logs, CSV, text):
//
//   - both match tables together at most 1 MiB (the size of one core's L2
//     cache on the bench machine): in a backup the compressor shares its
//     core with reading, hashing and sealing, and level 4's 2 MiB of tables
//     for chunks of 1 MiB and more missed the cache. Level 4 becomes hash
//     and chain logs 17/17 instead of 18/18: A's initial backup took 8%
//     less time (7 of 8 interleaved pairs), for 0.5% more bytes on those
//     chunks;
//   - a minimum match of 5 bytes where the library uses 4 (level 3 below
//     16 KiB and from 128 to 256 KiB, level 4 up to 128 KiB): shorter
//     matches cost more bits than they save on text; A's smaller blobs took
//     0.4% fewer bytes, at the same speed.
//
// Together A's vault is 0.2-0.3 MB smaller than with the library's own
// parameters. Frames are standard zstd either way.
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
	n := C.coffre_compress(cx, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), sp, C.size_t(len(src)), C.int(e.level))
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

// tunedParams reports the match-finder parameters encode uses for n bytes
// at level (see coffre_tuned_params).
func tunedParams(level, n int) (strategy, hashLog, chainLog, minMatch int) {
	p := C.coffre_tuned_params(C.int(level), C.ulonglong(n))
	return int(p.strategy), int(p.hashLog), int(p.chainLog), int(p.minMatch)
}

// referenceEncode compresses src as encode does, with a context the
// library allocates and sizes itself: the tests' yardstick for the pooled
// static contexts.
func referenceEncode(level int, src []byte) ([]byte, error) {
	cx := C.ZSTD_createCCtx()
	if cx == nil {
		return nil, errors.New("zstd: cannot make a compression context")
	}
	defer C.ZSTD_freeCCtx(cx)
	dst := make([]byte, int(C.ZSTD_compressBound(C.size_t(len(src)))))
	n := C.coffre_compress(cx, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), unsafe.Pointer(&src[0]), C.size_t(len(src)), C.int(level))
	if C.ZSTD_isError(n) != 0 {
		return nil, errors.New("zstd: " + C.GoString(C.ZSTD_getErrorName(n)))
	}
	return dst[:n], nil
}
