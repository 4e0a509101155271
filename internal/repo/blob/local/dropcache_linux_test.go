//go:build linux

package local

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffre/coffre/internal/repo/blob"
)

// TestCommittedPackLeavesPageCache checks that a file written through
// Create and committed is intact and, on a disk file system, no longer in
// the page cache (dropCache after the fsync).
func TestCommittedPackLeavesPageCache(t *testing.T) {
	ctx := context.Background()
	s, err := Create(filepath.Join(t.TempDir(), "vault"))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	w, err := s.Create(ctx, blob.KindData)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 100_000)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	h := blob.Handle{Kind: blob.KindData, Name: "ab12cd"}
	if err := w.Commit(ctx, h.Name); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.Path(h))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Residency first: reading the file would bring it back.
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(m))), uintptr(len(m)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	unix.Munmap(m)
	if errno != 0 {
		t.Fatal(errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		// tmpfs pages are the file itself: there is no cache to leave.
		t.Logf("tmpfs: %d of %d pages resident, as expected", resident, len(vec))
	} else if resident > len(vec)/10 {
		t.Errorf("%d of %d pages of the committed file still in the page cache", resident, len(vec))
	}

	got, err := os.ReadFile(s.Path(h))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("committed file differs from what was written")
	}
}
