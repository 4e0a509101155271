package postgres

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/source/stream"
)

func TestRangeShift(t *testing.T) {
	for _, c := range []struct {
		lo, hi int64
		n      int
	}{
		{1, 10_000_000, 16}, {1, 1, 2}, {-5, 5, 2}, {0, 15, 16}, {0, 16, 16},
		{math.MinInt64, math.MaxInt64, 16}, {math.MaxInt64, math.MaxInt64, 2}, {math.MinInt64, math.MinInt64 + 3, 4},
		{-1 << 40, 1 << 40, 3},
	} {
		s := rangeShift(c.lo, c.hi, c.n)
		if got := uint64(c.hi>>s) - uint64(c.lo>>s) + 1; got > uint64(c.n) {
			t.Errorf("%d..%d in %d ranges: shift %d gives %d ranges", c.lo, c.hi, c.n, s, got)
		}
		if s > 0 {
			if got := uint64(c.hi>>(s-1)) - uint64(c.lo>>(s-1)) + 1; got <= uint64(c.n) {
				t.Errorf("%d..%d in %d ranges: shift %d is not the smallest (%d fits)", c.lo, c.hi, c.n, s, s-1)
			}
		}
		tb := Table{Schema: "s", Name: "t", Columns: []string{"a", "k", "b"}}
		keyRanges(&tb, "k", "bigint", int64(c.n)*rangeBytes, c.lo, c.hi)
		if len(tb.Parts) == 0 || len(tb.Parts) > c.n {
			t.Errorf("%d..%d: %d parts, want 1 to %d", c.lo, c.hi, len(tb.Parts), c.n)
		}
		if !slices.Equal(tb.Columns, []string{"k", "a", "b"}) || tb.OrderBy != nil || tb.Path != "" {
			t.Errorf("%d..%d: columns %v, order by %v, path %q: want the key first, no ORDER BY, no path", c.lo, c.hi, tb.Columns, tb.OrderBy, tb.Path)
		}
	}
}

// routed builds rows of n fields whose first field is the big-endian key.
func keyRow(key int64, keyLen int, rest ...[]byte) [][]byte {
	k := make([]byte, keyLen)
	switch keyLen {
	case 2:
		binary.BigEndian.PutUint16(k, uint16(key))
	case 4:
		binary.BigEndian.PutUint32(k, uint32(key))
	default:
		binary.BigEndian.PutUint64(k, uint64(key))
	}
	return append([][]byte{k}, rest...)
}

// TestRangeRouter routes a stream fed in random pieces (rows cut across
// writes), a row per write (as pgx hands over PostgreSQL's messages) and all
// at once, and checks that each range's output is a complete binary COPY
// stream of exactly its rows, in input order.
func TestRangeRouter(t *testing.T) {
	for _, mode := range []string{"pieces", "rows", "whole"} {
		for _, keyLen := range []int{2, 4, 8} {
			testRangeRouter(t, mode, keyLen)
		}
	}
}

func testRangeRouter(t *testing.T, mode string, keyLen int) {
	const shift, first, ranges = 4, -3, 6 // keys -48..47
	rng := rand.New(rand.NewPCG(uint64(keyLen), 7))
	var rows [][][]byte
	want := make([][][][]byte, ranges)
	for i := range 400 {
		key := int64(rng.IntN(96) - 48)
		var rest [][]byte
		switch i % 4 {
		case 0:
			rest = [][]byte{nil, []byte("x")}
		case 1:
			rest = [][]byte{bytes.Repeat([]byte{0xff, 0xff, '\n'}, rng.IntN(3000))}
		case 2:
			rest = [][]byte{{}, nil, []byte("\xff\xff")}
		}
		row := keyRow(key, keyLen, rest...)
		rows = append(rows, row)
		want[(key>>shift)-first] = append(want[(key>>shift)-first], row)
	}
	in := binStream("hdr-ext", rows...)
	var bufs [ranges]bytes.Buffer
	outs := make([]*bufio.Writer, ranges)
	for i := range outs {
		outs[i] = bufio.NewWriterSize(&bufs[i], 64)
		outs[i].Write(binaryHeader)
	}
	rt := newRangeRouter(outs, first, shift, keyLen)
	var writes [][]byte
	switch mode {
	case "pieces":
		for p := in; len(p) > 0; {
			k := min(len(p), 1+rng.IntN(40))
			writes, p = append(writes, p[:k]), p[k:]
		}
	case "rows":
		hdr := len(binStream("hdr-ext")) - len(binaryTrailer)
		writes = append(writes, in[:hdr])
		for _, row := range rows {
			b := binStream("", row)
			writes = append(writes, b[len(binaryHeader):len(b)-len(binaryTrailer)])
		}
		writes = append(writes, binaryTrailer)
	case "whole":
		writes = [][]byte{in}
	}
	for _, p := range writes {
		if _, err := rt.Write(p); err != nil {
			t.Fatalf("%s, key of %d bytes: write: %v", mode, keyLen, err)
		}
	}
	if err := rt.end(); err != nil {
		t.Fatalf("%s, key of %d bytes: end: %v", mode, keyLen, err)
	}
	for i := range outs {
		outs[i].Write(binaryTrailer)
		outs[i].Flush()
		if exp := binStream("", want[i]...); !bytes.Equal(bufs[i].Bytes(), exp) {
			t.Fatalf("%s, key of %d bytes, range %d: %d bytes, want the %d of its %d rows", mode, keyLen, i, bufs[i].Len(), len(exp), len(want[i]))
		}
		if rt.rows[i] != int64(len(want[i])) {
			t.Errorf("%s, key of %d bytes, range %d: counted %d rows, want %d", mode, keyLen, i, rt.rows[i], len(want[i]))
		}
		if int(rt.bytes[i])+len(binaryHeader)+len(binaryTrailer) != bufs[i].Len() {
			t.Errorf("%s, key of %d bytes, range %d: counted %d bytes, wrote %d", mode, keyLen, i, rt.bytes[i], bufs[i].Len())
		}
	}
	if mode != "pieces" && rt.fast != int64(len(rows)) {
		t.Errorf("%s, key of %d bytes: %d of %d rows routed whole", mode, keyLen, rt.fast, len(rows))
	}
}

func TestRangeRouterRejects(t *testing.T) {
	good := binStream("", keyRow(1, 4, []byte("a")), keyRow(2, 4, nil))
	route := func(in []byte) error {
		var buf bytes.Buffer
		rt := newRangeRouter([]*bufio.Writer{bufio.NewWriter(&buf)}, 0, 8, 4)
		if _, err := rt.Write(in); err != nil {
			return err
		}
		return rt.end()
	}
	if err := route(good); err != nil {
		t.Fatalf("good stream: %v", err)
	}
	for name, in := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"cut in a row":  good[:len(good)-6],
		"bad signature": append([]byte("PGCOPY\n\xfe"), good[8:]...),
		"after trailer": append(slices.Clone(good), 0, 1),
		"key too short": binStream("", keyRow(1, 2, []byte("a"))),
		"no fields":     binStream("", [][]byte{}),
		"text":          []byte("1\ta\n2\t\\N\n"),
	} {
		if err := route(in); err == nil || !strings.Contains(err.Error(), "binary COPY stream") {
			t.Errorf("%s: %v, want a binary COPY stream error", name, err)
		}
	}
}

// TestKeyRanges backs up a table split by key ranges (order=range, the
// default, here for tables from 1 MiB), restores it, and checks that the next
// day's changes to a few keys leave the other ranges' streams unchanged.
func TestKeyRanges(t *testing.T) {
	defer func(b, m int64) { rangeBytes, rangeMinBytes = b, m }(rangeBytes, rangeMinBytes)
	rangeBytes, rangeMinBytes = 256<<10, 1<<20
	db := newDBName(t, "ranges")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db))
	mustExec(t, dbConnect(t, db), `
		CREATE TABLE wide (v text, id bigint PRIMARY KEY, blob bytea, n int);
		INSERT INTO wide SELECT 'row ' || i, i * 1000, CASE WHEN i % 500 = 0 THEN decode(repeat(md5(i::text), 4000), 'hex') END, i % 7
			FROM generate_series(-20000, 20000) AS i;
		CREATE TABLE small (id int PRIMARY KEY, v text);
		INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) AS i;
		CREATE TABLE textkey (k text PRIMARY KEY, v int);
		INSERT INTO textkey SELECT 'k' || i, i FROM generate_series(1, 1000) AS i;`)
	src := connFor(t, db)
	want := rowsDigest(t, db, "wide")
	wantAll := fingerprint(t, src)
	r, _ := repo.TestRepository(t)
	m1 := mustBackup(t, Adapter{}, r, src)
	meta, err := ReadMeta(ctxb(), r, m1)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Order != orderRange {
		t.Errorf("meta.json order %q, want the default %q", meta.Order, orderRange)
	}
	wide := findTable(t, meta, "public", "wide")
	if wide.RangeKey != "id" || len(wide.Parts) < 2 || wide.Columns[0] != "id" || wide.Rows != 40001 || !wide.binary() {
		t.Fatalf("wide: key %q, %d parts, columns %v, %d rows, format %q: want split by id into ranges, id first, 40001 rows, binary",
			wide.RangeKey, len(wide.Parts), wide.Columns, wide.Rows, wide.Format)
	}
	var sum int64
	for _, p := range wide.Parts {
		sum += p.Rows
		if p.Keys == "" || !strings.HasPrefix(p.Keys, "id ") {
			t.Errorf("part %s describes its keys as %q", p.Path, p.Keys)
		}
	}
	if sum != wide.Rows {
		t.Errorf("parts hold %d rows, table %d", sum, wide.Rows)
	}
	// Only 8-byte keys in [-20000000, 20000000]: each range's rows are in
	// its range.
	for i, p := range wide.Parts {
		b := readFile(t, r, m1, p.Path)
		var br binaryRows
		if err := br.feed(b); err != nil || br.end() != nil || br.rows != p.Rows {
			t.Fatalf("part %s: %v, %d rows, want a complete stream of %d", p.Path, err, br.rows, p.Rows)
		}
		if p.Rows == 0 {
			continue
		}
		first := int64(binary.BigEndian.Uint64(b[19+2+4:]))
		if first>>wide.RangeShift != wide.RangeFirst+int64(i) {
			t.Errorf("part %d starts with key %d, outside its range", i, first)
		}
	}
	if len(wide.ConstraintOIDs) != 1 || len(wide.IndexOIDs) != 1 {
		t.Errorf("wide: index OIDs %v, constraint OIDs %v: want its primary key's", wide.IndexOIDs, wide.ConstraintOIDs)
	}
	for _, name := range []string{"small", "textkey"} {
		if tb := findTable(t, meta, "public", name); tb.RangeKey != "" {
			t.Errorf("%s split by key ranges: want sorted whole (a small table, or a text key)", name)
		}
	}
	if got := rowsDigest(t, restoreInto(t, r, m1, "ranges_dst").Settings["database"], "wide"); got != want {
		t.Fatalf("restored rows differ")
	}

	// The next day: rows of the first range change, and move.
	mustExec(t, dbConnect(t, db), "UPDATE wide SET v = v || ' changed', n = n + 1 WHERE id BETWEEN -20000000 AND -19900000")
	m2 := mustBackup(t, Adapter{}, r, src)
	meta2, err := ReadMeta(ctxb(), r, m2)
	if err != nil {
		t.Fatal(err)
	}
	wide2 := findTable(t, meta2, "public", "wide")
	if len(wide2.Parts) != len(wide.Parts) || wide2.RangeShift != wide.RangeShift {
		t.Fatalf("day 2: %d parts with shift %d, day 1 %d with %d", len(wide2.Parts), wide2.RangeShift, len(wide.Parts), wide.RangeShift)
	}
	for i := 1; i < len(wide.Parts); i++ {
		n1, err1 := stream.Lookup(ctxb(), r, m1.Tree, wide.Parts[i].Path)
		n2, err2 := stream.Lookup(ctxb(), r, m2.Tree, wide2.Parts[i].Path)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !slices.Equal(n1.Content, n2.Content) {
			t.Errorf("part %d (%s) changed from one day to the next, though none of its rows did", i, wide.Parts[i].Keys)
		}
	}
	dst := restoreInto(t, r, m2, "ranges_dst2")
	if got := fingerprint(t, dst); got == wantAll {
		t.Fatal("the second point restores the first day's data")
	}
	if got, want := fingerprint(t, dst), fingerprint(t, src); got != want {
		t.Fatal("the second point's restore differs from the changed source")
	}
}

// TestEarlyEntries picks a table's own indexes and key constraints out of a
// pg_restore --list, by the objects' OIDs, and nothing else.
func TestEarlyEntries(t *testing.T) {
	rs := &restore{}
	rs.setTOC(strings.Split(`;
; Archive created at 2026-11-26 07:40:00 UTC
;
218; 1259 16385 TABLE public accounts postgres
3363; 2606 16401 CONSTRAINT public accounts accounts_pkey postgres
3364; 1259 16402 INDEX public accounts_email_idx postgres
;3365; 1259 16403 INDEX public accounts_old_idx postgres
3366; 2606 16404 FK CONSTRAINT public orders orders_account_fkey postgres
3367; 0 0 INDEX ATTACH public measurements_2023_pkey postgres
3368; 1259 16405 INDEX public other idx with spaces postgres
3369; 2620 16406 TRIGGER public accounts trg postgres`, "\n"))
	tb := &Table{IndexOIDs: []uint32{16402, 16403, 16401}, ConstraintOIDs: []uint32{16401, 16404}}
	var got []string
	for _, i := range rs.earlyEntries(tb) {
		got = append(got, rs.toc[i])
	}
	want := []string{"3363; 2606 16401 CONSTRAINT public accounts accounts_pkey postgres", "3364; 1259 16402 INDEX public accounts_email_idx postgres"}
	if !slices.Equal(got, want) {
		t.Errorf("early entries %q, want %q", got, want)
	}
}
