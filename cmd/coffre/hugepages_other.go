//go:build !linux

package main

// hugeHeap does nothing outside Linux (see hugepages_linux.go).
func hugeHeap() {}
