package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const productionHCL = "../../internal/policy/config/testdata/production.hcl"

// runPolicy runs coffre in-process and returns exit code, stdout and stderr.
func runPolicy(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPlanCommand(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"+ vault accessweaver-prod-backup-vault-primary\n",
		"+ plan accessweaver-prod-daily\n",
		"Plan: 11 to create, 0 to change, 0 to delete.",
		`accessweaver.backup_vault_name = "accessweaver-prod-backup-vault-primary"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	// plan changes nothing: a second plan shows the same creations.
	if _, out2, _ := runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir); out2 != out {
		t.Errorf("second plan differs:\n%s", out2)
	}

	code, out, _ = runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir, "--json")
	var j struct {
		Changes []struct{ Action, Kind, Name string }
		Create  int
		Outputs map[string]map[string]any
	}
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.Create != 11 || len(j.Changes) != 11 || j.Outputs["accessweaver"]["backup_vault_name"] != "accessweaver-prod-backup-vault-primary" {
		t.Errorf("--json: exit %d, %+v\n%s", code, j, out)
	}
}

func TestApplyCommandTwice(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir, "--auto-approve")
	if code != 0 || !strings.Contains(out, "Apply complete: 11 created, 0 changed, 0 deleted.") {
		t.Fatalf("first apply: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir, "--auto-approve")
	if code != 0 || !strings.Contains(out, "No changes") || !strings.Contains(out, "Apply complete: 0 created, 0 changed, 0 deleted.") {
		t.Fatalf("second apply: exit %d\n%s%s", code, out, errs)
	}
	if _, out, _ = runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir); !strings.Contains(out, "No changes") {
		t.Errorf("plan after apply:\n%s", out)
	}
}

func TestApplyRefusesWithoutTerminal(t *testing.T) {
	old := stdinIsTerminal
	stdinIsTerminal = func() bool { return false }
	t.Cleanup(func() { stdinIsTerminal = old })
	dir := t.TempDir()
	code, _, errs := runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir)
	if code != exitUsage || !strings.Contains(errs, "run with --auto-approve") {
		t.Fatalf("exit %d, stderr %s", code, errs)
	}
	if _, out, _ := runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir); !strings.Contains(out, "Plan: 11 to create") {
		t.Errorf("refused apply changed the catalog:\n%s", out)
	}
}

func TestApplyConfirmation(t *testing.T) {
	oldT, oldIn := stdinIsTerminal, stdin
	t.Cleanup(func() { stdinIsTerminal, stdin = oldT, oldIn })
	stdinIsTerminal = func() bool { return true }
	dir := t.TempDir()

	stdin = strings.NewReader("n\n")
	code, _, errs := runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir)
	if code != exitFailure || !strings.Contains(errs, "Apply these changes? [y/N]") {
		t.Fatalf("answer n: exit %d, stderr %s", code, errs)
	}
	stdin = strings.NewReader("y\n")
	code, out, errs := runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir)
	if code != 0 || !strings.Contains(out, "Apply complete: 11 created") {
		t.Fatalf("answer y: exit %d\n%s%s", code, out, errs)
	}
}

func TestApplyBadHCL(t *testing.T) {
	dir := t.TempDir()
	if code, out, errs := runPolicy(t, "apply", "-f", productionHCL, "--catalog", dir, "--auto-approve"); code != 0 {
		t.Fatalf("setup apply: exit %d\n%s%s", code, out, errs)
	}
	src, err := os.ReadFile(productionHCL)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.hcl")
	// Line 9 gets an unknown attribute; the retention change must not be applied.
	src = bytes.Replace(src, []byte("short_term_retention = 30"), []byte("short_term_retention = 35"), 1)
	src = bytes.Replace(src, []byte("  secondary_region           = \"eu-central-1\"\n"), []byte("  secondary_region           = \"eu-central-1\"\n  colour = \"blue\"\n"), 1)
	if err := os.WriteFile(bad, src, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"plan", "apply"} {
		code, out, errs := runPolicy(t, cmd, "-f", bad, "--catalog", dir, "--auto-approve")
		if cmd == "plan" {
			code, out, errs = runPolicy(t, cmd, "-f", bad, "--catalog", dir)
		}
		if code != exitFailure || !strings.Contains(errs, bad+":9: ") || strings.Contains(out, "Apply complete") {
			t.Errorf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", cmd, code, out, errs)
		}
	}
	if _, out, _ := runPolicy(t, "plan", "-f", productionHCL, "--catalog", dir); !strings.Contains(out, "No changes") {
		t.Errorf("catalog changed by the bad apply:\n%s", out)
	}
}

func TestPlanNeedsFile(t *testing.T) {
	if code, _, errs := runPolicy(t, "plan", "--catalog", t.TempDir()); code != exitUsage || !strings.Contains(errs, "-f FILE") {
		t.Errorf("exit %d, stderr %s", code, errs)
	}
}

func TestApplyRefusesUnreadableSecrets(t *testing.T) {
	dir := t.TempDir()
	hcl := filepath.Join(t.TempDir(), "db.hcl")
	src := `vault "v" {
  location = "file:///var/lib/coffre/v"
}

resource "postgres" "app" {
  settings = { host = "127.0.0.1", database = "app", password = env("COFFRE_TEST_APP_DB_PASSWORD") }
}
`
	if err := os.WriteFile(hcl, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COFFRE_TEST_APP_DB_PASSWORD", "")
	os.Unsetenv("COFFRE_TEST_APP_DB_PASSWORD")
	code, out, errs := runPolicy(t, "apply", "-f", hcl, "--catalog", dir, "--auto-approve")
	if code != exitFailure || !strings.Contains(errs, `resource "postgres" "app"`) || !strings.Contains(errs, "COFFRE_TEST_APP_DB_PASSWORD is not set") ||
		!strings.Contains(errs, "nothing changed") || !strings.Contains(errs, "--skip-secret-check") {
		t.Fatalf("apply with a missing secret: exit %d\n%s%s", code, out, errs)
	}
	if _, out, _ = runPolicy(t, "plan", "-f", hcl, "--catalog", dir, "--skip-secret-check"); !strings.Contains(out, "Plan: 2 to create") {
		t.Fatalf("the refused apply changed the catalog, or plan --skip-secret-check failed:\n%s", out)
	}
	t.Setenv("COFFRE_TEST_APP_DB_PASSWORD", "s3cret-value")
	code, out, errs = runPolicy(t, "apply", "-f", hcl, "--catalog", dir, "--auto-approve")
	if code != 0 || strings.Contains(out+errs, "s3cret-value") {
		t.Fatalf("apply with the secret set: exit %d\n%s%s", code, out, errs)
	}
}

func TestUnreachableCatalog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close() // nothing listens there now
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=coffre dbname=coffre sslmode=disable connect_timeout=2", addr.Port)
	for _, args := range [][]string{
		{"apply", "-f", productionHCL, "--catalog-dsn", dsn, "--auto-approve"},
		{"server", "--catalog-dsn", dsn, "--listen", "127.0.0.1:0"},
	} {
		code, out, errs := runPolicy(t, args...)
		if code != exitFailure || !strings.Contains(errs, fmt.Sprintf("cannot reach PostgreSQL at 127.0.0.1:%d", addr.Port)) || !strings.Contains(errs, "hint:") {
			t.Errorf("coffre %s: exit %d\n%s%s", args[0], code, out, errs)
		}
	}
}
