package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/bufpool"
)

// streamBuffer is how much of a file being written is gathered before it
// goes to the kernel. A pack writer hands over one sealed blob at a time
// (a few KiB for database streams, up to a few MiB for file content): a
// write system call each cost ~5 µs of system time on the bench VM (42,000
// of them in one backup of the PostgreSQL bench database).
const streamBuffer = 1 << 20

// Create starts a file of kind k written incrementally (blob.Streamer): a
// temporary file in the kind's directory, renamed to its final name by Commit.
func (s *Storage) Create(ctx context.Context, k blob.Kind) (blob.StreamFile, error) {
	if err := s.check(ctx, blob.Handle{Kind: k, Name: "00"}); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.root, string(k))
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create %s file: %w", k, diskFull(err, dir))
	}
	return &streamFile{s: s, k: k, f: f}, nil
}

// streamFile buffers what is written (streamBuffer at a time); Commit writes
// the rest before its fsync. A write error is kept and returned by every
// later Write and by Commit, so that no file with a hole is ever named.
type streamFile struct {
	s    *Storage
	k    blob.Kind
	f    *os.File
	buf  []byte // pending bytes; nil until the first Write, and after release
	err  error
	done bool
}

func (w *streamFile) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.buf == nil {
		w.buf = bufpool.Default.Get(streamBuffer)[:0]
	}
	if len(w.buf)+len(p) > cap(w.buf) {
		if err := w.flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(w.buf)/2 {
			if _, err := w.f.Write(p); err != nil {
				return 0, w.failed(err)
			}
			return len(p), nil
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// flush writes the pending bytes.
func (w *streamFile) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		return w.failed(err)
	}
	return nil
}

func (w *streamFile) failed(err error) error {
	w.err = fmt.Errorf("write %s: %w", w.f.Name(), diskFull(err, w.f.Name()))
	return w.err
}

// release returns the buffer to the pool.
func (w *streamFile) release() {
	if w.buf != nil {
		bufpool.Default.Put(w.buf)
		w.buf = nil
	}
}

// Commit fsyncs the file, renames it to its final name and fsyncs the
// directory that now holds it.
func (w *streamFile) Commit(ctx context.Context, name string) (err error) {
	h := blob.Handle{Kind: w.k, Name: name}
	defer func() {
		if err != nil {
			_ = w.Abort()
			err = fmt.Errorf("save %v: %w", h, err)
		}
	}()
	err = w.flush()
	w.release()
	if err != nil {
		return err
	}
	if err := w.s.check(ctx, h); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return diskFull(err, w.f.Name())
	}
	dropCache(w.f)
	if err := w.f.Close(); err != nil {
		return err
	}
	w.done = true
	final := w.s.Path(h)
	dir := filepath.Dir(final)
	err = os.Rename(w.f.Name(), final)
	if errors.Is(err, fs.ErrNotExist) {
		if err := w.s.mkdirAll(dir); err != nil {
			return err
		}
		err = os.Rename(w.f.Name(), final)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// Abort removes the temporary file.
func (w *streamFile) Abort() error {
	w.release()
	if !w.done {
		w.done = true
		_ = w.f.Close()
	}
	err := os.Remove(w.f.Name())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
