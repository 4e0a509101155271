// Package local owns the directory backend: a vault stored as files in a local
// (or mounted) directory.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/coffre/coffre/internal/repo/blob"
)

const (
	fileMode = 0o600
	dirMode  = 0o700
)

// errClosed is returned by every call after Close.
var errClosed = errors.New("local storage is closed")

// Storage is a vault in a directory:
//
//	<root>/config
//	<root>/keys/<name>
//	<root>/data/<first 2 chars of name>/<name>
//	<root>/tree/<first 2 chars of name>/<name>
//	<root>/index/<name>
//	<root>/snapshots/<name>
//	<root>/locks/<name>
//
// Temporary files are named ".tmp-<random>" and live next to their final
// name. It is safe for concurrent use.
type Storage struct {
	root   string
	closed atomic.Bool
}

var _ blob.Storage = (*Storage)(nil)

// Create makes a new, empty vault directory layout at root (without a config
// file: the caller saves it). root may exist only if it is an empty directory.
func Create(root string) (*Storage, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("create vault %s: %w", root, err)
	}
	entries, err := os.ReadDir(abs)
	switch {
	case err == nil && len(entries) > 0:
		return nil, fmt.Errorf("create vault %s: directory exists and is not empty", abs)
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(abs, dirMode); err != nil {
			return nil, fmt.Errorf("create vault %s: %w", abs, err)
		}
		if err := syncDir(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("create vault %s: %w", abs, err)
		}
	default:
		return nil, fmt.Errorf("create vault %s: %w", abs, err)
	}
	for _, k := range blob.Kinds {
		if k == blob.KindConfig {
			continue
		}
		if err := os.Mkdir(filepath.Join(abs, string(k)), dirMode); err != nil {
			return nil, fmt.Errorf("create vault %s: %w", abs, diskFull(err, abs))
		}
	}
	if err := syncDir(abs); err != nil {
		return nil, fmt.Errorf("create vault %s: %w", abs, err)
	}
	return &Storage{root: abs}, nil
}

// Open opens the existing vault at root. It fails with an error wrapping
// blob.ErrNotExist if root or its config file is missing.
func Open(root string) (*Storage, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open vault %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open vault %s: no such directory: %w", abs, blob.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open vault %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open vault %s: not a directory", abs)
	}
	cfg := filepath.Join(abs, "config")
	fi, err = os.Stat(cfg)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open vault %s: no config file %s, not a coffre vault: %w", abs, cfg, blob.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open vault %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open vault %s: %s is not a regular file", abs, cfg)
	}
	return &Storage{root: abs}, nil
}

// Location returns the absolute root directory.
func (s *Storage) Location() string { return s.root }

// Root returns the absolute root directory.
func (s *Storage) Root() string { return s.root }

// Path returns the file name of h, for diagnostics and tests.
func (s *Storage) Path(h blob.Handle) string {
	switch h.Kind {
	case blob.KindConfig:
		return filepath.Join(s.root, "config")
	case blob.KindData, blob.KindTree:
		if len(h.Name) >= 2 {
			return filepath.Join(s.root, string(h.Kind), h.Name[:2], h.Name)
		}
	}
	return filepath.Join(s.root, string(h.Kind), h.Name)
}

func checkHandle(h blob.Handle) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if h.Kind == blob.KindConfig && h.Name != "config" {
		return fmt.Errorf("invalid name %q for the config file", h.Name)
	}
	if (h.Kind == blob.KindData || h.Kind == blob.KindTree) && len(h.Name) < 2 {
		return fmt.Errorf("invalid name %q: %v names have at least 2 characters", h.Name, h.Kind)
	}
	return nil
}

func (s *Storage) check(ctx context.Context, h blob.Handle) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	return nil
}

// diskFull makes an out-of-space error say so, naming path.
func diskFull(err error, path string) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("disk full writing %s: %w", path, err)
	}
	return err
}

// Save stores exactly size bytes of rd under h, atomically and durably.
func (s *Storage) Save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	if err := s.save(ctx, h, rd, size); err != nil {
		return fmt.Errorf("save %v: %w", h, diskFull(err, s.Path(h)))
	}
	return nil
}

func (s *Storage) save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) (err error) {
	if err := s.check(ctx, h); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	if rd == nil {
		return errors.New("nil reader")
	}
	final := s.Path(h)
	dir := filepath.Dir(final)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.mkdirAll(dir); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, ".tmp-*")
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	cr := &ctxReader{ctx: ctx, rd: rd}
	n, err := io.Copy(f, io.LimitReader(cr, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("reader yielded %d bytes, want %d", n, size)
	}
	var one [1]byte
	m, err := io.ReadFull(cr, one[:])
	if m > 0 {
		return fmt.Errorf("reader yields more than %d bytes", size)
	}
	if err != nil && err != io.EOF {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirAll creates dir and its missing parents below the root, syncing each
// parent so that the new entries are durable.
func (s *Storage) mkdirAll(dir string) error {
	if dir == s.root || len(dir) <= len(s.root) {
		return nil
	}
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.mkdirAll(filepath.Dir(dir)); err != nil {
			return err
		}
		err = os.Mkdir(dir, dirMode)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && (errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP)) {
		// Some file systems (and platforms) cannot sync directories.
		return nil
	}
	return err
}

// Load returns a reader of length bytes at offset (length 0: to the end).
func (s *Storage) Load(ctx context.Context, h blob.Handle, offset, length int64) (io.ReadCloser, error) {
	rd, err := s.load(ctx, h, offset, length)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return rd, nil
}

func (s *Storage) load(ctx context.Context, h blob.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := s.check(ctx, h); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("invalid range %d+%d", offset, length)
	}
	p := s.Path(h)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, blob.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("%s is not a regular file: %w", p, blob.ErrNotExist)
	}
	size := fi.Size()
	if offset > size {
		_ = f.Close()
		return nil, fmt.Errorf("offset %d past the end of the %d-byte file", offset, size)
	}
	if length == 0 {
		length = size - offset
	}
	if length > size-offset {
		_ = f.Close()
		return nil, fmt.Errorf("range %d+%d past the end of the %d-byte file", offset, length, size)
	}
	return &fileReader{ctx: ctx, sr: io.NewSectionReader(f, offset, length), f: f}, nil
}

// fileReader reads a section of a file with ReadAt and fails once ctx is done.
type fileReader struct {
	ctx context.Context
	sr  *io.SectionReader
	f   *os.File
}

func (r *fileReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.sr.Read(p)
	if err == io.EOF && r.sr.Size() > 0 {
		// A file truncated under us must not look like a complete read.
		if off, _ := r.sr.Seek(0, io.SeekCurrent); off < r.sr.Size() {
			err = io.ErrUnexpectedEOF
		}
	}
	return n, err
}

func (r *fileReader) Close() error { return r.f.Close() }

// Stat returns the info of h.
func (s *Storage) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	if err := s.check(ctx, h); err != nil {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	p := s.Path(h)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %s: %w", h, p, blob.ErrNotExist)
	}
	if err != nil {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	if !fi.Mode().IsRegular() {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %s is not a regular file: %w", h, p, blob.ErrNotExist)
	}
	return blob.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List calls fn for every file of kind k. It skips names beginning with '.'
// (temporary files) and names that are not valid handle names.
func (s *Storage) List(ctx context.Context, k blob.Kind, fn func(blob.FileInfo) error) error {
	if !k.Valid() {
		return fmt.Errorf("list %q: invalid kind", k)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %v: %w", k, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("list %v: %w", k, errClosed)
	}
	if k == blob.KindConfig {
		fi, err := s.Stat(ctx, blob.Handle{Kind: k, Name: "config"})
		if blob.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
		return fn(fi)
	}
	dir := filepath.Join(s.root, string(k))
	visitFile := func(e fs.DirEntry) error {
		if !e.Type().IsRegular() || checkHandle(blob.Handle{Kind: k, Name: e.Name()}) != nil {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
		return fn(blob.FileInfo{Name: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	if k != blob.KindData && k != blob.KindTree {
		return readDir(ctx, k, dir, visitFile)
	}
	return readDir(ctx, k, dir, func(e fs.DirEntry) error {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") {
			return nil
		}
		sub := filepath.Join(dir, name)
		return readDir(ctx, k, sub, func(e fs.DirEntry) error {
			if !strings.HasPrefix(e.Name(), name) {
				return nil // not where Save puts it
			}
			return visitFile(e)
		})
	})
}

// readDir calls fn for every entry of dir not starting with '.', in batches,
// checking ctx. A missing dir has no entries.
func readDir(ctx context.Context, k blob.Kind, dir string, fn func(fs.DirEntry) error) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %v: %w", k, err)
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
		entries, err := d.ReadDir(1024)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
	}
}

// Remove deletes h.
func (s *Storage) Remove(ctx context.Context, h blob.Handle) error {
	if err := s.check(ctx, h); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	p := s.Path(h)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %v: %s: %w", h, p, blob.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// Close marks the storage closed; later calls fail. Closing twice is a no-op.
func (s *Storage) Close() error {
	s.closed.Store(true)
	return nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	rd  io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.rd.Read(p)
}
