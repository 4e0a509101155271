package fs

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"
)

// Direct reads. A backup reads most files once, cold. Through the page
// cache every byte is copied twice and every page of the file is put in the
// cache (evicting what the machine's applications use), and on some virtual
// machines filling fresh page-cache pages is the costliest part of a backup.
// So a file that is not in the page cache at all is read with O_DIRECT
// into a small aligned buffer; a file with any page cached (or dirty) is
// read through the cache as usual, and a filesystem that refuses direct I/O
// (when setting the flag or on a read) is read through the cache too.
const (
	// directBlock is the size of one direct read. 256 KiB reads keep a
	// virtio disk as busy as 1 MiB ones did on the bench machine.
	directBlock = 256 << 10
	// directAlign is the buffer and offset alignment direct I/O needs
	// (the logical block size of the device; 4 KiB covers 512-byte and
	// 4 KiB devices).
	directAlign = 4096
	// directBuffers bounds the buffers kept for reuse.
	directBuffers = 16
	// directZeroCopyMax bounds one direct read into a caller's aligned
	// buffer.
	directZeroCopyMax = 1 << 20
)

// DirectMin is the smallest file read with direct I/O; smaller ones go
// through the page cache. A variable for tests and experiments.
var DirectMin int64 = 64 << 10

// directDisabled turns direct reads off (COFFRE_DIRECT_IO=off).
var directDisabled = os.Getenv("COFFRE_DIRECT_IO") == "off"

var directFree = make(chan []byte, directBuffers)

func getDirectBuf() []byte {
	select {
	case b := <-directFree:
		return b
	default:
	}
	b := make([]byte, directBlock+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+directBlock : off+directBlock]
}

func putDirectBuf(b []byte) {
	select {
	case directFree <- b:
	default:
	}
}

// directReader reads a file opened with O_DIRECT in aligned blocks.
type directReader struct {
	buf  []byte
	r, w int   // unread bytes: buf[r:w]
	off  int64 // file offset of the next block
	eof  bool
}

// read implements file.Read while the file is read directly. On EINVAL from
// the first direct read at an offset (a filesystem that accepts the flag
// but not the read), it switches f to reads through the page cache at the
// same offset.
func (f *file) readDirect(p []byte) (int, error) {
	d := f.direct
	if d.r == d.w {
		if d.eof {
			return 0, io.EOF
		}
		// A caller's buffer that starts aligned takes the read itself
		// (the chunker keeps its buffer so): no copy, and none of the
		// page faults of a second buffer.
		buf := d.buf
		zero := len(p) >= directAlign && uintptr(unsafe.Pointer(&p[0]))&(directAlign-1) == 0
		if zero {
			buf = p[:min(len(p), directZeroCopyMax)&^(directAlign-1)]
		}
		// Ask for no more than the file holds, plus one block: past the
		// end of a file a direct read fills the rest of the buffer with
		// zeros (Linux's iomap zero-fills the hole beyond EOF before
		// trimming the count), touching up to a MiB per file for
		// nothing. The extra block makes the read of the last block short,
		// so EOF is seen without one more read; a file that grew since its
		// stat is read on, one block at a time.
		want := max(f.size-d.off+1, 1)
		want = (want + directAlign - 1) &^ (directAlign - 1)
		if int64(len(buf)) > want {
			buf = buf[:want]
		}
		n, err := pread(f.File, buf, d.off)
		if err != nil {
			if errors.Is(err, syscall.EINVAL) {
				if err := f.leaveDirect(); err != nil {
					return 0, err
				}
				return f.File.Read(p)
			}
			return 0, err
		}
		if n < len(buf) {
			// End of file (direct reads are short only there). A file
			// that grows meanwhile is caught by Close's stat.
			d.eof = true
		}
		if n == 0 {
			return 0, io.EOF
		}
		d.off += int64(n)
		if zero {
			return n, nil
		}
		d.r, d.w = 0, n
	}
	n := copy(p, d.buf[d.r:d.w])
	d.r += n
	return n, nil
}

// leaveDirect turns f back to reads through the page cache, positioned
// where the direct reads stopped.
func (f *file) leaveDirect() error {
	d := f.direct
	f.direct = nil
	putDirectBuf(d.buf)
	if err := setDirect(f.File, false); err != nil {
		return err
	}
	_, err := f.File.Seek(d.off, io.SeekStart)
	return err
}

// closeDirect releases f's direct-read buffer.
func (f *file) closeDirect() {
	if f.direct != nil {
		putDirectBuf(f.direct.buf)
		f.direct = nil
	}
}

// maybeDirect switches f to direct reads when it is big enough, none of it
// is in the page cache and the filesystem accepts O_DIRECT.
func (f *file) maybeDirect() {
	if directDisabled || f.size < DirectMin || cached(f.File) {
		return
	}
	if setDirect(f.File, true) != nil {
		return
	}
	f.direct = &directReader{buf: getDirectBuf()}
}
