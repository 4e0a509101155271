package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/testutil"
)

// TestPrefetch: a small file out of the page cache is fetched into it in
// the background; a file big enough for direct reads is left out of it.
func TestPrefetch(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	small := uncachedFile(t, dir, "small", testutil.RandomBytes(1, 20<<10))
	big := uncachedFile(t, dir, "big", testutil.RandomBytes(2, int(DirectMin)))
	isCached := func(name string) bool {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return cached(f)
	}
	s.Prefetch(big, DirectMin)
	s.Prefetch(small, 20<<10)
	s.Prefetch("missing", 10) // no error to report, no panic
	// WILLNEED reads in the background: wait for it (a minute at most, on
	// a very busy machine).
	for deadline := time.Now().Add(time.Minute); !isCached(small); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the prefetched small file never reached the page cache")
		}
	}
	if isCached(big) {
		t.Error("a file of DirectMin bytes was fetched into the page cache: its direct reads are undone")
	}
}
