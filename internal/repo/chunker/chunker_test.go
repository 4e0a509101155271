package chunker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"unsafe"
)

// smallParams keep chunks small so that tests see many boundaries quickly.
var smallParams = Params{MinSize: 64, AvgSize: 256, MaxSize: 1024}

var testTable = NewTable([]byte("coffre test seed"))

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x636f66667265))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

var (
	big64Once sync.Once
	big64     []byte
)

// random64MiB returns the shared 64 MiB of random test data.
func random64MiB() []byte {
	big64Once.Do(func() { big64 = randBytes(64<<20, 64) })
	return big64
}

// chunks chunks everything rd yields and returns copies of the chunks.
func chunks(t testing.TB, rd io.Reader, p Params, tab *Table) [][]byte {
	t.Helper()
	c := New(rd, p, tab)
	var out [][]byte
	for {
		b, err := c.Next(nil)
		if err == io.EOF {
			if b != nil {
				t.Fatalf("Next returned %d bytes with io.EOF", len(b))
			}
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, bytes.Clone(b))
	}
}

func lengths(cs [][]byte) []int {
	ls := make([]int, len(cs))
	for i, c := range cs {
		ls[i] = len(c)
	}
	return ls
}

// refMasks computes the masks independently of Params.masks.
func refMasks(p Params) (maskS, maskL uint64) {
	b := 0
	for 1<<b < p.AvgSize {
		b++
	}
	for i := 0; i < b+2; i++ {
		maskS |= 1 << (63 - i)
	}
	for i := 0; i < b-2; i++ {
		maskL |= 1 << (63 - i)
	}
	return maskS, maskL
}

// naiveLengths is the reference FastCDC: one byte at a time, whole input in
// memory.
func naiveLengths(data []byte, p Params, tab *Table) []int {
	maskS, maskL := refMasks(p)
	var out []int
	for len(data) > 0 {
		n := min(len(data), p.MaxSize)
		cut := n
		var h uint64
		for i := p.MinSize; i < n; i++ {
			h = h<<1 + tab[data[i]]
			mask := maskL
			if i < p.AvgSize {
				mask = maskS
			}
			if h&mask == 0 {
				cut = i + 1
				break
			}
		}
		out = append(out, cut)
		data = data[cut:]
	}
	return out
}

// scanNaive is the plain loop that Table.scan unrolls.
func (t *Table) scanNaive(d []byte, h, mask uint64) (int, uint64) {
	for i, b := range d {
		h = h<<1 + t[b]
		if h&mask == 0 {
			return i, h
		}
	}
	return -1, h
}

// checkChunks checks that cs concatenate to data, respect p's bounds and
// match the naive reference.
func checkChunks(t testing.TB, data []byte, cs [][]byte, p Params, tab *Table) {
	t.Helper()
	if got := bytes.Join(cs, nil); !bytes.Equal(got, data) {
		t.Fatalf("concatenation of %d chunks (%d bytes) differs from the %d-byte input", len(cs), len(got), len(data))
	}
	for i, c := range cs {
		if len(c) == 0 || len(c) > p.MaxSize || (i < len(cs)-1 && len(c) < p.MinSize) {
			t.Fatalf("chunk %d of %d has length %d, outside [%d, %d]", i, len(cs), len(c), p.MinSize, p.MaxSize)
		}
	}
	if want := naiveLengths(data, p, tab); !slices.Equal(lengths(cs), want) {
		t.Fatalf("chunk lengths differ from the naive reference:\n got %v\nwant %v", lengths(cs), want)
	}
}

func TestConcatenationAndBounds(t *testing.T) {
	for _, p := range []Params{smallParams, StreamParams, DefaultParams} {
		sizes := []int{0, 1, p.MinSize - 1, p.MinSize, p.MinSize + 1, p.AvgSize, p.MaxSize - 1,
			p.MaxSize, p.MaxSize + 1, 2*p.MaxSize + 3, 10 << 20}
		for _, n := range sizes {
			t.Run(fmt.Sprintf("avg%d/n%d", p.AvgSize, n), func(t *testing.T) {
				data := randBytes(n, uint64(n))
				cs := chunks(t, bytes.NewReader(data), p, testTable)
				checkChunks(t, data, cs, p, testTable)
				if n == 0 && len(cs) != 0 {
					t.Fatalf("empty input gave %d chunks", len(cs))
				}
			})
		}
	}
}

func TestZeros(t *testing.T) {
	data := make([]byte, 10<<20)
	for _, p := range []Params{DefaultParams, StreamParams} {
		cs := chunks(t, bytes.NewReader(data), p, testTable)
		checkChunks(t, data, cs, p, testTable)
		for i, c := range cs[:len(cs)-1] {
			if len(c) != p.MaxSize {
				t.Fatalf("avg %d: zero chunk %d has length %d, want MaxSize %d", p.AvgSize, i, len(c), p.MaxSize)
			}
		}
		if want := len(data) % p.MaxSize; want != 0 && len(cs[len(cs)-1]) != want {
			t.Fatalf("avg %d: last zero chunk has length %d, want %d", p.AvgSize, len(cs[len(cs)-1]), want)
		}
	}
}

func TestDeterminism(t *testing.T) {
	if *NewTable([]byte("a")) != *NewTable([]byte("a")) {
		t.Fatal("NewTable is not deterministic")
	}
	if *NewTable([]byte("a")) == *NewTable([]byte("b")) {
		t.Fatal("different seeds gave the same table")
	}
	data := randBytes(10<<20, 7)
	for _, p := range []Params{DefaultParams, StreamParams} {
		a := lengths(chunks(t, bytes.NewReader(data), p, NewTable([]byte("seed one"))))
		b := lengths(chunks(t, bytes.NewReader(data), p, NewTable([]byte("seed one"))))
		c := lengths(chunks(t, bytes.NewReader(data), p, NewTable([]byte("seed two"))))
		if !slices.Equal(a, b) {
			t.Fatalf("avg %d: same seed, different boundaries", p.AvgSize)
		}
		if slices.Equal(a, c) {
			t.Fatalf("avg %d: different seeds, same boundaries %v", p.AvgSize, a)
		}
	}
}

func TestShiftResistance(t *testing.T) {
	for _, tc := range []struct {
		p    Params
		size int
	}{{DefaultParams, 32 << 20}, {StreamParams, 8 << 20}} {
		const at = 5 << 20
		orig := randBytes(tc.size, 11)
		edited := slices.Concat(orig[:at], randBytes(100, 12), orig[at:])
		a := chunks(t, bytes.NewReader(orig), tc.p, testTable)
		b := chunks(t, bytes.NewReader(edited), tc.p, testTable)
		checkChunks(t, edited, b, tc.p, testTable)

		prefix := 0
		for prefix < min(len(a), len(b)) && bytes.Equal(a[prefix], b[prefix]) {
			prefix++
		}
		suffix := 0
		for suffix < min(len(a), len(b))-prefix && bytes.Equal(a[len(a)-1-suffix], b[len(b)-1-suffix]) {
			suffix++
		}
		before := 0 // chunks of orig that end before the edit
		for off := 0; before < len(a) && off+len(a[before]) <= at; before++ {
			off += len(a[before])
		}
		if prefix < before {
			t.Errorf("avg %d: only %d of the %d chunks before the edit are unchanged", tc.p.AvgSize, prefix, before)
		}
		if differ := len(b) - prefix - suffix; differ > 3 {
			t.Errorf("avg %d: %d of %d chunks differ after a 100-byte insertion, want at most 3", tc.p.AvgSize, differ, len(b))
		}
		t.Logf("avg %d: %d chunks, %d unchanged before, %d after the edit", tc.p.AvgSize, len(b), prefix, suffix)
	}
}

func TestMeanChunkSize(t *testing.T) {
	data := random64MiB()
	for _, p := range []Params{DefaultParams, StreamParams} {
		ls := lengths(chunks(t, bytes.NewReader(data), p, testTable))
		mean := float64(len(data)) / float64(len(ls))
		t.Logf("avg %d: %d chunks, mean %.0f (%.2fx AvgSize)", p.AvgSize, len(ls), mean, mean/float64(p.AvgSize))
		if mean < 0.75*float64(p.AvgSize) || mean > 1.25*float64(p.AvgSize) {
			t.Errorf("avg %d: mean chunk size %.0f is not within 25%% of AvgSize", p.AvgSize, mean)
		}
	}
}

func TestSmallReads(t *testing.T) {
	for _, p := range []Params{DefaultParams, StreamParams, smallParams} {
		data := randBytes(10<<20, 3)
		want := chunks(t, bytes.NewReader(data), p, testTable)
		for name, rd := range map[string]io.Reader{
			"one byte":  iotest.OneByteReader(bytes.NewReader(data)),
			"half":      iotest.HalfReader(bytes.NewReader(data)),
			"data+EOF":  iotest.DataErrReader(bytes.NewReader(data)),
			"multi 777": io.MultiReader(chunkedReaders(data, 777)...),
		} {
			got := chunks(t, rd, p, testTable)
			if !slices.EqualFunc(got, want, bytes.Equal) {
				t.Errorf("avg %d: %s reader gives different chunks: %v, want %v", p.AvgSize, name, lengths(got), lengths(want))
			}
		}
	}
}

func chunkedReaders(data []byte, n int) []io.Reader {
	var rs []io.Reader
	for len(data) > 0 {
		k := min(n, len(data))
		rs = append(rs, bytes.NewReader(data[:k]))
		data = data[k:]
	}
	return rs
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	data := randBytes(3<<20, 5)
	full := chunks(t, bytes.NewReader(data), StreamParams, testTable)
	for _, n := range []int{0, 100, 2 << 20} {
		c := New(io.MultiReader(bytes.NewReader(data[:n]), iotest.ErrReader(boom)), StreamParams, testTable)
		var got [][]byte
		var err error
		for {
			var b []byte
			if b, err = c.Next(nil); err != nil {
				break
			}
			got = append(got, bytes.Clone(b))
		}
		if !errors.Is(err, boom) {
			t.Fatalf("after %d bytes: Next returned %v, want an error wrapping %v", n, err, boom)
		}
		if _, err2 := c.Next(nil); !errors.Is(err2, boom) {
			t.Fatalf("after %d bytes: the read error is not sticky: %v", n, err2)
		}
		if len(got) > len(full) || !slices.EqualFunc(got, full[:len(got)], bytes.Equal) {
			t.Fatalf("after %d bytes: chunks before the error are not a prefix of the chunks of the data", n)
		}
		if total := len(bytes.Join(got, nil)); total > n {
			t.Fatalf("after %d bytes: returned %d bytes", n, total)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Params{DefaultParams, StreamParams, smallParams, {64, 128, 129}, {1 << 20, 32 << 20, 64 << 20}} {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", p, err)
		}
	}
	for _, tc := range []struct {
		p     Params
		field string
	}{
		{Params{}, "MinSize"},
		{Params{63, 128, 1024}, "MinSize"},
		{Params{-1, 128, 1024}, "MinSize"},
		{Params{64, 0, 1024}, "AvgSize"},
		{Params{64, 1000, 4096}, "AvgSize"},
		{Params{64, -128, 4096}, "AvgSize"},
		{Params{128, 128, 1024}, "AvgSize"},
		{Params{256, 128, 1024}, "AvgSize"},
		{Params{64, 128, 128}, "MaxSize"},
		{Params{64, 128, 100}, "MaxSize"},
		{Params{64, 1 << 20, 64<<20 + 1}, "MaxSize"},
	} {
		err := tc.p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.p, err, tc.field)
		}
	}
}

func TestNewPanicsOnInvalidParams(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New with invalid params did not panic")
		}
	}()
	New(bytes.NewReader(nil), Params{MinSize: 64, AvgSize: 100, MaxSize: 1000}, testTable)
}

func TestBufferSemanticsAndReuse(t *testing.T) {
	data := randBytes(5<<20, 9)
	want := chunks(t, bytes.NewReader(data), StreamParams, testTable)

	// With a large enough buf the chunk is copied into it.
	c := New(bytes.NewReader(data), StreamParams, testTable)
	buf := make([]byte, StreamParams.MaxSize)
	for i := 0; ; i++ {
		b, err := c.Next(buf)
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("got %d chunks, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if &b[0] != &buf[0] || !bytes.Equal(b, want[i]) {
			t.Fatalf("chunk %d: not returned in buf, or wrong content", i)
		}
	}

	// With a small buf the chunk aliases the internal buffer, with its
	// capacity capped so that appending cannot clobber pending data.
	c.Reset(bytes.NewReader(data))
	b, err := c.Next(make([]byte, 0, 10))
	if err != nil || !bytes.Equal(b, want[0]) || cap(b) != len(b) {
		t.Fatalf("first chunk after Reset: err %v, len %d cap %d, want len %d", err, len(b), cap(b), len(want[0]))
	}
	_ = append(b, "clobber"...)
	for i := 1; ; i++ {
		b, err := c.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil || !bytes.Equal(b, want[i]) {
			t.Fatalf("chunk %d after Reset differs (err %v)", i, err)
		}
	}

	// Steady state: no allocation per chunk.
	rd := bytes.NewReader(data)
	allocs := testing.AllocsPerRun(5, func() {
		rd.Reset(data)
		c.Reset(rd)
		for {
			if _, err := c.Next(nil); err != nil {
				break
			}
		}
	})
	if allocs != 0 {
		t.Errorf("chunking %d bytes allocated %.1f times, want 0", len(data), allocs)
	}
}

func TestScanMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		d := randBytes(r.IntN(300), r.Uint64())
		h := r.Uint64()
		mask := ^uint64(0) << (64 - 1 - r.IntN(10))
		gi, gh := testTable.scan(d, h, mask)
		wi, wh := testTable.scanNaive(d, h, mask)
		if gi != wi || gh != wh {
			t.Fatalf("scan(%d bytes, mask %#x) = %d, %#x; naive %d, %#x", len(d), mask, gi, gh, wi, wh)
		}
	}
}

// TestGolden pins the table derivation, the masks and the cut rule: chunk
// boundaries must never change for a given seed, or deduplication against
// existing vaults breaks.
func TestGolden(t *testing.T) {
	tab := NewTable([]byte("coffre"))
	if got := [3]uint64{tab[0], tab[1], tab[255]}; got != goldenTable {
		t.Errorf("NewTable(\"coffre\") entries 0, 1, 255 = %#x, want %#x", got, goldenTable)
	}
	if got := NewTable(nil)[0]; got != goldenNilTable0 {
		t.Errorf("NewTable(nil)[0] = %#x, want %#x", got, goldenNilTable0)
	}
	data := randBytes(1<<20, 42)
	// Pinned params (not the defaults, which only apply to new vaults).
	if got := lengths(chunks(t, bytes.NewReader(data), Params{MinSize: 16 << 10, AvgSize: 64 << 10, MaxSize: 1 << 20}, tab)); !slices.Equal(got, goldenStream) {
		t.Errorf("16K/64K/1M boundaries = %#v, want %#v", got, goldenStream)
	}
	if got := lengths(chunks(t, bytes.NewReader(data[:4<<10]), smallParams, tab)); !slices.Equal(got, goldenSmall) {
		t.Errorf("smallParams boundaries = %#v, want %#v", got, goldenSmall)
	}
}

var (
	// goldenTable[0] is the first 8 bytes of SHA-256("coffre" || 00000000).
	goldenTable     = [3]uint64{0x20b543742d67ed0d, 0xecf7ea22f3f8c949, 0x2d6101d7578b4eb0}
	goldenNilTable0 = uint64(0xdf3f619804a92fdb)
	goldenStream    = []int{76405, 80076, 84955, 70443, 66246, 99865, 71096, 75668, 73678, 50447, 102709, 95273, 101715}
	goldenSmall     = []int{295, 272, 260, 489, 395, 261, 544, 272, 285, 264, 315, 267, 177}
)

func FuzzChunker(f *testing.F) {
	f.Add([]byte(nil), uint8(0), uint8(0), uint8(0))
	f.Add([]byte("hello, world"), uint8(1), uint8(2), uint8(1))
	f.Add(randBytes(5000, 1), uint8(0), uint8(0), uint8(2))
	f.Add(make([]byte, 3000), uint8(2), uint8(5), uint8(3))
	f.Add(randBytes(20000, 2), uint8(3), uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, avgShift, maxMul, reader uint8) {
		avg := 128 << (avgShift % 4)
		p := Params{MinSize: 64 + int(avgShift/4)%(avg-64), AvgSize: avg, MaxSize: avg * (2 + int(maxMul%6))}
		if err := p.Validate(); err != nil {
			t.Fatalf("bad fuzz params %+v: %v", p, err)
		}
		var rd io.Reader = bytes.NewReader(data)
		switch reader % 4 {
		case 1:
			rd = iotest.OneByteReader(rd)
		case 2:
			rd = iotest.HalfReader(rd)
		case 3:
			rd = iotest.DataErrReader(rd)
		}
		checkChunks(t, data, chunks(t, rd, p, testTable), p, testTable)
	})
}

func benchmarkChunker(b *testing.B, p Params) {
	data := random64MiB()
	c := New(nil, p, testTable)
	rd := bytes.NewReader(data)
	run := func() (n int) {
		rd.Reset(data)
		c.Reset(rd)
		for {
			if _, err := c.Next(nil); err != nil {
				return n
			}
			n++
		}
	}
	run() // fault in the buffer: measure the steady state
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n += run()
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/float64(n), "B/chunk")
}

func BenchmarkChunkerDefault(b *testing.B) { benchmarkChunker(b, DefaultParams) }
func BenchmarkChunkerStream(b *testing.B)  { benchmarkChunker(b, StreamParams) }

// BenchmarkNaiveDefault is the byte-at-a-time reference on the same data, for
// comparison.
func BenchmarkNaiveDefault(b *testing.B) {
	data := random64MiB()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		naiveLengths(data, DefaultParams, testTable)
	}
}

// blockReader reads like a file opened for direct I/O: whole 4 KiB blocks
// (short only at the end), and it counts the reads, before that end, whose
// buffer does not start on a block boundary.
type blockReader struct {
	r         *bytes.Reader
	short     bool // a read was short: the end of the data
	unaligned int
}

func (b *blockReader) Read(p []byte) (int, error) {
	if !b.short && uintptr(unsafe.Pointer(unsafe.SliceData(p)))%readAlign != 0 {
		b.unaligned++
	}
	n, err := b.r.Read(p[:len(p)/readAlign*readAlign])
	if n%readAlign != 0 {
		b.short = true
	}
	return n, err
}

// Every read starts on a block boundary when the reader's reads are whole
// blocks, as direct I/O into the buffer needs, and the chunks are the same.
func TestReadsStayAligned(t *testing.T) {
	for _, p := range []Params{DefaultParams, StreamParams} {
		data := randBytes(40<<20+1234, 11)
		want := chunks(t, bytes.NewReader(data), p, testTable)
		br := &blockReader{r: bytes.NewReader(data)}
		got := chunks(t, br, p, testTable)
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("avg %d: block reads give different chunks", p.AvgSize)
		}
		if br.unaligned != 0 {
			t.Errorf("avg %d: %d reads into a buffer not on a %d-byte boundary", p.AvgSize, br.unaligned, readAlign)
		}
	}
}
