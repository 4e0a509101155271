package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// wantDiag fails unless one error diagnostic's text contains both where
// ("file:line,") and every reason fragment.
func wantDiag(t *testing.T, diags hcl.Diagnostics, where string, reasons ...string) {
	t.Helper()
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Error()
		ok := strings.Contains(msg, where+",")
		for _, r := range reasons {
			ok = ok && strings.Contains(msg, r)
		}
		if ok {
			return
		}
	}
	t.Errorf("no error at %s containing %q; got:\n%s", where, reasons, dump(diags))
}

func dump(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		b.WriteString("  " + d.Error() + "\n")
	}
	return b.String()
}

const okVault = `vault "v" {
  location = "file:///var/lib/coffre/v"
}
`

// TestParseErrors covers the errors Parse reports; each case names the line
// the error must point at.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		line    string
		reasons []string
	}{
		{"unknown block", okVault + `bogus "x" {}`, "4", []string{"Unsupported block type", "bogus"}},
		{"unknown attribute", `vault "v" {
  location = "file:///x"
  colour   = "red"
}`, "3", []string{"Unsupported argument", "colour"}},
		{"unknown nested attribute", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    lifecycle {
      delete_after = 7
    }
  }
}`, "9", []string{"Unsupported argument", "delete_after"}},
		{"unknown resource type", `resource "mysql" "db" {}`, "1", []string{`resource "mysql" "db"`, `unknown resource type "mysql"`, "postgres"}},
		{"bad cron", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 25 * * ? *)"
    target_vault = "v"
  }
}`, "6", []string{`plan "p" rule "r"`, "hours", "25"}},
		{"bad time zone", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    timezone     = "Mars/Olympus"
    target_vault = "v"
  }
}`, "7", []string{`unknown time zone "Mars/Olympus"`}},
		{"start window too short", okVault + `plan "p" {
  rule "r" {
    schedule             = "cron(0 22 * * ? *)"
    start_window_minutes = 30
    target_vault         = "v"
  }
}`, "7", []string{`plan "p" rule "r"`, "start window of 30 minutes is below the minimum of 60 minutes"}},
		{"completion window too short", okVault + `plan "p" {
  rule "r" {
    schedule                  = "cron(0 22 * * ? *)"
    start_window_minutes      = 60
    completion_window_minutes = 90
    target_vault              = "v"
  }
}`, "8", []string{"completion window of 90 minutes must be at least the start window"}},
		{"too frequent", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0/30 * * * ? *)"
    target_vault = "v"
  }
}`, "6", []string{`plan "p" rule "r"`, "more often than the minimum interval of 1h0m0s"}},
		{"too frequent rate", okVault + `plan "p" {
  rule "r" {
    schedule     = "rate(15 minutes)"
    target_vault = "v"
  }
}`, "6", []string{"more often than the minimum interval"}},
		{"cold storage minimum", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    lifecycle {
      move_to_cold_storage_after_days = 30
      delete_after_days               = 100
    }
  }
}`, "8", []string{"delete_after_days (100) must be at least move_to_cold_storage_after_days + 90 (120)"}},
		{"cold storage minimum in copy", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    copy_action {
      destination_vault = "v"
      lifecycle {
        move_to_cold_storage_after_days = 10
        delete_after_days               = 20
      }
    }
  }
}`, "10", []string{"copy_action", "must be at least move_to_cold_storage_after_days + 90"}},
		{"continuous backup retention", okVault + `plan "p" {
  rule "r" {
    schedule          = "cron(0 22 * * ? *)"
    target_vault      = "v"
    continuous_backup = true
    lifecycle {
      delete_after_days = 60
    }
  }
}`, "9", []string{"continuous backups are kept at most 35 days"}},
		{"zero days", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    lifecycle {
      delete_after_days = 0
    }
  }
}`, "9", []string{"delete_after_days must be a whole number from 1"}},
		{"duplicate vault", okVault + okVault, "4", []string{`vault "v" is already declared at test.hcl:1`}},
		{"duplicate plan", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
  }
}
plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
  }
}`, "10", []string{`plan "p" is already declared at test.hcl:4`}},
		{"duplicate rule", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
  }
  rule "r" {
    schedule     = "cron(0 23 * * ? *)"
    target_vault = "v"
  }
}`, "9", []string{`plan "p": rule "r" is already declared at test.hcl:5`}},
		{"duplicate resource", `resource "postgres" "db" {}
resource "postgres" "db" {}`, "2", []string{`resource "postgres" "db" is already declared at test.hcl:1`}},
		{"duplicate resource id", `resource "postgres" "a" { id = "arn:x:db" }
resource "redis" "b" { id = "arn:x:db" }`, "2", []string{`resource id "arn:x:db" is already declared`}},
		{"duplicate notification", `notification "n" {
  events = ["BACKUP_JOB_FAILED"]
  email  = "a@b.c"
}
notification "n" {
  events = ["BACKUP_JOB_FAILED"]
  email  = "a@b.c"
}`, "5", []string{`notification "n" is already declared at test.hcl:1`}},
		{"literal password", `resource "postgres" "db" {
  settings = {
    host     = "db.internal"
    password = "hunter2"
  }
}`, "4", []string{`resource "postgres" "db": settings.password is a secret`, `use env("…") or file("…")`}},
		{"literal access_key", `resource "s3" "bucket" {
  settings = {
    access_key = "AKIAEXAMPLE"
  }
}`, "3", []string{"settings.access_key is a secret", `use env("…")`}},
		{"secret in a template", `resource "redis" "cache" {
  settings = {
    token = "x-${env("TOKEN")}"
  }
}`, "3", []string{"settings.token is a secret"}},
		{"bad env name", `resource "postgres" "db" {
  settings = {
    password = env("1BAD")
  }
}`, "3", []string{"is not an environment variable name"}},
		{"settings not an object", `resource "postgres" "db" {
  settings = "host=db"
}`, "2", []string{"settings must be an object"}},
		{"bad vault location", `vault "v" {
  location = "/var/lib/coffre"
}`, "2", []string{`vault "v": location "/var/lib/coffre" must be file:///absolute/path or s3://bucket`}},
		{"bad lock mode", `vault "v" {
  location = "s3://bucket"
  lock {
    mode = "strict"
  }
}`, "3", []string{`lock mode "strict" must be "governance" or "compliance"`}},
		{"lock min above max", `vault "v" {
  location = "s3://bucket"
  lock {
    mode               = "compliance"
    min_retention_days = 30
    max_retention_days = 10
  }
}`, "3", []string{"min_retention_days 30 is above max_retention_days 10"}},
		{"unknown event", `notification "n" {
  events = ["BACKUP_JOB_EXPLODED"]
  email  = "a@b.c"
}`, "2", []string{`unknown event "BACKUP_JOB_EXPLODED"`}},
		{"notification without target", `notification "n" {
  events = ["BACKUP_JOB_FAILED"]
}`, "1", []string{"set email or webhook"}},
		{"empty selection", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
  }
  selection "s" {}
}`, "9", []string{`selection "s" selects nothing`}},
		{"unknown environment", `environment "aw" {
  environment = "qa"
}`, "2", []string{`environment "qa" must be "development", "staging" or "production"`}},
		{"cross region without region", `environment "aw" {
  environment                = "production"
  enable_cross_region_backup = true
}`, "3", []string{"secondary_region is not set"}},
		{"bad recovery test frequency", `environment "aw" {
  recovery_test_frequency = "hourly"
}`, "2", []string{`recovery_test_frequency "hourly"`}},
		{"bad hourly service", `environment "aw" {
  hourly_backup_resources = ["rds", "ecs"]
}`, "2", []string{`unknown service "ecs"`}},
		{"wrong type", `environment "aw" {
  short_term_retention = "a week"
}`, "2", []string{"short_term_retention"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, diags := Parse([]byte(c.src), "test.hcl")
			if !diags.HasErrors() {
				t.Fatalf("no error")
			}
			wantDiag(t, diags, "test.hcl:"+c.line, c.reasons...)
		})
	}
}

// TestExpandErrors covers the errors that need the whole resolved set.
func TestExpandErrors(t *testing.T) {
	locked := `vault "locked" {
  location = "s3://locked"
  lock {
    mode               = "compliance"
    min_retention_days = 30
    max_retention_days = 365
  }
}
`
	cases := []struct {
		name    string
		src     string
		line    string
		reasons []string
	}{
		{"undefined target vault", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "nope"
  }
}`, "7", []string{`plan "p" rule "r": target_vault "nope" is not declared`}},
		{"undefined copy destination", okVault + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    copy_action {
      destination_vault = "elsewhere"
    }
  }
}`, "9", []string{`copy_action destination_vault "elsewhere" is not declared`}},
		{"retention below lock", locked + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "locked"
    lifecycle {
      delete_after_days = 7
    }
  }
}`, "13", []string{"delete_after_days 7 is below the minimum retention of 30 days", `vault "locked"`}},
		{"retention above lock", locked + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "locked"
    lifecycle {
      delete_after_days = 400
    }
  }
}`, "13", []string{"delete_after_days 400 is above the maximum retention of 365 days"}},
		{"retention forever in locked vault", locked + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "locked"
  }
}`, "12", []string{"kept forever", "at most 365 days"}},
		{"copy retention above lock", okVault + locked + `plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
    copy_action {
      destination_vault = "locked"
      lifecycle {
        delete_after_days = 1000
      }
    }
  }
}`, "18", []string{"copy_action", "delete_after_days 1000 is above the maximum retention of 365 days"}},
		{"preset archive too short for cold storage", `environment "aw" {
  environment       = "production"
  archive_retention = 400
}`, "3", []string{`plan "aw-prod-monthly" rule "monthly-backup-rule"`, "delete_after_days (400) must be at least move_to_cold_storage_after_days + 90 (455)"}},
		{"preset retention vs explicit lock", `environment "aw" {
  environment          = "staging"
  short_term_retention = 3
}
vault "aw-staging-backup-vault" {
  location = "file:///srv/vault"
  lock {
    mode               = "governance"
    min_retention_days = 7
  }
}`, "3", []string{`plan "aw-staging-daily" rule "daily-backup-rule"`, "below the minimum retention of 7 days"}},
		{"two presets with the same names", `environment "aw" {
  environment = "staging"
}
environment "other" {
  environment       = "staging"
  backup_vault_name = "aw-staging-backup-vault"
}`, "4", []string{`vault "aw-staging-backup-vault" is also produced by environment "aw"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, diags := Parse([]byte(c.src), "test.hcl")
			if diags.HasErrors() {
				t.Fatalf("Parse: %s", dump(diags))
			}
			_, diags = cfg.Expand()
			wantDiag(t, diags, "test.hcl:"+c.line, c.reasons...)
		})
	}
}

func TestPresetWarnings(t *testing.T) {
	cfg, diags := Parse([]byte(`environment "aw" {
  long_term_retention = 30
  archive_retention   = 2555
}`), "test.hcl")
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	res, diags := cfg.Expand()
	if diags.HasErrors() || len(diags) != 2 {
		t.Fatalf("want 2 warnings, got:\n%s", dump(diags))
	}
	if !strings.Contains(diags[0].Error(), "test.hcl:3,") || !strings.Contains(diags[0].Error(), "archive_retention is only used in production") {
		t.Errorf("warning 0: %v", diags[0])
	}
	if !strings.Contains(diags[1].Error(), "test.hcl:2,") || !strings.Contains(diags[1].Error(), "long_term_retention is not used in development") {
		t.Errorf("warning 1: %v", diags[1])
	}
	if len(res.Plans) != 1 || len(res.Plans[0].Rules) != 1 || len(res.Vaults) != 1 {
		t.Errorf("development with long-term inputs: %d plans, %d vaults", len(res.Plans), len(res.Vaults))
	}
}

func TestOverride(t *testing.T) {
	dir := t.TempDir()
	override := filepath.Join(dir, "override.hcl")
	if err := os.WriteFile(override, []byte(`
vault "accessweaver-prod-backup-vault-primary" {
  location = "file:///srv/coffre/primary"
  region   = "eu-west-3"
  lock {
    mode               = "governance"
    min_retention_days = 1
    max_retention_days = 400
  }
}

plan "accessweaver-prod-daily" {
  region = "eu-west-1"
  rule "nightly" {
    schedule                  = "cron(30 23 * * ? *)"
    timezone                  = "Europe/Paris"
    start_window_minutes      = 60
    completion_window_minutes = 180
    target_vault              = "accessweaver-prod-backup-vault-primary"
    lifecycle {
      delete_after_days = 30
    }
  }
  selection "db" {
    resources = ["arn:aws:rds:eu-west-1:123456789012:db:*"]
    condition {
      string_equals = { Environment = "production" }
    }
  }
}

notification "accessweaver-prod-backup-alerts" {
  events  = ["BACKUP_JOB_FAILED"]
  webhook = "https://hooks.example.com/backup"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, diags := Load(filepath.Join("testdata", "production.hcl"), override)
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	res, diags := cfg.Expand()
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	var primary *Vault
	for _, v := range res.Vaults {
		if v.Name == "accessweaver-prod-backup-vault-primary" {
			primary = v
		}
	}
	if primary == nil || primary.Location != "file:///srv/coffre/primary" || primary.Lock == nil || primary.KMSKey != "" {
		t.Fatalf("primary vault not replaced by the explicit block: %+v", primary)
	}
	if want := override + ":2"; primary.Origin != want {
		t.Errorf("primary origin %q, want %q", primary.Origin, want)
	}
	if len(res.Vaults) != 3 {
		t.Errorf("%d vaults, want the 3 preset ones", len(res.Vaults))
	}
	var daily *Plan
	for _, p := range res.Plans {
		if p.Name == "accessweaver-prod-daily" {
			daily = p
		}
	}
	if daily == nil || len(daily.Rules) != 1 || daily.Rules[0].Name != "nightly" || daily.Rules[0].Timezone != "Europe/Paris" ||
		len(daily.Rules[0].CopyActions) != 0 {
		t.Fatalf("daily plan not replaced: %+v", daily)
	}
	wantSel := []Condition{{Op: "string_equals", Key: "Environment", Value: "production"}}
	if s := daily.Selections; len(s) != 1 || s[0].Name != "db" || !reflect.DeepEqual(s[0].Conditions, wantSel) {
		t.Errorf("daily selections: %+v", s)
	}
	if len(res.Plans) != 4 {
		t.Errorf("%d plans, want 4", len(res.Plans))
	}
	out := res.Outputs()["accessweaver"]
	if want := "arn:coffre:backup:eu-west-3::backup-vault:accessweaver-prod-backup-vault-primary"; out.BackupVaultARN != want {
		t.Errorf("backup_vault_arn %q, want %q (the override's region)", out.BackupVaultARN, want)
	}
	if len(res.Notifications) != 1 || res.Notifications[0].Webhook == "" || res.Notifications[0].Email != "" {
		t.Errorf("notification not replaced: %+v", res.Notifications)
	}
	// The Config is not modified by Expand.
	if cfg.Vaults[0].ARN != "" {
		t.Errorf("Expand modified the Config")
	}
}

func TestOutputs(t *testing.T) {
	cfg, diags := Load(filepath.Join("testdata", "production.hcl"))
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	res, diags := cfg.Expand()
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	want := Outputs{
		BackupVaultARN:          "arn:coffre:backup:eu-west-1::backup-vault:accessweaver-prod-backup-vault-primary",
		BackupVaultName:         "accessweaver-prod-backup-vault-primary",
		SecondaryBackupVaultARN: "arn:coffre:backup:eu-central-1::backup-vault:accessweaver-prod-backup-vault-secondary",
		BackupPlanARNs: map[string]string{
			"accessweaver-prod-hourly":  "arn:coffre:backup:eu-west-1::backup-plan:accessweaver-prod-hourly",
			"accessweaver-prod-daily":   "arn:coffre:backup:eu-west-1::backup-plan:accessweaver-prod-daily",
			"accessweaver-prod-weekly":  "arn:coffre:backup:eu-west-1::backup-plan:accessweaver-prod-weekly",
			"accessweaver-prod-monthly": "arn:coffre:backup:eu-west-1::backup-plan:accessweaver-prod-monthly",
		},
		BackupSNSTopicARN: "arn:coffre:sns:eu-west-1::accessweaver-prod-backup-alerts",
		KMSKeyARN:         "arn:coffre:kms:eu-west-1::key/mrk-accessweaver-prod-backup-key",
	}
	got := res.Outputs()
	if len(got) != 1 || !reflect.DeepEqual(got["accessweaver"], want) {
		t.Errorf("Outputs() = %+v\nwant %+v", got, want)
	}

	// Without cross-region copies there is no secondary vault; a given
	// kms_key_id is used instead of a created key.
	cfg, diags = Parse([]byte(`environment "aw" {
  environment = "production"
  kms_key_id  = "1234abcd-12ab-34cd-56ef-1234567890ab"
}`), "test.hcl")
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	res, diags = cfg.Expand()
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	o := res.Outputs()["aw"]
	if o.SecondaryBackupVaultARN != "" || o.KMSKeyARN != "arn:coffre:kms:eu-west-1::key/1234abcd-12ab-34cd-56ef-1234567890ab" ||
		len(res.KMSKeys) != 0 || o.BackupVaultName != "aw-prod-backup-vault-primary" {
		t.Errorf("outputs %+v, keys %+v", o, res.KMSKeys)
	}
	if len(o.BackupPlanARNs) != 1 {
		t.Errorf("plans %v, want only the daily plan (no hourly, long-term or archive input)", o.BackupPlanARNs)
	}
}

func TestARNs(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{VaultARN("", "v"), "arn:coffre:backup:local::backup-vault:v"},
		{PlanARN("eu-west-1", "p"), "arn:coffre:backup:eu-west-1::backup-plan:p"},
		{TopicARN("eu-west-1", "t"), "arn:coffre:sns:eu-west-1::t"},
		{KeyARN("eu-west-1", "k"), "arn:coffre:kms:eu-west-1::key/k"},
		{KeyARN("eu-west-1", "arn:aws:kms:eu-west-1:1:key/k"), "arn:aws:kms:eu-west-1:1:key/k"},
		{ResourceID(&Resource{Type: "postgres", Name: "db"}), "arn:coffre:postgres:::resource/db"},
		{ResourceID(&Resource{Type: "postgres", Name: "db", ID: "arn:x"}), "arn:x"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

const secretsSrc = `resource "postgres" "main" {
  settings = {
    host     = "db.internal"
    port     = 5432
    user     = "backup"
    password = env("PGPASSWORD")
  }
  tags = { Tier = "1" }
}
resource "redis" "cache" {
  id = "arn:aws:elasticache:eu-west-1:123456789012:cluster:cache"
  settings = {
    addr       = "cache:6379"
    auth_token = file("SECRETFILE")
  }
}
`

func loadSecrets(t *testing.T, secretFile string) *Resolved {
	t.Helper()
	src := strings.Replace(secretsSrc, "SECRETFILE", secretFile, 1)
	cfg, diags := Parse([]byte(src), "secrets.hcl")
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	res, diags := cfg.Expand()
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	return res
}

func TestSecretReferences(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "redis-token")
	if err := os.WriteFile(secret, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := loadSecrets(t, secret)
	if len(res.Resources) != 2 {
		t.Fatalf("%d resources", len(res.Resources))
	}
	pg, rd := res.Resources[0], res.Resources[1]
	if pg.Type != "postgres" || rd.Type != "redis" {
		t.Fatalf("resources not sorted by type and name: %s, %s", pg.Type, rd.Type)
	}
	wantPG := map[string]string{"host": "db.internal", "port": "5432", "user": "backup", "password": "env:PGPASSWORD"}
	if !reflect.DeepEqual(pg.Settings, wantPG) {
		t.Errorf("postgres settings %v, want %v", pg.Settings, wantPG)
	}
	if !reflect.DeepEqual(pg.Secrets, map[string]SecretRef{"password": {Kind: "env", Name: "PGPASSWORD"}}) {
		t.Errorf("postgres secrets %v", pg.Secrets)
	}
	if pg.ID != "arn:coffre:postgres:::resource/main" || rd.ID != "arn:aws:elasticache:eu-west-1:123456789012:cluster:cache" {
		t.Errorf("ids %q, %q", pg.ID, rd.ID)
	}
	if got := rd.Settings["auth_token"]; got != "file:"+secret || rd.Secrets["auth_token"].String() != got {
		t.Errorf("redis auth_token %q, ref %v", got, rd.Secrets["auth_token"])
	}
	// The secret itself never enters the configuration.
	for _, r := range res.Resources {
		for k, v := range r.Settings {
			if strings.Contains(v, "s3cr3t") {
				t.Errorf("%s settings.%s holds the secret", r.Name, k)
			}
		}
	}

	env := map[string]string{"PGPASSWORD": "pw"}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := res.ResolveSecrets(getenv); err != nil {
		t.Errorf("ResolveSecrets with everything present: %v", err)
	}
	delete(env, "PGPASSWORD")
	err := res.ResolveSecrets(getenv)
	if err == nil || !strings.Contains(err.Error(), "PGPASSWORD") || !strings.Contains(err.Error(), `resource "postgres" "main"`) ||
		!strings.Contains(err.Error(), "secrets.hcl:1") {
		t.Errorf("missing variable: error %v should name the variable, the resource and where it is declared", err)
	}
	// An empty value is set, so it resolves.
	env["PGPASSWORD"] = ""
	if err := res.ResolveSecrets(getenv); err != nil {
		t.Errorf("empty but set variable: %v", err)
	}

	missing := loadSecrets(t, filepath.Join(t.TempDir(), "absent"))
	err = missing.ResolveSecrets(getenv)
	if err == nil || !strings.Contains(err.Error(), `resource "redis" "cache"`) || !strings.Contains(err.Error(), "absent") {
		t.Errorf("missing file: error %v should name the resource and the file", err)
	}
	dirRef := loadSecrets(t, t.TempDir())
	if err := dirRef.ResolveSecrets(getenv); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as secret file: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.hcl"), filepath.Join(dir, "b.hcl")
	os.WriteFile(a, []byte(okVault), 0o644)
	os.WriteFile(b, []byte("\n"+okVault), 0o644)
	_, diags := Load(a, b)
	wantDiag(t, diags, b+":2", `vault "v" is already declared at `+a+":1")

	_, diags = Load(filepath.Join(dir, "missing.hcl"))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "missing.hcl") {
		t.Errorf("missing file: %v", diags)
	}

	// Both files use the label "accessweaver": environment labels key the
	// outputs, so they must be unique.
	_, diags = Load(filepath.Join("testdata", "development.hcl"), filepath.Join("testdata", "staging.hcl"))
	wantDiag(t, diags, filepath.Join("testdata", "staging.hcl")+":5", `environment "accessweaver" is already declared at testdata/development.hcl:7`)
}

func TestSyntaxError(t *testing.T) {
	_, diags := Parse([]byte("vault \"v\" {\n  location = \n}"), "bad.hcl")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "bad.hcl:") {
		t.Errorf("syntax error: %v", diags)
	}
}

func TestEnvironmentDefaults(t *testing.T) {
	cfg, diags := Parse([]byte(`environment "accessweaver" {}`), "test.hcl")
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	e := cfg.Environments[0]
	if e.Environment != "development" || e.ShortTermRetention != 7 || e.BackupVaultName != "" || e.EnableCrossRegionBackup ||
		e.LongTermRetention != 0 || e.ArchiveRetention != 0 || e.CreateKMSKey || e.EnableHourlyBackups || e.EnableRecoveryTesting {
		t.Errorf("defaults: %+v", e)
	}
	res, diags := cfg.Expand()
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	if len(res.Vaults) != 1 || res.Vaults[0].Name != "accessweaver-dev-backup-vault" || res.Vaults[0].KMSKey != "" {
		t.Errorf("default vault: %+v", res.Vaults)
	}
	if len(res.RestoreTests) != 0 {
		t.Errorf("development restore tests are manual, got %+v", res.RestoreTests)
	}
	if r := res.Plans[0].Rules[0]; r.Lifecycle.DeleteAfterDays != 7 {
		t.Errorf("default retention %d", r.Lifecycle.DeleteAfterDays)
	}
	// null is the same as absent.
	cfg, diags = Parse([]byte(`environment "accessweaver" {
  long_term_retention = null
  secondary_region    = null
}`), "test.hcl")
	if len(diags) > 0 || cfg.Environments[0].LongTermRetention != 0 {
		t.Errorf("null inputs: %v %+v", diags, cfg.Environments[0])
	}
}

func TestExplicitRuleDefaults(t *testing.T) {
	cfg, diags := Parse([]byte(okVault+`plan "p" {
  rule "r" {
    schedule     = "rate(1 hour)"
    target_vault = "v"
  }
  selection "all" {
    resources     = ["arn:coffre:postgres:::resource/*"]
    not_resources = ["arn:coffre:postgres:::resource/scratch"]
  }
}`), "test.hcl")
	if len(diags) > 0 {
		t.Fatal(dump(diags))
	}
	r := cfg.Plans[0].Rules[0]
	if r.Timezone != "UTC" || r.StartWindowMinutes != DefaultStartWindowMinutes || r.CompletionWindowMinutes != DefaultCompletionWindowMinutes {
		t.Errorf("rule defaults: %+v", r)
	}
	if s := cfg.Plans[0].Selections[0]; len(s.NotResources) != 1 || len(s.Resources) != 1 {
		t.Errorf("selection: %+v", s)
	}
}
