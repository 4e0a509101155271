package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/testutil"
)

// TestKilledMidBackup kills a real `coffre backup` process with SIGKILL while
// it writes packs, at several points, and checks after each kill that the
// vault is intact: check --read-data finds no damage, only the recovery
// points committed before are listed, the next backup succeeds and restores
// byte for byte.
func TestKilledMidBackup(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coffre")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coffre: %v\n%s", err, out)
	}
	vault := filepath.Join(t.TempDir(), "vault")
	src := filepath.Join(t.TempDir(), "src")
	files := map[string][]byte{"small/a.txt": testutil.Text(50 << 10)}
	for i := 0; i < 12; i++ {
		files[filepath.Join("big", string(rune('a'+i))+".bin")] = testutil.RandomBytes(uint64(i), 12<<20)
	}
	testutil.WriteFiles(t, src, files)
	env := append(os.Environ(), "COFFRE_PASSWORD=kill test", "COFFRE_VAULT="+vault)
	coffre := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := coffre("init"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	committed := 0
	for _, killAfterPacks := range []int{1, 4, 9} {
		cmd := exec.Command(bin, "backup", "--full", src)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for countPacks(t, vault) < killAfterPacks+committed*20 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if err == nil {
			// The backup finished before the kill: it committed a point.
			committed++
		}
		t.Logf("killed after >= %d packs: %v", killAfterPacks, err)

		if out, err := coffre("unlock"); err != nil {
			t.Fatalf("unlock: %v\n%s", err, out)
		}
		chk, err := coffre("check", "--read-data")
		if err != nil || !strings.Contains(chk, "no problems found") {
			t.Fatalf("check after kill: %v\n%s", err, chk)
		}
		list, err := coffre("list", "--json")
		if err != nil {
			t.Fatalf("list: %v\n%s", err, list)
		}
		if n := strings.Count(list, `"id"`); n != committed {
			t.Fatalf("after kill: %d recovery points listed, want %d\n%s", n, committed, list)
		}
	}
	// The vault still works: a backup completes and restores exactly.
	if out, err := coffre("backup", src); err != nil {
		t.Fatalf("backup after kills: %v\n%s", err, out)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	if out, err := coffre("restore", "latest", "--target", dst); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	got := testutil.ReadFiles(t, dst)
	for p, want := range files {
		if !bytes.Equal(got[filepath.ToSlash(p)], want) {
			t.Fatalf("restored %s differs", p)
		}
	}
	// Prune removes what the killed backups left (with no grace).
	if out, err := coffre("prune", "--grace", "0"); err != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if chk, err := coffre("check", "--read-data"); err != nil || strings.Contains(chk, "note:") {
		t.Fatalf("check after prune: %v\n%s", err, chk)
	}
	// ... and the temporary files of the packs the killed processes were writing.
	_ = filepath.WalkDir(vault, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left after prune: %s", p)
		}
		return nil
	})
}

func countPacks(t *testing.T, vault string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(filepath.Join(vault, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return nil
	})
	return n
}
