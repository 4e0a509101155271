//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHugeHeap checks that the heap's arenas are advised for transparent
// huge pages: every mapping in the advised range that the heap uses
// carries the "hg" flag in /proc/self/smaps (or the kernel has no THP, and
// says so with EINVAL).
func TestHugeHeap(t *testing.T) {
	t.Setenv("COFFRE_HUGEPAGES", "")
	lo, hi, err := adviseHugeHeap()
	if errors.Is(err, unix.EINVAL) {
		if _, serr := os.Stat("/sys/kernel/mm/transparent_hugepage"); serr == nil {
			t.Fatalf("madvise(MADV_HUGEPAGE): %v, on a kernel with transparent huge pages", err)
		}
		return // a kernel without THP: nothing to advise
	}
	if err != nil {
		t.Fatalf("madvise: %v", err)
	}
	if hi-lo < heapPrefault-2*hugePage {
		t.Fatalf("advised %#x-%#x, less than the %d bytes grown", lo, hi, heapPrefault)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		cur      string // the mapping being read, when it overlaps [lo, hi) and is writable
		advised  int
		unflaged []string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			// A mapping's first line: "start-end perms offset dev inode [name]".
			var start, end uintptr
			if _, err := fmt.Sscanf(f[0], "%x-%x", &start, &end); err != nil {
				t.Fatalf("smaps line %q: %v", line, err)
			}
			perms := f[1]
			cur = ""
			if start < hi && end > lo && strings.HasPrefix(perms, "rw") {
				cur = line
			}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "VmFlags:") {
			if strings.Contains(line, " hg") {
				advised++
			} else {
				unflaged = append(unflaged, cur)
			}
			cur = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if advised == 0 || len(unflaged) > 0 {
		t.Fatalf("heap range %#x-%#x: %d mappings advised for huge pages, not advised: %q", lo, hi, advised, unflaged)
	}
	// Off means off.
	t.Setenv("COFFRE_HUGEPAGES", "off")
	if lo, hi, err := adviseHugeHeap(); lo != 0 || hi != 0 || err != nil {
		t.Fatalf("COFFRE_HUGEPAGES=off: advised %#x-%#x (%v)", lo, hi, err)
	}
}
