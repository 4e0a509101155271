// Package snapshot owns recovery point manifests: what a recovery point is
// (time, source, root tree, status, statistics) and how it is stored, listed,
// found by id prefix and deleted.
package snapshot

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/tree"
)

// Status of a recovery point.
const (
	StatusCompleted = "COMPLETED"
	StatusPartial   = "PARTIAL" // some files could not be read; they are listed in Errors
)

// Source types.
const (
	SourceFilesystem = "filesystem"
	SourceStream     = "stream"
)

// Manifest is a recovery point: an immutable backup of one resource.
type Manifest struct {
	Version  int               `json:"version"`
	ID       crypto.ID         `json:"-"` // the name of the manifest file
	Time     time.Time         `json:"time"`
	Hostname string            `json:"hostname,omitempty"`
	Source   Source            `json:"source"`
	Tree     crypto.ID         `json:"tree"`             // root tree blob
	Root     *tree.Node        `json:"root,omitempty"`   // metadata of the backed-up directory itself
	Parent   *crypto.ID        `json:"parent,omitempty"` // recovery point used for the incremental
	Status   string            `json:"status"`
	Errors   []string          `json:"errors,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	Stats    Stats             `json:"stats"`
	// Lifecycle is set when the control plane made the recovery point: it
	// lets the catalog's index be rebuilt from the vault alone.
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
}

// Lifecycle records which plan rule or job made a recovery point and how
// long it is kept; dates are derived from the manifest's Time.
type Lifecycle struct {
	Plan                string `json:"plan,omitempty"`
	Rule                string `json:"rule,omitempty"`
	Job                 string `json:"job,omitempty"`
	MoveToColdAfterDays int    `json:"move_to_cold_after_days,omitempty"` // 0: never
	DeleteAfterDays     int    `json:"delete_after_days,omitempty"`       // 0: kept until deleted by hand
}

// Day is the length of a lifecycle day.
const Day = 24 * time.Hour

// MoveToColdAt is when the point goes to cold storage (zero: never).
func (m *Manifest) MoveToColdAt() time.Time {
	if m.Lifecycle == nil || m.Lifecycle.MoveToColdAfterDays <= 0 {
		return time.Time{}
	}
	return m.Time.Add(time.Duration(m.Lifecycle.MoveToColdAfterDays) * Day)
}

// DeleteAt is when the point expires (zero: never).
func (m *Manifest) DeleteAt() time.Time {
	if m.Lifecycle == nil || m.Lifecycle.DeleteAfterDays <= 0 {
		return time.Time{}
	}
	return m.Time.Add(time.Duration(m.Lifecycle.DeleteAfterDays) * Day)
}

// Source says what was backed up.
type Source struct {
	Type     string   `json:"type"`               // filesystem, stream
	Resource string   `json:"resource,omitempty"` // the protected resource id, when set by the control plane
	Paths    []string `json:"paths,omitempty"`    // absolute paths of a filesystem backup
	Command  string   `json:"command,omitempty"`  // the command whose output a stream backup read
	Filename string   `json:"filename,omitempty"` // name of the stream inside the tree
}

// Stats describes a backup.
type Stats struct {
	Files        int64   `json:"files"`
	Dirs         int64   `json:"dirs"`
	Bytes        int64   `json:"bytes"`         // logical bytes of all files
	FilesChanged int64   `json:"files_changed"` // files read (not reused from the parent)
	BytesRead    int64   `json:"bytes_read"`    // bytes read from the source
	BlobsAdded   int64   `json:"blobs_added"`   // new blobs
	BytesAdded   int64   `json:"bytes_added"`   // plaintext bytes of new blobs
	StoredAdded  int64   `json:"stored_added"`  // bytes of new packs
	Errors       int64   `json:"errors"`        // files that could not be read
	DurationSec  float64 `json:"duration_s"`
}

const version = 1

// Save writes m and sets m.ID. Call only after repo.Flush returned nil: the
// manifest must never reference data that is not durable.
func Save(ctx context.Context, r *repo.Repository, m *Manifest) error {
	m.Version = version
	id, err := r.SaveJSON(ctx, blob.KindSnapshot, m)
	if err != nil {
		return fmt.Errorf("save recovery point: %w", err)
	}
	m.ID = id
	return nil
}

// Load reads one manifest.
func Load(ctx context.Context, r *repo.Repository, id crypto.ID) (*Manifest, error) {
	m := &Manifest{}
	if err := r.LoadJSON(ctx, blob.KindSnapshot, id, m); err != nil {
		return nil, fmt.Errorf("recovery point %s: %w", id.Short(), err)
	}
	if m.Version != version {
		return nil, fmt.Errorf("recovery point %s: manifest version %d, this coffre reads %d", id.Short(), m.Version, version)
	}
	m.ID = id
	return m, nil
}

// LoadAll reads every manifest, oldest first. Manifests that cannot be read
// are returned as errors in errs and skipped, so one damaged file does not
// hide the others.
func LoadAll(ctx context.Context, r *repo.Repository) (ms []*Manifest, errs []error, err error) {
	ids, err := r.List(ctx, blob.KindSnapshot)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*Manifest, len(ids))
	lerrs := make([]error, len(ids))
	err = repo.Parallel(ctx, len(ids), 8, func(i int) error {
		out[i], lerrs[i] = Load(ctx, r, ids[i])
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range out {
		if lerrs[i] != nil {
			errs = append(errs, lerrs[i])
		} else {
			ms = append(ms, out[i])
		}
	}
	sort.Slice(ms, func(a, b int) bool { return ms[a].Time.Before(ms[b].Time) })
	return ms, errs, nil
}

// Find resolves an id or unique id prefix ("latest" is the newest).
func Find(ctx context.Context, r *repo.Repository, s string) (*Manifest, error) {
	if s == "latest" {
		ms, _, err := LoadAll(ctx, r)
		if err != nil {
			return nil, err
		}
		if len(ms) == 0 {
			return nil, hint.With(fmt.Errorf("the vault has no recovery points"), "run a backup first")
		}
		return ms[len(ms)-1], nil
	}
	s = strings.ToLower(s)
	if len(s) < 4 {
		return nil, fmt.Errorf("recovery point id %q too short: give at least 4 hex characters", s)
	}
	ids, err := r.List(ctx, blob.KindSnapshot)
	if err != nil {
		return nil, err
	}
	var found []crypto.ID
	for _, id := range ids {
		if strings.HasPrefix(id.String(), s) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return nil, hint.With(fmt.Errorf("no recovery point %q in the vault", s), "list them with `coffre list`")
	case 1:
		return Load(ctx, r, found[0])
	}
	return nil, fmt.Errorf("recovery point id %q is ambiguous (%d match): give more characters", s, len(found))
}

// Delete removes a manifest. Its data stays until the next prune.
func Delete(ctx context.Context, r *repo.Repository, id crypto.ID) error {
	if err := r.Remove(ctx, blob.KindSnapshot, id); err != nil {
		return fmt.Errorf("delete recovery point %s: %w", id.Short(), err)
	}
	return nil
}
