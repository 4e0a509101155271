package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
)

// Benchmarks of the hot loops of a backup, one core each:
//   go test -run xxx -bench . ./internal/repo/

func benchData(compressible bool) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	b := make([]byte, 1<<20)
	if !compressible {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var buf bytes.Buffer
	words := []string{"login", "logout", "view", "click", "purchase", "refund", "search", "error"}
	for buf.Len() < len(b) {
		buf.WriteString(`{"ts":` + string(rune('0'+rng.IntN(10))) + `,"kind":"` + words[rng.IntN(len(words))] + `","user":` + string(rune('a'+rng.IntN(26))) + "}\n")
	}
	copy(b, buf.Bytes())
	return b
}

func BenchmarkContentID(b *testing.B) {
	k, _ := crypto.NewRandomKey()
	h := k.Hasher()
	data := benchData(false)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h.Sum(data)
	}
}

func benchCompress(b *testing.B, level int, compressible bool) {
	c := newCompressor("zstd", level, 0, 0)
	data := benchData(compressible)
	dst := make([]byte, 0, 2<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.compress(dst[:0], data)
	}
}

func BenchmarkCompressTextLevel1(b *testing.B)   { benchCompress(b, 1, true) }
func BenchmarkCompressTextLevel3(b *testing.B)   { benchCompress(b, 3, true) }
func BenchmarkCompressRandomLevel1(b *testing.B) { benchCompress(b, 1, false) }

func BenchmarkDecompressText(b *testing.B) {
	c := newCompressor("zstd", 1, 0, 0)
	data := benchData(true)
	comp, _ := c.compress(nil, data)
	comp = append([]byte(nil), comp...)
	dst := make([]byte, 0, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := c.decompress(dst, comp, len(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	k, _ := crypto.NewRandomKey()
	s, _ := k.NewSealer("pack")
	data := benchData(false)
	dst := make([]byte, 0, len(data)+crypto.Overhead)
	b.SetBytes(int64(len(data)))
	var seq uint64
	for b.Loop() {
		seq++
		s.Seal(dst[:0], seq, data, []byte("ad"))
	}
}

func BenchmarkPackWriter(b *testing.B) {
	k, _ := crypto.NewRandomKey()
	data := benchData(false)
	b.SetBytes(8 * int64(len(data)))
	for b.Loop() {
		w, err := pack.NewWriter(k, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < 8; i++ {
			if _, err := w.Add(pack.DataBlob, crypto.ID{byte(i)}, pack.CompNone, data, len(data)); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := w.Finish(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSaveBlob is the whole per-chunk path: hash, dedup lookup,
// compress, encrypt, pack (into memory storage), on text chunks.
func BenchmarkSaveBlob(b *testing.B) {
	ctx := context.Background()
	r, err := Init(ctx, mem.New(), &crypto.Passphrase{Secret: "x", Params: crypto.TestKDF}, DefaultInitOptions, Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := benchData(true)
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		i++
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16) // a new blob each time
		if _, _, err := r.SaveBlob(ctx, pack.DataBlob, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}
