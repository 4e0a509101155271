// Package mem owns an in-memory blob.Storage, used by tests.
package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo/blob"
)

// errClosed is returned by every call after Close.
var errClosed = errors.New("memory storage is closed")

// Option configures a Storage.
type Option func(*Storage)

// WithClock makes the Storage stamp files with c's time instead of the wall
// clock.
func WithClock(c clock.Clock) Option {
	return func(s *Storage) {
		if c != nil {
			s.clock = c
		}
	}
}

type entry struct {
	data []byte // never modified after Save stored it
	info blob.FileInfo
}

// Storage keeps files in memory. Save and Load copy data, so callers may reuse
// their buffers. It is safe for concurrent use.
type Storage struct {
	clock clock.Clock

	mu     sync.RWMutex
	files  map[blob.Handle]entry
	closed bool
}

var _ blob.Storage = (*Storage)(nil)

// New returns an empty in-memory storage.
func New(opts ...Option) *Storage {
	s := &Storage{clock: clock.Real{}, files: make(map[blob.Handle]entry)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Location returns "memory".
func (s *Storage) Location() string { return "memory" }

func checkHandle(h blob.Handle) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if h.Kind == blob.KindConfig && h.Name != "config" {
		return fmt.Errorf("invalid name %q for the config file", h.Name)
	}
	return nil
}

func (s *Storage) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return nil
}

// Save stores exactly size bytes of rd under h.
func (s *Storage) Save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	if err := s.save(ctx, h, rd, size); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	return nil
}

func (s *Storage) save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	if rd == nil {
		return errors.New("nil reader")
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	cr := &ctxReader{ctx: ctx, rd: rd}
	data, err := readN(cr, size)
	if err != nil {
		return err
	}
	if n := int64(len(data)); n != size {
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
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	s.files[h] = entry{data: data, info: blob.FileInfo{Name: h.Name, Size: size, ModTime: s.clock.Now()}}
	return nil
}

// readN reads up to size bytes of rd into a new slice. It allocates as data
// arrives (at most 64 MiB ahead), so a huge size with a short reader is harmless.
func readN(rd io.Reader, size int64) ([]byte, error) {
	buf := make([]byte, 0, min(size, 64<<20))
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(size-int64(len(buf)), int64(len(buf)))))
		}
		free := min(int64(cap(buf)-len(buf)), size-int64(len(buf)))
		n, err := rd.Read(buf[len(buf) : len(buf)+int(free)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func (s *Storage) get(h blob.Handle) (entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return entry{}, errClosed
	}
	e, ok := s.files[h]
	if !ok {
		return entry{}, blob.ErrNotExist
	}
	return e, nil
}

// Load returns a reader of length bytes at offset (length 0: to the end).
func (s *Storage) Load(ctx context.Context, h blob.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := checkHandle(h); err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	e, err := s.get(h)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	size := int64(len(e.data))
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v: invalid range %d+%d", h, offset, length)
	}
	if offset > size {
		return nil, fmt.Errorf("load %v: offset %d past the end of the %d-byte file", h, offset, size)
	}
	if length == 0 {
		length = size - offset
	}
	if length > size-offset {
		return nil, fmt.Errorf("load %v: range %d+%d past the end of the %d-byte file", h, offset, length, size)
	}
	data := bytes.Clone(e.data[offset : offset+length])
	return &ctxReader{ctx: ctx, rd: bytes.NewReader(data)}, nil
}

// Stat returns the info of h.
func (s *Storage) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	if err := checkHandle(h); err != nil {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	if err := s.check(ctx); err != nil {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	e, err := s.get(h)
	if err != nil {
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	return e.info, nil
}

// List calls fn for every file of kind k.
func (s *Storage) List(ctx context.Context, k blob.Kind, fn func(blob.FileInfo) error) error {
	if !k.Valid() {
		return fmt.Errorf("list %q: invalid kind", k)
	}
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("list %v: %w", k, err)
	}
	// Snapshot the infos so that fn may call back into the storage.
	var infos []blob.FileInfo
	s.mu.RLock()
	for h, e := range s.files {
		if h.Kind == k {
			infos = append(infos, e.info)
		}
	}
	s.mu.RUnlock()
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h.
func (s *Storage) Remove(ctx context.Context, h blob.Handle) error {
	if err := checkHandle(h); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("remove %v: %w", h, errClosed)
	}
	if _, ok := s.files[h]; !ok {
		return fmt.Errorf("remove %v: %w", h, blob.ErrNotExist)
	}
	delete(s.files, h)
	return nil
}

// Close drops all files; later calls fail. Closing twice is a no-op.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.files = nil
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

func (r *ctxReader) Close() error { return nil }
