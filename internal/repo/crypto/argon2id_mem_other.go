//go:build !linux

package crypto

// argon2Memory returns n zeroed blocks for Argon2id from the Go heap, and a
// function to call when they are no longer needed.
func argon2Memory(n uint32) ([]argon2Block, func()) { return argon2HeapMemory(n) }
