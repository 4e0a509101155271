// Package sqlstore implements catalog.Catalog once over database/sql, for the dialects coffre supports (SQLite and PostgreSQL), which differ only in the few statements a Dialect supplies.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
)

// Dialect holds what differs between SQL engines.
type Dialect struct {
	Name string
	// Dollar rewrites ? placeholders to $1, $2… (PostgreSQL).
	Dollar bool
	// ClaimLock is appended to the SELECT that picks the job to claim
	// (" FOR UPDATE SKIP LOCKED" on PostgreSQL; SQLite's write lock already
	// serializes writers).
	ClaimLock string
	// ClaimSerialize runs first in ClaimJob's transaction when claim limits
	// are set, so that limit counts are exact across servers ("" when the
	// engine already serializes writers).
	ClaimSerialize string
	// AuditLock runs first in AppendAudit's transaction so that appends
	// serialize across connections and servers ("" when transactions already
	// take the write lock at BEGIN, as with SQLite's _txlock=immediate).
	AuditLock string
	// MigrationLock runs first in each migration transaction.
	MigrationLock string
	// IsUnique reports a unique-constraint violation.
	IsUnique func(error) bool
}

// Store is a catalog.Catalog over a *sql.DB.
type Store struct {
	db    *sql.DB
	d     Dialect
	clock clock.Clock
}

var _ catalog.Catalog = (*Store)(nil)

// New wraps db; call Migrate before use.
func New(db *sql.DB, d Dialect, clk clock.Clock) *Store {
	return &Store{db: db, d: d, clock: clk}
}

// DB returns the underlying database handle.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database handle.
func (s *Store) Close() error { return s.db.Close() }

// ExecRawForTest runs a raw statement (with ? placeholders). It exists for
// the conformance suite's tamper tests, which must change rows behind the
// catalog's back; nothing else calls it.
func (s *Store) ExecRawForTest(ctx context.Context, query string, args ...any) error {
	_, err := s.db.ExecContext(ctx, s.q(query), args...)
	return err
}

// q rewrites ? placeholders for the dialect.
func (s *Store) q(query string) string {
	if !s.d.Dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ---------------------------------------------------------------- encoding

func tv(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func tp(t *time.Time) any {
	if t == nil {
		return nil
	}
	return tv(*t)
}

type ntime struct{ sql.NullInt64 }

func (n ntime) T() time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("catalog: encode %T: %v", v, err)) // only maps and slices of strings and ints
	}
	return string(b)
}

func unjs(s string, v any) error {
	if s == "" || s == "null" {
		return nil
	}
	return json.Unmarshal([]byte(s), v)
}

func (s *Store) created(t time.Time) any {
	if t.IsZero() {
		t = s.clock.Now()
	}
	return t.UnixNano()
}

func notFound(op, key string) error {
	return fmt.Errorf("%s %q: %w", op, key, catalog.ErrNotFound)
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("catalog: %s: %w", op, err)
}

func (s *Store) deleted(op, key string, n int64, err error) error {
	if err != nil {
		return wrap(op, err)
	}
	if n == 0 {
		return notFound("catalog: "+op, key)
	}
	return nil
}

// ---------------------------------------------------------------- vaults

const vaultCols = `name, location, key_ref, lock_mode, lock_min_days, lock_max_days, tags, created_at`

// PutVault implements catalog.Catalog.
func (s *Store) PutVault(ctx context.Context, v catalog.Vault) error {
	if err := catalog.ValidateVault(v); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO vaults (`+vaultCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET location = excluded.location, key_ref = excluded.key_ref,
		lock_mode = excluded.lock_mode, lock_min_days = excluded.lock_min_days,
		lock_max_days = excluded.lock_max_days, tags = excluded.tags`,
		v.Name, v.Location, v.KeyRef, string(v.Lock.Mode), v.Lock.MinRetentionDays, v.Lock.MaxRetentionDays,
		js(v.Tags), s.created(v.CreatedAt))
	return wrap("put vault "+v.Name, err)
}

func scanVault(sc interface{ Scan(...any) error }) (catalog.Vault, error) {
	var v catalog.Vault
	var tags string
	var created ntime
	if err := sc.Scan(&v.Name, &v.Location, &v.KeyRef, &v.Lock.Mode, &v.Lock.MinRetentionDays,
		&v.Lock.MaxRetentionDays, &tags, &created); err != nil {
		return v, err
	}
	v.CreatedAt = created.T()
	return v, unjs(tags, &v.Tags)
}

// GetVault implements catalog.Catalog.
func (s *Store) GetVault(ctx context.Context, name string) (catalog.Vault, error) {
	v, err := scanVault(s.db.QueryRowContext(ctx, s.q(`SELECT `+vaultCols+` FROM vaults WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return v, notFound("catalog: get vault", name)
	}
	return v, wrap("get vault "+name, err)
}

// ListVaults implements catalog.Catalog.
func (s *Store) ListVaults(ctx context.Context) ([]catalog.Vault, error) {
	return list(ctx, s, "list vaults", scanVault, `SELECT `+vaultCols+` FROM vaults ORDER BY name`)
}

// DeleteVault implements catalog.Catalog.
func (s *Store) DeleteVault(ctx context.Context, name string) error {
	n, err := s.exec(ctx, `DELETE FROM vaults WHERE name = ?`, name)
	return s.deleted("delete vault", name, n, err)
}

func list[T any](ctx context.Context, s *Store, op string, scan func(interface{ Scan(...any) error }) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	return out, wrap(op, rows.Err())
}

// ---------------------------------------------------------------- resources

const resourceCols = `id, type, name, settings, tags, created_at`

// PutResource implements catalog.Catalog.
func (s *Store) PutResource(ctx context.Context, r catalog.Resource) error {
	if err := catalog.ValidateResource(r); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO resources (`+resourceCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name,
		settings = excluded.settings, tags = excluded.tags`,
		r.ID, r.Type, r.Name, js(r.Settings), js(r.Tags), s.created(r.CreatedAt))
	return wrap("put resource "+r.ID, err)
}

func scanResource(sc interface{ Scan(...any) error }) (catalog.Resource, error) {
	var r catalog.Resource
	var settings, tags string
	var created ntime
	if err := sc.Scan(&r.ID, &r.Type, &r.Name, &settings, &tags, &created); err != nil {
		return r, err
	}
	r.CreatedAt = created.T()
	if err := unjs(settings, &r.Settings); err != nil {
		return r, err
	}
	return r, unjs(tags, &r.Tags)
}

// GetResource implements catalog.Catalog.
func (s *Store) GetResource(ctx context.Context, id string) (catalog.Resource, error) {
	r, err := scanResource(s.db.QueryRowContext(ctx, s.q(`SELECT `+resourceCols+` FROM resources WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, notFound("catalog: get resource", id)
	}
	return r, wrap("get resource "+id, err)
}

// ListResources implements catalog.Catalog.
func (s *Store) ListResources(ctx context.Context, typ string) ([]catalog.Resource, error) {
	return list(ctx, s, "list resources", scanResource,
		`SELECT `+resourceCols+` FROM resources WHERE (? = '' OR type = ?) ORDER BY id`, typ, typ)
}

// DeleteResource implements catalog.Catalog.
func (s *Store) DeleteResource(ctx context.Context, id string) error {
	n, err := s.exec(ctx, `DELETE FROM resources WHERE id = ?`, id)
	return s.deleted("delete resource", id, n, err)
}

// ---------------------------------------------------------------- plans

const ruleCols = `name, schedule, timezone, start_window_minutes, completion_window_minutes, target_vault,
	move_to_cold_after_days, delete_after_days, copy_actions, continuous_backup`

// PutPlan implements catalog.Catalog.
func (s *Store) PutPlan(ctx context.Context, p catalog.Plan) error {
	if err := catalog.ValidatePlan(p); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO plans (name, tags, created_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET tags = excluded.tags`), p.Name, js(p.Tags), s.created(p.CreatedAt)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rules WHERE plan = ?`), p.Name); err != nil {
			return err
		}
		for i, r := range p.Rules {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rules (plan, position, `+ruleCols+`)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
				p.Name, i, r.Name, r.Schedule, r.Timezone, r.StartWindowMinutes, r.CompletionWindowMinutes,
				r.TargetVault, r.MoveToColdAfterDays, r.DeleteAfterDays, js(r.CopyActions), r.ContinuousBackup); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("put plan "+p.Name, err)
}

func (s *Store) rules(ctx context.Context, plan string) ([]catalog.Rule, error) {
	return list(ctx, s, "list rules of "+plan, func(sc interface{ Scan(...any) error }) (catalog.Rule, error) {
		var r catalog.Rule
		var copies string
		if err := sc.Scan(&r.Name, &r.Schedule, &r.Timezone, &r.StartWindowMinutes, &r.CompletionWindowMinutes,
			&r.TargetVault, &r.MoveToColdAfterDays, &r.DeleteAfterDays, &copies, &r.ContinuousBackup); err != nil {
			return r, err
		}
		return r, unjs(copies, &r.CopyActions)
	}, `SELECT `+ruleCols+` FROM rules WHERE plan = ? ORDER BY position`, plan)
}

func scanPlan(sc interface{ Scan(...any) error }) (catalog.Plan, error) {
	var p catalog.Plan
	var tags string
	var created ntime
	if err := sc.Scan(&p.Name, &tags, &created); err != nil {
		return p, err
	}
	p.CreatedAt = created.T()
	return p, unjs(tags, &p.Tags)
}

// GetPlan implements catalog.Catalog.
func (s *Store) GetPlan(ctx context.Context, name string) (catalog.Plan, error) {
	p, err := scanPlan(s.db.QueryRowContext(ctx, s.q(`SELECT name, tags, created_at FROM plans WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, notFound("catalog: get plan", name)
	}
	if err != nil {
		return p, wrap("get plan "+name, err)
	}
	p.Rules, err = s.rules(ctx, name)
	return p, err
}

// ListPlans implements catalog.Catalog.
func (s *Store) ListPlans(ctx context.Context) ([]catalog.Plan, error) {
	ps, err := list(ctx, s, "list plans", scanPlan, `SELECT name, tags, created_at FROM plans ORDER BY name`)
	for i := range ps {
		if err != nil {
			break
		}
		ps[i].Rules, err = s.rules(ctx, ps[i].Name)
	}
	return ps, err
}

// DeletePlan implements catalog.Catalog; it deletes the plan's rules too.
func (s *Store) DeletePlan(ctx context.Context, name string) error {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rules WHERE plan = ?`), name); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM plans WHERE name = ?`), name)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return s.deleted("delete plan", name, n, err)
}

// ---------------------------------------------------------------- selections

const selectionCols = `name, plan, resources, not_resources, conditions, created_at`

// PutSelection implements catalog.Catalog.
func (s *Store) PutSelection(ctx context.Context, sel catalog.Selection) error {
	if err := catalog.ValidateSelection(sel); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO selections (`+selectionCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET plan = excluded.plan, resources = excluded.resources,
		not_resources = excluded.not_resources, conditions = excluded.conditions`,
		sel.Name, sel.Plan, js(sel.Resources), js(sel.NotResources), js(sel.Conditions), s.created(sel.CreatedAt))
	return wrap("put selection "+sel.Name, err)
}

func scanSelection(sc interface{ Scan(...any) error }) (catalog.Selection, error) {
	var sel catalog.Selection
	var res, notRes, conds string
	var created ntime
	if err := sc.Scan(&sel.Name, &sel.Plan, &res, &notRes, &conds, &created); err != nil {
		return sel, err
	}
	sel.CreatedAt = created.T()
	return sel, errors.Join(unjs(res, &sel.Resources), unjs(notRes, &sel.NotResources), unjs(conds, &sel.Conditions))
}

// GetSelection implements catalog.Catalog.
func (s *Store) GetSelection(ctx context.Context, name string) (catalog.Selection, error) {
	sel, err := scanSelection(s.db.QueryRowContext(ctx, s.q(`SELECT `+selectionCols+` FROM selections WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return sel, notFound("catalog: get selection", name)
	}
	return sel, wrap("get selection "+name, err)
}

// ListSelections implements catalog.Catalog.
func (s *Store) ListSelections(ctx context.Context, plan string) ([]catalog.Selection, error) {
	return list(ctx, s, "list selections", scanSelection,
		`SELECT `+selectionCols+` FROM selections WHERE (? = '' OR plan = ?) ORDER BY name`, plan, plan)
}

// DeleteSelection implements catalog.Catalog.
func (s *Store) DeleteSelection(ctx context.Context, name string) error {
	n, err := s.exec(ctx, `DELETE FROM selections WHERE name = ?`, name)
	return s.deleted("delete selection", name, n, err)
}
