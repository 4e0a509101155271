package main

import (
	"os"
	"syscall"
)

// inode returns the inode of a file with several links, else 0.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return st.Ino
	}
	return 0
}
