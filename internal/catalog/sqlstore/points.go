package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/coffre/coffre/internal/catalog"
)

const rpCols = `vault, id, resource, created_at, status, size_bytes, tier, move_to_cold_at, delete_at, plan, rule, job_id`

func scanRP(sc interface{ Scan(...any) error }) (catalog.RecoveryPoint, error) {
	var rp catalog.RecoveryPoint
	var created, cold, del ntime
	err := sc.Scan(&rp.Vault, &rp.ID, &rp.Resource, &created, &rp.Status, &rp.SizeBytes, &rp.Tier, &cold, &del,
		&rp.Plan, &rp.Rule, &rp.JobID)
	rp.CreatedAt, rp.MoveToColdAt, rp.DeleteAt = created.T(), cold.T(), del.T()
	return rp, err
}

// PutRecoveryPoint implements catalog.Catalog.
func (s *Store) PutRecoveryPoint(ctx context.Context, rp catalog.RecoveryPoint) error {
	if rp.Vault == "" || rp.ID == "" {
		return invalid("recovery point needs a vault and an id")
	}
	if rp.Tier == "" {
		rp.Tier = catalog.TierWarm
	}
	if rp.Tier != catalog.TierWarm && rp.Tier != catalog.TierCold {
		return invalid("recovery point %s: tier %q", rp.ID, rp.Tier)
	}
	_, err := s.exec(ctx, `INSERT INTO recovery_points (`+rpCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (vault, id) DO UPDATE SET resource = excluded.resource, status = excluded.status,
		size_bytes = excluded.size_bytes, tier = excluded.tier, move_to_cold_at = excluded.move_to_cold_at,
		delete_at = excluded.delete_at, plan = excluded.plan, rule = excluded.rule, job_id = excluded.job_id`,
		rp.Vault, rp.ID, rp.Resource, s.created(rp.CreatedAt), rp.Status, rp.SizeBytes, string(rp.Tier),
		tv(rp.MoveToColdAt), tv(rp.DeleteAt), rp.Plan, rp.Rule, rp.JobID)
	return wrap("put recovery point "+rp.Vault+"/"+rp.ID, err)
}

// GetRecoveryPoint implements catalog.Catalog.
func (s *Store) GetRecoveryPoint(ctx context.Context, vault, id string) (catalog.RecoveryPoint, error) {
	rp, err := scanRP(s.db.QueryRowContext(ctx, s.q(`SELECT `+rpCols+` FROM recovery_points WHERE vault = ? AND id = ?`), vault, id))
	if errors.Is(err, sql.ErrNoRows) {
		return rp, notFound("catalog: get recovery point", vault+"/"+id)
	}
	return rp, wrap("get recovery point "+vault+"/"+id, err)
}

// ListRecoveryPoints implements catalog.Catalog, newest first.
func (s *Store) ListRecoveryPoints(ctx context.Context, f catalog.RecoveryPointFilter) ([]catalog.RecoveryPoint, error) {
	return list(ctx, s, "list recovery points", scanRP, `SELECT `+rpCols+` FROM recovery_points
		WHERE (? = '' OR vault = ?) AND (? = '' OR resource = ?) ORDER BY created_at DESC, vault, id`,
		f.Vault, f.Vault, f.Resource, f.Resource)
}

// DeleteRecoveryPoint implements catalog.Catalog.
func (s *Store) DeleteRecoveryPoint(ctx context.Context, vault, id string) error {
	n, err := s.exec(ctx, `DELETE FROM recovery_points WHERE vault = ? AND id = ?`, vault, id)
	return s.deleted("delete recovery point", vault+"/"+id, n, err)
}

// ListExpired implements catalog.Catalog, earliest expiry first.
func (s *Store) ListExpired(ctx context.Context, now time.Time) ([]catalog.RecoveryPoint, error) {
	return list(ctx, s, "list expired recovery points", scanRP, `SELECT `+rpCols+` FROM recovery_points
		WHERE delete_at IS NOT NULL AND delete_at <= ? ORDER BY delete_at, vault, id`, now.UnixNano())
}
