package tree

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo/crypto"
)

// randomTree makes a tree whose nodes use every field. special adds what
// the fast decoder leaves to encoding/json: escapes, bytes that are not
// UTF-8, times with an offset.
func randomTree(rng *rand.Rand, special bool) *Tree {
	names := []string{"a", "file.txt", "é dir", "日本語", "with space", "x-1_2", "0"}
	if special {
		names = append(names, "a&b", "<tag>", "quote\"d", "back\\slash", "tab\there", "bad\xff\xfe", "line\nfeed", "\u2028")
	}
	id := func() crypto.ID {
		var id crypto.ID
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		return id
	}
	when := func() time.Time {
		t := time.Unix(rng.Int64N(4e9)-1e9, 0).UTC()
		switch rng.IntN(4) {
		case 1:
			t = t.Add(time.Duration(rng.IntN(1e9)))
		case 2:
			t = t.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		case 3:
			if special {
				t = t.In(time.FixedZone("", 7200))
			}
		}
		return t
	}
	tr := &Tree{}
	seen := map[string]bool{}
	for range rng.IntN(12) {
		n := Node{Name: names[rng.IntN(len(names))] + strings.Repeat("z", rng.IntN(3)), Mode: rng.Uint32() & 0o7777,
			ModTime: when(), UID: rng.Uint32(), GID: rng.Uint32() % 100}
		if seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		if rng.IntN(2) == 0 {
			n.ChangeTime = when()
		}
		if rng.IntN(2) == 0 {
			n.User, n.Group = "root", names[rng.IntN(len(names))]
		}
		if rng.IntN(2) == 0 {
			n.Inode, n.DeviceID, n.Links = rng.Uint64(), rng.Uint64N(1<<20), rng.Uint64N(5)
		}
		switch rng.IntN(4) {
		case 0:
			n.Type = TypeDir
			s := id()
			n.Subtree = &s
		case 1:
			n.Type = TypeSymlink
			n.LinkTarget = "../" + names[rng.IntN(len(names))]
		case 2:
			n.Type = TypeCharDev
			n.Rdev = rng.Uint64N(1 << 32)
		default:
			n.Type = TypeFile
			n.Size = rng.Uint64()
			for range rng.IntN(4) {
				n.Content = append(n.Content, id())
			}
		}
		if rng.IntN(8) == 0 {
			n.Error = "read: " + names[rng.IntN(len(names))]
		}
		tr.Nodes = append(tr.Nodes, n)
	}
	return tr
}

// TestFastDecodeMatchesJSON decodes random trees both ways: the fast path
// must take every tree in the common form and read exactly what
// encoding/json reads.
func TestFastDecodeMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for i := range 3000 {
		special := i%2 == 1
		b, err := randomTree(rng, special).Encode()
		if err != nil {
			t.Fatal(err)
		}
		var got, want Tree
		ok := decodeFast(b, &got)
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !special && !ok {
			t.Fatalf("the fast decoder refused a tree in the common form:\n%s", b)
		}
		if ok {
			fast++
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast decoder read\n%+v\nencoding/json read\n%+v\nfrom %s", got, want, b)
			}
		}
		// Decode (either path) gives the tree back.
		if _, err := Decode(b); err != nil {
			t.Fatalf("decode: %v\n%s", err, b)
		}
	}
	t.Logf("%d of 3000 trees decoded by the fast path", fast)
}

// TestFastDecodeGivesUp lists inputs the fast path must leave to
// encoding/json (which reads them differently from the obvious, or refuses
// them).
func TestFastDecodeGivesUp(t *testing.T) {
	id := strings.Repeat("ab", crypto.IDSize)
	for _, s := range []string{
		`{"nodes":[{"name":"a","name":"b"}]}`,                  // repeated key: the last wins
		`{"nodes":[{"Name":"a"}]}`,                             // keys match case-insensitively
		`{"nodes":[{"name":"a\u0026b"}]}`,                      // escape
		`{"nodes":[{"name":"a","size":1.0}]}`,                  // not an integer
		`{"nodes":[{"name":"a","size":1e3}]}`,                  // not an integer
		`{"nodes":[{"name":"a","size":-1}]}`,                   // negative
		`{"nodes":[{"name":"a","mode":4294967296}]}`,           // uint32 overflow
		`{"nodes":[{"name":"a","size":18446744073709551616}]}`, // uint64 overflow (…615 is taken)
		`{"nodes":[{"name":"a","size":01}]}`,                   // invalid number
		`{"nodes":[{"name":"a","mtime":"2026-02-30T00:00:00Z"}]}`,
		`{"nodes":[{"name":"a","mtime":"2026-01-01T24:00:00Z"}]}`,
		`{"nodes":[{"name":"a","mtime":"2026-01-01T00:00:00+02:00"}]}`,
		`{"nodes":[{"name":"a","mtime":"2026-01-01T00:00:00.Z"}]}`,
		`{"nodes":[{"name":"a","mtime":"2026-01-01t00:00:00Z"}]}`,
		`{"nodes":[{"name":"a","subtree":null}]}`,
		`{"nodes":[{"name":"a","subtree":"` + id[:62] + `"}]}`,
		`{"nodes":[{"name":"a","content":["` + id + `",]}]}`,
		`{"nodes":[{"name":"\xff"}]}`,
		`{"nodes":[{"name":"a"}],}`,
		`{"nodes":[{"name":"a"}]} x`,
		`{"nodes":null}`,
		`{"nodes":[{"name":"a","name_bytes":"YQ=="}]}`,
		`{"nodes":[{"name":"a","extra":1}]}`,
	} {
		var tr Tree
		if decodeFast([]byte(s), &tr) {
			t.Errorf("fast decoder took %s", s)
		}
	}
}

// FuzzDecode: whatever the fast path accepts, encoding/json accepts too and
// reads the same way.
func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 20 {
		b, err := randomTree(rng, i%2 == 1).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"nodes":[]}`))
	f.Add([]byte(`{"nodes":[{"name":"a","size":18446744073709551615,"inode":0}]}`))
	f.Add([]byte(` { "nodes" : [ { "name" : "a" , "size" : 7 } ] } ` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Tree
		if !decodeFast(b, &got) {
			return
		}
		var want Tree
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("the fast decoder took what encoding/json refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast decoder read %+v, encoding/json %+v, from %q", got, want, b)
		}
	})
}

// BenchmarkDecode: a directory of 16 files in the common form, by Decode
// (the fast path) and by encoding/json alone.
func BenchmarkDecode(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	tr := &Tree{}
	for len(tr.Nodes) < 16 {
		n := randomTree(rng, false).Nodes
		for _, x := range n {
			if x.Type == TypeFile && tr.Find(x.Name) == nil {
				x.Name += strings.Repeat("f", len(tr.Nodes))
				tr.Nodes = append(tr.Nodes, x)
			}
		}
	}
	blob, err := tr.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if _, err := Decode(blob); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			var t Tree
			if err := json.Unmarshal(blob, &t); err != nil {
				b.Fatal(err)
			}
		}
	})
}
