// Package blobtest owns the conformance suite every blob.Storage implementation
// must pass.
package blobtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob"
)

// nameSeq makes every generated name unique within a test binary.
var nameSeq atomic.Uint64

// randomName returns a unique 64-character lower-case hex name, like a
// content id.
func randomName() string {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], nameSeq.Add(1))
	var b [32]byte
	_, _ = rand.NewChaCha8(seed).Read(b[:])
	return hex.EncodeToString(b[:])
}

// randomData returns n deterministic pseudo-random bytes.
func randomData(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[8:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// handleFor returns a fresh handle of kind k.
func handleFor(k blob.Kind) blob.Handle {
	if k == blob.KindConfig {
		return blob.Handle{Kind: k, Name: "config"}
	}
	return blob.Handle{Kind: k, Name: randomName()}
}

// onlyReader hides every method of an io.Reader except Read, so that backends
// cannot take shortcuts (Seek, WriteTo, Len).
type onlyReader struct{ io.Reader }

// errReader yields data, then fails with err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

var errInjected = errors.New("injected reader failure")

// Run runs the conformance suite. Every subtest opens a fresh, empty storage
// with open; Run closes it (and checks that Close succeeds) when the subtest
// ends, so open must not close it itself.
func Run(t *testing.T, open func(t *testing.T) blob.Storage) {
	st := func(t *testing.T) blob.Storage {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	t.Run("Location", func(t *testing.T) { testLocation(t, st(t)) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, st(t)) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, st(t)) })
	t.Run("LoadRange", func(t *testing.T) { testLoadRange(t, st(t)) })
	t.Run("Stat", func(t *testing.T) { testStat(t, st(t)) })
	t.Run("List", func(t *testing.T) { testList(t, st(t)) })
	t.Run("ListStops", func(t *testing.T) { testListStops(t, st(t)) })
	t.Run("Remove", func(t *testing.T) { testRemove(t, st(t)) })
	t.Run("SaveSizeMismatch", func(t *testing.T) { testSaveSizeMismatch(t, st(t)) })
	t.Run("SaveReaderError", func(t *testing.T) { testSaveReaderError(t, st(t)) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, st(t)) })
	t.Run("SaveCopies", func(t *testing.T) { testSaveCopies(t, st(t)) })
	t.Run("EmptyFile", func(t *testing.T) { testEmptyFile(t, st(t)) })
	t.Run("LargeFile", func(t *testing.T) { testLargeFile(t, st(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, st(t)) })
	t.Run("Cancelled", func(t *testing.T) { testCancelled(t, st(t)) })
	t.Run("CancelDuringSave", func(t *testing.T) { testCancelDuringSave(t, st(t)) })
	t.Run("InvalidHandle", func(t *testing.T) { testInvalidHandle(t, st(t)) })
}

// save stores data under h or fails the test.
func save(t *testing.T, s blob.Storage, h blob.Handle, data []byte) {
	t.Helper()
	if err := s.Save(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Save(%v, %d bytes): %v", h, len(data), err)
	}
}

// load reads all of h or fails the test.
func load(t *testing.T, s blob.Storage, h blob.Handle) []byte {
	t.Helper()
	buf, err := blob.LoadAll(context.Background(), s, h)
	if err != nil {
		t.Fatalf("LoadAll(%v): %v", h, err)
	}
	return buf
}

// listAll returns the infos List reports for k, by name; it fails the test on
// an error or a duplicate name.
func listAll(t *testing.T, s blob.Storage, k blob.Kind) map[string]blob.FileInfo {
	t.Helper()
	m := make(map[string]blob.FileInfo)
	err := s.List(context.Background(), k, func(fi blob.FileInfo) error {
		if _, dup := m[fi.Name]; dup {
			t.Errorf("List(%v) reported %q twice", k, fi.Name)
		}
		m[fi.Name] = fi
		return nil
	})
	if err != nil {
		t.Fatalf("List(%v): %v", k, err)
	}
	return m
}

// wantNotExist checks that h is not visible through Stat, Load or List.
func wantNotExist(t *testing.T, s blob.Storage, h blob.Handle) {
	t.Helper()
	ctx := context.Background()
	if fi, err := s.Stat(ctx, h); !blob.IsNotExist(err) {
		t.Errorf("Stat(%v) = %+v, %v; want an error wrapping ErrNotExist", h, fi, err)
	}
	rd, err := s.Load(ctx, h, 0, 0)
	if err == nil {
		rd.Close()
	}
	if !blob.IsNotExist(err) {
		t.Errorf("Load(%v) error = %v; want an error wrapping ErrNotExist", h, err)
	}
	if _, ok := listAll(t, s, h.Kind)[h.Name]; ok {
		t.Errorf("List(%v) reports %q, which should not exist", h.Kind, h.Name)
	}
}

// wantNoFiles checks that List reports no file of any kind (so nothing
// temporary either).
func wantNoFiles(t *testing.T, s blob.Storage) {
	t.Helper()
	for _, k := range blob.Kinds {
		if m := listAll(t, s, k); len(m) > 0 {
			t.Errorf("List(%v) = %v, want nothing", k, names(m))
		}
	}
}

func names(m map[string]blob.FileInfo) []string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func testLocation(t *testing.T, s blob.Storage) {
	if s.Location() == "" {
		t.Error("Location() is empty")
	}
}

func testEmpty(t *testing.T, s blob.Storage) {
	wantNoFiles(t, s)
	for _, k := range blob.Kinds {
		wantNotExist(t, s, handleFor(k))
		if err := s.Remove(context.Background(), handleFor(k)); !blob.IsNotExist(err) {
			t.Errorf("Remove of a missing %v file: %v, want an error wrapping ErrNotExist", k, err)
		}
	}
}

func testRoundTrip(t *testing.T, s blob.Storage) {
	for i, k := range blob.Kinds {
		h := handleFor(k)
		data := randomData(uint64(i), 1000+i*37)
		save(t, s, h, data)
		if got := load(t, s, h); !bytes.Equal(got, data) {
			t.Errorf("%v: loaded %d bytes differ from the %d saved", h, len(got), len(data))
		}
		// Through a plain reader too.
		h2 := handleFor(k)
		data2 := randomData(uint64(i+100), 777)
		if err := s.Save(context.Background(), h2, onlyReader{bytes.NewReader(data2)}, int64(len(data2))); err != nil {
			t.Fatalf("Save(%v) with a plain reader: %v", h2, err)
		}
		if got := load(t, s, h2); !bytes.Equal(got, data2) {
			t.Errorf("%v: loaded %d bytes differ from the %d saved", h2, len(got), len(data2))
		}
	}
}

func testLoadRange(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	const size = 1000
	data := randomData(1, size)
	h := handleFor(blob.KindData)
	save(t, s, h, data)

	good := []struct{ off, length, wantOff, wantLen int64 }{
		{0, 0, 0, size},
		{10, 0, 10, size - 10},
		{10, 20, 10, 20},
		{0, size, 0, size},
		{0, 1, 0, 1},
		{size - 1, 1, size - 1, 1},
		{size - 1, 0, size - 1, 1},
		{size, 0, size, 0}, // offset at the end: nothing to read
	}
	for _, c := range good {
		rd, err := s.Load(ctx, h, c.off, c.length)
		if err != nil {
			t.Errorf("Load(%d, %d): %v", c.off, c.length, err)
			continue
		}
		got, err := io.ReadAll(rd)
		if cerr := rd.Close(); cerr != nil {
			t.Errorf("Load(%d, %d): Close: %v", c.off, c.length, cerr)
		}
		if err != nil {
			t.Errorf("Load(%d, %d): read: %v", c.off, c.length, err)
			continue
		}
		if want := data[c.wantOff : c.wantOff+c.wantLen]; !bytes.Equal(got, want) {
			t.Errorf("Load(%d, %d) returned %d bytes, want %d bytes at %d", c.off, c.length, len(got), c.wantLen, c.wantOff)
		}
		buf, err := blob.LoadRange(ctx, s, h, c.wantOff, c.wantLen, nil)
		if err != nil || !bytes.Equal(buf, data[c.wantOff:c.wantOff+c.wantLen]) {
			t.Errorf("LoadRange(%d, %d) = %d bytes, %v", c.wantOff, c.wantLen, len(buf), err)
		}
	}

	bad := []struct{ off, length int64 }{
		{size, 1},
		{size + 1, 0},
		{size + 1, 1},
		{size - 10, 11},
		{0, size + 1},
		{-1, 0},
		{-1, 10},
		{0, -1},
		{1 << 62, 1 << 62},
		{10, 1<<63 - 1},
	}
	for _, c := range bad {
		// The error may come from Load or from reading: a reader may return
		// fewer bytes than asked only together with an error.
		rd, err := s.Load(ctx, h, c.off, c.length)
		if err == nil {
			_, err = io.ReadAll(rd)
			rd.Close()
		}
		if err == nil {
			t.Errorf("Load(%d, %d) of a %d-byte file succeeded, want an error", c.off, c.length, size)
		}
	}
	// The file is unharmed.
	if got := load(t, s, h); !bytes.Equal(got, data) {
		t.Error("file changed after range loads")
	}
}

func testStat(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	for i, k := range blob.Kinds {
		h := handleFor(k)
		size := 100 + i*13
		save(t, s, h, randomData(uint64(i), size))
		fi, err := s.Stat(ctx, h)
		if err != nil {
			t.Fatalf("Stat(%v): %v", h, err)
		}
		if fi.Name != h.Name || fi.Size != int64(size) {
			t.Errorf("Stat(%v) = %q, %d bytes; want %q, %d bytes", h, fi.Name, fi.Size, h.Name, size)
		}
		if fi.ModTime.IsZero() {
			t.Errorf("Stat(%v): zero ModTime", h)
		}
	}
	if _, err := s.Stat(ctx, handleFor(blob.KindIndex)); !blob.IsNotExist(err) {
		t.Errorf("Stat of a missing file: %v, want an error wrapping ErrNotExist", err)
	}
}

func testList(t *testing.T, s blob.Storage) {
	want := make(map[blob.Kind]map[string]int64)
	seed := uint64(0)
	for _, k := range blob.Kinds {
		want[k] = make(map[string]int64)
		n := 5
		if k == blob.KindConfig {
			n = 1
		}
		for i := 0; i < n; i++ {
			h := handleFor(k)
			if k == blob.KindData || k == blob.KindTree {
				// Names sharing a prefix and shorter names too.
				switch i {
				case 1:
					h.Name = "ab" + randomName()[:20]
				case 2:
					h.Name = "ab" + randomName()[:30]
				case 3:
					h.Name = "c7"
				}
			}
			seed++
			size := int(seed * 17 % 300)
			save(t, s, h, randomData(seed, size))
			want[k][h.Name] = int64(size)
		}
	}
	for _, k := range blob.Kinds {
		got := listAll(t, s, k)
		if len(got) != len(want[k]) {
			t.Errorf("List(%v) reports %d files, want %d: %v", k, len(got), len(want[k]), names(got))
		}
		for name, size := range want[k] {
			fi, ok := got[name]
			if !ok {
				t.Errorf("List(%v) misses %q", k, name)
				continue
			}
			if fi.Size != size {
				t.Errorf("List(%v): %q has size %d, want %d", k, name, fi.Size, size)
			}
			if fi.ModTime.IsZero() {
				t.Errorf("List(%v): %q has a zero ModTime", k, name)
			}
		}
		for name := range got {
			if _, ok := want[k][name]; !ok {
				t.Errorf("List(%v) reports %q, which was not saved as %v", k, name, k)
			}
		}
	}
}

func testListStops(t *testing.T, s blob.Storage) {
	for i := 0; i < 5; i++ {
		save(t, s, handleFor(blob.KindSnapshot), randomData(uint64(i), 10))
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.List(context.Background(), blob.KindSnapshot, func(blob.FileInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("List called fn %d times after it failed, want 1", calls)
	}
	// fn may call back into the storage.
	err = s.List(context.Background(), blob.KindSnapshot, func(fi blob.FileInfo) error {
		_, err := s.Stat(context.Background(), blob.Handle{Kind: blob.KindSnapshot, Name: fi.Name})
		return err
	})
	if err != nil {
		t.Errorf("List with a callback calling Stat: %v", err)
	}
}

func testRemove(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	for i, k := range blob.Kinds {
		h := handleFor(k)
		keep := handleFor(k)
		if k == blob.KindConfig {
			keep = blob.Handle{Kind: blob.KindKey, Name: randomName()}
		}
		save(t, s, h, randomData(uint64(i), 100))
		save(t, s, keep, randomData(uint64(i+10), 50))
		if err := s.Remove(ctx, h); err != nil {
			t.Fatalf("Remove(%v): %v", h, err)
		}
		wantNotExist(t, s, h)
		if err := s.Remove(ctx, h); !blob.IsNotExist(err) {
			t.Errorf("second Remove(%v): %v, want an error wrapping ErrNotExist", h, err)
		}
		if got := load(t, s, keep); !bytes.Equal(got, randomData(uint64(i+10), 50)) {
			t.Errorf("Remove(%v) harmed %v", h, keep)
		}
		// It can be saved again.
		save(t, s, h, randomData(uint64(i+20), 30))
		if got := load(t, s, h); !bytes.Equal(got, randomData(uint64(i+20), 30)) {
			t.Errorf("%v saved after Remove: wrong content", h)
		}
	}
	if err := s.Remove(ctx, handleFor(blob.KindData)); !blob.IsNotExist(err) {
		t.Errorf("Remove of a never-saved file: %v, want an error wrapping ErrNotExist", err)
	}
}

func testSaveSizeMismatch(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	data := randomData(3, 1000)
	cases := []struct {
		name string
		rd   func() io.Reader
		size int64
	}{
		{"short", func() io.Reader { return bytes.NewReader(data) }, 1001},
		{"short plain", func() io.Reader { return onlyReader{bytes.NewReader(data)} }, 2000},
		{"long", func() io.Reader { return bytes.NewReader(data) }, 999},
		{"long plain", func() io.Reader { return onlyReader{bytes.NewReader(data)} }, 10},
		{"long from empty", func() io.Reader { return bytes.NewReader(data) }, 0},
		{"empty reader", func() io.Reader { return bytes.NewReader(nil) }, 1},
		{"negative size", func() io.Reader { return bytes.NewReader(data) }, -1},
		{"endless", func() io.Reader { return onlyReader{rand.NewChaCha8([32]byte{})} }, 1 << 20},
	}
	for _, k := range blob.Kinds {
		for _, c := range cases {
			h := handleFor(k)
			if err := s.Save(ctx, h, c.rd(), c.size); err == nil {
				t.Errorf("Save(%v) %s (size %d) succeeded, want an error", h, c.name, c.size)
			}
			wantNotExist(t, s, h)
		}
	}
	wantNoFiles(t, s)

	// A failed Save leaves an existing file as it was.
	for _, k := range blob.Kinds {
		h := handleFor(k)
		save(t, s, h, data)
		for _, c := range cases {
			if err := s.Save(ctx, h, c.rd(), c.size); err == nil {
				t.Errorf("Save(%v) %s over an existing file succeeded, want an error", h, c.name)
			}
			if got := load(t, s, h); !bytes.Equal(got, data) {
				t.Errorf("failed Save(%v) %s changed the existing file", h, c.name)
			}
		}
		if got := listAll(t, s, k); len(got) != 1 || got[h.Name].Size != int64(len(data)) {
			t.Errorf("List(%v) after failed replacements = %v, want only %q", k, names(got), h.Name)
		}
	}
}

func testSaveReaderError(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	data := randomData(4, 5000)
	for _, k := range blob.Kinds {
		h := handleFor(k)
		err := s.Save(ctx, h, &errReader{data: data[:2500], err: errInjected}, int64(len(data)))
		if err == nil {
			t.Errorf("Save(%v) from a failing reader succeeded", h)
		}
		wantNotExist(t, s, h)
		// A reader failing after all the data (instead of io.EOF).
		h = handleFor(k)
		err = s.Save(ctx, h, &errReader{data: data, err: errInjected}, int64(len(data)))
		if err == nil {
			t.Errorf("Save(%v) from a reader failing at the end succeeded", h)
		}
		wantNotExist(t, s, h)
	}
	wantNoFiles(t, s)
}

func testReplace(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	for i, k := range blob.Kinds {
		h := handleFor(k)
		first := randomData(uint64(i), 3000)
		second := randomData(uint64(i+50), 1234)
		save(t, s, h, first)
		save(t, s, h, second)
		if got := load(t, s, h); !bytes.Equal(got, second) {
			t.Errorf("%v: loaded %d bytes, want the %d bytes of the second Save", h, len(got), len(second))
		}
		fi, err := s.Stat(ctx, h)
		if err != nil || fi.Size != int64(len(second)) {
			t.Errorf("Stat(%v) after replace = %d bytes, %v; want %d bytes", h, fi.Size, err, len(second))
		}
		got := listAll(t, s, k)
		if len(got) != 1 || got[h.Name].Size != int64(len(second)) {
			t.Errorf("List(%v) after replace = %v, want only %q with %d bytes", k, names(got), h.Name, len(second))
		}
	}
}

func testSaveCopies(t *testing.T, s blob.Storage) {
	h := handleFor(blob.KindData)
	data := randomData(5, 4096)
	buf := bytes.Clone(data)
	save(t, s, h, buf)
	for i := range buf {
		buf[i] = 0
	}
	got := load(t, s, h)
	if !bytes.Equal(got, data) {
		t.Fatal("changing the saved buffer changed the stored file")
	}
	for i := range got {
		got[i] = 1
	}
	if got := load(t, s, h); !bytes.Equal(got, data) {
		t.Fatal("changing a loaded buffer changed the stored file")
	}
}

func testEmptyFile(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	for _, k := range blob.Kinds {
		h := handleFor(k)
		if err := s.Save(ctx, h, bytes.NewReader(nil), 0); err != nil {
			t.Fatalf("Save(%v) of an empty file: %v", h, err)
		}
		fi, err := s.Stat(ctx, h)
		if err != nil || fi.Size != 0 || fi.Name != h.Name {
			t.Errorf("Stat(%v) = %+v, %v; want %q with size 0", h, fi, err, h.Name)
		}
		if got := load(t, s, h); len(got) != 0 {
			t.Errorf("Load(%v) of an empty file returned %d bytes", h, len(got))
		}
		rd, err := s.Load(ctx, h, 0, 1)
		if err == nil {
			_, err = io.ReadAll(rd)
			rd.Close()
		}
		if err == nil {
			t.Errorf("Load(%v, 0, 1) of an empty file succeeded", h)
		}
		got := listAll(t, s, k)
		if fi, ok := got[h.Name]; !ok || fi.Size != 0 {
			t.Errorf("List(%v) = %v, want %q with size 0", k, names(got), h.Name)
		}
		if err := s.Remove(ctx, h); err != nil {
			t.Errorf("Remove(%v) of an empty file: %v", h, err)
		}
	}
}

func testLargeFile(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	const size = 5 << 20
	data := randomData(6, size)
	h := handleFor(blob.KindData)
	if err := s.Save(ctx, h, onlyReader{bytes.NewReader(data)}, size); err != nil {
		t.Fatalf("Save(%v) of 5 MiB: %v", h, err)
	}
	if got := load(t, s, h); !bytes.Equal(got, data) {
		t.Fatalf("Load(%v): %d bytes differ from the 5 MiB saved", h, len(got))
	}
	fi, err := s.Stat(ctx, h)
	if err != nil || fi.Size != size {
		t.Errorf("Stat(%v) = %d bytes, %v; want %d", h, fi.Size, err, size)
	}
	off, length := int64(size/2-12345), int64(1<<20+7)
	buf, err := blob.LoadRange(ctx, s, h, off, length, nil)
	if err != nil || !bytes.Equal(buf, data[off:off+length]) {
		t.Errorf("LoadRange(%v, %d, %d) = %d bytes, %v", h, off, length, len(buf), err)
	}
	buf, err = blob.LoadRange(ctx, s, h, size-10, 10, nil)
	if err != nil || !bytes.Equal(buf, data[size-10:]) {
		t.Errorf("LoadRange(%v) of the last 10 bytes = %d bytes, %v", h, len(buf), err)
	}
	if got := listAll(t, s, blob.KindData); got[h.Name].Size != size {
		t.Errorf("List reports %d bytes for %v, want %d", got[h.Name].Size, h, size)
	}
}

func testConcurrent(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	const workers, perWorker = 8, 20
	shared := blob.Handle{Kind: blob.KindLock, Name: randomName()}
	sharedData := randomData(7, 2000)
	save(t, s, shared, sharedData)

	var wg sync.WaitGroup
	saved := make([][]blob.Handle, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kinds := []blob.Kind{blob.KindData, blob.KindTree, blob.KindIndex, blob.KindSnapshot}
			for i := 0; i < perWorker; i++ {
				k := kinds[(w+i)%len(kinds)]
				h := blob.Handle{Kind: k, Name: fmt.Sprintf("%02x%s", w*perWorker+i, randomName()[:20])}
				data := randomData(uint64(w*1000+i), 500+i*100)
				if err := s.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
					t.Errorf("concurrent Save(%v): %v", h, err)
					return
				}
				saved[w] = append(saved[w], h)
				got, err := blob.LoadAll(ctx, s, h)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("concurrent Load(%v) = %d bytes, %v; want %d bytes", h, len(got), err, len(data))
				}
				// Everybody rewrites the same file with the same content.
				if err := s.Save(ctx, shared, bytes.NewReader(sharedData), int64(len(sharedData))); err != nil {
					t.Errorf("concurrent Save(%v): %v", shared, err)
				}
				got, err = blob.LoadAll(ctx, s, shared)
				if err != nil || !bytes.Equal(got, sharedData) {
					t.Errorf("concurrent Load(%v) = %d bytes, %v; want %d bytes", shared, len(got), err, len(sharedData))
				}
				seen := false
				err = s.List(ctx, k, func(fi blob.FileInfo) error {
					if fi.Name == h.Name {
						seen = true
						if fi.Size != int64(len(data)) {
							t.Errorf("concurrent List(%v): %q has %d bytes, want %d", k, fi.Name, fi.Size, len(data))
						}
					}
					return nil
				})
				if err != nil {
					t.Errorf("concurrent List(%v): %v", k, err)
				}
				if !seen {
					t.Errorf("concurrent List(%v) misses %q saved before", k, h.Name)
				}
				if _, err := s.Stat(ctx, shared); err != nil {
					t.Errorf("concurrent Stat(%v): %v", shared, err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for _, k := range blob.Kinds {
		total += len(listAll(t, s, k))
	}
	if want := workers*perWorker + 1; total != want {
		t.Errorf("after concurrent saves List reports %d files, want %d", total, want)
	}
	for w := range saved {
		for _, h := range saved[w] {
			if _, err := s.Stat(ctx, h); err != nil {
				t.Errorf("Stat(%v) after concurrent saves: %v", h, err)
			}
		}
	}
}

func testCancelled(t *testing.T, s blob.Storage) {
	existing := handleFor(blob.KindIndex)
	save(t, s, existing, randomData(8, 100))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	want := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with a cancelled context succeeded", op)
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want an error wrapping context.Canceled", op, err)
		}
	}
	h := handleFor(blob.KindData)
	data := randomData(9, 100)
	want("Save", s.Save(ctx, h, bytes.NewReader(data), int64(len(data))))
	wantNotExist(t, s, h)
	rd, err := s.Load(ctx, existing, 0, 0)
	if err == nil {
		_, err = io.ReadAll(rd)
		rd.Close()
	}
	want("Load", err)
	_, err = s.Stat(ctx, existing)
	want("Stat", err)
	called := false
	err = s.List(ctx, blob.KindIndex, func(blob.FileInfo) error { called = true; return nil })
	want("List", err)
	if called {
		t.Error("List with a cancelled context called fn")
	}
	want("Remove", s.Remove(ctx, existing))
	if got := load(t, s, existing); !bytes.Equal(got, randomData(8, 100)) {
		t.Error("calls with a cancelled context changed an existing file")
	}
}

// cancelReader cancels its context after yielding the first half of data.
type cancelReader struct {
	data   []byte
	half   int
	cancel context.CancelFunc
}

func (r *cancelReader) Read(p []byte) (int, error) {
	if r.half <= 0 {
		r.cancel()
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) > 1000 {
		p = p[:1000]
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.half -= n
	return n, nil
}

func testCancelDuringSave(t *testing.T, s blob.Storage) {
	data := randomData(10, 200_000)
	h := handleFor(blob.KindData)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rd := &cancelReader{data: data, half: len(data) / 2, cancel: cancel}
	if err := s.Save(ctx, h, rd, int64(len(data))); err == nil {
		t.Errorf("Save(%v) cancelled half way succeeded", h)
	}
	wantNotExist(t, s, h)
	wantNoFiles(t, s)
}

func testInvalidHandle(t *testing.T, s blob.Storage) {
	ctx := context.Background()
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	invalid := []blob.Handle{
		{Kind: "", Name: "abcd"},
		{Kind: "bogus", Name: "abcd"},
		{Kind: "Data", Name: "abcd"},
		{Kind: "data/..", Name: "abcd"},
		{Kind: blob.KindData, Name: ""},
		{Kind: blob.KindData, Name: ".tmp-abcd"},
		{Kind: blob.KindData, Name: "."},
		{Kind: blob.KindData, Name: ".."},
		{Kind: blob.KindData, Name: "../../etc"},
		{Kind: blob.KindIndex, Name: "a/b"},
		{Kind: blob.KindIndex, Name: "..\\x"},
		{Kind: blob.KindIndex, Name: "ABCD"},
		{Kind: blob.KindIndex, Name: "ab cd"},
		{Kind: blob.KindIndex, Name: "ab\x00cd"},
		{Kind: blob.KindIndex, Name: "abcé"},
		{Kind: blob.KindSnapshot, Name: string(long)},
		{Kind: blob.KindLock, Name: ".x"},
	}
	for _, h := range invalid {
		if h.Valid() == nil {
			t.Fatalf("test bug: %#v is valid", h)
		}
		data := randomData(11, 10)
		if err := s.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err == nil {
			t.Errorf("Save(%#v) with an invalid handle succeeded", h)
		}
		rd, err := s.Load(ctx, h, 0, 0)
		if err == nil {
			rd.Close()
			t.Errorf("Load(%#v) with an invalid handle succeeded", h)
		} else if blob.IsNotExist(err) {
			t.Errorf("Load(%#v) with an invalid handle: %v; want an error that does not say not-exist", h, err)
		}
		if _, err := s.Stat(ctx, h); err == nil {
			t.Errorf("Stat(%#v) with an invalid handle succeeded", h)
		} else if blob.IsNotExist(err) {
			t.Errorf("Stat(%#v) with an invalid handle: %v; want an error that does not say not-exist", h, err)
		}
		if err := s.Remove(ctx, h); err == nil {
			t.Errorf("Remove(%#v) with an invalid handle succeeded", h)
		} else if blob.IsNotExist(err) {
			t.Errorf("Remove(%#v) with an invalid handle: %v; want an error that does not say not-exist", h, err)
		}
	}
	for _, k := range []blob.Kind{"", "bogus", "Data", "data/.."} {
		if err := s.List(ctx, k, func(blob.FileInfo) error { return nil }); err == nil {
			t.Errorf("List(%q) with an invalid kind succeeded", k)
		}
	}
	wantNoFiles(t, s)
}

// RunBench benchmarks Save and Load of 16 MiB objects. Every sub-benchmark
// opens a fresh storage with open and closes it at the end.
func RunBench(b *testing.B, open func(b *testing.B) blob.Storage) {
	const size = 16 << 20
	data := randomData(12, size)
	ctx := context.Background()
	st := func(b *testing.B) blob.Storage {
		s := open(b)
		b.Cleanup(func() {
			if err := s.Close(); err != nil {
				b.Errorf("Close: %v", err)
			}
		})
		return s
	}
	b.Run("Save16MiB", func(b *testing.B) {
		s := st(b)
		h := handleFor(blob.KindData)
		b.SetBytes(size)
		for b.Loop() {
			if err := s.Save(ctx, h, bytes.NewReader(data), size); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load16MiB", func(b *testing.B) {
		s := st(b)
		h := handleFor(blob.KindData)
		if err := s.Save(ctx, h, bytes.NewReader(data), size); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, size)
		b.SetBytes(size)
		for b.Loop() {
			if _, err := blob.LoadRange(ctx, s, h, 0, size, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
