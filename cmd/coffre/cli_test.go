package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/coffre/coffre/internal/testutil"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
)

const testPassword = "cli test passphrase"

// cli runs coffre in-process against one vault.
type cli struct {
	t     *testing.T
	vault string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	t.Setenv("COFFRE_PASSWORD", testPassword)
	t.Setenv("COFFRE_VAULT", "")
	t.Setenv("COFFRE_PASSWORD_FILE", "")
	t.Setenv("COFFRE_KEY_FILE", "")
	return &cli{t: t, vault: filepath.Join(t.TempDir(), "vault")}
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return "exit " + itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// run runs coffre with --vault set.
func (c *cli) run(args ...string) result {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"--vault", c.vault}, args...), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// ok runs coffre and requires exit code 0.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 0 {
		c.t.Fatalf("coffre %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// withStdin runs fn with os.Stdin reading content.
func withStdin(t *testing.T, content []byte, fn func()) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	fn()
}

func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func sameFiles(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d files, want %d", len(got), len(want))
	}
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s missing", p)
		case !bytes.Equal(g, w):
			t.Errorf("%s differs: %d bytes, want %d", p, len(g), len(w))
		}
	}
}

// vaultFiles lists the files of the vault (path -> size), without locks.
func vaultFiles(t *testing.T, vault string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(vault, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(vault, p)
		if d.IsDir() || strings.HasPrefix(filepath.ToSlash(rel), "locks/") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func hasLinePrefix(s, prefix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

type listEntry struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Source struct {
		Type     string   `json:"type"`
		Paths    []string `json:"paths"`
		Command  string   `json:"command"`
		Filename string   `json:"filename"`
	} `json:"source"`
	Stats struct {
		Files int64 `json:"files"`
		Bytes int64 `json:"bytes"`
	} `json:"stats"`
}

func (c *cli) list() []listEntry {
	c.t.Helper()
	res := c.ok("list", "--json")
	var out []listEntry
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		c.t.Fatalf("list --json: %v\n%s", err, res.stdout)
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	c := newCLI(t)
	res := c.ok("init")
	if !strings.Contains(res.stdout, "created vault") {
		t.Errorf("init output: %s", res)
	}
	src := filepath.Join(t.TempDir(), "src")
	files := map[string][]byte{
		"a.txt":           []byte("hello from a\n"),
		"empty.txt":       {},
		"sub/b.bin":       randBytes(1, 150<<10),
		"sub/deep/c.json": []byte(`{"c": true}`),
		"big.bin":         randBytes(2, 1<<20+12345),
	}
	testutil.WriteFiles(t, src, files)

	res = c.ok("backup", src)
	if !strings.Contains(res.stdout, "COMPLETED") {
		t.Errorf("backup output: %s", res)
	}

	res = c.ok("list")
	for _, want := range []string{"1 recovery point(s)", "COMPLETED", src} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("list output lacks %q:\n%s", want, res.stdout)
		}
	}
	ls := c.list()
	if len(ls) != 1 {
		t.Fatalf("list --json: %d entries, want 1", len(ls))
	}
	rp := ls[0]
	if len(rp.ID) != 64 || rp.Status != "COMPLETED" || rp.Source.Type != "filesystem" || !reflect.DeepEqual(rp.Source.Paths, []string{src}) {
		t.Errorf("list --json entry: %+v", rp)
	}
	if rp.Stats.Files != int64(len(files)) {
		t.Errorf("list --json: %d files, want %d", rp.Stats.Files, len(files))
	}
	if !strings.Contains(res.stdout, rp.ID[:12]) {
		t.Errorf("list text lacks the id %s:\n%s", rp.ID[:12], res.stdout)
	}

	for _, id := range []string{"latest", rp.ID[:8]} {
		res = c.ok("show", id)
		if !strings.Contains(res.stdout, "id        "+rp.ID) || !strings.Contains(res.stdout, "status    COMPLETED") {
			t.Errorf("show %s:\n%s", id, res.stdout)
		}
	}

	res = c.ok("ls", "latest")
	for p := range files {
		if !hasLineSuffix(res.stdout, " "+p) {
			t.Errorf("ls lacks %s:\n%s", p, res.stdout)
		}
	}
	res = c.ok("ls", "--json", "latest", "sub")
	var entries []struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &entries); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, res.stdout)
	}
	var paths []string
	for _, e := range entries {
		paths = append(paths, e.Path)
	}
	sort.Strings(paths)
	if want := []string{"sub", "sub/b.bin", "sub/deep", "sub/deep/c.json"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("ls --json latest sub: %v, want %v", paths, want)
	}

	target := filepath.Join(t.TempDir(), "restored")
	res = c.ok("restore", "latest", "--target", target)
	if !strings.Contains(res.stdout, "restored "+rp.ID[:12]) {
		t.Errorf("restore output: %s", res)
	}
	sameFiles(t, testutil.ReadFiles(t, target), files)

	// Into a non-empty directory: refused, with a hint.
	res = c.run("restore", "latest", "--target", target)
	if res.code != exitFailure {
		t.Errorf("restore into a non-empty directory: %s", res)
	}
	if !strings.Contains(res.stderr, "not empty") || !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("restore into a non-empty directory: want a message and a hint line:\n%s", res.stderr)
	}
	sameFiles(t, testutil.ReadFiles(t, target), files) // untouched

	// An incremental backup after a change.
	files["a.txt"] = []byte("changed\n")
	testutil.WriteFiles(t, src, map[string][]byte{"a.txt": files["a.txt"]})
	c.ok("backup", src)
	if ls := c.list(); len(ls) != 2 {
		t.Fatalf("%d recovery points after the second backup, want 2", len(ls))
	}
	target2 := filepath.Join(t.TempDir(), "restored2")
	c.ok("restore", "latest", "--target", target2)
	sameFiles(t, testutil.ReadFiles(t, target2), files)
	c.ok("check", "--read-data")
}

func hasLineSuffix(s, suffix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasSuffix(l, suffix) {
			return true
		}
	}
	return false
}

func TestStdinRoundTrip(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	content := append([]byte("-- dump\n"), randBytes(3, 300<<10)...)
	withStdin(t, content, func() {
		c.ok("backup", "--stdin", "--stdin-filename", "dump.sql")
	})
	ls := c.list()
	if len(ls) != 1 || ls[0].Source.Type != "stream" || ls[0].Source.Filename != "dump.sql" || ls[0].Stats.Bytes != int64(len(content)) {
		t.Fatalf("list after a stdin backup: %+v", ls)
	}
	res := c.ok("restore", "latest", "--stdout")
	if !bytes.Equal([]byte(res.stdout), content) {
		t.Errorf("restore --stdout: %d bytes, want %d (equal content)", len(res.stdout), len(content))
	}
	out := filepath.Join(t.TempDir(), "out.sql")
	c.ok("restore", "latest", "--output", out)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("restore --output: %d bytes (%v), want %d", len(got), err, len(content))
	}
	// --output never replaces a file.
	if res := c.run("restore", "latest", "--output", out); res.code == 0 {
		t.Errorf("restore --output onto an existing file succeeded: %s", res)
	}
}

func TestCommandBackup(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	c.ok("backup", "--command", "--", "sh", "-c", "printf hello")
	ls := c.list()
	if len(ls) != 1 || ls[0].Source.Command != "sh -c printf hello" {
		t.Fatalf("list after a command backup: %+v", ls)
	}
	res := c.ok("restore", "latest", "--stdout")
	if res.stdout != "hello" {
		t.Errorf("restore --stdout: %q, want %q", res.stdout, "hello")
	}

	// A failing command stores nothing: no recovery point, no file (also
	// no temporary file) in the vault, and the exit code is not PARTIAL.
	for _, script := range []string{"exit 3", "printf 'partial output'; exit 3"} {
		t.Run(script, func(t *testing.T) {
			before := vaultFiles(t, c.vault)
			res := c.run("backup", "--command", "--", "sh", "-c", script)
			if res.code != exitFailure {
				t.Errorf("backup of a failing command: want exit %d (not PARTIAL): %s", exitFailure, res)
			}
			if !hasLinePrefix(res.stderr, "hint: ") {
				t.Errorf("backup of a failing command: no hint:\n%s", res.stderr)
			}
			if after := vaultFiles(t, c.vault); !reflect.DeepEqual(after, before) {
				t.Errorf("a failed command's backup left files in the vault:\nbefore %v\nafter  %v", before, after)
			}
			if ls := c.list(); len(ls) != 1 {
				t.Errorf("%d recovery points after a failed command, want 1", len(ls))
			}
		})
	}
}

func TestWrongPassphrase(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	t.Setenv("COFFRE_PASSWORD", "not the passphrase")
	res := c.run("list")
	if res.code != exitWrongKy {
		t.Errorf("wrong passphrase: %s", res)
	}
	if !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("wrong passphrase: no hint:\n%s", res.stderr)
	}
}

func TestMissingVault(t *testing.T) {
	c := newCLI(t)
	for _, args := range [][]string{{"list"}, {"backup", t.TempDir()}, {"check"}} {
		res := c.run(args...)
		if res.code != exitFailure {
			t.Errorf("coffre %s on a missing vault: %s", args[0], res)
		}
		if !hasLinePrefix(res.stderr, "coffre: ") || !hasLinePrefix(res.stderr, "hint: ") {
			t.Errorf("coffre %s on a missing vault: want an error and a hint line:\n%s", args[0], res.stderr)
		}
	}
	// An existing directory that is not a vault.
	c.vault = t.TempDir()
	res := c.run("list")
	if res.code != exitFailure || !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("list on a directory that is not a vault: want exit 1 and a hint:\n%s", res)
	}
}

func TestUsageErrors(t *testing.T) {
	c := newCLI(t)
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"list", "--no-such-flag"},
		{"no-such-command"},
		{"show"},
		{"restore", "latest"},
		{"backup", "a", "b"},
		{"backup", "--stdin", "--command", "--", "true"},
	} {
		if res := c.run(args...); res.code != exitUsage {
			t.Errorf("coffre %s: want exit %d: %s", strings.Join(args, " "), exitUsage, res)
		}
	}
}

// TestPartialBackup needs a file the backup cannot read. Root reads every
// file, so as root the test runs itself again as user nobody.
func TestPartialBackup(t *testing.T) {
	if os.Geteuid() == 0 && os.Getenv("COFFRE_TEST_UNPRIVILEGED") == "" {
		runUnprivileged(t, "^TestPartialBackup$")
		return
	}
	c := newCLI(t)
	src := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, src, map[string][]byte{"ok.txt": []byte("fine\n"), "secret.txt": []byte("unreadable\n")})
	secret := filepath.Join(src, "secret.txt")
	if err := os.Chmod(secret, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(secret, 0o644) })
	if _, err := os.ReadFile(secret); err == nil {
		t.Skip("cannot make a file unreadable here")
	}
	c.ok("init")
	res := c.run("backup", src)
	if res.code != exitPartial {
		t.Errorf("backup with an unreadable file: %s", res)
	}
	if !strings.Contains(res.stderr, "secret.txt") || !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("backup with an unreadable file: stderr lacks the file or a hint:\n%s", res.stderr)
	}
	if ls := c.list(); len(ls) != 1 || ls[0].Status != "PARTIAL" {
		t.Errorf("list after a partial backup: %+v", ls)
	}
}

// dataPacks returns the data pack files of a local vault.
func dataPacks(t *testing.T, vault string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(vault, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestCheckReportsDamage(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	src := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, src, map[string][]byte{"victim.bin": randBytes(5, 10000)})
	c.ok("backup", src)
	res := c.ok("check", "--read-data")
	if !strings.Contains(res.stdout, "no problems found") {
		t.Errorf("check on a healthy vault:\n%s", res.stdout)
	}
	packs := dataPacks(t, c.vault)
	if len(packs) != 1 {
		t.Fatalf("%d data packs, want 1", len(packs))
	}
	// One blob of 10000 random bytes starts right after the pack header.
	b, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[pack.HeaderSize+100] ^= 0x01
	if err := os.Chmod(packs[0], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(packs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	res = c.run("check", "--read-data")
	if res.code != exitDamage {
		t.Errorf("check after a flipped byte: %s", res)
	}
	if !strings.Contains(res.stdout, "DAMAGE") || !strings.Contains(res.stdout, "affects") || !strings.Contains(res.stdout, "victim.bin") {
		t.Errorf("check output lacks DAMAGE / affects victim.bin:\n%s", res.stdout)
	}
	if !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("check with damage: no hint:\n%s", res.stderr)
	}
	res = c.run("--json", "check", "--read-data")
	if res.code != exitDamage {
		t.Errorf("check --json after a flipped byte: %s", res)
	}
	var out struct {
		Problems []struct {
			Object  string   `json:"object"`
			Affects []string `json:"affects"`
		} `json:"problems"`
		Affected []string `json:"affected_recovery_points"`
	}
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("check --json: %v\n%s", err, res.stdout)
	}
	ls := c.list()
	if len(out.Problems) == 0 || !reflect.DeepEqual(out.Affected, []string{ls[0].ID}) {
		t.Errorf("check --json: %+v, want problems affecting %s", out, ls[0].ID)
	}
}

func TestLockedVault(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	src := filepath.Join(t.TempDir(), "src")
	testutil.WriteFiles(t, src, map[string][]byte{"f.txt": []byte("f\n")})

	ctx := context.Background()
	be, err := local.Open(c.vault)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, &crypto.Passphrase{Secret: testPassword}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lock, err := r.Lock(ctx, true, "prune")
	if err != nil {
		t.Fatal(err)
	}
	res := c.run("backup", src)
	if res.code != exitLocked {
		t.Errorf("backup of a locked vault: %s", res)
	}
	if !strings.Contains(res.stderr, "locked") || !hasLinePrefix(res.stderr, "hint: ") {
		t.Errorf("backup of a locked vault: want a message and a hint:\n%s", res.stderr)
	}
	if res := c.run("prune"); res.code != exitLocked {
		t.Errorf("prune of a locked vault: %s", res)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	c.ok("backup", src)
}

func TestDeleteAndPruneShrinkVault(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	srcA, srcB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	filesB := map[string][]byte{"b.bin": randBytes(7, 100<<10)}
	testutil.WriteFiles(t, srcA, map[string][]byte{"a.bin": randBytes(6, 2<<20)})
	testutil.WriteFiles(t, srcB, filesB)
	c.ok("backup", srcA)
	c.ok("backup", srcB)
	ls := c.list()
	if len(ls) != 2 {
		t.Fatalf("%d recovery points, want 2", len(ls))
	}
	var idA, idB string
	for _, e := range ls {
		if e.Source.Paths[0] == srcA {
			idA = e.ID
		} else {
			idB = e.ID
		}
	}
	before := vaultFiles(t, c.vault)

	res := c.ok("delete", idA[:10])
	if !strings.Contains(res.stdout, "deleted recovery point "+idA[:12]) {
		t.Errorf("delete output: %s", res)
	}
	res = c.ok("prune", "--dry-run")
	if !strings.Contains(res.stdout, "would remove") {
		t.Errorf("prune --dry-run output: %s", res)
	}
	dry := vaultFiles(t, c.vault)
	delete(before, "snapshots/"+idA)
	if !reflect.DeepEqual(dry, before) {
		t.Errorf("prune --dry-run changed the vault")
	}
	c.ok("prune")
	after := vaultFiles(t, c.vault)
	if total(after) > total(before)-(2<<20) {
		t.Errorf("vault is %d bytes after delete + prune, before %d: the 2 MiB of the deleted recovery point were not reclaimed", total(after), total(before))
	}
	if ls := c.list(); len(ls) != 1 || ls[0].ID != idB {
		t.Errorf("recovery points after delete + prune: %+v", ls)
	}
	c.ok("check", "--read-data")
	target := filepath.Join(t.TempDir(), "restored")
	c.ok("restore", idB[:8], "--target", target)
	sameFiles(t, testutil.ReadFiles(t, target), filesB)
}

func TestDemo(t *testing.T) {
	newCLI(t)
	t.Setenv("COFFRE_PASSWORD", "") // the demo uses its own password file
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	code := run([]string{"demo", "--dir", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "restored tree is identical to the source") {
		t.Errorf("demo output ends with %q:\n%s", last, stdout.String())
	}
	for _, want := range []string{`environment = "development"`, "$ coffre apply", "Apply complete: 4 created", "coffre server listening on http://127.0.0.1:",
		"$ coffre backup start", "BACKUP COMPLETED", "2 files read", "$ coffre points list", "RESTORE COMPLETED", "audit trail intact",
		"check --read-data", "2 recovery points", "no problems found"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

// runUnprivileged runs the tests matching pattern in a copy of this test
// binary as user and group 65534 (nobody).
func runUnprivileged(t *testing.T, pattern string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find the test binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "coffre-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, tmp} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "coffre.test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run="+pattern, "-test.v", "-test.count=1")
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "COFFRE_TEST_UNPRIVILEGED=1", "TMPDIR="+tmp, "HOME="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &ee):
		t.Skipf("cannot run the test as an unprivileged user: %v", err)
	case err != nil:
		t.Errorf("as user nobody: %v\n%s", err, out)
	case bytes.Contains(out, []byte("--- SKIP")):
		t.Skipf("skipped as user nobody:\n%s", out)
	case !bytes.Contains(out, []byte("--- PASS")):
		t.Errorf("as user nobody: no test ran:\n%s", out)
	default:
		t.Logf("ran as user nobody:\n%s", out)
	}
}
