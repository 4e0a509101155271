package config

import (
	"fmt"
	"maps"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Environment is the AccessWeaver backup module's call, written as an
// `environment "PREFIX" { ... }` block: exactly the seed module's input
// variables. The block label is the name prefix ("accessweaver" gives
// "accessweaver-prod-daily").
//
// Defaults are the seed's table "Variables d'Entrée Principales"; inputs the
// table does not list default to empty lists, false, null and {}. One
// interpretation: backup_vault_name defaults to "accessweaver-backup-vault"
// in the table, but every environment box of the seed shows the
// environment's short name in it ("accessweaver-dev-backup-vault"), and the
// seed's production call passes "accessweaver-prod-backup-vault". So an
// absent (or null) backup_vault_name derives "PREFIX-SHORT-backup-vault",
// which is the table's default with the short name inserted; a given value is
// used as is.
type Environment struct {
	Name                    string            `json:"name"`
	Environment             string            `json:"environment"` // development | staging | production
	BackupVaultName         string            `json:"backup_vault_name"`
	EnableCrossRegionBackup bool              `json:"enable_cross_region_backup"`
	SecondaryRegion         string            `json:"secondary_region"`
	ShortTermRetention      int               `json:"short_term_retention"`
	LongTermRetention       int               `json:"long_term_retention"` // 0 = null
	ArchiveRetention        int               `json:"archive_retention"`   // 0 = null
	KMSKeyID                string            `json:"kms_key_id"`
	CreateKMSKey            bool              `json:"create_kms_key"`
	NotificationEmail       string            `json:"notification_email"`
	RDSInstanceARNs         []string          `json:"rds_instance_arns"`
	DynamoDBTableARNs       []string          `json:"dynamodb_table_arns"`
	ElastiCacheClusterARNs  []string          `json:"elasticache_cluster_arns"`
	EFSARNs                 []string          `json:"efs_arns"`
	S3BucketARNs            []string          `json:"s3_bucket_arns"`
	EnableHourlyBackups     bool              `json:"enable_hourly_backups"`
	HourlyBackupResources   []string          `json:"hourly_backup_resources"`
	EnableRecoveryTesting   bool              `json:"enable_recovery_testing"`
	RecoveryTestFrequency   string            `json:"recovery_test_frequency"` // "" = null: the environment's frequency
	Tags                    map[string]string `json:"tags"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// Seed values used by the preset.
const (
	// PrimaryRegion is the seed's production primary region ("Région:
	// eu-west-1"); the seed names no other primary region, so every
	// environment uses it.
	PrimaryRegion = "eu-west-1"
	// DefaultBackupVaultName is the seed's default backup_vault_name.
	DefaultBackupVaultName = "accessweaver-backup-vault"
	// DefaultShortTermRetention is the seed's default short_term_retention.
	DefaultShortTermRetention = 7
)

var environmentSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "environment"}, {Name: "backup_vault_name"}, {Name: "enable_cross_region_backup"},
	{Name: "secondary_region"}, {Name: "short_term_retention"}, {Name: "long_term_retention"},
	{Name: "archive_retention"}, {Name: "kms_key_id"}, {Name: "create_kms_key"},
	{Name: "notification_email"}, {Name: "rds_instance_arns"}, {Name: "dynamodb_table_arns"},
	{Name: "elasticache_cluster_arns"}, {Name: "efs_arns"}, {Name: "s3_bucket_arns"},
	{Name: "enable_hourly_backups"}, {Name: "hourly_backup_resources"},
	{Name: "enable_recovery_testing"}, {Name: "recovery_test_frequency"}, {Name: "tags"},
}}

// shortNames are the environments and the short names the seed uses in
// resource names.
var shortNames = map[string]string{"development": "dev", "staging": "staging", "production": "prod"}

// serviceKinds are the seed's services, in the order of the seed's
// aws_backup_selection concat().
var serviceKinds = []string{"rds", "dynamodb", "elasticache", "efs", "s3"}

func (d *decoder) environment(b *hcl.Block) *Environment {
	e := &Environment{
		Name: b.Labels[0], Environment: "development", ShortTermRetention: DefaultShortTermRetention,
		RDSInstanceARNs: []string{}, DynamoDBTableARNs: []string{}, ElastiCacheClusterARNs: []string{},
		EFSARNs: []string{}, S3BucketARNs: []string{}, HourlyBackupResources: []string{}, Tags: map[string]string{},
		decl: b.DefRange, ranges: map[string]hcl.Range{},
	}
	c := d.content(b.Body, environmentSchema, e.ranges)
	a := c.Attributes
	d.str(a, "environment", &e.Environment)
	d.str(a, "backup_vault_name", &e.BackupVaultName)
	d.boolean(a, "enable_cross_region_backup", &e.EnableCrossRegionBackup)
	d.str(a, "secondary_region", &e.SecondaryRegion)
	d.posInt(a, "short_term_retention", &e.ShortTermRetention)
	d.posInt(a, "long_term_retention", &e.LongTermRetention)
	d.posInt(a, "archive_retention", &e.ArchiveRetention)
	d.str(a, "kms_key_id", &e.KMSKeyID)
	d.boolean(a, "create_kms_key", &e.CreateKMSKey)
	d.str(a, "notification_email", &e.NotificationEmail)
	d.strList(a, "rds_instance_arns", &e.RDSInstanceARNs)
	d.strList(a, "dynamodb_table_arns", &e.DynamoDBTableARNs)
	d.strList(a, "elasticache_cluster_arns", &e.ElastiCacheClusterARNs)
	d.strList(a, "efs_arns", &e.EFSARNs)
	d.strList(a, "s3_bucket_arns", &e.S3BucketARNs)
	d.boolean(a, "enable_hourly_backups", &e.EnableHourlyBackups)
	d.strList(a, "hourly_backup_resources", &e.HourlyBackupResources)
	d.boolean(a, "enable_recovery_testing", &e.EnableRecoveryTesting)
	d.str(a, "recovery_test_frequency", &e.RecoveryTestFrequency)
	d.strMap(a, "tags", &e.Tags)

	where := fmt.Sprintf("environment %q", e.Name)
	if _, ok := shortNames[e.Environment]; !ok {
		d.errorf(at(e.ranges, "environment", e.decl), "Unknown environment", "%s: environment %q must be \"development\", \"staging\" or \"production\"", where, e.Environment)
	}
	if e.RecoveryTestFrequency != "" && !contains([]string{"daily", "weekly", "monthly"}, e.RecoveryTestFrequency) {
		d.errorf(at(e.ranges, "recovery_test_frequency", e.decl), "Invalid recovery test frequency", "%s: recovery_test_frequency %q must be \"daily\", \"weekly\" or \"monthly\"", where, e.RecoveryTestFrequency)
	}
	for _, k := range e.HourlyBackupResources {
		if !contains(serviceKinds, k) {
			d.errorf(at(e.ranges, "hourly_backup_resources", e.decl), "Unknown service", "%s: hourly_backup_resources: unknown service %q; use %s", where, k, strings.Join(serviceKinds, ", "))
		}
	}
	if e.EnableCrossRegionBackup && e.SecondaryRegion == "" {
		d.errorf(at(e.ranges, "enable_cross_region_backup", e.decl), "Missing secondary region", "%s: enable_cross_region_backup is true but secondary_region is not set", where)
	}
	if e.EnableCrossRegionBackup && e.SecondaryRegion == PrimaryRegion {
		d.errorf(at(e.ranges, "secondary_region", e.decl), "Invalid secondary region", "%s: secondary_region %q is the primary region; cross-region copies need another region", where, e.SecondaryRegion)
	}
	if e.NotificationEmail != "" && !strings.Contains(e.NotificationEmail, "@") {
		d.errorf(at(e.ranges, "notification_email", e.decl), "Invalid email", "%s: notification_email %q is not an email address", where, e.NotificationEmail)
	}
	return e
}

// arns returns the ARNs the module was given for a service kind.
func (e *Environment) arns(kind string) []string {
	switch kind {
	case "rds":
		return e.RDSInstanceARNs
	case "dynamodb":
		return e.DynamoDBTableARNs
	case "elasticache":
		return e.ElastiCacheClusterARNs
	case "efs":
		return e.EFSARNs
	case "s3":
		return e.S3BucketARNs
	}
	return nil
}

func (e *Environment) collect(kinds []string) []string {
	out := []string{}
	for _, k := range kinds {
		out = append(out, e.arns(k)...)
	}
	return out
}

// preset is what one environment block expands into.
type preset struct {
	vaults []*Vault
	plans  []*Plan
	notes  []*Notification
	keys   []*KMSKey
	tests  []*RestoreTest
	out    *envOutputs
	diags  hcl.Diagnostics
}

// Seed schedules. The seed's Terraform sets no schedule time zone, so they
// are UTC (AWS Backup's default).
const (
	hourlyCron  = "cron(0 * * * ? *)"   // "Fenêtre: Chaque heure"
	dailyCron   = "cron(0 22 * * ? *)"  // seed aws_backup_plan.daily
	weeklyCron  = "cron(0 0 ? * SUN *)" // seed weekly-backup-rule, "Jour: Dimanche"
	monthlyCron = "cron(0 0 1 * ? *)"   // "Jour: 1er du mois"
)

// Restore tests run at 08:00 UTC, after the backups they test: the weekly
// one on Sunday after the 00:00-06:00 weekly window, the monthly one on the
// 1st after the 00:00-06:00 monthly window, a daily one after the
// 22:00-02:00 nightly window.
var restoreTestCron = map[string]string{
	"daily":   "cron(0 8 * * ? *)",
	"weekly":  "cron(0 8 ? * SUN *)",
	"monthly": "cron(0 8 1 * ? *)",
}

// Per environment, from the seed's table "Stratégie Multi-Environnement"
// and the environment boxes.
var (
	// Services selected by the daily plan: development "RDS, EFS, S3";
	// staging "RDS, EFS, S3, DynamoDB, ElastiCache"; production "Tous".
	selectedKinds = map[string][]string{
		"development": {"rds", "efs", "s3"},
		"staging":     serviceKinds,
		"production":  serviceKinds,
	}
	// Default recovery_test_frequency: staging "Automatique (mensuel)",
	// production "Automatique (hebdomadaire)"; development is "Manuel",
	// so it only matters there if testing is enabled anyway.
	defaultTestFrequency = map[string]string{"development": "monthly", "staging": "monthly", "production": "weekly"}
	// RTO targets: <24h, <12h, <4h.
	rtoMinutes = map[string]int{"development": 24 * 60, "staging": 12 * 60, "production": 4 * 60}
)

// Notification events. Development: "Échecs uniquement"; staging: "Échecs
// et succès". The production box says nothing: it gets failures (hourly
// successes would be 24 messages a day) plus RESTORE_JOB_SUCCESSFUL, since
// the seed's restore test script publishes every test result to the topic.
var (
	failureEvents = []string{"BACKUP_JOB_FAILED", "BACKUP_JOB_EXPIRED", "COPY_JOB_FAILED", "RESTORE_JOB_FAILED"}
	successEvents = []string{"BACKUP_JOB_SUCCESSFUL", "COPY_JOB_SUCCESSFUL", "RESTORE_JOB_SUCCESSFUL"}
	envEvents     = map[string][]string{
		"development": failureEvents,
		"staging":     append(append([]string{}, failureEvents...), successEvents...),
		"production":  append(append([]string{}, failureEvents...), "RESTORE_JOB_SUCCESSFUL"),
	}
)

// expand turns the module call into vaults, plans, notifications, keys and
// restore tests. Interpretations of the seed, beyond those noted on the
// tables above:
//
//   - Vaults: development and staging have one vault, named after
//     backup_vault_name; production has BASE-primary, BASE-secondary (only
//     when enable_cross_region_backup, in secondary_region) and BASE-archive
//     (only when archive_retention is set). Any environment with
//     enable_cross_region_backup gets BASE-secondary and a copy of the daily
//     backups (the seed says "Non" for development and staging, which is
//     the input's default). Preset vaults are at s3://VAULT-NAME in their
//     region; declare a vault block of the same name to put one elsewhere.
//   - Daily plan PREFIX-SHORT-daily, rule daily-backup-rule: cron(0 22 * * ?
//     *), window 22:00-02:00 = start window 60 minutes (AWS's minimum, the
//     job must start by 23:00) and completion window 240 minutes (done by
//     02:00); deleted after short_term_retention days; copied to the
//     secondary vault, kept as long, when cross-region backup is enabled
//     ("Copie cross-région des backups critiques": only the daily rule).
//   - Long-term retention outside production (staging: "30 jours (long
//     terme)", frequency only "Quotidienne"): the seed's Terraform applies
//     long_term_retention through a weekly-backup-rule inside the daily plan
//     (cron(0 0 ? * SUN *)), so staging gets that rule, window 00:00-06:00
//     (60/360 minutes), deleted after long_term_retention days. Development
//     ignores long_term_retention ("Non") and archive_retention, with a
//     warning; staging ignores archive_retention.
//   - Storage classes: development is "S3 Standard uniquement"; staging's
//     "S3 IA" cannot be a cold tier (AWS cold storage needs 90 days and the
//     longest staging retention is 30), so no cold transition there either.
//     Production's weekly rule has no cold transition (the seed gives none);
//     its monthly rule moves to cold after 365 days ("Transition automatique
//     après 1 an", Glacier Deep Archive).
//   - Production plans: PREFIX-prod-hourly when enable_hourly_backups and
//     hourly_backup_resources is not empty (the seed passes ["rds"]: "RDS
//     uniquement"), cron(0 * * * ? *), start window 60 and completion 120
//     minutes (the smallest AWS allows), deleted after 1 day ("24 heures");
//     it selects the services named in hourly_backup_resources, and is
//     honoured in any environment. PREFIX-prod-weekly (when
//     long_term_retention is set): cron(0 0 ? * SUN *), 00:00-06:00,
//     deleted after long_term_retention. PREFIX-prod-monthly (when
//     archive_retention is set): cron(0 0 1 * ? *), same 00:00-06:00 window
//     (the seed gives none), to the archive vault, cold after 365 days,
//     deleted after archive_retention.
//   - Selections: each plan has one selection named like the seed's
//     "${var.environment}-resource-selection", listing the given ARNs in the
//     seed's concat() order, restricted to the environment's services.
//   - KMS: kms_key_id, when set, encrypts every vault (a bare id becomes
//     arn:coffre:kms:eu-west-1::key/ID). Otherwise a key is created when
//     create_kms_key is true, and always in staging ("KMS dédié") and
//     production ("KMS multi-régional": id mrk-PREFIX-prod-backup-key,
//     replicated to secondary_region when copies are enabled, and the
//     secondary vault uses the replica). Development otherwise uses default
//     encryption ("Par défaut"): no key, empty kms_key_arn.
//   - Notifications: one topic PREFIX-SHORT-backup-alerts in the primary
//     region, email notification_email (a topic with no subscriber when it
//     is null).
//   - Restore tests: none unless enable_recovery_testing (development's
//     "Manuel" is the default). When enabled, PREFIX-SHORT-restore-test-rds
//     runs at recovery_test_frequency (default: the environment's), and in
//     production PREFIX-prod-restore-test-others covers the other services
//     monthly ("Mensuelle (autres services)"). Staging tests RDS only. Tests
//     restore the latest recovery point from the primary vault, validate it,
//     and compare the measured time to the environment's RTO.
//   - Tags: the tags input is set on every preset vault and plan.
func (e *Environment) expand() *preset {
	p := &preset{}
	short, ok := shortNames[e.Environment]
	if !ok {
		return p // reported when decoding
	}
	env := e.Environment
	prefix := e.Name + "-" + short
	org := fmt.Sprintf("environment %q", e.Name)
	tags := func() map[string]string {
		if len(e.Tags) == 0 {
			return nil
		}
		return maps.Clone(e.Tags)
	}
	rangeOf := func(name string) hcl.Range { return at(e.ranges, name, e.decl) }
	warn := func(name, format string, args ...any) {
		r := rangeOf(name)
		p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Input ignored",
			Detail: fmt.Sprintf("environment %q: "+format, append([]any{e.Name}, args...)...), Subject: &r})
	}
	crossRegion := e.EnableCrossRegionBackup && e.SecondaryRegion != ""

	// KMS.
	keyARN, secondaryKeyARN := "", ""
	switch {
	case e.KMSKeyID != "":
		keyARN = KeyARN(PrimaryRegion, e.KMSKeyID)
		secondaryKeyARN = keyARN
	case e.CreateKMSKey || env == "staging" || env == "production":
		k := &KMSKey{ID: prefix + "-backup-key", Region: PrimaryRegion, Origin: org}
		if env == "production" {
			k.ID = "mrk-" + k.ID
			k.MultiRegion = true
			if crossRegion {
				k.ReplicaRegions = []string{e.SecondaryRegion}
			}
		}
		k.ARN = KeyARN(PrimaryRegion, k.ID)
		keyARN = k.ARN
		secondaryKeyARN = keyARN
		if k.MultiRegion && crossRegion {
			secondaryKeyARN = KeyARN(e.SecondaryRegion, k.ID)
		}
		p.keys = append(p.keys, k)
	}

	// Vaults.
	base := e.BackupVaultName
	if base == "" {
		base = prefix + "-backup-vault"
	}
	vault := func(name, reg, key, attr string) *Vault {
		v := &Vault{Name: name, Location: "s3://" + name, Region: reg, KMSKey: key, Tags: tags(), Origin: org,
			decl: rangeOf(attr), ranges: map[string]hcl.Range{}}
		p.vaults = append(p.vaults, v)
		return v
	}
	primary := base
	if env == "production" {
		primary = base + "-primary"
	}
	vault(primary, PrimaryRegion, keyARN, "backup_vault_name")
	secondary := ""
	if crossRegion {
		secondary = base + "-secondary"
		vault(secondary, e.SecondaryRegion, secondaryKeyARN, "secondary_region")
	}
	archive := ""
	if env == "production" && e.ArchiveRetention != 0 {
		archive = base + "-archive"
		vault(archive, PrimaryRegion, keyARN, "archive_retention")
	}
	if env != "production" && e.ArchiveRetention != 0 {
		warn("archive_retention", "archive_retention is only used in production (the seed archives production backups only)")
	}
	if env == "development" && e.LongTermRetention != 0 {
		warn("long_term_retention", "long_term_retention is not used in development (the seed: \"Reten. Long Terme: Non\")")
	}

	// Plans.
	selName := env + "-resource-selection"
	plan := func(name string, kinds []string, rules ...*Rule) *Plan {
		pl := &Plan{Name: name, Region: PrimaryRegion, Rules: rules, Tags: tags(), Origin: org,
			Selections: []*Selection{{Name: selName, Resources: e.collect(kinds), decl: e.decl}},
			decl:       e.decl, ranges: map[string]hcl.Range{}}
		p.plans = append(p.plans, pl)
		return pl
	}
	rule := func(name, cron string, start, completion int, target string, lc *Lifecycle, lcAttr string) *Rule {
		return &Rule{Name: name, Schedule: cron, Timezone: "UTC", StartWindowMinutes: start, CompletionWindowMinutes: completion,
			TargetVault: target, Lifecycle: lc, decl: e.decl,
			ranges: map[string]hcl.Range{"lifecycle": rangeOf(lcAttr), "target_vault": e.decl}}
	}
	if e.EnableHourlyBackups && len(e.HourlyBackupResources) > 0 {
		plan(prefix+"-hourly", e.HourlyBackupResources,
			rule("hourly-backup-rule", hourlyCron, 60, 120, primary, &Lifecycle{DeleteAfterDays: 1}, "enable_hourly_backups"))
	}
	daily := rule("daily-backup-rule", dailyCron, 60, 240, primary, &Lifecycle{DeleteAfterDays: e.ShortTermRetention}, "short_term_retention")
	if crossRegion {
		daily.CopyActions = []*CopyAction{{DestinationVault: secondary, Lifecycle: &Lifecycle{DeleteAfterDays: e.ShortTermRetention},
			decl: rangeOf("enable_cross_region_backup"), ranges: map[string]hcl.Range{"lifecycle": rangeOf("short_term_retention")}}}
	}
	dp := plan(prefix+"-daily", selectedKinds[env], daily)
	weekly := func() *Rule {
		return rule("weekly-backup-rule", weeklyCron, 60, 360, primary, &Lifecycle{DeleteAfterDays: e.LongTermRetention}, "long_term_retention")
	}
	if env == "staging" && e.LongTermRetention != 0 {
		dp.Rules = append(dp.Rules, weekly())
	}
	if env == "production" && e.LongTermRetention != 0 {
		plan(prefix+"-weekly", selectedKinds[env], weekly())
	}
	if archive != "" {
		plan(prefix+"-monthly", selectedKinds[env],
			rule("monthly-backup-rule", monthlyCron, 60, 360, archive,
				&Lifecycle{MoveToColdStorageAfterDays: 365, DeleteAfterDays: e.ArchiveRetention}, "archive_retention"))
	}

	// Notifications.
	topic := prefix + "-backup-alerts"
	p.notes = append(p.notes, &Notification{Name: topic, Region: PrimaryRegion, Events: append([]string{}, envEvents[env]...),
		Email: e.NotificationEmail, Origin: org, decl: rangeOf("notification_email"), ranges: map[string]hcl.Range{}})

	// Restore tests.
	if e.EnableRecoveryTesting {
		freq := e.RecoveryTestFrequency
		if freq == "" {
			freq = defaultTestFrequency[env]
		}
		test := func(name, freq string, kinds []string) {
			p.tests = append(p.tests, &RestoreTest{Name: name, Schedule: restoreTestCron[freq], Timezone: "UTC", Frequency: freq,
				SourceVault: primary, ResourceKinds: kinds, Resources: e.collect(kinds), RecoveryPoint: "latest",
				Validate: true, RTOTargetMinutes: rtoMinutes[env], Origin: org})
		}
		test(prefix+"-restore-test-rds", freq, []string{"rds"})
		if env == "production" {
			test(prefix+"-restore-test-others", "monthly", []string{"dynamodb", "elasticache", "efs", "s3"})
		}
	}

	p.out = &envOutputs{primary: primary, secondary: secondary, topic: topic, kmsKeyARN: keyARN}
	for _, pl := range p.plans {
		p.out.plans = append(p.out.plans, pl.Name)
	}
	return p
}
