//go:build cgo

package repo

import (
	"bytes"
	"testing"

	ddzstd "github.com/DataDog/zstd"
)

// TestStaticContextsMatchLibrary checks that the pooled static contexts,
// sized once per level, compress inputs of every size the library's own
// contexts do, to the same frames (a context too small would fail the call,
// and the blob would be stored raw): sizes in each of the library's
// parameter tiers, at the tier edges, up to staticMax and past it.
func TestStaticContextsMatchLibrary(t *testing.T) {
	text := benchData(true)
	for len(text) < staticMax+1<<20 {
		text = append(text, text...)
	}
	sizes := []int{64, 16 << 10, 16<<10 + 1, 100 << 10, 128<<10 + 1, 256 << 10, 256<<10 + 1, 1 << 20, staticMax, staticMax + 1<<20}
	for _, level := range []int{1, 3, 4, 9, 19} {
		enc := newEncoder(level)
		for _, n := range sizes {
			if level == 19 && n > 256<<10 {
				continue // slow, and the tiers are covered below it
			}
			got, err := enc.encode(nil, text[:n])
			if err != nil {
				t.Fatalf("level %d, %d bytes: %v", level, n, err)
			}
			want, err := ddzstd.CompressLevel(nil, text[:n], level)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("level %d, %d bytes: %d-byte frame, the library's is %d bytes", level, n, len(got), len(want))
			}
		}
	}
}
