package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffre/coffre/internal/repo/blob"
)

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

type streamFile struct {
	s    *Storage
	k    blob.Kind
	f    *os.File
	err  error
	done bool
}

func (w *streamFile) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	if err != nil {
		w.err = fmt.Errorf("write %s: %w", w.f.Name(), diskFull(err, w.f.Name()))
	}
	return n, w.err
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
	if w.err != nil {
		return w.err
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
