package tree

import (
	"bytes"
	"encoding/hex"
	"math"
	"time"
	"unicode/utf8"

	"github.com/coffre/coffre/internal/repo/crypto"
)

// The fast decoder. An incremental backup reads the previous recovery
// point's tree of every directory, and encoding/json's reflection spent
// more time on them than the backup spent on the changed files' data. The
// fast decoder reads the common form of a tree, as Encode writes it:
// the known keys, strings without escapes (valid UTF-8), decimal integers,
// RFC 3339 times in UTC ("Z") and hex ids. Anything else (an escape, a
// null, base64 bytes, a time with an offset, a key in another case, a
// repeated key, a syntax error) makes it give up, and Decode falls back to
// encoding/json, which decides: the fast path never accepts a blob that
// encoding/json reads differently or refuses (checked against it by
// FuzzDecode and TestFastDecodeMatchesJSON).

// fastDecoder is a strict JSON reader over one tree blob.
type fastDecoder struct {
	b           []byte
	i           int
	user, group string // the last ones read, shared by the nodes that repeat them
}

// decodeFast parses b into t; false means "not in the common form", not
// "invalid": the caller then parses b with encoding/json.
func decodeFast(b []byte, t *Tree) bool {
	d := fastDecoder{b: b}
	if !d.byte('{') {
		return false
	}
	k, ok := d.key()
	if !ok || string(k) != "nodes" || !d.byte('[') {
		return false
	}
	// Every node has a name: their count sizes the slice once.
	t.Nodes = make([]Node, 0, bytes.Count(b, []byte(`"name":`)))
	if d.peek() == ']' {
		d.i++
	} else {
		for {
			t.Nodes = append(t.Nodes, Node{})
			if !d.node(&t.Nodes[len(t.Nodes)-1]) {
				return false
			}
			if d.byte(',') {
				continue
			}
			if !d.byte(']') {
				return false
			}
			break
		}
	}
	if !d.byte('}') {
		return false
	}
	d.space()
	return d.i == len(d.b)
}

// Node keys, one bit each, to refuse repeated keys (encoding/json keeps
// the last; the fast path leaves that case to it).
const (
	kName = 1 << iota
	kType
	kMode
	kMtime
	kCtime
	kUID
	kGID
	kUser
	kGroup
	kInode
	kDevice
	kLinks
	kRdev
	kSize
	kLink
	kContent
	kSubtree
	kError
)

func (d *fastDecoder) node(n *Node) bool {
	if !d.byte('{') {
		return false
	}
	if d.peek() == '}' {
		d.i++
		return true
	}
	seen := 0
	for {
		k, ok := d.key()
		if !ok {
			return false
		}
		var bit int
		switch string(k) {
		case "name":
			bit = kName
			n.Name, ok = d.str()
		case "type":
			bit = kType
			n.Type, ok = d.nodeType()
		case "mode":
			bit = kMode
			ok = d.uint32(&n.Mode)
		case "mtime":
			bit = kMtime
			n.ModTime, ok = d.time()
		case "ctime":
			bit = kCtime
			n.ChangeTime, ok = d.time()
		case "uid":
			bit = kUID
			ok = d.uint32(&n.UID)
		case "gid":
			bit = kGID
			ok = d.uint32(&n.GID)
		case "user":
			bit = kUser
			n.User, ok = d.shared(&d.user)
		case "group":
			bit = kGroup
			n.Group, ok = d.shared(&d.group)
		case "inode":
			bit = kInode
			n.Inode, ok = d.uint(64)
		case "device_id":
			bit = kDevice
			n.DeviceID, ok = d.uint(64)
		case "links":
			bit = kLinks
			n.Links, ok = d.uint(64)
		case "rdev":
			bit = kRdev
			n.Rdev, ok = d.uint(64)
		case "size":
			bit = kSize
			n.Size, ok = d.uint(64)
		case "link_target":
			bit = kLink
			n.LinkTarget, ok = d.str()
		case "content":
			bit = kContent
			n.Content, ok = d.ids()
		case "subtree":
			bit = kSubtree
			var id crypto.ID
			if ok = d.id(&id); ok {
				n.Subtree = &id
			}
		case "error":
			bit = kError
			n.Error, ok = d.str()
		default:
			return false // name_bytes, link_target_bytes, or unknown
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if d.byte(',') {
			continue
		}
		return d.byte('}')
	}
}

func (d *fastDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space (0 at the end).
func (d *fastDecoder) peek() byte {
	d.space()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// byte consumes c (after white space) if it comes next.
func (d *fastDecoder) byte(c byte) bool {
	if d.peek() == c {
		d.i++
		return true
	}
	return false
}

// raw reads a string without escapes and returns its bytes (valid UTF-8,
// no control characters).
func (d *fastDecoder) raw() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	ascii := true
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false // encoding/json replaces bad bytes with U+FFFD
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
		d.i++
	}
	return nil, false
}

func (d *fastDecoder) key() ([]byte, bool) {
	k, ok := d.raw()
	return k, ok && d.byte(':')
}

func (d *fastDecoder) str() (string, bool) {
	s, ok := d.raw()
	return string(s), ok
}

// nodeType reads a node type, the constant's string when it is one.
func (d *fastDecoder) nodeType() (string, bool) {
	s, ok := d.raw()
	if !ok {
		return "", false
	}
	switch string(s) {
	case TypeFile:
		return TypeFile, true
	case TypeDir:
		return TypeDir, true
	case TypeSymlink:
		return TypeSymlink, true
	}
	return string(s), true
}

// shared reads a string that most nodes of a directory repeat (an owner's
// name): when it is *last, *last is returned without a copy.
func (d *fastDecoder) shared(last *string) (string, bool) {
	s, ok := d.raw()
	if !ok {
		return "", false
	}
	if string(s) != *last {
		*last = string(s)
	}
	return *last, true
}

// uint reads a decimal integer that fits in bits bits.
func (d *fastDecoder) uint(bits int) (uint64, bool) {
	d.space()
	start := d.i
	var v uint64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		c := uint64(d.b[d.i] - '0')
		if v > (math.MaxUint64-c)/10 {
			return 0, false // overflows: encoding/json refuses it
		}
		v = v*10 + c
		d.i++
	}
	n := d.i - start
	if n == 0 || n > 1 && d.b[start] == '0' || bits < 64 && v>>bits != 0 {
		return 0, false
	}
	// A number goes on with '.', 'e' or 'E' in JSON: not an integer.
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	return v, true
}

// uint32 reads a decimal integer that fits in 32 bits into *v.
func (d *fastDecoder) uint32(v *uint32) bool {
	u, ok := d.uint(32)
	*v = uint32(u)
	return ok
}

func (d *fastDecoder) id(id *crypto.ID) bool {
	s, ok := d.raw()
	if !ok || len(s) != 2*crypto.IDSize {
		return false
	}
	_, err := hex.Decode(id[:], s)
	return err == nil
}

func (d *fastDecoder) ids() ([]crypto.ID, bool) {
	if !d.byte('[') {
		return nil, false
	}
	ids := []crypto.ID{}
	if d.byte(']') {
		return ids, true
	}
	for {
		var id crypto.ID
		if !d.id(&id) {
			return nil, false
		}
		ids = append(ids, id)
		if d.byte(',') {
			continue
		}
		return ids, d.byte(']')
	}
}

// time reads "YYYY-MM-DDTHH:MM:SS[.fraction]Z", the form of a UTC time
// that time.Time's MarshalJSON writes.
func (d *fastDecoder) time() (time.Time, bool) {
	s, ok := d.raw()
	if !ok || len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[len(s)-1] != 'Z' {
		return time.Time{}, false
	}
	num := func(p []byte) (int, bool) {
		v := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	year, ok1 := num(s[0:4])
	month, ok2 := num(s[5:7])
	day, ok3 := num(s[8:10])
	hour, ok4 := num(s[11:13])
	minute, ok5 := num(s[14:16])
	sec, ok6 := num(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	if frac := s[19 : len(s)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		v, ok := num(frac[1:])
		if !ok {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			v *= 10
		}
		nsec = v
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
