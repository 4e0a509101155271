package repo

import (
	"bytes"
	"context"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/pack"
)

// TestCompressorLevels checks, for the encoder of this build (cgo or pure
// Go), that every level makes frames the shared decoder reads back, that
// text shrinks and that higher levels do not grow it, and that random data
// is stored raw.
func TestCompressorLevels(t *testing.T) {
	text := benchData(true)
	random := benchData(false)
	prev := len(text)
	for _, level := range []int{MinZstdLevel, 3, 9, MaxZstdLevel} {
		c := newCompressor("zstd", level)
		out, comp := c.compress(nil, text)
		if comp != pack.CompZstd {
			t.Fatalf("level %d: text stored raw", level)
		}
		if len(out) >= len(text)/2 {
			t.Errorf("level %d: text compressed to %d of %d bytes", level, len(out), len(text))
		}
		if len(out) > prev+prev/50 {
			t.Errorf("level %d: %d bytes, more than the lower level's %d", level, len(out), prev)
		}
		prev = len(out)
		back, err := c.decompress(nil, out, len(text))
		if err != nil || !bytes.Equal(back, text) {
			t.Fatalf("level %d: round trip: %v", level, err)
		}
		if _, comp := c.compress(nil, random); comp != pack.CompNone {
			t.Errorf("level %d: random data compressed", level)
		}
	}
}

func TestInitRejectsZstdLevel(t *testing.T) {
	for _, level := range []int{0, MaxZstdLevel + 1} {
		o := DefaultInitOptions
		o.ZstdLevel = level
		if _, err := Init(context.Background(), mem.New(), TestKeyProvider(TestPassphrase), o, Options{}); err == nil {
			t.Errorf("level %d accepted", level)
		}
	}
}
