// Package config loads coffre's HCL configuration (vaults, protected resources, backup plans, notifications and environment presets) and expands it into a flat, validated policy set.
package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// MinBackupInterval is the configured minimum interval between two fire times
// of a backup rule's schedule (AWS Backup allows snapshot backups at most
// hourly).
const MinBackupInterval = time.Hour

// frequencyReference is the start of the year over which schedule
// frequencies are checked (schedule.CheckFrequency). The package never reads
// the clock: the check judges the expression, so a fixed, ordinary year is
// used. A cron expression restricted to other years is not checked.
var frequencyReference = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

// ColdStorageMinimumDays is AWS Backup's minimum stay in cold storage: when a
// lifecycle sets both, delete_after_days must be at least
// move_to_cold_storage_after_days + 90.
const ColdStorageMinimumDays = 90

// ContinuousBackupMaxDays is AWS Backup's maximum retention of continuous
// (point-in-time) backups.
const ContinuousBackupMaxDays = 35

// Default backup windows, in minutes (AWS Backup's defaults, see
// schedule.DefaultWindows).
const (
	DefaultStartWindowMinutes      = 480
	DefaultCompletionWindowMinutes = 10080
)

// ResourceTypes are the protected resource types coffre has adapters for.
var ResourceTypes = []string{"postgres", "filesystem", "s3", "dynamodb", "redis", "oci"}

// Config is one or more configuration files as written, before environment
// presets are expanded. Build it with Parse or Load.
type Config struct {
	Vaults        []*Vault
	Resources     []*Resource
	Plans         []*Plan
	Notifications []*Notification
	Environments  []*Environment
}

// Vault is a named storage location for recovery points.
type Vault struct {
	Name string `json:"name"`
	// ARN is derived (see VaultARN); it is set by Expand.
	ARN string `json:"arn,omitempty"`
	// Location is "file:///absolute/path" or "s3://bucket[/prefix]".
	Location string `json:"location"`
	// Region is only used in ARNs and to tell cross-region copies apart; an
	// empty region is written "local" in ARNs.
	Region string `json:"region,omitempty"`
	// KMSKey is the key encrypting the vault; empty means the vault's default
	// key ("default encryption" in the seed).
	KMSKey string            `json:"kms_key,omitempty"`
	Lock   *Lock             `json:"lock,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	// Origin says where the vault was declared: "FILE:LINE" or
	// `environment "NAME"` for preset objects.
	Origin string `json:"origin"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// Lock is a vault lock (AWS Backup Vault Lock).
type Lock struct {
	Mode             string `json:"mode"` // "governance" or "compliance"
	MinRetentionDays int    `json:"min_retention_days,omitempty"`
	MaxRetentionDays int    `json:"max_retention_days,omitempty"`
}

// Resource is one protected resource.
type Resource struct {
	Type string `json:"type"`
	Name string `json:"name"`
	// ID is the resource's ARN-style id: as written, or
	// "arn:coffre:TYPE:::resource/NAME" (see ResourceID).
	ID string `json:"id"`
	// Settings are the connection settings. A value written env("X") or
	// file("P") is the reference string "env:X" or "file:P", never the
	// secret; those settings are also listed in Secrets.
	Settings map[string]string `json:"settings,omitempty"`
	// Secrets are the settings given by reference, by setting key.
	Secrets map[string]SecretRef `json:"secrets,omitempty"`
	Tags    map[string]string    `json:"tags,omitempty"`
	Origin  string               `json:"origin"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// SecretRef is a secret given by reference: an environment variable or a
// file, read only when a job needs it.
type SecretRef struct {
	Kind string `json:"kind"` // "env" or "file"
	Name string `json:"name"` // variable name or file path
}

// String returns the reference value as it appears in Settings.
func (r SecretRef) String() string { return r.Kind + ":" + r.Name }

// Plan is a backup plan: rules and the selections they apply to.
type Plan struct {
	Name       string            `json:"name"`
	ARN        string            `json:"arn,omitempty"`
	Region     string            `json:"region,omitempty"`
	Rules      []*Rule           `json:"rules"`
	Selections []*Selection      `json:"selections"`
	Tags       map[string]string `json:"tags,omitempty"`
	Origin     string            `json:"origin"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// Rule is a backup rule of a plan.
type Rule struct {
	Name string `json:"name"`
	// Schedule is an AWS Backup schedule expression (cron(...) or rate(...)).
	Schedule string `json:"schedule"`
	// Timezone is an IANA time zone name; Expand sets "UTC" when empty.
	Timezone                string        `json:"timezone"`
	StartWindowMinutes      int           `json:"start_window_minutes"`
	CompletionWindowMinutes int           `json:"completion_window_minutes"`
	TargetVault             string        `json:"target_vault"`
	Lifecycle               *Lifecycle    `json:"lifecycle,omitempty"`
	CopyActions             []*CopyAction `json:"copy_actions,omitempty"`
	ContinuousBackup        bool          `json:"continuous_backup,omitempty"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// Lifecycle moves recovery points to cold storage and deletes them; a zero
// field is unset (never move, never delete).
type Lifecycle struct {
	MoveToColdStorageAfterDays int `json:"move_to_cold_storage_after_days,omitempty"`
	DeleteAfterDays            int `json:"delete_after_days,omitempty"`
}

// CopyAction copies each new recovery point of a rule to another vault.
type CopyAction struct {
	DestinationVault string     `json:"destination_vault"`
	Lifecycle        *Lifecycle `json:"lifecycle,omitempty"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// Selection chooses the resources a plan backs up.
type Selection struct {
	Name string `json:"name"`
	// Resources are resource ids; a trailing "*" matches any suffix.
	Resources    []string    `json:"resources,omitempty"`
	NotResources []string    `json:"not_resources,omitempty"`
	Conditions   []Condition `json:"conditions,omitempty"`

	decl hcl.Range
}

// Condition is a tag condition of a selection.
type Condition struct {
	// Op is "string_equals", "string_not_equals", "string_like" or
	// "string_not_like".
	Op    string `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Notification sends backup events to an email address and/or a webhook.
type Notification struct {
	Name    string   `json:"name"`
	ARN     string   `json:"arn,omitempty"`
	Region  string   `json:"region,omitempty"`
	Events  []string `json:"events"`
	Email   string   `json:"email,omitempty"`
	Webhook string   `json:"webhook,omitempty"`
	Origin  string   `json:"origin"`

	decl   hcl.Range
	ranges map[string]hcl.Range
}

// KMSKey is an encryption key created by an environment preset.
type KMSKey struct {
	ID             string   `json:"id"`
	ARN            string   `json:"arn"`
	Region         string   `json:"region"`
	MultiRegion    bool     `json:"multi_region,omitempty"`
	ReplicaRegions []string `json:"replica_regions,omitempty"`
	Origin         string   `json:"origin"`
}

// RestoreTest is an automated restore test: restore the latest recovery
// point of the selected resources into a scratch target, validate it and
// record the measured restore time against the RTO target.
type RestoreTest struct {
	Name     string `json:"name"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone"`
	// Frequency is "daily", "weekly" or "monthly".
	Frequency string `json:"frequency"`
	// SourceVault is the vault the recovery points are taken from.
	SourceVault string `json:"source_vault"`
	// ResourceKinds are the seed's service names ("rds", "dynamodb",
	// "elasticache", "efs", "s3") the test covers; Resources their ids.
	ResourceKinds []string `json:"resource_kinds"`
	Resources     []string `json:"resources,omitempty"`
	// RecoveryPoint is "latest".
	RecoveryPoint    string `json:"recovery_point"`
	Validate         bool   `json:"validate"`
	RTOTargetMinutes int    `json:"rto_target_minutes"`
	Origin           string `json:"origin"`
}

// Resolved is the flat policy set after presets are expanded and explicit
// blocks override preset objects of the same name. Lists are sorted by name.
type Resolved struct {
	Vaults        []*Vault        `json:"vaults"`
	Resources     []*Resource     `json:"resources"`
	Plans         []*Plan         `json:"plans"`
	Notifications []*Notification `json:"notifications"`
	KMSKeys       []*KMSKey       `json:"kms_keys"`
	RestoreTests  []*RestoreTest  `json:"restore_tests"`

	outputs map[string]*envOutputs
}

// Outputs are the seed module's outputs for one environment preset.
type Outputs struct {
	BackupVaultARN          string            `json:"backup_vault_arn"`
	BackupVaultName         string            `json:"backup_vault_name"`
	SecondaryBackupVaultARN string            `json:"secondary_backup_vault_arn"`
	BackupPlanARNs          map[string]string `json:"backup_plan_arns"`
	BackupSNSTopicARN       string            `json:"backup_sns_topic_arn"`
	KMSKeyARN               string            `json:"kms_key_arn"`
}
