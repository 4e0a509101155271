package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/catalog"
)

const jobCols = `id, kind, state, resource, vault, plan, rule, created_at, start_by, complete_by, started_at,
	finished_at, attempt, owner, heartbeat_at, recovery_point, message, bytes_processed, params, not_before`

func scanJob(sc interface{ Scan(...any) error }) (catalog.Job, error) {
	var j catalog.Job
	var created, startBy, completeBy, started, finished, heartbeat, notBefore ntime
	var params string
	err := sc.Scan(&j.ID, &j.Kind, &j.State, &j.Resource, &j.Vault, &j.Plan, &j.Rule, &created, &startBy,
		&completeBy, &started, &finished, &j.Attempt, &j.Owner, &heartbeat, &j.RecoveryPoint, &j.Message,
		&j.BytesProcessed, &params, &notBefore)
	if err != nil {
		return j, err
	}
	j.CreatedAt, j.StartBy, j.CompleteBy = created.T(), startBy.T(), completeBy.T()
	j.StartedAt, j.FinishedAt, j.HeartbeatAt = started.T(), finished.T(), heartbeat.T()
	j.NotBefore = notBefore.T()
	if err := unjs(params, &j.Params); err != nil {
		return j, fmt.Errorf("job %s params: %w", j.ID, err)
	}
	if len(j.Params) == 0 {
		j.Params = nil
	}
	return j, nil
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("catalog: random id: %v", err)) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// CreateJob implements catalog.Catalog.
func (s *Store) CreateJob(ctx context.Context, j catalog.Job) (catalog.Job, error) {
	if j.State == "" {
		j.State = catalog.StateCreated
	}
	if err := catalog.ValidateJob(j); err != nil {
		return j, err
	}
	if j.ID == "" {
		j.ID = newID()
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = s.clock.Now()
	}
	// The job is read back in the inserting transaction: once committed,
	// another server may move it at once, and the caller (the scheduler,
	// auditing job.CREATED) must get the job as created, not as it is by
	// then.
	var out catalog.Job
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO jobs (`+jobCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			j.ID, string(j.Kind), string(j.State), j.Resource, j.Vault, j.Plan, j.Rule, tv(j.CreatedAt), tv(j.StartBy),
			tv(j.CompleteBy), tv(j.StartedAt), tv(j.FinishedAt), j.Attempt, j.Owner, tv(j.HeartbeatAt),
			j.RecoveryPoint, j.Message, j.BytesProcessed, paramsJS(j.Params), tv(j.NotBefore)); err != nil {
			return err
		}
		var err error
		out, err = scanJob(tx.QueryRowContext(ctx, s.q(`SELECT `+jobCols+` FROM jobs WHERE id = ?`), j.ID))
		return err
	})
	if err != nil && s.d.IsUnique(err) {
		return j, fmt.Errorf("catalog: create job %s: id exists: %w", j.ID, catalog.ErrConflict)
	}
	if err != nil {
		return j, wrap("create job", err)
	}
	return out, nil
}

// GetJob implements catalog.Catalog.
func (s *Store) GetJob(ctx context.Context, id string) (catalog.Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, s.q(`SELECT `+jobCols+` FROM jobs WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return j, notFound("catalog: get job", id)
	}
	return j, wrap("get job "+id, err)
}

// ListJobs implements catalog.Catalog.
func (s *Store) ListJobs(ctx context.Context, f catalog.JobFilter) ([]catalog.Job, error) {
	var where []string
	var args []any
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	for _, c := range []struct{ col, v string }{{"kind", string(f.Kind)}, {"resource", f.Resource}, {"vault", f.Vault}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	query := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at, id"
	if f.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return list(ctx, s, "list jobs", scanJob, query, args...)
}

// TransitionJob implements catalog.Catalog.
func (s *Store) TransitionJob(ctx context.Context, id string, from, to catalog.JobState, u catalog.JobUpdate) (catalog.Job, error) {
	if err := catalog.CheckTransition(from, to); err != nil {
		return catalog.Job{}, fmt.Errorf("catalog: transition job %s: %w", id, err)
	}
	now := s.clock.Now()
	sets := []string{"state = ?"}
	args := []any{string(to)}
	set := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
	switch {
	case to == catalog.StateRunning:
		if u.StartedAt == nil {
			u.StartedAt = &now
		}
		set("heartbeat_at", tv(now))
	case to == catalog.StatePending:
		if u.Owner == nil {
			set("owner", "")
		}
		set("heartbeat_at", nil)
	case catalog.Terminal(to):
		if u.FinishedAt == nil {
			u.FinishedAt = &now
		}
	}
	if u.Owner != nil {
		set("owner", *u.Owner)
	}
	if u.StartedAt != nil {
		set("started_at", tp(u.StartedAt))
	}
	if u.FinishedAt != nil {
		set("finished_at", tp(u.FinishedAt))
	}
	if u.RecoveryPoint != nil {
		set("recovery_point", *u.RecoveryPoint)
	}
	if u.Message != nil {
		set("message", *u.Message)
	}
	if u.BytesProcessed != nil {
		set("bytes_processed", *u.BytesProcessed)
	}
	if u.NotBefore != nil {
		set("not_before", tp(u.NotBefore))
	}
	args = append(args, id, string(from))
	j, err := scanJob(s.db.QueryRowContext(ctx, s.q(`UPDATE jobs SET `+strings.Join(sets, ", ")+
		` WHERE id = ? AND state = ? RETURNING `+jobCols), args...))
	if errors.Is(err, sql.ErrNoRows) {
		cur, gerr := s.GetJob(ctx, id)
		if gerr != nil {
			return cur, fmt.Errorf("catalog: transition job %s %s→%s: %w", id, from, to, gerr)
		}
		return cur, fmt.Errorf("catalog: transition job %s %s→%s: job is %s: %w", id, from, to, cur.State, catalog.ErrConflict)
	}
	return j, wrap("transition job "+id, err)
}

// ClaimJob implements catalog.Catalog.
func (s *Store) ClaimJob(ctx context.Context, owner string, lim catalog.ClaimLimits) (catalog.Job, error) {
	cond := []string{`c.state = 'PENDING'`, `(c.start_by IS NULL OR c.start_by >= ?)`, `(c.not_before IS NULL OR c.not_before <= ?)`}
	if lim.PerVault > 0 {
		cond = append(cond, `(SELECT COUNT(*) FROM jobs r WHERE r.state = 'RUNNING' AND r.vault = c.vault) < ?`)
	}
	if lim.PerResource > 0 {
		cond = append(cond, `(c.resource = '' OR (SELECT COUNT(*) FROM jobs r WHERE r.state = 'RUNNING' AND r.resource = c.resource) < ?)`)
	}
	query := `UPDATE jobs
		SET state = 'RUNNING', owner = ?, started_at = ?, heartbeat_at = ?, attempt = attempt + 1
		WHERE state = 'PENDING' AND id = (
			SELECT c.id FROM jobs c WHERE ` + strings.Join(cond, " AND ") + `
			ORDER BY c.created_at, c.id LIMIT 1` + s.d.ClaimLock + `)
		RETURNING ` + jobCols
	var j catalog.Job
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// The limits count RUNNING jobs; claims serialize so that two
		// servers cannot both see room for the last slot.
		if s.d.ClaimSerialize != "" && (lim.PerVault > 0 || lim.PerResource > 0) {
			if _, err := tx.ExecContext(ctx, s.d.ClaimSerialize); err != nil {
				return err
			}
		}
		// Read the clock once the transaction holds its locks, so that a
		// job inserted while this claim waited is never started "before"
		// it was created.
		now := s.clock.Now().UnixNano()
		args := []any{owner, now, now, now, now}
		if lim.PerVault > 0 {
			args = append(args, lim.PerVault)
		}
		if lim.PerResource > 0 {
			args = append(args, lim.PerResource)
		}
		var err error
		j, err = scanJob(tx.QueryRowContext(ctx, s.q(query), args...))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return j, catalog.ErrNoJob
	}
	return j, wrap("claim job for "+owner, err)
}

func paramsJS(p map[string]string) string {
	if len(p) == 0 {
		return "{}"
	}
	return js(p)
}

// Heartbeat implements catalog.Catalog.
func (s *Store) Heartbeat(ctx context.Context, id, owner string) error {
	n, err := s.exec(ctx, `UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state = 'RUNNING' AND owner = ?`,
		s.clock.Now().UnixNano(), id, owner)
	if err != nil {
		return wrap("heartbeat job "+id, err)
	}
	if n == 0 {
		cur, err := s.GetJob(ctx, id)
		if err != nil {
			return fmt.Errorf("catalog: heartbeat: %w", err)
		}
		return fmt.Errorf("catalog: heartbeat job %s by %s: job is %s, owned by %q: %w", id, owner, cur.State, cur.Owner, catalog.ErrConflict)
	}
	return nil
}

// ListStaleRunning implements catalog.Catalog.
func (s *Store) ListStaleRunning(ctx context.Context, olderThan time.Duration) ([]catalog.Job, error) {
	return list(ctx, s, "list stale jobs", scanJob, `SELECT `+jobCols+` FROM jobs
		WHERE state = 'RUNNING' AND (heartbeat_at IS NULL OR heartbeat_at < ?) ORDER BY created_at, id`,
		s.clock.Now().Add(-olderThan).UnixNano())
}
