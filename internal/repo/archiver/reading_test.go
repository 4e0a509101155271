package archiver

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coffre/coffre/internal/repo/tree"
)

// TestReadingRelease: a file read is finished exactly once, after its last
// chunk is saved, whether the reader releases it before or after the save
// workers are done, and with chunks saved concurrently; a save error is kept.
func TestReadingRelease(t *testing.T) {
	t.Run("release first", func(t *testing.T) {
		rd := newReading()
		for range 3 {
			rd.add()
		}
		var runs atomic.Int32
		rd.release(func() { runs.Add(1) })
		rd.saved(nil)
		rd.saved(nil)
		if runs.Load() != 0 {
			t.Fatal("finished with a chunk still being saved")
		}
		rd.saved(errors.New("disk full"))
		if runs.Load() != 1 {
			t.Fatalf("finished %d times, want 1", runs.Load())
		}
		n := &tree.Node{Size: 0}
		if err := rd.finish(n); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("finish = %v, want the save error", err)
		}
	})
	t.Run("saved first", func(t *testing.T) {
		rd := newReading()
		rd.add()
		rd.add()
		rd.saved(nil)
		rd.saved(nil)
		var runs atomic.Int32
		rd.release(func() { runs.Add(1) })
		if runs.Load() != 1 {
			t.Fatalf("finished %d times, want 1 (at release)", runs.Load())
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		for range 200 {
			rd := newReading()
			const chunks = 16
			for range chunks {
				rd.add()
			}
			var runs atomic.Int32
			var wg sync.WaitGroup
			for range chunks {
				wg.Go(func() { rd.saved(nil) })
			}
			rd.release(func() { runs.Add(1) })
			wg.Wait()
			if runs.Load() != 1 {
				t.Fatalf("finished %d times, want 1", runs.Load())
			}
		}
	})
}
