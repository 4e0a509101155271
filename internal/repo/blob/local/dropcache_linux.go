//go:build linux

package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache tells the kernel that the (synced) contents of f will not be
// read again soon, so that its page-cache pages are freed now rather than
// evicting the user's data later. Best effort.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
