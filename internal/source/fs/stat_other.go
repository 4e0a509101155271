//go:build !linux

package fs

import "os"

func lstatAt(_ *os.File, dir, name string) (os.FileInfo, error) { return os.Lstat(dir + "/" + name) }
