package fs

import "golang.org/x/sys/unix"

// Prefetch implements archiver.Prefetcher: a file that will be read
// through the page cache (smaller than DirectMin) is asked for with
// posix_fadvise(WILLNEED), which starts reading it in the background. A
// backup of many small files then no longer waits for the disk once per
// file. Bigger files are left alone: they are read directly when none of
// them is cached (fetching them into the cache would undo that).
func (s *Source) Prefetch(p string, size int64) {
	if size <= 0 || size >= DirectMin {
		return
	}
	fd, err := unix.Open(s.abs(p), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return // the read reports it
	}
	_ = unix.Fadvise(fd, 0, size, unix.FADV_WILLNEED)
	_ = unix.Close(fd)
}
