package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRemoveTemp(t *testing.T) {
	root := filepath.Join(t.TempDir(), "vault")
	s, err := Create(root)
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "data", ".tmp-old")
	young := filepath.Join(root, "data", ".tmp-young")
	keep := filepath.Join(root, "index", "not-temp")
	for _, p := range []string{old, young, keep} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for p, mt := range map[string]time.Time{old: base, young: base.Add(2 * time.Hour), keep: base} {
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.RemoveTemp(context.Background(), base.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("RemoveTemp = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old temp file still there: %v", err)
	}
	for _, p := range []string{young, keep} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
