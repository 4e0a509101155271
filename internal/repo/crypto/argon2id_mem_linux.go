//go:build linux

package crypto

import (
	"math"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePageSize is the size of an x86-64 or arm64 transparent huge page. The
// Argon2 memory is aligned to it so that it can be mapped with huge pages.
const hugePageSize = 2 << 20

// argon2Memory returns n zeroed blocks for Argon2id from an anonymous private
// mapping outside the Go heap, and a function that unmaps them. The garbage
// collector neither scans nor counts the mapping, and it holds only words,
// never Go pointers. The kernel zeroes its pages before reusing them, so it
// is not wiped. When the mapping fails it falls back to the heap.
//
// The mapping is populated up front rather than faulted in one 4 KiB page at
// a time, and asks for transparent huge pages. Both matter on virtual
// machines, where touching a page for the first time costs several
// microseconds: on a Firecracker VM, 64 MiB of heap took ~280 ms to fault in,
// MAP_POPULATE alone ~125 ms (the populate, then a first-touch cost per
// 4 KiB page that shows up as no fault at all), 2 MiB huge pages ~4 ms.
func argon2Memory(n uint32) ([]argon2Block, func()) {
	size := uint64(n) * uint64(unsafe.Sizeof(argon2Block{}))
	if n == 0 || size > math.MaxInt-hugePageSize {
		return argon2HeapMemory(n)
	}
	// Map one huge page more than needed, so that the blocks can start on
	// a huge page boundary; the slack is never touched.
	b, err := unix.Mmap(-1, 0, int(size)+hugePageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return argon2HeapMemory(n)
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	off := int((hugePageSize - start%hugePageSize) % hugePageSize)
	mem := b[off : off+int(size)]
	// Best effort: without transparent huge pages (THP disabled, or not in
	// the kernel) this fails or does nothing, and the pages are 4 KiB.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	if err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE); err != nil {
		// Before Linux 5.14 there is no MADV_POPULATE_WRITE: populate a
		// plain mapping at mmap time instead (4 KiB pages, whatever the
		// THP setting).
		unix.Munmap(b)
		b, err = unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return argon2HeapMemory(n)
		}
		mem = b
	}
	// Page aligned, so aligned for the blocks' 8-byte words.
	blocks := unsafe.Slice((*argon2Block)(unsafe.Pointer(unsafe.SliceData(mem))), n)
	return blocks, func() { unix.Munmap(b) }
}
