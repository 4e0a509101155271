package tree

import (
	"testing"
)

func TestNonUTF8NamesRoundTrip(t *testing.T) {
	in := &Tree{Nodes: []Node{
		{Name: "caf\xe9.txt", Type: TypeFile},
		{Name: "café.txt", Type: TypeFile},
		{Name: "link", Type: TypeSymlink, LinkTarget: "\xff\xfe/target"},
	}}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Nodes) != 3 {
		t.Fatalf("got %d nodes", len(out.Nodes))
	}
	want := map[string]bool{"caf\xe9.txt": true, "café.txt": true, "link": true}
	for _, n := range out.Nodes {
		if !want[n.Name] {
			t.Errorf("unexpected name %q", n.Name)
		}
		delete(want, n.Name)
		if n.Name == "link" && n.LinkTarget != "\xff\xfe/target" {
			t.Errorf("link target %q", n.LinkTarget)
		}
	}
}

func TestEmptyTreeHasOneEncoding(t *testing.T) {
	a, err := (&Tree{}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&Tree{Nodes: []Node{}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("empty trees encode differently: %q vs %q", a, b)
	}
}

func TestDecodeRejectsBadNames(t *testing.T) {
	for _, js := range []string{`{"nodes":[{"name":"a/b","type":"file"}]}`, `{"nodes":[{"name":"..","type":"file"}]}`, `{"nodes":[{"name":"","type":"file"}]}`, `not json`} {
		if _, err := Decode([]byte(js)); err == nil {
			t.Errorf("Decode(%s) accepted", js)
		}
	}
}

func TestEncodeRejectsDuplicates(t *testing.T) {
	if _, err := (&Tree{Nodes: []Node{{Name: "a"}, {Name: "a"}}}).Encode(); err == nil {
		t.Error("duplicate names accepted")
	}
}
