package api

import (
	"maps"
	"slices"
	"time"

	"github.com/coffre/coffre/internal/catalog"
)

// The API's JSON objects. Field names are snake_case; times are RFC 3339 in
// UTC and left out when unset. Each type converts from its catalog type
// (FromX) and back (ToCatalog).

// VaultLock is a vault's retention lock.
type VaultLock struct {
	Mode             catalog.LockMode `json:"mode"`
	MinRetentionDays int              `json:"min_retention_days,omitempty"`
	MaxRetentionDays int              `json:"max_retention_days,omitempty"`
}

// Vault is a storage location for recovery points.
type Vault struct {
	Name      string            `json:"name"`
	Location  string            `json:"location"`
	KeyRef    string            `json:"key_ref,omitempty"`
	Lock      *VaultLock        `json:"lock,omitempty"` // nil: not locked
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
}

// Resource is a protected resource. Its settings never hold secrets, only
// references to them (the catalog refuses anything else).
type Resource struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Name      string            `json:"name,omitempty"`
	Settings  map[string]string `json:"settings,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
}

// CopyAction copies a new recovery point to another vault.
type CopyAction struct {
	TargetVault         string `json:"target_vault"`
	MoveToColdAfterDays int    `json:"move_to_cold_after_days,omitempty"`
	DeleteAfterDays     int    `json:"delete_after_days,omitempty"`
}

// Rule is one schedule of a plan.
type Rule struct {
	Name                    string       `json:"name"`
	Schedule                string       `json:"schedule"`
	Timezone                string       `json:"timezone,omitempty"`
	StartWindowMinutes      int          `json:"start_window_minutes,omitempty"`
	CompletionWindowMinutes int          `json:"completion_window_minutes,omitempty"`
	TargetVault             string       `json:"target_vault"`
	MoveToColdAfterDays     int          `json:"move_to_cold_after_days,omitempty"`
	DeleteAfterDays         int          `json:"delete_after_days,omitempty"`
	CopyActions             []CopyAction `json:"copy_actions,omitempty"`
	ContinuousBackup        bool         `json:"continuous_backup,omitempty"`
}

// Plan is a backup plan with its rules, in order.
type Plan struct {
	Name      string            `json:"name"`
	Rules     []Rule            `json:"rules"`
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
}

// Condition is a tag condition of a selection.
type Condition struct {
	Op    catalog.ConditionOp `json:"op"`
	Key   string              `json:"key"`
	Value string              `json:"value"`
}

// Selection assigns resources to a plan.
type Selection struct {
	Name         string      `json:"name"`
	Plan         string      `json:"plan"`
	Resources    []string    `json:"resources,omitempty"`
	NotResources []string    `json:"not_resources,omitempty"`
	Conditions   []Condition `json:"conditions,omitempty"`
	CreatedAt    *time.Time  `json:"created_at,omitempty"`
}

// Job is a backup, restore, copy or restore-test run.
type Job struct {
	ID             string            `json:"id"`
	Kind           catalog.JobKind   `json:"kind"`
	State          catalog.JobState  `json:"state"`
	Resource       string            `json:"resource,omitempty"`
	Vault          string            `json:"vault,omitempty"`
	Plan           string            `json:"plan,omitempty"`
	Rule           string            `json:"rule,omitempty"`
	CreatedAt      *time.Time        `json:"created_at,omitempty"`
	StartBy        *time.Time        `json:"start_by,omitempty"`
	CompleteBy     *time.Time        `json:"complete_by,omitempty"`
	StartedAt      *time.Time        `json:"started_at,omitempty"`
	FinishedAt     *time.Time        `json:"finished_at,omitempty"`
	Attempt        int               `json:"attempt"`
	Owner          string            `json:"owner,omitempty"`
	HeartbeatAt    *time.Time        `json:"heartbeat_at,omitempty"`
	RecoveryPoint  string            `json:"recovery_point,omitempty"`
	Message        string            `json:"message,omitempty"`
	BytesProcessed int64             `json:"bytes_processed"`
	Params         map[string]string `json:"params,omitempty"`
	NotBefore      *time.Time        `json:"not_before,omitempty"`
}

// Terminal reports whether the job is finished (COMPLETED, PARTIAL, FAILED,
// ABORTED or EXPIRED).
func (j Job) Terminal() bool { return catalog.Terminal(j.State) }

// RecoveryPoint is the catalog's entry for a recovery point.
type RecoveryPoint struct {
	ID           string       `json:"id"`
	Vault        string       `json:"vault"`
	Resource     string       `json:"resource"`
	CreatedAt    *time.Time   `json:"created_at,omitempty"`
	Status       string       `json:"status"`
	SizeBytes    int64        `json:"size_bytes"`
	Tier         catalog.Tier `json:"tier,omitempty"`
	MoveToColdAt *time.Time   `json:"move_to_cold_at,omitempty"`
	DeleteAt     *time.Time   `json:"delete_at,omitempty"`
	Plan         string       `json:"plan,omitempty"`
	Rule         string       `json:"rule,omitempty"`
	JobID        string       `json:"job_id,omitempty"`
}

// AuditEvent is one entry of the audit chain, with its hashes so that a
// client can re-verify the chain itself (see catalog.AuditHash).
type AuditEvent struct {
	Seq      int64      `json:"seq"`
	Time     *time.Time `json:"time,omitempty"`
	Actor    string     `json:"actor"`
	Action   string     `json:"action"`
	Object   string     `json:"object,omitempty"`
	Outcome  string     `json:"outcome"`
	Detail   string     `json:"detail,omitempty"`
	PrevHash string     `json:"prev_hash,omitempty"`
	Hash     string     `json:"hash"`
}

// Token describes an API token; neither the token nor its hash is ever
// served.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  *time.Time `json:"created_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status string     `json:"status"`
	Time   *time.Time `json:"time,omitempty"`
}

// AuditVerification is the answer of GET /v1/audit/verify; BrokenSeq is the
// first event that does not verify, 0 when the chain is intact.
type AuditVerification struct {
	Intact    bool  `json:"intact"`
	BrokenSeq int64 `json:"broken_seq"`
}

// BackupRequest is the body of POST /v1/jobs/backup. The windows are
// optional; when given, the start window is at least 60 minutes and the
// completion window at least the start window plus 60 minutes, both counted
// from the request.
type BackupRequest struct {
	Resource                string `json:"resource"`
	Vault                   string `json:"vault"`
	StartWindowMinutes      *int   `json:"start_window_minutes,omitempty"`
	CompletionWindowMinutes *int   `json:"completion_window_minutes,omitempty"`
	// Lifecycle of the recovery point (AWS StartBackupJob's Lifecycle);
	// zero: kept until deleted by hand, never moved to cold storage.
	MoveToColdStorageAfterDays int `json:"move_to_cold_storage_after_days,omitempty"`
	DeleteAfterDays            int `json:"delete_after_days,omitempty"`
}

// RestoreRequest is the body of POST /v1/jobs/restore. RecoveryPoint is the
// point's full id or a prefix of at least 8 characters unique among the
// vault's points; Target is an absolute path on the server; Path optionally
// selects a subtree inside the point.
type RestoreRequest struct {
	Vault         string `json:"vault"`
	RecoveryPoint string `json:"recovery_point"`
	Target        string `json:"target,omitempty"`
	Path          string `json:"path,omitempty"`
	// TargetSettings override the resource's connection settings for a
	// database or service restore (e.g. {"database": "app_restored"});
	// secrets only as references.
	TargetSettings map[string]string `json:"target_settings,omitempty"`
	// ToTime (RFC 3339) asks for a point-in-time restore of Resource, a
	// PostgreSQL resource under a continuous-backup rule, into a new data
	// directory (target_settings data_dir and port); RecoveryPoint is then
	// not needed.
	ToTime   string `json:"to_time,omitempty"`
	Resource string `json:"resource,omitempty"`
}

// tp converts a time to its JSON form: nil when zero, else UTC.
func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// tv converts back: the zero time for nil.
func tv(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return *p
}

// FromVault converts a catalog vault.
func FromVault(v catalog.Vault) Vault {
	out := Vault{Name: v.Name, Location: v.Location, KeyRef: v.KeyRef, Tags: maps.Clone(v.Tags), CreatedAt: tp(v.CreatedAt)}
	if v.Lock != (catalog.VaultLock{}) {
		out.Lock = &VaultLock{Mode: v.Lock.Mode, MinRetentionDays: v.Lock.MinRetentionDays, MaxRetentionDays: v.Lock.MaxRetentionDays}
	}
	return out
}

// ToCatalog converts v back.
func (v Vault) ToCatalog() catalog.Vault {
	out := catalog.Vault{Name: v.Name, Location: v.Location, KeyRef: v.KeyRef, Tags: maps.Clone(v.Tags), CreatedAt: tv(v.CreatedAt)}
	if v.Lock != nil {
		out.Lock = catalog.VaultLock{Mode: v.Lock.Mode, MinRetentionDays: v.Lock.MinRetentionDays, MaxRetentionDays: v.Lock.MaxRetentionDays}
	}
	return out
}

// FromResource converts a catalog resource.
func FromResource(r catalog.Resource) Resource {
	return Resource{ID: r.ID, Type: r.Type, Name: r.Name, Settings: maps.Clone(r.Settings), Tags: maps.Clone(r.Tags), CreatedAt: tp(r.CreatedAt)}
}

// ToCatalog converts r back.
func (r Resource) ToCatalog() catalog.Resource {
	return catalog.Resource{ID: r.ID, Type: r.Type, Name: r.Name, Settings: maps.Clone(r.Settings), Tags: maps.Clone(r.Tags), CreatedAt: tv(r.CreatedAt)}
}

// FromPlan converts a catalog plan and its rules.
func FromPlan(p catalog.Plan) Plan {
	out := Plan{Name: p.Name, Rules: make([]Rule, 0, len(p.Rules)), Tags: maps.Clone(p.Tags), CreatedAt: tp(p.CreatedAt)}
	for _, r := range p.Rules {
		rule := Rule{
			Name: r.Name, Schedule: r.Schedule, Timezone: r.Timezone,
			StartWindowMinutes: r.StartWindowMinutes, CompletionWindowMinutes: r.CompletionWindowMinutes,
			TargetVault: r.TargetVault, MoveToColdAfterDays: r.MoveToColdAfterDays, DeleteAfterDays: r.DeleteAfterDays,
			ContinuousBackup: r.ContinuousBackup,
		}
		for _, c := range r.CopyActions {
			rule.CopyActions = append(rule.CopyActions, CopyAction(c))
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}

// ToCatalog converts p back.
func (p Plan) ToCatalog() catalog.Plan {
	out := catalog.Plan{Name: p.Name, Tags: maps.Clone(p.Tags), CreatedAt: tv(p.CreatedAt)}
	for _, r := range p.Rules {
		rule := catalog.Rule{
			Name: r.Name, Schedule: r.Schedule, Timezone: r.Timezone,
			StartWindowMinutes: r.StartWindowMinutes, CompletionWindowMinutes: r.CompletionWindowMinutes,
			TargetVault: r.TargetVault, MoveToColdAfterDays: r.MoveToColdAfterDays, DeleteAfterDays: r.DeleteAfterDays,
			ContinuousBackup: r.ContinuousBackup,
		}
		for _, c := range r.CopyActions {
			rule.CopyActions = append(rule.CopyActions, catalog.CopyAction(c))
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}

// FromSelection converts a catalog selection.
func FromSelection(s catalog.Selection) Selection {
	out := Selection{Name: s.Name, Plan: s.Plan, Resources: slices.Clone(s.Resources), NotResources: slices.Clone(s.NotResources), CreatedAt: tp(s.CreatedAt)}
	for _, c := range s.Conditions {
		out.Conditions = append(out.Conditions, Condition(c))
	}
	return out
}

// ToCatalog converts s back.
func (s Selection) ToCatalog() catalog.Selection {
	out := catalog.Selection{Name: s.Name, Plan: s.Plan, Resources: slices.Clone(s.Resources), NotResources: slices.Clone(s.NotResources), CreatedAt: tv(s.CreatedAt)}
	for _, c := range s.Conditions {
		out.Conditions = append(out.Conditions, catalog.Condition(c))
	}
	return out
}

// FromJob converts a catalog job.
func FromJob(j catalog.Job) Job {
	return Job{
		ID: j.ID, Kind: j.Kind, State: j.State, Resource: j.Resource, Vault: j.Vault, Plan: j.Plan, Rule: j.Rule,
		CreatedAt: tp(j.CreatedAt), StartBy: tp(j.StartBy), CompleteBy: tp(j.CompleteBy),
		StartedAt: tp(j.StartedAt), FinishedAt: tp(j.FinishedAt), Attempt: j.Attempt, Owner: j.Owner,
		HeartbeatAt: tp(j.HeartbeatAt), RecoveryPoint: j.RecoveryPoint, Message: j.Message,
		BytesProcessed: j.BytesProcessed, Params: maps.Clone(j.Params), NotBefore: tp(j.NotBefore),
	}
}

// ToCatalog converts j back.
func (j Job) ToCatalog() catalog.Job {
	return catalog.Job{
		ID: j.ID, Kind: j.Kind, State: j.State, Resource: j.Resource, Vault: j.Vault, Plan: j.Plan, Rule: j.Rule,
		CreatedAt: tv(j.CreatedAt), StartBy: tv(j.StartBy), CompleteBy: tv(j.CompleteBy),
		StartedAt: tv(j.StartedAt), FinishedAt: tv(j.FinishedAt), Attempt: j.Attempt, Owner: j.Owner,
		HeartbeatAt: tv(j.HeartbeatAt), RecoveryPoint: j.RecoveryPoint, Message: j.Message,
		BytesProcessed: j.BytesProcessed, Params: maps.Clone(j.Params), NotBefore: tv(j.NotBefore),
	}
}

// FromRecoveryPoint converts a catalog recovery point.
func FromRecoveryPoint(rp catalog.RecoveryPoint) RecoveryPoint {
	return RecoveryPoint{
		ID: rp.ID, Vault: rp.Vault, Resource: rp.Resource, CreatedAt: tp(rp.CreatedAt), Status: rp.Status,
		SizeBytes: rp.SizeBytes, Tier: rp.Tier, MoveToColdAt: tp(rp.MoveToColdAt), DeleteAt: tp(rp.DeleteAt),
		Plan: rp.Plan, Rule: rp.Rule, JobID: rp.JobID,
	}
}

// ToCatalog converts rp back.
func (rp RecoveryPoint) ToCatalog() catalog.RecoveryPoint {
	return catalog.RecoveryPoint{
		ID: rp.ID, Vault: rp.Vault, Resource: rp.Resource, CreatedAt: tv(rp.CreatedAt), Status: rp.Status,
		SizeBytes: rp.SizeBytes, Tier: rp.Tier, MoveToColdAt: tv(rp.MoveToColdAt), DeleteAt: tv(rp.DeleteAt),
		Plan: rp.Plan, Rule: rp.Rule, JobID: rp.JobID,
	}
}

// FromAuditEvent converts a catalog audit event.
func FromAuditEvent(e catalog.AuditEvent) AuditEvent {
	return AuditEvent{
		Seq: e.Seq, Time: tp(e.Time), Actor: e.Actor, Action: e.Action, Object: e.Object,
		Outcome: e.Outcome, Detail: e.Detail, PrevHash: e.PrevHash, Hash: e.Hash,
	}
}

// ToCatalog converts e back.
func (e AuditEvent) ToCatalog() catalog.AuditEvent {
	return catalog.AuditEvent{
		Seq: e.Seq, Time: tv(e.Time), Actor: e.Actor, Action: e.Action, Object: e.Object,
		Outcome: e.Outcome, Detail: e.Detail, PrevHash: e.PrevHash, Hash: e.Hash,
	}
}

// FromToken converts a catalog token, dropping its hash.
func FromToken(t catalog.Token) Token {
	return Token{ID: t.ID, Name: t.Name, CreatedAt: tp(t.CreatedAt), LastUsedAt: tp(t.LastUsedAt)}
}

// ToCatalog converts t back (without a hash).
func (t Token) ToCatalog() catalog.Token {
	return catalog.Token{ID: t.ID, Name: t.Name, CreatedAt: tv(t.CreatedAt), LastUsedAt: tv(t.LastUsedAt)}
}
