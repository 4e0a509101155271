package repo

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/coffre/coffre/internal/repo/bufpool"

	"github.com/coffre/coffre/internal/repo/pack"
)

var cryptoRand = rand.Read

// compressor compresses blob payloads with zstd, keeping the raw bytes when
// compression saves 1/32 of them or less. Frames are standard zstd whichever
// encoder made them; one decoder (klauspost/compress) reads them all.
type compressor struct {
	enc       encoder
	encLarge  encoder // for blobs of LargeBlob bytes and more
	encStream encoder // for the chunks of streams
	dec       *zstd.Decoder
}

// LargeBlob is the plaintext size from which a blob is compressed at the
// vault's zstd_level_large instead of its zstd_level.
const LargeBlob = 1 << 20

// encoder makes one zstd frame of src appended to dst. Safe for concurrent
// use. Two implementations: the reference C library through cgo
// (zstd_cgo.go, the default build: about as fast at level 3 as the pure-Go
// encoder's fastest level, and 1% smaller), and klauspost/compress when
// built with CGO_ENABLED=0 (zstd_purego.go).
type encoder interface {
	encode(dst, src []byte) ([]byte, error)
}

// MinZstdLevel and MaxZstdLevel bound a vault's zstd_level, on the
// reference implementation's scale.
const (
	MinZstdLevel = 1
	MaxZstdLevel = 19
)

// newCompressor returns the compressor of a vault; largeLevel and
// streamLevel 0 mean level.
func newCompressor(kind string, level, largeLevel, streamLevel int) *compressor {
	c := &compressor{}
	if kind == "zstd" {
		level = min(max(level, MinZstdLevel), MaxZstdLevel)
		c.enc = newEncoder(level)
		other := func(l int) encoder {
			if l == 0 || l == level {
				return c.enc
			}
			return newEncoder(min(max(l, MinZstdLevel), MaxZstdLevel))
		}
		c.encLarge, c.encStream = other(largeLevel), other(streamLevel)
	}
	// The options are constant and valid: this constructor cannot fail.
	c.dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(256<<20), zstd.IgnoreChecksum(true))
	return c
}

// compress returns the payload to store and its compression.
func (c *compressor) compress(dst, data []byte) ([]byte, uint8) {
	return c.compressWith(dst, data, false)
}

// compressWith is compress, for a chunk of a stream (at the stream level)
// when stream is true.
func (c *compressor) compressWith(dst, data []byte, stream bool) ([]byte, uint8) {
	if c.enc == nil || len(data) < 64 || incompressible(data) {
		return data, pack.CompNone
	}
	enc := c.enc
	switch {
	case stream:
		enc = c.encStream
	case len(data) >= LargeBlob:
		enc = c.encLarge
	}
	out, err := enc.encode(dst, data)
	if err != nil || len(out) >= len(data)-len(data)/32 {
		// An encoder error (out of memory in C) stores the data raw:
		// compression is an optimisation, never a reason to fail a backup.
		return data, pack.CompNone
	}
	return out, pack.CompZstd
}

func (c *compressor) decompress(dst, payload []byte, rawLen int) ([]byte, error) {
	if cap(dst) < rawLen {
		dst = make([]byte, 0, rawLen)
	}
	out, err := c.dec.DecodeAll(payload, dst[:0])
	if err != nil {
		return nil, err
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("decompressed %d bytes, want %d", len(out), rawLen)
	}
	return out, nil
}

func getBuf(n int) []byte { return bufpool.Default.Get(n + n/8 + 64)[:0] }

func putBuf(b []byte) { bufpool.Default.Put(b) }

// LooksIncompressible reports whether a sample of data looks random (its
// byte entropy is near 8 bits): encrypted or already compressed content.
func LooksIncompressible(sample []byte) bool { return entropy(sample) > 7.9 }

// incompressible estimates from the byte entropy of two 4 KiB samples
// whether data is random-looking (encrypted, already compressed): zstd would
// spend time on it for nothing. Repetition inside high-entropy data is left
// to deduplication.
func incompressible(data []byte) bool {
	const sample = 4 << 10
	if len(data) < 4*sample {
		return false
	}
	var hist [256]uint32
	mid := len(data) / 2
	addHist(&hist, data[:sample], data[mid:mid+sample])
	return histEntropy(&hist, 2*sample) > 7.9
}

func entropy(b []byte) float64 {
	var hist [256]uint32
	addHist(&hist, b)
	return histEntropy(&hist, len(b))
}

// addHist counts the bytes of the slices bs into hist. Four partial
// histograms, fed a word at a time, keep consecutive increments of the same
// counter from waiting on each other (this runs on a sample of every blob
// saved; with the table below, incompressible takes 3.4 µs instead of 4.3).
func addHist(hist *[256]uint32, bs ...[]byte) {
	var h [4][256]uint32
	for _, b := range bs {
		h0 := &h[0]
		for len(b) >= 8 {
			v := binary.LittleEndian.Uint64(b)
			h0[byte(v)]++
			h[1][byte(v>>8)]++
			h[2][byte(v>>16)]++
			h[3][byte(v>>24)]++
			h0[byte(v>>32)]++
			h[1][byte(v>>40)]++
			h[2][byte(v>>48)]++
			h[3][byte(v>>56)]++
			b = b[8:]
		}
		for _, c := range b {
			h0[c]++
		}
	}
	for i := range hist {
		hist[i] += h[0][i] + h[1][i] + h[2][i] + h[3][i]
	}
}

// cLog2C[c] is c·log2(c), for the counts of incompressible's samples.
var cLog2C = sync.OnceValue(func() *[8<<10 + 1]float64 {
	var t [8<<10 + 1]float64
	for c := 1; c < len(t); c++ {
		t[c] = float64(c) * math.Log2(float64(c))
	}
	return &t
})

func histEntropy(hist *[256]uint32, total int) float64 {
	if total == 0 {
		return 0
	}
	n := float64(total)
	if t := cLog2C(); total < len(t) {
		// H = log2(n) - (1/n)·Σ c·log2(c): table lookups instead of 256
		// logarithms.
		sum := 0.0
		for _, c := range hist {
			sum += t[c]
		}
		return math.Log2(n) - sum/n
	}
	h := 0.0
	for _, c := range hist {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
