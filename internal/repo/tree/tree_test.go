package tree

import (
	"reflect"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo/crypto"
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

// TestSameSeesEveryField changes each field of a node in turn: Same must
// tell every change apart, so that a backup never reuses the previous tree
// of a directory that changed. A field added to Node without a comparison
// fails here.
func TestSameSeesEveryField(t *testing.T) {
	sub, other := crypto.ID{1}, crypto.ID{2}
	base := Node{Name: "n", Type: TypeFile, Mode: 0o644, ModTime: time.Unix(100, 5).UTC(), ChangeTime: time.Unix(200, 0).UTC(),
		UID: 1, GID: 2, User: "u", Group: "g", Inode: 3, DeviceID: 4, Links: 1, Rdev: 5, Size: 6, LinkTarget: "t",
		Content: []crypto.ID{{9}}, Subtree: &sub, Error: "e"}
	if c := base; !c.Same(&base) {
		t.Fatal("a node is not the Same as its copy")
	}
	// The same instant in another zone, and a copied subtree id, are the Same.
	c := base
	c.ModTime = base.ModTime.In(time.FixedZone("", 3600))
	sub2 := sub
	c.Subtree = &sub2
	if !c.Same(&base) {
		t.Fatal("same instant or same subtree id seen as a change")
	}
	derived := map[string]bool{"NameBytes": true, "LinkBytes": true}
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		f := rt.Field(i)
		if derived[f.Name] {
			continue
		}
		c := base
		v := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Name {
		case "ModTime", "ChangeTime":
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Nanosecond)))
		case "Content":
			c.Content = []crypto.ID{{9}, {9}}
		case "Subtree":
			c.Subtree = &other
		default:
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Uint32, reflect.Uint64:
				v.SetUint(v.Uint() + 1)
			default:
				t.Fatalf("field %s of kind %s: teach this test (and Same) about it", f.Name, v.Kind())
			}
		}
		if c.Same(&base) || base.Same(&c) {
			t.Errorf("a change of %s is not seen", f.Name)
		}
	}
	c = base
	c.Subtree = nil
	if c.Same(&base) || base.Same(&c) {
		t.Error("a missing subtree is not seen")
	}
	c = base
	c.Content = nil
	if c.Same(&base) {
		t.Error("a missing content list is not seen")
	}
}
