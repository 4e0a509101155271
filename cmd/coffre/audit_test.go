package main

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuditVerifyDetectsTampering(t *testing.T) {
	cat := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "backup.hcl")
	if err := os.WriteFile(cfg, []byte(`environment "accessweaver" {
  environment = "development"
  efs_arns    = ["arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123"]
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != want {
			t.Fatalf("coffre %v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	cli(0, "apply", "-f", cfg, "--catalog", cat, "--auto-approve")
	if out := cli(0, "audit", "verify", "--catalog", cat); !strings.Contains(out, "audit trail intact: 3 events") {
		t.Fatalf("verify: %s", out)
	}
	if out := cli(0, "audit", "list", "--catalog", cat); !strings.Contains(out, "create vault") {
		t.Fatalf("list: %s", out)
	}
	// Rewrite history behind coffre's back: the outcome of event 2.
	db, err := sql.Open("sqlite", filepath.Join(cat, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_events SET outcome = 'error' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out := cli(exitDamage, "audit", "verify", "--catalog", cat)
	if !strings.Contains(out, "broken at event 2") {
		t.Fatalf("verify after tampering: %s", out)
	}
}
