package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coffre/coffre/internal/catalog"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", catalog.ErrInvalid, fmt.Sprintf(format, args...))
}

const auditCols = `seq, time, actor, action, object, outcome, detail, prev_hash, hash`

func scanAudit(sc interface{ Scan(...any) error }) (catalog.AuditEvent, error) {
	var e catalog.AuditEvent
	var t ntime
	err := sc.Scan(&e.Seq, &t, &e.Actor, &e.Action, &e.Object, &e.Outcome, &e.Detail, &e.PrevHash, &e.Hash)
	e.Time = t.T()
	return e, err
}

// AppendAudit implements catalog.Catalog.
func (s *Store) AppendAudit(ctx context.Context, e catalog.AuditEvent) (catalog.AuditEvent, error) {
	if e.Time.IsZero() {
		e.Time = s.clock.Now()
	}
	e.Time = e.Time.UTC()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if s.d.AuditLock != "" {
			if _, err := tx.ExecContext(ctx, s.d.AuditLock); err != nil {
				return err
			}
		}
		var last int64
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		e.Seq, e.PrevHash = last+1, prev
		e.Hash = catalog.AuditHash(e)
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO audit_events (`+auditCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			e.Seq, e.Time.UnixNano(), e.Actor, e.Action, e.Object, e.Outcome, e.Detail, e.PrevHash, e.Hash)
		return err
	})
	return e, wrap("append audit event", err)
}

// ListAudit implements catalog.Catalog, in Seq order.
func (s *Store) ListAudit(ctx context.Context, f catalog.AuditFilter) ([]catalog.AuditEvent, error) {
	query := `SELECT ` + auditCols + ` FROM audit_events WHERE seq > ? ORDER BY seq`
	if f.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return list(ctx, s, "list audit events", scanAudit, query, f.AfterSeq)
}

// VerifyAudit implements catalog.Catalog.
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+auditCols+` FROM audit_events ORDER BY seq`)
	if err != nil {
		return 0, wrap("verify audit", err)
	}
	defer rows.Close()
	broken, err := catalog.VerifyChain(func() (catalog.AuditEvent, bool, error) {
		if !rows.Next() {
			return catalog.AuditEvent{}, false, rows.Err()
		}
		e, err := scanAudit(rows)
		return e, err == nil, err
	})
	return broken, wrap("verify audit", err)
}
