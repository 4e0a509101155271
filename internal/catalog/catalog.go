// Package catalog defines coffre's control-plane index — vaults, protected resources, plans, selections, jobs, recovery points and the audit chain — behind one Catalog interface that every implementation (sqlite, postgres) satisfies and that catalogtest checks.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors every implementation returns (wrapped with the operation); test them
// with errors.Is.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("catalog: not found")
	// ErrConflict: an optimistic check failed (the job is no longer in the
	// expected state, is owned by another worker, or the id already exists).
	ErrConflict = errors.New("catalog: conflict")
	// ErrInvalidTransition: the job state machine does not allow the move.
	ErrInvalidTransition = errors.New("catalog: invalid job state transition")
	// ErrNoJob: ClaimJob found no PENDING job that may still start.
	ErrNoJob = errors.New("catalog: no pending job to claim")
	// ErrInvalid: the object fails validation (empty key, unknown enum, a
	// secret in resource settings…).
	ErrInvalid = errors.New("catalog: invalid object")
)

// LockMode is a vault lock mode.
type LockMode string

// Vault lock modes (AWS Backup Vault Lock).
const (
	LockNone       LockMode = ""
	LockGovernance LockMode = "governance"
	LockCompliance LockMode = "compliance"
)

// VaultLock is a vault's retention lock.
type VaultLock struct {
	Mode             LockMode
	MinRetentionDays int // 0: no minimum
	MaxRetentionDays int // 0: no maximum
}

// Vault is a named storage location for recovery points.
type Vault struct {
	Name      string
	Location  string // file:///…, s3://bucket/prefix
	KeyRef    string // optional reference to the encryption key (env:NAME, file:PATH, kms id)
	Lock      VaultLock
	Tags      map[string]string
	CreatedAt time.Time // set from the catalog clock on first Put when zero; kept on upsert
}

// Resource is one protected resource.
type Resource struct {
	ID   string // ARN-like and stable, e.g. "arn:coffre:postgres:local:main"
	Type string // postgres, filesystem, s3, dynamodb, redis, oci
	Name string
	// Settings are connection settings. They never hold secrets: a key whose
	// name contains "password", "secret" or "token" must hold a reference
	// ("env:NAME" or "file:PATH"); Put refuses anything else with ErrInvalid.
	Settings  map[string]string
	Tags      map[string]string
	CreatedAt time.Time
}

// CopyAction copies a new recovery point to another vault.
type CopyAction struct {
	TargetVault         string
	MoveToColdAfterDays int
	DeleteAfterDays     int
}

// Rule is one schedule of a plan.
type Rule struct {
	Name                    string
	Schedule                string // cron(…) or rate(…), AWS syntax
	Timezone                string // IANA name; "" is UTC
	StartWindowMinutes      int
	CompletionWindowMinutes int
	TargetVault             string
	MoveToColdAfterDays     int
	DeleteAfterDays         int
	CopyActions             []CopyAction
	ContinuousBackup        bool
}

// Plan is a backup plan; its rules are stored with it, in order.
type Plan struct {
	Name      string
	Rules     []Rule
	Tags      map[string]string
	CreatedAt time.Time
}

// ConditionOp is a selection tag condition operator.
type ConditionOp string

// Selection condition operators (AWS Backup names).
const (
	StringEquals    ConditionOp = "StringEquals"
	StringNotEquals ConditionOp = "StringNotEquals"
	StringLike      ConditionOp = "StringLike"
	StringNotLike   ConditionOp = "StringNotLike"
)

// Condition is a tag condition of a selection.
type Condition struct {
	Op    ConditionOp
	Key   string // tag key
	Value string
}

// Selection assigns resources to a plan.
type Selection struct {
	Name         string
	Plan         string
	Resources    []string // resource ids; a trailing * is a suffix wildcard
	NotResources []string
	Conditions   []Condition
	CreatedAt    time.Time
}

// JobKind is what a job does.
type JobKind string

// Job kinds.
const (
	KindBackup      JobKind = "BACKUP"
	KindRestore     JobKind = "RESTORE"
	KindCopy        JobKind = "COPY"
	KindRestoreTest JobKind = "RESTORE_TEST"
)

// JobState is a job's state; see Transitions for the allowed moves.
type JobState string

// Job states (AWS Backup names).
const (
	StateCreated   JobState = "CREATED"
	StatePending   JobState = "PENDING"
	StateRunning   JobState = "RUNNING"
	StateCompleted JobState = "COMPLETED"
	StatePartial   JobState = "PARTIAL"
	StateFailed    JobState = "FAILED"
	StateAborted   JobState = "ABORTED"
	StateExpired   JobState = "EXPIRED"
)

// Job is one backup, restore, copy or restore-test run.
type Job struct {
	ID             string // generated (32 hex digits) by CreateJob when empty
	Kind           JobKind
	State          JobState
	Resource       string
	Vault          string
	Plan           string
	Rule           string
	CreatedAt      time.Time
	StartBy        time.Time // zero: no start window
	CompleteBy     time.Time // zero: no completion window
	StartedAt      time.Time
	FinishedAt     time.Time
	Attempt        int    // incremented by every ClaimJob
	Owner          string // worker id holding the job while RUNNING
	HeartbeatAt    time.Time
	RecoveryPoint  string
	Message        string
	BytesProcessed int64
	// Params are the job's inputs beyond resource and vault (a restore's
	// recovery point and target, a copy's destination…); never secrets.
	Params map[string]string
	// NotBefore holds a PENDING job back until then (retry backoff); zero:
	// claimable at once.
	NotBefore time.Time
}

// JobUpdate holds the fields TransitionJob sets along with the state; nil
// fields are left alone.
type JobUpdate struct {
	Owner          *string
	StartedAt      *time.Time
	FinishedAt     *time.Time
	RecoveryPoint  *string
	Message        *string
	BytesProcessed *int64
	NotBefore      *time.Time
}

// ClaimLimits bound how many jobs may run at once; zero fields are
// unlimited. They count RUNNING jobs in the whole catalog (every server).
type ClaimLimits struct {
	PerVault    int // RUNNING jobs with the same Vault
	PerResource int // RUNNING jobs with the same Resource (jobs without one are not counted)
}

// Token is an API token; only the SHA-256 of its secret is stored.
type Token struct {
	ID         string // public id, also the token's prefix
	Name       string
	Hash       string // hex SHA-256 of the whole token
	CreatedAt  time.Time
	LastUsedAt time.Time
}

// JobFilter selects jobs; zero fields match everything.
type JobFilter struct {
	States   []JobState
	Kind     JobKind
	Resource string
	Vault    string
	Limit    int // 0: no limit
}

// Tier is a recovery point's storage tier.
type Tier string

// Storage tiers.
const (
	TierWarm Tier = "warm"
	TierCold Tier = "cold"
)

// RecoveryPoint is the catalog's index entry for a recovery point; the
// manifest itself lives, encrypted, in the vault.
type RecoveryPoint struct {
	ID           string // the manifest id, hex; unique within a vault
	Vault        string
	Resource     string
	CreatedAt    time.Time
	Status       string // COMPLETED, PARTIAL, DELETING, EXPIRED
	SizeBytes    int64
	Tier         Tier
	MoveToColdAt time.Time // zero: never
	DeleteAt     time.Time // zero: kept forever
	Plan         string    // lifecycle source: the plan and rule that made it
	Rule         string
	JobID        string
}

// RecoveryPointFilter selects recovery points; zero fields match everything.
type RecoveryPointFilter struct {
	Vault    string
	Resource string
}

// AuditEvent is one entry of the tamper-evident audit chain.
type AuditEvent struct {
	Seq      int64     // 1, 2, 3… assigned by AppendAudit
	Time     time.Time // from the catalog clock when zero
	Actor    string
	Action   string
	Object   string
	Outcome  string
	Detail   string
	PrevHash string // hex; "" for Seq 1
	Hash     string // hex SHA-256(PrevHash bytes || AuditCanonicalJSON)
}

// AuditFilter pages through the audit chain.
type AuditFilter struct {
	AfterSeq int64
	Limit    int // 0: no limit
}

// Catalog is the control plane's index. It is an index, not the source of
// truth for backup data: recovery point manifests live in the vaults and the
// catalog can be rebuilt from them.
//
// Contract, checked by catalogtest.Run for every implementation:
//
//   - Put* upserts by key (vault name, resource id, plan name, selection
//     name): a second Put replaces every field but CreatedAt, which is set from
//     the catalog's clock on first insert when zero. PutPlan replaces the plan's
//     rules as a whole. Get* returns ErrNotFound for a missing key; Delete*
//     returns ErrNotFound when nothing was deleted. List* returns objects
//     sorted by key. Invalid objects are refused with ErrInvalid.
//   - CreateJob stores a job in state CREATED (the default) or PENDING; it
//     generates the ID when empty, sets CreatedAt from the clock when zero and
//     returns ErrConflict for an existing ID. It returns the job as stored by
//     this call, even if another process has changed it since. ListJobs filters by states,
//     kind, resource and vault, ordered by CreatedAt then ID.
//   - TransitionJob(id, from, to, update) is atomic and optimistic: it
//     returns ErrInvalidTransition when Transitions does not allow from→to,
//     ErrNotFound for a missing job and ErrConflict when the job is not in
//     state from (another server moved it first). Entering RUNNING sets
//     StartedAt and HeartbeatAt, entering a terminal state sets FinishedAt
//     (from the clock unless update gives them); going back to PENDING clears
//     Owner. It returns the job as stored.
//   - ClaimJob atomically moves one PENDING job whose StartBy is zero or not
//     past and whose NotBefore is zero or past to RUNNING, owned by owner,
//     with Attempt incremented; oldest first. It skips jobs whose vault or
//     resource already has as many RUNNING jobs as lim allows, counted
//     across every server. Concurrent claimers (goroutines or servers) never
//     get the same job. It returns ErrNoJob when there is nothing to claim.
//   - Params round-trip as given (nil and empty are the same).
//   - Heartbeat refreshes HeartbeatAt of a RUNNING job held by owner, else
//     ErrConflict (ErrNotFound for a missing job). ListStaleRunning returns
//     RUNNING jobs whose HeartbeatAt is older than now-olderThan, for crash
//     recovery.
//   - Recovery points are keyed by (vault, id). ListExpired(now) returns
//     those whose DeleteAt is set and not after now.
//   - AppendAudit assigns Seq (previous+1), Time (when zero), PrevHash (the
//     previous Hash) and Hash, atomically even across servers.
//     VerifyAudit re-walks the chain and returns the first Seq whose link or
//     hash does not verify, or 0 when the chain is intact.
//   - CreateToken stores a token (ErrConflict for an existing ID or Hash);
//     TokenByHash finds one by hash (ErrNotFound) and, when touch is set,
//     records LastUsedAt from the clock; ListTokens is sorted by ID;
//     DeleteToken returns ErrNotFound when nothing was deleted.
//   - Close releases the catalog (and, for sqlite, the data-dir lock).
type Catalog interface {
	PutVault(ctx context.Context, v Vault) error
	GetVault(ctx context.Context, name string) (Vault, error)
	ListVaults(ctx context.Context) ([]Vault, error)
	DeleteVault(ctx context.Context, name string) error

	PutResource(ctx context.Context, r Resource) error
	GetResource(ctx context.Context, id string) (Resource, error)
	ListResources(ctx context.Context, typ string) ([]Resource, error) // typ "": all
	DeleteResource(ctx context.Context, id string) error

	PutPlan(ctx context.Context, p Plan) error
	GetPlan(ctx context.Context, name string) (Plan, error)
	ListPlans(ctx context.Context) ([]Plan, error)
	DeletePlan(ctx context.Context, name string) error

	PutSelection(ctx context.Context, s Selection) error
	GetSelection(ctx context.Context, name string) (Selection, error)
	ListSelections(ctx context.Context, plan string) ([]Selection, error) // plan "": all
	DeleteSelection(ctx context.Context, name string) error

	CreateJob(ctx context.Context, j Job) (Job, error)
	GetJob(ctx context.Context, id string) (Job, error)
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	TransitionJob(ctx context.Context, id string, from, to JobState, u JobUpdate) (Job, error)
	ClaimJob(ctx context.Context, owner string, lim ClaimLimits) (Job, error)
	Heartbeat(ctx context.Context, id, owner string) error
	ListStaleRunning(ctx context.Context, olderThan time.Duration) ([]Job, error)

	PutRecoveryPoint(ctx context.Context, rp RecoveryPoint) error
	GetRecoveryPoint(ctx context.Context, vault, id string) (RecoveryPoint, error)
	ListRecoveryPoints(ctx context.Context, f RecoveryPointFilter) ([]RecoveryPoint, error)
	DeleteRecoveryPoint(ctx context.Context, vault, id string) error
	ListExpired(ctx context.Context, now time.Time) ([]RecoveryPoint, error)

	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	VerifyAudit(ctx context.Context) (brokenSeq int64, err error)

	CreateToken(ctx context.Context, t Token) error
	TokenByHash(ctx context.Context, hash string, touch bool) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error

	Close() error
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidateVault checks a vault before it is stored.
func ValidateVault(v Vault) error {
	if v.Name == "" {
		return invalid("vault has no name")
	}
	if v.Location == "" {
		return invalid("vault %q has no location", v.Name)
	}
	switch v.Lock.Mode {
	case LockNone, LockGovernance, LockCompliance:
	default:
		return invalid("vault %q: lock mode %q is not governance or compliance", v.Name, v.Lock.Mode)
	}
	if v.Lock.MinRetentionDays < 0 || v.Lock.MaxRetentionDays < 0 ||
		(v.Lock.MaxRetentionDays > 0 && v.Lock.MinRetentionDays > v.Lock.MaxRetentionDays) {
		return invalid("vault %q: lock retention min %d / max %d days", v.Name, v.Lock.MinRetentionDays, v.Lock.MaxRetentionDays)
	}
	return nil
}

// IsSecretKey reports whether a resource setting name must hold a reference.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// ValidateResource checks a resource before it is stored; secrets are only
// accepted as references (env:NAME, file:PATH).
func ValidateResource(r Resource) error {
	if r.ID == "" || r.Type == "" {
		return invalid("resource needs an id and a type")
	}
	for k, v := range r.Settings {
		if IsSecretKey(k) && !strings.HasPrefix(v, "env:") && !strings.HasPrefix(v, "file:") {
			return invalid("resource %s: setting %q must be a reference (env:NAME or file:PATH), not the secret itself", r.ID, k)
		}
	}
	return nil
}

// ValidatePlan checks a plan before it is stored.
func ValidatePlan(p Plan) error {
	if p.Name == "" {
		return invalid("plan has no name")
	}
	seen := map[string]bool{}
	for _, r := range p.Rules {
		if r.Name == "" || seen[r.Name] {
			return invalid("plan %q: rule names must be set and unique (%q)", p.Name, r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// ValidateSelection checks a selection before it is stored.
func ValidateSelection(s Selection) error {
	if s.Name == "" || s.Plan == "" {
		return invalid("selection needs a name and a plan")
	}
	for _, c := range s.Conditions {
		switch c.Op {
		case StringEquals, StringNotEquals, StringLike, StringNotLike:
		default:
			return invalid("selection %q: unknown condition operator %q", s.Name, c.Op)
		}
	}
	return nil
}
