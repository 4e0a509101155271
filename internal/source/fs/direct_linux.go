package fs

import (
	"os"

	"golang.org/x/sys/unix"
)

// setDirect sets or clears O_DIRECT on f's descriptor.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	})
	if err != nil {
		return err
	}
	return serr
}

// cached reports whether any page of f is in the page cache (cachestat,
// Linux 6.5); when that cannot be known, false.
func cached(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var cs unix.Cachestat_t
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cerr = unix.Cachestat(uint(fd), &unix.CachestatRange{}, &cs, 0)
	}); err != nil || cerr != nil {
		return false
	}
	return cs.Cache > 0 || cs.Dirty > 0
}

// pread reads len(b) bytes at off with one system call (os.File.ReadAt
// would go on after a short read, at an unaligned offset).
func pread(f *os.File, b []byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Pread(int(fd), b, off)
			if rerr != unix.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, &os.PathError{Op: "read", Path: f.Name(), Err: rerr}
	}
	return n, nil
}
