package repo

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/testutil"
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
		c := newCompressor("zstd", level, 0, 0)
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

// TestLargeBlobLevel checks that blobs of LargeBlob bytes and more are
// compressed at the large level and smaller ones at the vault's level, that
// 0 means the vault's level, and that new vaults record 3 and 4.
func TestLargeBlobLevel(t *testing.T) {
	text := benchData(true) // exactly LargeBlob bytes
	if len(text) != LargeBlob {
		t.Fatalf("bench data is %d bytes, want %d", len(text), LargeBlob)
	}
	small := text[:LargeBlob-1]
	frame := func(level int, b []byte) []byte {
		out, err := newEncoder(level).encode(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	l1Large, l19Large := frame(1, text), frame(MaxZstdLevel, text)
	if bytes.Equal(l1Large, l19Large) {
		t.Fatal("levels 1 and 19 make the same frame: the test cannot tell levels apart")
	}
	c := newCompressor("zstd", 1, MaxZstdLevel, 0)
	if out, _ := c.compress(nil, text); !bytes.Equal(out, l19Large) {
		t.Errorf("large blob: %d bytes, not the level %d frame (%d bytes)", len(out), MaxZstdLevel, len(l19Large))
	}
	if out, _ := c.compress(nil, small); !bytes.Equal(out, frame(1, small)) {
		t.Errorf("blob below LargeBlob: %d bytes, not the level 1 frame", len(out))
	}
	c = newCompressor("zstd", 1, 0, 0)
	if out, _ := c.compress(nil, text); !bytes.Equal(out, l1Large) {
		t.Errorf("large level 0: %d bytes, not the vault level's frame (%d bytes)", len(out), len(l1Large))
	}

	r, err := Init(context.Background(), mem.New(), TestKeyProvider(TestPassphrase), DefaultInitOptions, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := r.Config(); cfg.ZstdLevel != 3 || cfg.ZstdLevelLarge != 4 {
		t.Errorf("new vault: zstd_level %d, zstd_level_large %d; want 3 and 4", cfg.ZstdLevel, cfg.ZstdLevelLarge)
	}
	o := DefaultInitOptions
	o.ZstdLevelLarge = MaxZstdLevel + 1
	if _, err := Init(context.Background(), mem.New(), TestKeyProvider(TestPassphrase), o, Options{}); err == nil {
		t.Errorf("large level %d accepted", o.ZstdLevelLarge)
	}
}

// TestStreamLevel checks that the chunks of streams are compressed at the
// stream level (0: the vault's level), that new vaults record 1, that an
// out-of-range stream level is refused, and that SaveStreamBlob stores a
// blob that reads back and deduplicates with SaveBlob.
func TestStreamLevel(t *testing.T) {
	text := benchData(true)[:256<<10] // the size of a stream chunk
	frame := func(level int) []byte {
		out, err := newEncoder(level).encode(nil, text)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	l1, l19 := frame(1), frame(MaxZstdLevel)
	if bytes.Equal(l1, l19) {
		t.Fatal("levels 1 and 19 make the same frame: the test cannot tell levels apart")
	}
	c := newCompressor("zstd", MaxZstdLevel, 0, 1)
	if out, _ := c.compressWith(nil, text, true); !bytes.Equal(out, l1) {
		t.Errorf("stream chunk: %d bytes, not the level 1 frame (%d bytes)", len(out), len(l1))
	}
	if out, _ := c.compressWith(nil, text, false); !bytes.Equal(out, l19) {
		t.Errorf("other blob: %d bytes, not the vault level's frame (%d bytes)", len(out), len(l19))
	}
	c = newCompressor("zstd", MaxZstdLevel, 0, 0)
	if out, _ := c.compressWith(nil, text, true); !bytes.Equal(out, l19) {
		t.Errorf("stream level 0: %d bytes, not the vault level's frame (%d bytes)", len(out), len(l19))
	}

	ctx := context.Background()
	r, err := Init(ctx, mem.New(), TestKeyProvider(TestPassphrase), DefaultInitOptions, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := r.Config(); cfg.ZstdLevelStream != 1 {
		t.Errorf("new vault: zstd_level_stream %d, want 1", cfg.ZstdLevelStream)
	}
	id, added, err := r.SaveStreamBlob(ctx, text)
	if err != nil || !added {
		t.Fatalf("save stream blob: added %v, %v", added, err)
	}
	if id2, added, err := r.SaveBlob(ctx, pack.DataBlob, text); err != nil || added || id2 != id {
		t.Errorf("the same data saved again: id %s (want %s), added %v, %v", id2.Short(), id.Short(), added, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	back, err := r.LoadBlob(ctx, pack.DataBlob, id, nil)
	if err != nil || !bytes.Equal(back, text) {
		t.Fatalf("load the stream blob back: %v", err)
	}
	o := DefaultInitOptions
	o.ZstdLevelStream = MaxZstdLevel + 1
	if _, err := Init(ctx, mem.New(), TestKeyProvider(TestPassphrase), o, Options{}); err == nil {
		t.Errorf("stream level %d accepted", o.ZstdLevelStream)
	}
}

// refEntropy is the byte entropy computed the plain way.
func refEntropy(b []byte) float64 {
	var hist [256]int
	for _, c := range b {
		hist[c]++
	}
	n, h := float64(len(b)), 0.0
	for _, c := range hist {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// The word-at-a-time histogram and the table of c·log2(c) give the entropy
// of the plain computation, on samples of every kind and length.
func TestEntropyMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	skewed := make([]byte, 70<<10)
	for i := range skewed {
		skewed[i] = byte(rng.ExpFloat64() * 20)
	}
	inputs := map[string][]byte{
		"random": testutil.RandomBytes(5, 70<<10),
		"text":   testutil.Text(70 << 10),
		"zeros":  make([]byte, 70<<10),
		"skewed": skewed,
	}
	for name, data := range inputs {
		for _, n := range []int{0, 1, 7, 8, 9, 100, 4 << 10, 8 << 10, 8<<10 + 1, 64 << 10, 70 << 10} {
			b := data[:n]
			if got, want := entropy(b), refEntropy(b); math.Abs(got-want) > 1e-9 {
				t.Errorf("%s, %d bytes: entropy %.12f, want %.12f", name, n, got, want)
			}
		}
		for _, n := range []int{16 << 10, 32 << 10, 70 << 10} {
			b := data[:n]
			mid := n / 2
			sample := append(append([]byte(nil), b[:4<<10]...), b[mid:mid+4<<10]...)
			if got, want := incompressible(b), refEntropy(sample) > 7.9; got != want {
				t.Errorf("%s, %d bytes: incompressible %v, want %v", name, n, got, want)
			}
		}
	}
	if !incompressible(inputs["random"]) || incompressible(inputs["text"]) || incompressible(inputs["skewed"]) {
		t.Error("random data not seen as incompressible, or text or skewed bytes seen as such")
	}
}

func BenchmarkIncompressible(b *testing.B) {
	data := testutil.Text(32 << 10)
	b.SetBytes(8 << 10) // the bytes sampled
	for i := 0; i < b.N; i++ {
		if incompressible(data) {
			b.Fatal("text seen as incompressible")
		}
	}
}

// TestEncoderAcrossSizes runs inputs of very different sizes, in turn and
// from several goroutines, through one encoder (whose compression contexts
// are reused across calls): every frame must read back, and be the frame a
// fresh encoder makes of the same input — no state of an earlier input may
// leak into a later one.
func TestEncoderAcrossSizes(t *testing.T) {
	text := benchData(true)
	for len(text) < 3<<20 {
		text = append(text, text...)
	}
	sizes := []int{1, 100, 5000, 16 << 10, 20000, 130 << 10, 300 << 10, 1 << 20, 3 << 20, 64, 70000, 200}
	for _, level := range []int{3, 4} {
		want := map[int][]byte{}
		for _, n := range sizes {
			out, err := newEncoder(level).encode(nil, text[:n])
			if err != nil {
				t.Fatal(err)
			}
			want[n] = out
		}
		enc := newEncoder(level)
		dec := newCompressor("zstd", level, 0, 0)
		errs := make(chan error, 2)
		for g := 0; g < 2; g++ {
			go func() {
				var err error
				defer func() { errs <- err }()
				for round := 0; round < 3 && err == nil; round++ {
					for i := range sizes {
						n := sizes[(i*5+g*3+round)%len(sizes)]
						var out []byte
						if out, err = enc.encode(make([]byte, 0, 10), text[:n]); err != nil {
							return
						}
						if !bytes.Equal(out, want[n]) {
							err = fmt.Errorf("level %d, %d bytes: frame of %d bytes differs from a fresh encoder's (%d bytes)", level, n, len(out), len(want[n]))
							return
						}
						back, derr := dec.decompress(nil, out, n)
						if derr != nil || !bytes.Equal(back, text[:n]) {
							err = fmt.Errorf("level %d, %d bytes: round trip: %v", level, n, derr)
							return
						}
					}
				}
			}()
		}
		for g := 0; g < 2; g++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
}
