package local

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RemoveTemp removes ".tmp-*" files (left by a crash during Save or a
// streamed pack) last modified before olderThan (blob.TempCleaner).
func (s *Storage) RemoveTemp(ctx context.Context, olderThan time.Time) (int, error) {
	n := 0
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(olderThan) {
			return nil
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
		n++
		return nil
	})
	return n, err
}
