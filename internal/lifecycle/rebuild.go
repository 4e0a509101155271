package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

// RebuildResult reports what Rebuild changed in the catalog.
type RebuildResult struct {
	Added      int     // rows created for manifests the catalog did not list
	Updated    int     // rows that differed from their manifest
	Removed    int     // rows without a manifest in the vault
	Unreadable int     // manifests that could not be read (their rows are kept)
	Errors     []error // the unreadable manifests, and rows that could not be written
}

// Rebuild makes the catalog's recovery point rows of vault v match the
// manifests in r (the vault opened by the caller, who should hold at least
// a shared lock so that no deletion runs meanwhile):
//
//   - one row per manifest: ID = the manifest id in hex, Resource =
//     Source.Resource, CreatedAt = Time, Status, SizeBytes = Stats.Bytes,
//     the cold and delete dates and Plan/Rule/JobID from its Lifecycle; the
//     tier is kept from an existing row (warm for a new one);
//   - rows with no manifest in the vault are removed; rows of manifests that
//     exist but cannot be read are kept and the manifests reported;
//   - a DELETING row whose manifest is still there gets the manifest's status
//     back (the lifecycle worker deletes it again when it is due).
//
// A row is written only when it differs, so a second Rebuild changes
// nothing. A row whose CreatedAt differs is deleted and put again (Put keeps
// CreatedAt). When anything changed, one audit event records the counts.
// The returned error is for failures that stop the rebuild (the vault or
// the catalog cannot be listed).
func Rebuild(ctx context.Context, cat catalog.Catalog, v catalog.Vault, r *repo.Repository) (RebuildResult, error) {
	var res RebuildResult
	// Listed before loading: a row is removed only when its manifest is
	// neither loaded nor listed (listed but not loaded means unreadable).
	listed, err := r.List(ctx, blob.KindSnapshot)
	if err != nil {
		return res, fmt.Errorf("rebuild vault %s: %w", v.Name, err)
	}
	ms, lerrs, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		return res, fmt.Errorf("rebuild vault %s: %w", v.Name, err)
	}
	res.Unreadable = len(lerrs)
	res.Errors = append(res.Errors, lerrs...)
	rows, err := cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: v.Name})
	if err != nil {
		return res, fmt.Errorf("rebuild vault %s: %w", v.Name, err)
	}
	existing := make(map[string]catalog.RecoveryPoint, len(rows))
	for _, rp := range rows {
		existing[rp.ID] = rp
	}
	present := make(map[string]bool, len(listed))
	for _, id := range listed {
		present[id.String()] = true
	}
	for _, m := range ms {
		want := pointOf(v.Name, m)
		present[want.ID] = true
		old, ok := existing[want.ID]
		if ok && old.Tier != "" {
			want.Tier = old.Tier
		}
		var err error
		switch {
		case !ok:
			if err = cat.PutRecoveryPoint(ctx, want); err == nil {
				res.Added++
			}
		case samePoint(old, want):
			continue
		case !old.CreatedAt.Equal(want.CreatedAt):
			err = cat.DeleteRecoveryPoint(ctx, v.Name, want.ID)
			if err == nil || errors.Is(err, catalog.ErrNotFound) {
				err = cat.PutRecoveryPoint(ctx, want)
			}
			if err == nil {
				res.Updated++
			}
		default:
			if err = cat.PutRecoveryPoint(ctx, want); err == nil {
				res.Updated++
			}
		}
		if err != nil {
			res.Errors = append(res.Errors, err)
		}
	}
	for _, rp := range rows {
		if present[rp.ID] {
			continue
		}
		err := cat.DeleteRecoveryPoint(ctx, v.Name, rp.ID)
		switch {
		case err == nil:
			res.Removed++
		case !errors.Is(err, catalog.ErrNotFound):
			res.Errors = append(res.Errors, err)
		}
	}
	if res.Added+res.Updated+res.Removed > 0 {
		outcome := "ok"
		if len(res.Errors) > 0 {
			outcome = "partial"
		}
		_, err := cat.AppendAudit(ctx, catalog.AuditEvent{Actor: "catalog-rebuild", Action: "catalog.rebuild", Object: v.Name, Outcome: outcome,
			Detail: fmt.Sprintf("added %d, updated %d, removed %d recovery point rows; %d unreadable manifests", res.Added, res.Updated, res.Removed, res.Unreadable)})
		if err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("audit rebuild: %w", err))
		}
	}
	return res, nil
}

// pointOf is the catalog row a manifest describes (tier warm).
func pointOf(vault string, m *snapshot.Manifest) catalog.RecoveryPoint {
	rp := catalog.RecoveryPoint{
		ID: m.ID.String(), Vault: vault, Resource: m.Source.Resource, CreatedAt: m.Time.UTC(), Status: m.Status,
		SizeBytes: m.Stats.Bytes, Tier: catalog.TierWarm, MoveToColdAt: m.MoveToColdAt().UTC(), DeleteAt: m.DeleteAt().UTC(),
	}
	if lc := m.Lifecycle; lc != nil {
		rp.Plan, rp.Rule, rp.JobID = lc.Plan, lc.Rule, lc.Job
	}
	return rp
}

func samePoint(a, b catalog.RecoveryPoint) bool {
	return a.ID == b.ID && a.Vault == b.Vault && a.Resource == b.Resource && a.CreatedAt.Equal(b.CreatedAt) &&
		a.Status == b.Status && a.SizeBytes == b.SizeBytes && a.Tier == b.Tier &&
		a.MoveToColdAt.Equal(b.MoveToColdAt) && a.DeleteAt.Equal(b.DeleteAt) &&
		a.Plan == b.Plan && a.Rule == b.Rule && a.JobID == b.JobID
}
