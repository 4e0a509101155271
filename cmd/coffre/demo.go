package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

func cmdDemo(g *globals) *cobra.Command {
	var dir string
	var keep bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Show coffre at work on its embedded defaults: create a local vault, back up a sample tree twice, list, restore, verify",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				d, err := os.MkdirTemp("", "coffre-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			}
			return g.demo(dir)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "work directory (default: a new temporary directory, removed afterwards)")
	c.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory")
	return c
}

func (g *globals) demo(dir string) error {
	src, vault, target := filepath.Join(dir, "sample"), filepath.Join(dir, "vault"), filepath.Join(dir, "restored")
	pwFile := filepath.Join(dir, "passphrase")
	if err := os.WriteFile(pwFile, []byte("demo passphrase, use a real one\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "== sample tree in %s\n", src)
	if err := makeSample(src); err != nil {
		return err
	}
	step := func(args ...string) error {
		full := append([]string{"--vault", vault, "--password-file", pwFile}, args...)
		fmt.Fprintf(g.stdout, "\n$ coffre %s\n", strings.Join(args, " "))
		if code := run(full, g.stdout, g.stderr); code != 0 {
			return fmt.Errorf("coffre %s exited with %d", args[0], code)
		}
		return nil
	}
	if err := step("init"); err != nil {
		return err
	}
	if err := step("backup", src); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "\n== changing one file and adding another\n")
	if err := os.WriteFile(filepath.Join(src, "docs", "notes.txt"), []byte("changed after the first backup\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte("added after the first backup\n"), 0o644); err != nil {
		return err
	}
	for _, s := range [][]string{{"backup", src}, {"list"}, {"restore", "latest", "--target", target}, {"check", "--read-data"}} {
		if err := step(s...); err != nil {
			return err
		}
	}
	fmt.Fprintf(g.stdout, "\n== comparing %s with %s\n", src, target)
	a, err := treeDigest(src)
	if err != nil {
		return err
	}
	b, err := treeDigest(target)
	if err != nil {
		return err
	}
	if a != b {
		return errors.New("demo: the restored tree differs from the source")
	}
	fmt.Fprintln(g.stdout, "restored tree is identical to the source (content, modes, mtimes, symlinks, hard links)")
	return nil
}

// makeSample writes a small tree with every kind of entry coffre handles.
func makeSample(root string) error {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("vault plan rule selection job recovery point lifecycle copy lock restore report event backup cold warm")
	text := func(n int) []byte {
		var b bytes.Buffer
		for b.Len() < n {
			fmt.Fprintf(&b, `{"ts":%d,"event":"%s","resource":"%s-%d"}`+"\n", 1700000000+rng.IntN(1e6), words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(100))
		}
		return b.Bytes()[:n]
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"docs/notes.txt":        text(3000),
		"docs/big.log":          text(6 << 20),
		"data/blob.bin":         random(3 << 20),
		"data/nested/deep/x.js": text(20000),
		"empty.txt":             nil,
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, c, 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "empty-dir"), 0o750); err != nil {
		return err
	}
	if err := os.Symlink("docs/notes.txt", filepath.Join(root, "link-to-notes")); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(root, "data/blob.bin"), filepath.Join(root, "data/hardlink.bin")); err != nil {
		return err
	}
	// A sparse file: 8 MiB with data only at the end.
	f, err := os.Create(filepath.Join(root, "sparse.img"))
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte("end"), 8<<20); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// treeDigest hashes paths, types, modes, mtimes, sizes, contents, link
// targets and hard-link groups of a tree.
func treeDigest(root string) (string, error) {
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if !fi.IsDir() {
			line += fmt.Sprintf(" %d", fi.ModTime().UnixNano())
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
			if ino := inode(fi); ino != 0 {
				if first, ok := inodes[ino]; ok {
					line += " =" + first
				} else {
					inodes[ino] = rel
				}
			}
		case fi.Mode()&os.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			line += " -> " + t
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n"), err
}
