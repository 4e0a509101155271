package testutil

import (
	"bytes"
	"strings"
	"sync"
)

// LockedBuffer collects output (logs) written from several goroutines.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count returns how many times s occurs in what was written.
func (l *LockedBuffer) Count(s string) int { return strings.Count(l.String(), s) }
