// Package fs owns the filesystem source (the EFS case): reading a local
// directory tree for the archiver, with exclusions and change detection, and
// restoring a recovery point's tree into a new directory.
package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/tree"
)

// Source reads a local directory tree (or a single file). It implements
// archiver.FS.
type Source struct {
	root     string // absolute path
	excludes []string
	names    *nameCache
}

// New returns a source rooted at dir. Exclude patterns use filepath.Match
// syntax and match either an entry's base name or its path relative to the
// root ("*.tmp", "cache", "logs/*.gz"); a pattern ending in "/" matches
// directories only.
func New(dir string, excludes []string) (*Source, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", dir, err)
	}
	if _, err := os.Lstat(abs); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, hint.With(fmt.Errorf("source path %s does not exist", abs), "check the path to back up")
		}
		return nil, fmt.Errorf("source %s: %w", abs, err)
	}
	for _, p := range excludes {
		if _, err := filepath.Match(strings.TrimSuffix(p, "/"), "x"); err != nil {
			return nil, fmt.Errorf("exclude pattern %q: %w", p, err)
		}
	}
	return &Source{root: abs, excludes: excludes, names: newNameCache()}, nil
}

// Path returns the absolute root path.
func (s *Source) Path() string { return s.root }

func (s *Source) abs(p string) string {
	if p == "" {
		return s.root
	}
	return s.root + "/" + p
}

func (s *Source) excluded(rel string, isDir bool) bool {
	base := path.Base(rel)
	for _, p := range s.excludes {
		dirOnly := strings.HasSuffix(p, "/")
		if dirOnly && !isDir {
			continue
		}
		p = strings.TrimSuffix(p, "/")
		if ok, _ := filepath.Match(p, base); ok {
			return true
		}
		if ok, _ := filepath.Match(p, rel); ok {
			return true
		}
	}
	return false
}

// Root returns the root's metadata.
func (s *Source) Root() (tree.Node, error) {
	fi, err := os.Lstat(s.root)
	if err != nil {
		return tree.Node{}, err
	}
	n, err := s.node(filepath.Dir(s.root), filepath.Base(s.root), fi)
	if err != nil {
		return tree.Node{}, err
	}
	if n.Type != tree.TypeDir && n.Type != tree.TypeFile {
		return tree.Node{}, fmt.Errorf("%s is a %s: back up a directory or a regular file", s.root, n.Type)
	}
	return n, nil
}

// ReadDir lists a directory with metadata; vanished entries are skipped.
func (s *Source) ReadDir(p string) ([]tree.Node, error) {
	dir := s.abs(p)
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir, err)
	}
	out := make([]tree.Node, 0, len(names))
	for _, name := range names {
		fi, err := lstatAt(f, dir, name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // vanished between listing and stat
			}
			out = append(out, tree.Node{Name: name, Type: tree.TypeFile, Error: err.Error()})
			continue
		}
		rel := name
		if p != "" {
			rel = p + "/" + name
		}
		if len(s.excludes) > 0 && s.excluded(rel, fi.IsDir()) {
			continue
		}
		n, err := s.node(dir, name, fi)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			n.Error = err.Error()
		}
		out = append(out, n)
	}
	return out, nil
}

// node describes entry name of directory dir from its stat.
func (s *Source) node(dir, name string, fi os.FileInfo) (tree.Node, error) {
	n := tree.Node{Name: name, ModTime: fi.ModTime().UTC(), Mode: uint32(fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky))}
	if fi.Mode()&os.ModeSetuid != 0 {
		n.Mode |= 0o4000
	}
	if fi.Mode()&os.ModeSetgid != 0 {
		n.Mode |= 0o2000
	}
	if fi.Mode()&os.ModeSticky != 0 {
		n.Mode |= 0o1000
	}
	n.Mode &= 0o7777
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		n.UID, n.GID = st.Uid, st.Gid
		n.Inode, n.DeviceID, n.Links = st.Ino, uint64(st.Dev), uint64(st.Nlink)
		n.ChangeTime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec).UTC()
		n.Rdev = uint64(st.Rdev)
		n.User, n.Group = s.names.user(st.Uid), s.names.group(st.Gid)
	}
	m := fi.Mode()
	switch {
	case m.IsRegular():
		n.Type = tree.TypeFile
		n.Size = uint64(fi.Size())
	case m.IsDir():
		n.Type = tree.TypeDir
		n.Links, n.Inode = 0, 0 // directories are never hard-linked; keep trees stable
	case m&os.ModeSymlink != 0:
		n.Type = tree.TypeSymlink
		t, err := os.Readlink(filepath.Join(dir, name))
		if err != nil {
			return n, err
		}
		n.LinkTarget = t
	case m&os.ModeCharDevice != 0:
		n.Type = tree.TypeCharDev
	case m&os.ModeDevice != 0:
		n.Type = tree.TypeDev
	case m&os.ModeNamedPipe != 0:
		n.Type = tree.TypeFifo
	case m&os.ModeSocket != 0:
		n.Type = tree.TypeSocket
	default:
		n.Type = tree.TypeFile
		return n, fmt.Errorf("unsupported file type %v", m.Type())
	}
	if n.Type != tree.TypeFile {
		n.Links = 0
	}
	return n, nil
}

// Open opens a regular file. Close reports archiver.ErrChanged when the file's
// size or modification time changed while it was read. A file of DirectMin
// bytes or more that has no page in the page cache is read with direct I/O
// (see direct.go).
func (s *Source) Open(p string) (io.ReadCloser, error) {
	full := s.abs(p)
	f, err := os.Open(full)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is no longer a regular file", full)
	}
	fl := &file{File: f, size: fi.Size(), mtime: fi.ModTime()}
	fl.maybeDirect()
	return fl, nil
}

// file is what Open returns: only Read and Close, so that io.Copy and
// friends cannot reach the descriptor behind the direct reads' back.
type file struct {
	File   *os.File
	size   int64
	mtime  time.Time
	direct *directReader // nil: reads through the page cache
}

func (f *file) Read(p []byte) (int, error) {
	if f.direct != nil {
		return f.readDirect(p)
	}
	return f.File.Read(p)
}

func (f *file) Close() error {
	f.closeDirect()
	fi, err := f.File.Stat()
	cerr := f.File.Close()
	if err != nil {
		return err
	}
	if fi.Size() != f.size || !fi.ModTime().Equal(f.mtime) {
		return archiver.ErrChanged
	}
	return cerr
}

// nameCache maps uids and gids to names.
type nameCache struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

func newNameCache() *nameCache {
	return &nameCache{users: map[uint32]string{}, groups: map[uint32]string{}}
}

func (c *nameCache) user(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.users[id]; ok {
		return n
	}
	n := ""
	if u, err := user.LookupId(strconv.Itoa(int(id))); err == nil {
		n = u.Username
	}
	c.users[id] = n
	return n
}

func (c *nameCache) group(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.groups[id]; ok {
		return n
	}
	n := ""
	if g, err := user.LookupGroupId(strconv.Itoa(int(id))); err == nil {
		n = g.Name
	}
	c.groups[id] = n
	return n
}
