//go:build !linux

package fs

import (
	"errors"
	"os"
)

func setDirect(*os.File, bool) error { return errors.ErrUnsupported }

func cached(*os.File) bool { return true }

func pread(f *os.File, b []byte, off int64) (int, error) { return f.ReadAt(b, off) }
