//go:build cgo

package repo

import (
	"bytes"
	"testing"

	ddzstd "github.com/DataDog/zstd"
)

// TestStaticContextsMatchLibrary checks that the pooled static contexts,
// sized once per level, compress inputs of every size as a context the
// library sizes itself does, to the same frames (a context too small would
// fail the call, and the blob would be stored raw): sizes in each of the
// library's parameter tiers, at the tier edges, up to staticMax and past
// it. At levels whose strategy is never double-fast (1, 9, 19) the frames
// are also the library's own for that level: the tuning touches nothing
// else.
func TestStaticContextsMatchLibrary(t *testing.T) {
	text := benchData(true)
	for len(text) < staticMax+1<<20 {
		text = append(text, text...)
	}
	sizes := []int{64, 16 << 10, 16<<10 + 1, 100 << 10, 128<<10 + 1, 256 << 10, 256<<10 + 1, 1 << 20, staticMax, staticMax + 1<<20}
	for _, level := range []int{1, 2, 3, 4, 9, 19} {
		enc := newEncoder(level)
		for _, n := range sizes {
			if level == 19 && n > 256<<10 {
				continue // slow, and the tiers are covered below it
			}
			got, err := enc.encode(nil, text[:n])
			if err != nil {
				t.Fatalf("level %d, %d bytes: %v", level, n, err)
			}
			if n > staticMax {
				continue // the library's CompressLevel, untuned
			}
			want, err := referenceEncode(level, text[:n])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("level %d, %d bytes: %d-byte frame, a library-sized context's is %d bytes", level, n, len(got), len(want))
			}
			if level == 1 || level == 9 || level == 19 {
				lib, err := ddzstd.CompressLevel(nil, text[:n], level)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, lib) {
					t.Fatalf("level %d, %d bytes: %d-byte frame, the library's own is %d bytes", level, n, len(got), len(lib))
				}
			}
			out, err := zstdDecodeAll(got)
			if err != nil || !bytes.Equal(out, text[:n]) {
				t.Fatalf("level %d, %d bytes: frame does not decode to the input (%v)", level, n, err)
			}
		}
	}
}

// TestTunedParams pins the tuning of the double-fast strategy: minimum
// match 5, tables capped at 1 MiB, other strategies untouched.
func TestTunedParams(t *testing.T) {
	const dfast = 2
	for _, c := range []struct {
		level, n                  int
		strategy, hlog, clog, mml int
	}{
		{3, 8 << 10, dfast, 14, 13, 5},   // library: minMatch 4; logs bounded by the input size
		{3, 200 << 10, dfast, 16, 16, 5}, // library: minMatch 4
		{3, 2 << 20, dfast, 17, 16, 5},   // unchanged: 768 KiB of tables
		{4, 2 << 20, dfast, 17, 17, 5},   // library: 18/18, 2 MiB
		{4, 100 << 10, dfast, 17, 17, 5}, // library: minMatch 4; tables are capped by the input size
		{1, 2 << 20, 1, 14, 13, 7},       // fast: the library's
	} {
		s, h, ch, m := tunedParams(c.level, c.n)
		if s != c.strategy || h != c.hlog || ch != c.clog || m != c.mml {
			t.Errorf("level %d, %d bytes: strategy %d hash %d chain %d minMatch %d, want %d %d %d %d", c.level, c.n, s, h, ch, m, c.strategy, c.hlog, c.clog, c.mml)
		}
	}
	for level := MinZstdLevel; level <= MaxZstdLevel; level++ {
		for _, n := range []int{1 << 10, 100 << 10, 200 << 10, 4 << 20, 64 << 20} {
			s, h, ch, _ := tunedParams(level, n)
			if s == dfast && (4<<h)+(4<<ch) > 1<<20 {
				t.Errorf("level %d, %d bytes: tables of %d bytes", level, n, (4<<h)+(4<<ch))
			}
		}
	}
}

func zstdDecodeAll(frame []byte) ([]byte, error) {
	return newCompressor("zstd", 3, 0, 0).dec.DecodeAll(frame, nil)
}
