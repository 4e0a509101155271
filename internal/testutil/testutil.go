// Package testutil owns helpers shared by the tests of several packages:
// deterministic test data, writing/reading small file trees, a log buffer safe for concurrent writers.
package testutil

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RandomBytes returns n deterministic pseudo-random (incompressible) bytes.
func RandomBytes(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// Text returns n bytes of compressible, line-structured text.
func Text(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%06d the quick brown fox jumps over the lazy dog %s\n", i, strings.Repeat("z", i%13))
	}
	return b.Bytes()[:n]
}

// WriteFiles writes files (slash paths relative to root) with mode 0644,
// creating directories as needed.
func WriteFiles(t testing.TB, root string, files map[string][]byte) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ReadFiles returns the regular files below root (slash paths) with content.
func ReadFiles(t testing.TB, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FreePort returns a loopback TCP port where nothing listens (it was free a
// moment ago): an address to test unreachable servers with, or for a server
// a test starts.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}
