package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/coffre/coffre/internal/catalog"
)

const tokenCols = `id, name, hash, created_at, last_used_at`

func scanToken(sc interface{ Scan(...any) error }) (catalog.Token, error) {
	var t catalog.Token
	var created, used ntime
	err := sc.Scan(&t.ID, &t.Name, &t.Hash, &created, &used)
	t.CreatedAt, t.LastUsedAt = created.T(), used.T()
	return t, err
}

// CreateToken implements catalog.Catalog.
func (s *Store) CreateToken(ctx context.Context, t catalog.Token) error {
	if t.ID == "" || len(t.Hash) != 64 {
		return invalid("token needs an id and a hex SHA-256 hash")
	}
	_, err := s.exec(ctx, `INSERT INTO api_tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.Hash, s.created(t.CreatedAt), tv(t.LastUsedAt))
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("catalog: create token %s: exists: %w", t.ID, catalog.ErrConflict)
	}
	return wrap("create token "+t.ID, err)
}

// TokenByHash implements catalog.Catalog.
func (s *Store) TokenByHash(ctx context.Context, hash string, touch bool) (catalog.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM api_tokens WHERE hash = ?`), hash))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("catalog: token: %w", catalog.ErrNotFound) // never echo the hash
	}
	if err != nil {
		return t, wrap("find token", err)
	}
	if touch {
		now := s.clock.Now()
		if _, err := s.exec(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, now.UnixNano(), t.ID); err != nil {
			return t, wrap("touch token "+t.ID, err)
		}
		t.LastUsedAt = time.Unix(0, now.UnixNano()).UTC()
	}
	return t, nil
}

// ListTokens implements catalog.Catalog.
func (s *Store) ListTokens(ctx context.Context) ([]catalog.Token, error) {
	return list(ctx, s, "list tokens", scanToken, `SELECT `+tokenCols+` FROM api_tokens ORDER BY id`)
}

// DeleteToken implements catalog.Catalog.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	n, err := s.exec(ctx, `DELETE FROM api_tokens WHERE id = ?`, id)
	return s.deleted("delete token", id, n, err)
}
