package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/policy/config"
)

const production = "../config/testdata/production.hcl"

func openCatalog(t *testing.T) catalog.Catalog {
	t.Helper()
	cat, err := sqlite.Open(t.TempDir(), clock.NewFake(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return cat
}

// resolve loads files and expands them, failing on any diagnostic.
func resolve(t *testing.T, files ...string) *config.Resolved {
	t.Helper()
	cfg, diags := config.Load(files...)
	if diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	r, diags := cfg.Expand()
	if diags.HasErrors() {
		t.Fatalf("Expand: %v", diags)
	}
	return r
}

// variant writes a copy of the production preset with old replaced by new.
func variant(t *testing.T, old, new string) string {
	t.Helper()
	src, err := os.ReadFile(production)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(old)) {
		t.Fatalf("%s does not contain %q", production, old)
	}
	path := filepath.Join(t.TempDir(), "production.hcl")
	if err := os.WriteFile(path, bytes.Replace(src, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func diff(t *testing.T, cat catalog.Catalog, r *config.Resolved) *Plan {
	t.Helper()
	p, err := Diff(context.Background(), cat, r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func apply(t *testing.T, cat catalog.Catalog, p *Plan) {
	t.Helper()
	if err := Apply(context.Background(), cat, p); err != nil {
		t.Fatal(err)
	}
}

func names(p *Plan, a Action, k Kind) []string {
	var out []string
	for _, c := range p.Changes {
		if c.Action == a && c.Kind == k {
			out = append(out, c.Name)
		}
	}
	return out
}

func TestProductionPlanOnEmptyCatalog(t *testing.T) {
	cat := openCatalog(t)
	r := resolve(t, production)
	p := diff(t, cat, r)

	if got := names(p, Create, KindVault); strings.Join(got, " ") != "accessweaver-prod-backup-vault-archive accessweaver-prod-backup-vault-primary accessweaver-prod-backup-vault-secondary" {
		t.Errorf("vault creates: %v", got)
	}
	if got := names(p, Create, KindPlan); strings.Join(got, " ") != "accessweaver-prod-daily accessweaver-prod-hourly accessweaver-prod-monthly accessweaver-prod-weekly" {
		t.Errorf("plan creates: %v", got)
	}
	sels := names(p, Create, KindSelection)
	if len(sels) != 4 || sels[0] != "accessweaver-prod-daily/production-resource-selection" {
		t.Errorf("selection creates: %v", sels)
	}
	if n := len(names(p, Create, KindResource)); n != 0 {
		t.Errorf("%d resource creates, the preset declares none", n)
	}
	if cr, up, del := p.Counts(); cr != 11 || up != 0 || del != 0 || len(p.Changes) != 11 {
		t.Errorf("counts %d/%d/%d of %d changes, want 11/0/0", cr, up, del, len(p.Changes))
	}
	// Deterministic order: vaults, plans, selections.
	kinds := ""
	for _, c := range p.Changes {
		kinds += string(c.Kind)[:1]
	}
	if kinds != "vvvppppssss" {
		t.Errorf("order %q", kinds)
	}

	var out bytes.Buffer
	if err := Format(&out, p, r.Outputs()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"+ vault accessweaver-prod-backup-vault-primary\n",
		"+ selection accessweaver-prod-weekly/production-resource-selection\n",
		"Plan: 11 to create, 0 to change, 0 to delete.\n",
		`accessweaver.backup_vault_name = "accessweaver-prod-backup-vault-primary"`,
		`accessweaver.backup_plan_arns[accessweaver-prod-daily] = "arn:coffre:backup:eu-west-1::backup-plan:accessweaver-prod-daily"`,
		`accessweaver.backup_sns_topic_arn = "arn:coffre:sns:eu-west-1::accessweaver-prod-backup-alerts"`,
		`accessweaver.kms_key_arn = "arn:coffre:kms:eu-west-1::key/mrk-accessweaver-prod-backup-key"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Format output lacks %q:\n%s", want, out.String())
		}
	}
	// The plan has not touched the catalog.
	if vs, _ := cat.ListVaults(context.Background()); len(vs) != 0 {
		t.Errorf("Diff stored %d vaults", len(vs))
	}
}

func TestApplyThenNoChanges(t *testing.T) {
	ctx := context.Background()
	cat := openCatalog(t)
	r := resolve(t, production)
	apply(t, cat, diff(t, cat, r))

	if p := diff(t, cat, r); !p.Empty() {
		t.Fatalf("second Diff is not empty: %+v", p.Changes)
	}
	var out bytes.Buffer
	if err := Format(&out, &Plan{}, nil); err != nil || !strings.Contains(out.String(), "No changes") {
		t.Errorf("empty plan printed %q (%v)", out.String(), err)
	}
	pl, err := cat.GetPlan(ctx, "accessweaver-prod-daily")
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Rules) != 1 || pl.Rules[0].DeleteAfterDays != 30 || pl.Rules[0].TargetVault != "accessweaver-prod-backup-vault-primary" ||
		len(pl.Rules[0].CopyActions) != 1 || pl.Rules[0].CopyActions[0].TargetVault != "accessweaver-prod-backup-vault-secondary" {
		t.Errorf("stored daily plan: %+v", pl)
	}
	v, err := cat.GetVault(ctx, "accessweaver-prod-backup-vault-primary")
	if err != nil || v.KeyRef != "arn:coffre:kms:eu-west-1::key/mrk-accessweaver-prod-backup-key" || v.Tags["Project"] != "AccessWeaver" {
		t.Errorf("stored vault %+v (%v)", v, err)
	}

	evs, err := cat.ListAudit(ctx, catalog.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 11 {
		t.Fatalf("%d audit events, want 11", len(evs))
	}
	if e := evs[0]; e.Actor != "coffre apply" || e.Action != "create vault" || e.Object != "accessweaver-prod-backup-vault-archive" || e.Outcome != "ok" {
		t.Errorf("first audit event %+v", e)
	}
	if e := evs[10]; e.Action != "create selection" || e.Object != "accessweaver-prod-weekly/production-resource-selection" {
		t.Errorf("last audit event %+v", e)
	}
	if broken, err := cat.VerifyAudit(ctx); err != nil || broken != 0 {
		t.Errorf("VerifyAudit = %d, %v", broken, err)
	}
}

func TestChangedRetentionIsOneUpdate(t *testing.T) {
	cat := openCatalog(t)
	apply(t, cat, diff(t, cat, resolve(t, production)))

	r := resolve(t, variant(t, "short_term_retention = 30", "short_term_retention = 35"))
	p := diff(t, cat, r)
	if len(p.Changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(p.Changes), p.Changes)
	}
	c := p.Changes[0]
	if c.Action != Update || c.Kind != KindPlan || c.Name != "accessweaver-prod-daily" {
		t.Fatalf("change %+v", c)
	}
	found := false
	for _, f := range c.Fields {
		if f.Name == "rule daily-backup-rule delete_after_days" && f.Old == "30" && f.New == "35" {
			found = true
		}
	}
	if !found {
		t.Errorf("fields %+v lack rule daily-backup-rule delete_after_days 30 → 35", c.Fields)
	}
	var out bytes.Buffer
	if err := Format(&out, p, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"~ plan accessweaver-prod-daily: rule daily-backup-rule delete_after_days 30 → 35\n",
		"Plan: 0 to create, 1 to change, 0 to delete.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	apply(t, cat, p)
	if p := diff(t, cat, r); !p.Empty() {
		t.Errorf("after the update: %+v", p.Changes)
	}
	evs, _ := cat.ListAudit(context.Background(), catalog.AuditFilter{AfterSeq: 11})
	if len(evs) != 1 || evs[0].Action != "update plan" || !strings.Contains(evs[0].Detail, "delete_after_days: 30 → 35") {
		t.Errorf("update audit events %+v", evs)
	}
}

func TestRemovedPlanIsDeleted(t *testing.T) {
	ctx := context.Background()
	cat := openCatalog(t)
	apply(t, cat, diff(t, cat, resolve(t, production)))

	r := resolve(t, variant(t, "enable_hourly_backups   = true", "enable_hourly_backups   = false"))
	p := diff(t, cat, r)
	if cr, up, del := p.Counts(); cr != 0 || up != 0 || del != 2 {
		t.Fatalf("counts %d/%d/%d, want 0/0/2: %+v", cr, up, del, p.Changes)
	}
	if got := names(p, Delete, KindPlan); len(got) != 1 || got[0] != "accessweaver-prod-hourly" {
		t.Errorf("plan deletes %v", got)
	}
	if got := names(p, Delete, KindSelection); len(got) != 1 || got[0] != "accessweaver-prod-hourly/production-resource-selection" {
		t.Errorf("selection deletes %v", got)
	}
	var out bytes.Buffer
	_ = Format(&out, p, nil)
	if !strings.Contains(out.String(), "- plan accessweaver-prod-hourly\n") || !strings.Contains(out.String(), "Plan: 0 to create, 0 to change, 2 to delete.") {
		t.Errorf("output:\n%s", out.String())
	}

	apply(t, cat, p)
	if _, err := cat.GetPlan(ctx, "accessweaver-prod-hourly"); err == nil {
		t.Error("hourly plan still in the catalog")
	}
	if !diff(t, cat, r).Empty() {
		t.Error("Diff after the delete is not empty")
	}
	// Deletes go selection first, then plan.
	evs, _ := cat.ListAudit(ctx, catalog.AuditFilter{AfterSeq: 11})
	if len(evs) != 2 || evs[0].Action != "delete selection" || evs[1].Action != "delete plan" {
		t.Errorf("delete audit events %+v", evs)
	}
	if broken, err := cat.VerifyAudit(ctx); err != nil || broken != 0 {
		t.Errorf("VerifyAudit = %d, %v", broken, err)
	}
}

const explicit = `
vault "v" {
  location = "file:///var/lib/coffre/v"
}
resource "postgres" "db" {
  settings = { host = "db.internal", password = env("PGPASSWORD") }
  tags     = { Environment = "production" }
}
plan "p" {
  rule "r" {
    schedule     = "cron(0 22 * * ? *)"
    target_vault = "v"
  }
  selection "s" {
    resources = ["arn:coffre:postgres:::resource/*"]
    condition {
      string_equals = { Environment = "production" }
    }
  }
}
`

func TestExplicitResourcesAndConditions(t *testing.T) {
	ctx := context.Background()
	cat := openCatalog(t)
	cfg, diags := config.Parse([]byte(explicit), "test.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r, diags := cfg.Expand()
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := diff(t, cat, r)
	if got := names(p, Create, KindResource); len(got) != 1 || got[0] != "arn:coffre:postgres:::resource/db" {
		t.Errorf("resource creates %v", got)
	}
	apply(t, cat, p)
	sel, err := cat.GetSelection(ctx, "p/s")
	if err != nil || len(sel.Conditions) != 1 || sel.Conditions[0] != (catalog.Condition{Op: catalog.StringEquals, Key: "Environment", Value: "production"}) {
		t.Errorf("stored selection %+v (%v)", sel, err)
	}
	res, err := cat.GetResource(ctx, "arn:coffre:postgres:::resource/db")
	if err != nil || res.Settings["password"] != "env:PGPASSWORD" {
		t.Errorf("stored resource %+v (%v)", res, err)
	}
	if !diff(t, cat, r).Empty() {
		t.Error("re-diff not empty")
	}

	// An object only in the catalog is deleted; the empty configuration
	// deletes everything, in reverse dependency order.
	if err := cat.PutVault(ctx, catalog.Vault{Name: "stray", Location: "file:///tmp/stray"}); err != nil {
		t.Fatal(err)
	}
	p = diff(t, cat, &config.Resolved{})
	if cr, up, del := p.Counts(); cr != 0 || up != 0 || del != 5 {
		t.Fatalf("counts %d/%d/%d, want 0/0/5", cr, up, del)
	}
	apply(t, cat, p)
	evs, _ := cat.ListAudit(ctx, catalog.AuditFilter{AfterSeq: 4})
	var acts []string
	for _, e := range evs {
		acts = append(acts, e.Action+" "+e.Object)
	}
	want := "delete selection p/s,delete plan p,delete resource arn:coffre:postgres:::resource/db,delete vault stray,delete vault v"
	if strings.Join(acts, ",") != want {
		t.Errorf("deletes %v, want %s", acts, want)
	}
}

func TestPlanJSON(t *testing.T) {
	p := &Plan{Changes: []Change{{Action: Update, Kind: KindPlan, Name: "p", Fields: []FieldDiff{{Name: "rules", Old: "a", New: "a, b"}}}}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"changes":[{"action":"update","kind":"plan","name":"p","fields":[{"name":"rules","old":"a","new":"a, b"}]}]}` {
		t.Errorf("JSON %s", b)
	}
	if err := Apply(context.Background(), nil, &Plan{}); err != nil {
		t.Errorf("empty Apply: %v", err)
	}
}
