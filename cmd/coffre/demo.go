package main

import (
	"bytes"
	"context"
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

	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/server"
)

func cmdDemo(g *globals) *cobra.Command {
	var dir string
	var keep bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Show coffre at work on its embedded defaults: the seed's development plan from HCL, a server, backup jobs, listing, restore",
		Long: `Write the seed's development environment as an HCL file (its vault on local disk, a
sample directory as the file system it protects), apply it to an embedded catalog,
start a server (its scheduler off, so that the plan's nightly rule, due from 22:00
to 23:00 UTC, adds no backup of its own), run two backup jobs through its API, list the recovery points and
jobs, restore the latest point through a restore job and compare it with the source,
verify the audit trail, stop the server and check every byte of the vault.`,
		Args: cobra.NoArgs,
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
			return g.demo(cmd.Context(), dir)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "work directory (default: a new temporary directory, removed afterwards)")
	c.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory")
	return c
}

// demoResource is the id the demo's file system resource takes: the EFS
// file system of the seed's development environment.
const demoResource = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0bbbbbbbbbbbbbbb2"

const demoVault = "accessweaver-dev-backup-vault"

// demoHCL is the seed's development environment (module inputs as the
// preset takes them), with its vault on local disk and a sample directory
// standing for the EFS file system the plan selects.
const demoHCL = `# The seed's development environment: a daily plan at 22:00 UTC (start
# window 1 h, completion window 4 h), 7 days of retention, default encryption.
environment "accessweaver" {
  environment = "development"
  efs_arns    = ["%[1]s"]
  notification_email = "dev-alerts@accessweaver.com"
  tags = {
    Project     = "AccessWeaver"
    Environment = "development"
  }
}

# The preset's vault, kept on local disk instead of S3.
vault "accessweaver-dev-backup-vault" {
  location = "file://%[2]s"
}

# A directory protected as the development EFS file system.
resource "filesystem" "documents" {
  id       = "%[1]s"
  settings = { path = "%[3]s" }
  tags     = { Environment = "development" }
}
`

func (g *globals) demo(ctx context.Context, dir string) error {
	src, vault, target := filepath.Join(dir, "sample"), filepath.Join(dir, "vault"), filepath.Join(dir, "restored")
	data, hclFile := filepath.Join(dir, "data"), filepath.Join(dir, "accessweaver-dev.hcl")
	fmt.Fprintf(g.stdout, "== sample tree in %s\n", src)
	if err := makeSample(src); err != nil {
		return err
	}
	hcl := fmt.Sprintf(demoHCL, demoResource, vault, src)
	if err := os.WriteFile(hclFile, []byte(hcl), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "\n== configuration %s\n%s", hclFile, hcl)
	show := func(args []string) string { return strings.ReplaceAll(strings.Join(args, " "), dir, "$DEMO") }
	step := func(args ...string) error {
		fmt.Fprintf(g.stdout, "\n$ coffre %s\n", show(args))
		if code := run(args, g.stdout, g.stderr); code != 0 {
			return fmt.Errorf("coffre %s exited with %d", args[0], code)
		}
		return nil
	}
	cat := []string{"--catalog", data}
	if err := step(append([]string{"apply", "-f", hclFile, "--auto-approve"}, cat...)...); err != nil {
		return err
	}

	// The server runs in this process; its logs go to a file.
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(g.stdout, "\n# (the demo runs its server with the scheduler off: only the jobs asked of it run)\n$ coffre server --catalog $DEMO/data --listen 127.0.0.1:0 2>$DEMO/server.log &\n")
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	ready, served := make(chan string, 1), make(chan error, 1)
	sg := &globals{stdout: g.stdout, stderr: logf, log: g.log}
	sf := &serverFlags{policyFlags: policyFlags{catalogDir: data}, listen: "127.0.0.1:0", workers: 2,
		tick: server.DefaultTick, lifecycleEvery: server.DefaultLifecycleEvery, grace: jobs.DefaultShutdownGrace, logFormat: "text",
		perVault: jobs.DefaultLimits.PerVault, perResource: jobs.DefaultLimits.PerResource,
		// The plan's daily rule (22:00 UTC, 1 h start window) would start a
		// backup of its own when the demo runs inside that hour.
		noScheduler: true}
	go func() { served <- sg.serve(sctx, sf, func(url string) { ready <- url }) }()
	select {
	case <-ready:
	case err := <-served:
		return fmt.Errorf("demo: server did not start: %w (see %s)", err, logPath)
	}
	stopServer := func() error {
		if stop == nil {
			return nil
		}
		stop()
		stop = nil
		return <-served
	}
	defer stopServer()

	backup := append([]string{"backup", "start", "--resource", demoResource, "--vault", demoVault}, cat...)
	if err := step(backup...); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "\n== changing one file and adding another\n")
	if err := os.WriteFile(filepath.Join(src, "docs", "notes.txt"), []byte("changed after the first backup\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte("added after the first backup\n"), 0o644); err != nil {
		return err
	}
	for _, s := range [][]string{backup, append([]string{"points", "list"}, cat...), append([]string{"jobs", "list"}, cat...)} {
		if err := step(s...); err != nil {
			return err
		}
	}
	cf := &clientFlags{policyFlags: policyFlags{catalogDir: data}}
	client, err := cf.client()
	if err != nil || client == nil {
		return fmt.Errorf("demo: no client for the server: %v", err)
	}
	pts, err := client.ListRecoveryPoints(ctx, demoVault, demoResource)
	if err != nil {
		return err
	}
	if len(pts) != 2 {
		return fmt.Errorf("demo: %d recovery points in the catalog, want 2", len(pts))
	}
	latest := pts[0]
	for _, p := range pts[1:] {
		if p.CreatedAt != nil && latest.CreatedAt != nil && p.CreatedAt.After(*latest.CreatedAt) {
			latest = p
		}
	}
	for _, s := range [][]string{
		append([]string{"restore", "start", "--vault", demoVault, "--recovery-point", latest.ID[:12], "--target", target}, cat...),
		append([]string{"audit", "verify"}, cat...),
	} {
		if err := step(s...); err != nil {
			return err
		}
	}
	fmt.Fprintf(g.stdout, "\n== stopping the server (running jobs would finish or be requeued)\n")
	if err := stopServer(); err != nil {
		return fmt.Errorf("demo: server: %w", err)
	}
	// The vault stands alone: the CLI reads it with the keyring's key file.
	if err := step("--vault", vault, "--key-file", filepath.Join(data, "keys", "default.key"), "check", "--read-data"); err != nil {
		return err
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
