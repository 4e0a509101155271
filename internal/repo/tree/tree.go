// Package tree owns the tree blob format: the metadata of one directory (its
// entries, their attributes and content ids), serialised as JSON and stored as
// a deduplicated tree blob.
package tree

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/coffre/coffre/internal/repo/bufpool"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
)

// Node types.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeDev     = "dev"
	TypeCharDev = "chardev"
	TypeFifo    = "fifo"
	TypeSocket  = "socket"
)

// Node is one entry of a directory.
type Node struct {
	Name       string      `json:"name"`
	NameBytes  []byte      `json:"name_bytes,omitempty"` // the exact name when it is not valid UTF-8 (JSON would alter it)
	Type       string      `json:"type"`
	Mode       uint32      `json:"mode"` // Unix permission and setuid/setgid/sticky bits (st_mode & 07777)
	ModTime    time.Time   `json:"mtime"`
	ChangeTime time.Time   `json:"ctime,omitzero"`
	UID        uint32      `json:"uid"`
	GID        uint32      `json:"gid"`
	User       string      `json:"user,omitempty"`
	Group      string      `json:"group,omitempty"`
	Inode      uint64      `json:"inode,omitempty"`
	DeviceID   uint64      `json:"device_id,omitempty"` // st_dev of the file (hard link detection)
	Links      uint64      `json:"links,omitempty"`
	Rdev       uint64      `json:"rdev,omitempty"` // device number of device nodes
	Size       uint64      `json:"size,omitempty"`
	LinkTarget string      `json:"link_target,omitempty"`
	LinkBytes  []byte      `json:"link_target_bytes,omitempty"` // the exact target when not valid UTF-8
	Content    []crypto.ID `json:"content,omitempty"`           // data blobs of a file, in order
	Subtree    *crypto.ID  `json:"subtree,omitempty"`           // tree blob of a directory
	Error      string      `json:"error,omitempty"`             // why the entry could not be read completely
}

// Tree is one directory: its nodes, sorted by name.
type Tree struct {
	Nodes []Node `json:"nodes"`
}

// Encode serialises t (sorting its nodes) for storage. Names and link
// targets that are not valid UTF-8 are also stored as raw bytes, so that they
// restore exactly.
func (t *Tree) Encode() ([]byte, error) {
	if t.Nodes == nil {
		t.Nodes = []Node{} // one encoding for an empty directory
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	for i := range t.Nodes {
		n := &t.Nodes[i]
		n.NameBytes, n.LinkBytes = nil, nil
		if !utf8.ValidString(n.Name) {
			n.NameBytes = []byte(n.Name)
		}
		if !utf8.ValidString(n.LinkTarget) {
			n.LinkBytes = []byte(n.LinkTarget)
		}
	}
	for i := 1; i < len(t.Nodes); i++ {
		if t.Nodes[i].Name == t.Nodes[i-1].Name {
			return nil, fmt.Errorf("tree has two entries named %q", t.Nodes[i].Name)
		}
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Decode parses a tree blob.
func Decode(b []byte) (*Tree, error) {
	t := &Tree{}
	if !decodeFast(b, t) {
		*t = Tree{}
		if err := json.Unmarshal(b, t); err != nil {
			return nil, fmt.Errorf("parse tree: %w", err)
		}
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.NameBytes != nil {
			n.Name, n.NameBytes = string(n.NameBytes), nil
		}
		if n.LinkBytes != nil {
			n.LinkTarget, n.LinkBytes = string(n.LinkBytes), nil
		}
		if n.Name == "" || n.Name == "." || n.Name == ".." || containsSlash(n.Name) {
			return nil, fmt.Errorf("parse tree: invalid entry name %q", n.Name)
		}
		if n.Type == TypeDir && n.Subtree == nil && n.Error == "" {
			return nil, fmt.Errorf("parse tree: directory %q has no subtree", n.Name)
		}
	}
	return t, nil
}

// Same reports whether n and o store the same entry: every field Encode
// writes is equal (NameBytes and LinkBytes follow from Name and
// LinkTarget; times are compared as instants). A directory whose entries
// are all the Same as those of its previous tree is described by that
// tree: a backup reuses its id instead of encoding and hashing it again.
func (n *Node) Same(o *Node) bool {
	return n.Name == o.Name && n.Type == o.Type && n.Mode == o.Mode &&
		n.ModTime.Equal(o.ModTime) && n.ChangeTime.Equal(o.ChangeTime) &&
		n.UID == o.UID && n.GID == o.GID && n.User == o.User && n.Group == o.Group &&
		n.Inode == o.Inode && n.DeviceID == o.DeviceID && n.Links == o.Links && n.Rdev == o.Rdev &&
		n.Size == o.Size && n.LinkTarget == o.LinkTarget && slices.Equal(n.Content, o.Content) &&
		(n.Subtree == nil) == (o.Subtree == nil) && (n.Subtree == nil || *n.Subtree == *o.Subtree) &&
		n.Error == o.Error
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' || s[i] == 0 {
			return true
		}
	}
	return false
}

// Find returns the node named name, or nil.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return &t.Nodes[i]
	}
	return nil
}

// BlobLoader reads verified blobs (implemented by *repo.Repository). The
// returned bytes are in buf (appended to buf[:0]) or in memory of their own
// that the caller owns: never memory the loader keeps (Load reuses them).
type BlobLoader interface {
	LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID, buf []byte) ([]byte, error)
}

// BlobSaver stores blobs (implemented by *repo.Repository).
type BlobSaver interface {
	SaveBlob(ctx context.Context, t pack.BlobType, data []byte) (crypto.ID, bool, error)
}

// Load reads and parses tree id.
func Load(ctx context.Context, r BlobLoader, id crypto.ID) (*Tree, error) {
	// The blob is read into a pooled buffer: Decode copies out all it
	// keeps, so the buffer is free again once the tree is parsed (an
	// incremental backup loads every tree of its parent).
	buf := bufpool.Default.Get(loadBuf)[:0]
	b, err := r.LoadBlob(ctx, pack.TreeBlob, id, buf)
	if err != nil {
		bufpool.Default.Put(buf)
		return nil, err
	}
	t, err := Decode(b)
	bufpool.Default.Put(b[:0])
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	return t, nil
}

// loadBuf is the size of the buffer Load starts with: the smallest class
// of the pool, which holds the trees of directories of up to a few hundred
// entries; LoadBlob grows it for larger ones.
const loadBuf = 64 << 10

// Save stores t and returns its id.
func Save(ctx context.Context, r BlobSaver, t *Tree) (crypto.ID, error) {
	b, err := t.Encode()
	if err != nil {
		return crypto.ID{}, err
	}
	id, _, err := r.SaveBlob(ctx, pack.TreeBlob, b)
	return id, err
}

// WalkFunc is called for every node below a tree, with its slash-separated
// path relative to the root. Returning SkipDir from a directory skips it.
type WalkFunc func(path string, n *Node) error

// SkipDir tells Walk not to descend.
var SkipDir = fmt.Errorf("skip this directory")

// Walk visits every node below root depth first, in name order.
func Walk(ctx context.Context, r BlobLoader, root crypto.ID, fn WalkFunc) error {
	return walk(ctx, r, root, "", fn)
}

func walk(ctx context.Context, r BlobLoader, id crypto.ID, prefix string, fn WalkFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := Load(ctx, r, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := n.Name
		if prefix != "" {
			p = prefix + "/" + n.Name
		}
		err := fn(p, n)
		if err == SkipDir {
			continue
		}
		if err != nil {
			return err
		}
		if n.Type == TypeDir && n.Subtree != nil {
			if err := walk(ctx, r, *n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
