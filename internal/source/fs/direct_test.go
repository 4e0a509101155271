//go:build linux

package fs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/testutil"
)

// uncachedFile writes data to dir/name, syncs it and drops it from the page
// cache, so that Open reads it directly.
func uncachedFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if cached(f) {
		t.Fatalf("%s stays in the page cache after fsync and FADV_DONTNEED: direct reads cannot be tested here (is TMPDIR on tmpfs?)", p)
	}
	return name
}

// openDirect writes data to dir/f, drops it from the page cache and opens it
// through a source on dir, failing unless Open chose direct reads.
func openDirect(t *testing.T, dir string, data []byte) *file {
	t.Helper()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	uncachedFile(t, dir, "f", data)
	rc, err := s.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	f := rc.(*file)
	if f.direct == nil {
		t.Fatal("want direct reads")
	}
	return f
}

// oddReader reads through r in reads of an odd size, as the chunker's
// refills do not line up with blocks either.
func readOdd(t *testing.T, r io.Reader) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 7778)[1:] // never aligned: reads go through the direct buffer
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDirectReads(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{int(DirectMin), int(DirectMin) + 1, directBlock, directBlock + 1, 3*directBlock + 123, 1<<20 + 5} {
		data := testutil.RandomBytes(uint64(i), size)
		name := uncachedFile(t, dir, "f"+string(rune('a'+i)), data)
		rc, err := s.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		if rc.(*file).direct == nil {
			t.Fatalf("%d-byte file not in the page cache: read through the cache, want direct reads", size)
		}
		got := readOdd(t, rc)
		if err := rc.Close(); err != nil {
			t.Fatalf("%d bytes: close: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read %d bytes that differ from the file", size, len(got))
		}
	}
	if len(directFree) == 0 {
		t.Error("no direct-read buffer back in the free list after Close")
	}
}

// alignedBytes returns n bytes starting on a directAlign boundary.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := -int(uintptr(unsafe.Pointer(&b[0]))) & (directAlign - 1)
	return b[off : off+n]
}

// A read into a buffer that starts aligned is made straight into it, and
// reads into aligned and unaligned buffers, big and small, mix freely.
func TestDirectReadsIntoAlignedBuffers(t *testing.T) {
	dir := t.TempDir()
	size := 3*directZeroCopyMax + 5*directBlock + 1234
	data := testutil.RandomBytes(7, size)
	f := openDirect(t, dir, data)
	defer f.Close()

	big := alignedBytes(directZeroCopyMax + 3*directAlign)
	n, err := f.Read(big)
	if err != nil {
		t.Fatal(err)
	}
	if n != directZeroCopyMax || f.direct.w != 0 {
		t.Fatalf("read into an aligned buffer: got %d bytes, %d buffered; want %d straight into it", n, f.direct.w, directZeroCopyMax)
	}
	if !bytes.Equal(big[:n], data[:n]) {
		t.Fatal("zero-copy read differs from the file")
	}
	got := append([]byte(nil), big[:n]...)
	bufs := [][]byte{
		alignedBytes(3 * directAlign),         // zero-copy, one block at a time
		make([]byte, 5001)[1:],                // unaligned: through the direct buffer
		alignedBytes(directAlign - 1),         // aligned but smaller than a block
		alignedBytes(directZeroCopyMax + 100), // zero-copy, capped
	}
	for i := 0; ; i++ {
		b := bufs[i%len(bufs)]
		n, err := f.Read(b)
		got = append(got, b[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > size {
			t.Fatal("no EOF")
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes that differ from the %d of the file", len(got), len(data))
	}
}

func TestCachedAndSmallFilesReadThroughCache(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := testutil.RandomBytes(1, 3*directBlock)
	if err := os.WriteFile(filepath.Join(dir, "cached"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	small := testutil.RandomBytes(2, int(DirectMin)-1)
	uncachedFile(t, dir, "small", small)
	for name, data := range map[string][]byte{"cached": big, "small": small} {
		rc, err := s.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		if rc.(*file).direct != nil {
			t.Errorf("%s: direct reads, want reads through the page cache", name)
		}
		if got := readOdd(t, rc); !bytes.Equal(got, data) {
			t.Errorf("%s: content differs", name)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A direct read the filesystem refuses (here a real EINVAL: an unaligned
// offset) switches the file to reads through the cache at the same offset.
func TestDirectReadFallsBackOnEINVAL(t *testing.T) {
	data := testutil.RandomBytes(3, 4*directBlock)
	f := openDirect(t, t.TempDir(), data)
	defer f.Close()
	const skew = directBlock + 1 // not a multiple of the alignment
	f.direct.off = skew
	got := readOdd(t, f)
	if f.direct != nil {
		t.Fatal("still reading directly after EINVAL")
	}
	if !bytes.Equal(got, data[skew:]) {
		t.Fatalf("after the fallback read %d bytes, want the %d from offset %d", len(got), len(data)-skew, skew)
	}
	fl, err := unix.FcntlInt(f.File.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_DIRECT != 0 {
		t.Error("O_DIRECT still set after the fallback")
	}
}

func TestDirectReadSeesChange(t *testing.T) {
	dir := t.TempDir()
	rc := openDirect(t, dir, testutil.RandomBytes(4, 2*directBlock))
	if _, err := rc.Read(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(filepath.Join(dir, "f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	readOdd(t, rc)
	if err := rc.Close(); !errors.Is(err, archiver.ErrChanged) {
		t.Fatalf("close after the file grew: %v, want archiver.ErrChanged", err)
	}
}

// A direct read asks for no more than the file holds (plus one block): the
// kernel zero-fills a direct read's buffer past the end of the file, so a
// read of the whole buffer would write (and fault in) up to a MiB of the
// caller's memory for every file. Bytes of the buffer past the file's last
// block plus one must be left as they were.
func TestDirectReadStopsAtEndOfFile(t *testing.T) {
	for _, size := range []int{int(DirectMin) + 1234, 20 * directAlign, directZeroCopyMax + 5} {
		dir := t.TempDir()
		data := testutil.RandomBytes(uint64(size), size)
		f := openDirect(t, dir, data)
		buf := alignedBytes(directZeroCopyMax)
		var got []byte
		for i := 0; ; i++ {
			for j := range buf {
				buf[j] = 0xAA
			}
			n, err := f.Read(buf)
			got = append(got, buf[:n]...)
			limit := (n + directAlign) &^ (directAlign - 1) // n rounded up past a block boundary
			for j := limit; j < len(buf); j++ {
				if buf[j] != 0xAA {
					t.Fatalf("%d-byte file, read %d: %d bytes read, but the buffer was written at %d", size, i, n, j)
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i > 10 {
				t.Fatalf("%d-byte file: no EOF after %d reads", size, i)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("%d-byte file: close: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d-byte file: read %d bytes that differ from the file", size, len(got))
		}
	}
}

// A file that grows after it is opened is still read to its new end (one
// block at a time past the size it had), and Close reports the change.
func TestDirectReadOfGrowingFile(t *testing.T) {
	dir := t.TempDir()
	size := int(DirectMin) + 100
	data := testutil.RandomBytes(5, size)
	f := openDirect(t, dir, data)
	more := testutil.RandomBytes(6, 3*directAlign+17)
	af, err := os.OpenFile(filepath.Join(dir, "f"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := af.Write(more); err != nil {
		t.Fatal(err)
	}
	if err := af.Close(); err != nil {
		t.Fatal(err)
	}
	got := readOdd(t, f)
	if want := append(append([]byte(nil), data...), more...); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d of the grown file", len(got), len(want))
	}
	if err := f.Close(); !errors.Is(err, archiver.ErrChanged) {
		t.Fatalf("close of a file that grew: %v, want ErrChanged", err)
	}
}
