package fs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// TestLstatAtMatchesLstat: the FileInfo of lstatAt is os.Lstat's, for every
// kind of entry and the special mode bits.
func TestLstatAtMatchesLstat(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("file", 0o644)
	mk("setuid", 0o755|os.ModeSetuid|os.ModeSetgid)
	if err := os.Mkdir(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"file", "setuid", "sticky", "link", "fifo"} {
		want, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := lstatAt(d, dir, name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name() != want.Name() || got.Size() != want.Size() || got.Mode() != want.Mode() ||
			!got.ModTime().Equal(want.ModTime()) || got.IsDir() != want.IsDir() || !reflect.DeepEqual(got.Sys(), want.Sys()) {
			t.Errorf("%s: lstatAt %v %d %v %v, os.Lstat %v %d %v %v", name, got.Mode(), got.Size(), got.ModTime(), got.IsDir(),
				want.Mode(), want.Size(), want.ModTime(), want.IsDir())
		}
	}
	_, err = lstatAt(d, dir, "missing")
	var pe *os.PathError
	if !errors.Is(err, os.ErrNotExist) || !errors.As(err, &pe) || pe.Path != dir+"/missing" {
		t.Errorf("missing entry: %v, want a PathError naming %s/missing that is ErrNotExist", err, dir)
	}
}
