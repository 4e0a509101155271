//go:build !linux

package fs

// Prefetch implements archiver.Prefetcher; elsewhere than on Linux it does
// nothing.
func (s *Source) Prefetch(string, int64) {}
