package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/coffre/coffre/internal/hint"
)

// Migration is one schema step, read from a file named NNNN_description.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads every *.sql file of dir in fsys, sorted by version.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("catalog: read migrations: %w", err)
	}
	var ms []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("catalog: migration %q is not named NNNN_description.sql", e.Name())
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("catalog: migrations %q and %q share version %d", other, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("catalog: read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// Migrate brings the schema up to date: it creates schema_migrations, refuses
// a catalog whose schema is newer than ms, and applies each missing
// migration in its own transaction, in order. Concurrent Migrate calls (two
// servers starting at once) serialize on the dialect's MigrationLock.
func (s *Store) Migrate(ctx context.Context, ms []Migration) error {
	known := 0
	if len(ms) > 0 {
		known = ms[len(ms)-1].Version
	}
	for _, m := range append([]Migration{{}}, ms...) {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			if s.d.MigrationLock != "" {
				if _, err := tx.ExecContext(ctx, s.d.MigrationLock); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
				return err
			}
			var current int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
				return err
			}
			if current > known {
				return hint.With(
					fmt.Errorf("catalog schema is version %d, newer than this coffre knows (%d)", current, known),
					"upgrade coffre to the version that last wrote this catalog; never downgrade a catalog")
			}
			if m.Version == 0 || m.Version <= current {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply %s: %w", m.Name, err)
			}
			_, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				m.Version, m.Name, s.clock.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("catalog: migrate: %w", err)
		}
	}
	return nil
}
