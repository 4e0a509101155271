//go:build !linux

package local

import "os"

// dropCache does nothing where posix_fadvise is not used.
func dropCache(f *os.File) {}
