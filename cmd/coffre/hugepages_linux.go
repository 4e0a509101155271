//go:build linux

package main

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeHeap asks Linux to back the Go heap with transparent huge pages
// (madvise MADV_HUGEPAGE), as it does on its own when THP is "always"
// rather than the usual "madvise".
//
// On virtual machines the first touch of a memory page is costly: on the
// bench machine (a Firecracker VM) ~20 µs per 4 KiB page, so the ~14,000
// page faults of an incremental backup of dataset A cost ~0.25 s of its
// ~1.1 s; with huge pages it is ~4,000 faults and the backup ~25% faster
// (docs/performance.md). The runtime maps its heap in pieces as it grows,
// and a piece mapped later does not inherit the advice, so the heap is
// first grown by one large allocation that is never touched (no page is
// faulted in for it), freed, and the memory it held advised: the next 40
// MiB the heap uses come in huge pages, what it uses beyond in 4 KiB pages.
// A huge page is resident whole once touched, so advising more costs
// peak memory: with 56 MiB, the peak RSS of dataset A's initial backup
// went from 83 MB to 94 MB; with 40 MiB, 88 MB.
//
// COFFRE_HUGEPAGES=off skips it. Failures are ignored: the heap then uses
// 4 KiB pages as before.
func hugeHeap() { _, _, _ = adviseHugeHeap() }

// adviseHugeHeap does hugeHeap's work and returns the address range it
// advised (the grown allocation's, shrunk to whole huge pages) and
// madvise's error.
func adviseHugeHeap() (lo, hi uintptr, err error) {
	if os.Getenv("COFFRE_HUGEPAGES") == "off" {
		return 0, 0, nil
	}
	start, end := growHeap(heapPrefault)
	runtime.GC() // frees the allocation: its pages stay mapped for the heap
	lo = (start + hugePage - 1) &^ (hugePage - 1)
	hi = end &^ (hugePage - 1)
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, unix.MADV_HUGEPAGE); e != 0 {
		return lo, hi, e
	}
	return lo, hi, nil
}

const (
	// hugePage is the size of a transparent huge page on x86-64 and arm64
	// (4 KiB base pages).
	hugePage = 2 << 20
	// heapPrefault is how much heap is mapped up front and advised.
	heapPrefault = 40 << 20
)

// growHeap makes the runtime map n bytes of heap, without touching them,
// and returns where they lie.
//
//go:noinline
func growHeap(n int) (start, end uintptr) {
	b := make([]byte, n)
	start = uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return start, start + uintptr(n)
}
