package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestS3VaultEndToEnd runs the CLI against a vault on the S3-compatible
// server that scripts/services.sh starts (versitygw on 127.0.0.1): init,
// backup, incremental backup, restore, check --read-data, delete, prune.
func TestS3VaultEndToEnd(t *testing.T) {
	endpoint := os.Getenv("COFFRE_TEST_S3_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" || os.Getenv("CI") != "" {
			t.Fatal("COFFRE_TEST_S3_ENDPOINT is not set: run scripts/services.sh start ENVFILE")
		}
		t.Skip("no S3 server (run scripts/test.sh)")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", os.Getenv("COFFRE_TEST_S3_ACCESS_KEY"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", os.Getenv("COFFRE_TEST_S3_SECRET_KEY"))
	t.Setenv("COFFRE_PASSWORD", "s3 e2e")
	prefix := make([]byte, 6)
	_, _ = rand.Read(prefix)
	host := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	vault := "s3://" + host + "/" + os.Getenv("COFFRE_TEST_S3_BUCKET") + "/e2e-" + hex.EncodeToString(prefix) +
		"?path-style=true&insecure=" + boolStr(strings.HasPrefix(endpoint, "http://")) + "&region=" + os.Getenv("COFFRE_TEST_S3_REGION")

	src := t.TempDir()
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big)
	mustWrite(t, filepath.Join(src, "big.bin"), big)
	mustWrite(t, filepath.Join(src, "dir", "a.txt"), bytes.Repeat([]byte("hello s3 "), 10000))

	cli := func(wantCode int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append([]string{"--vault", vault}, args...), &out, &errb)
		if code != wantCode {
			t.Fatalf("coffre %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, out.String(), errb.String())
		}
		return out.String()
	}
	cli(0, "init")
	first := cli(0, "backup", src)
	mustWrite(t, filepath.Join(src, "dir", "b.txt"), []byte("second"))
	cli(0, "backup", src)
	if out := cli(0, "list"); !strings.Contains(out, "2 recovery point(s)") {
		t.Fatalf("list: %s", out)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	cli(0, "restore", "latest", "--target", dst)
	got, err := os.ReadFile(filepath.Join(dst, "big.bin"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("restored big.bin differs (err %v)", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "dir", "b.txt")); string(b) != "second" {
		t.Fatalf("restored b.txt = %q", b)
	}
	if out := cli(0, "check", "--read-data"); !strings.Contains(out, "no problems found") {
		t.Fatalf("check: %s", out)
	}
	id := strings.Fields(first)[2] // "recovery point <id> COMPLETED: ..."
	cli(0, "delete", id)
	cli(0, "prune", "--grace", "0")
	if out := cli(0, "check", "--read-data"); !strings.Contains(out, "no problems found") {
		t.Fatalf("check after prune: %s", out)
	}
	// A wrong passphrase is refused with exit code 6.
	t.Setenv("COFFRE_PASSWORD", "wrong")
	cli(exitWrongKy, "list")
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
