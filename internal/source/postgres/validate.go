package postgres

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// Validate compares the database of target with recovery point m (row
// counts, large objects) and runs checks (see the package documentation).
func (a Adapter) Validate(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, target source.Conn, checks []source.Check) (*source.Validation, error) {
	s, err := parseSettings(target)
	if err != nil {
		return nil, err
	}
	pw, err := target.Secret("password")
	if err != nil {
		return nil, err
	}
	meta, err := ReadMeta(ctx, r, m)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	counts, err := countRows(ctx, s, pw, meta.Tables)
	if err != nil {
		return nil, fmt.Errorf("validate database %s: %w", s.database, err)
	}
	return validate(ctx, s, pw, meta, counts, checks)
}

// validate is Validate with the tables' row counts already made (counts[i]
// is meta.Tables[i]'s count(*) in the target database).
func validate(ctx context.Context, s settings, pw string, meta *Meta, counts []rowCount, checks []source.Check) (*source.Validation, error) {
	conn, err := connect(ctx, s, pw, "", appValidate, nil)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defer closeConn(conn)

	v := &source.Validation{OK: true}
	add := func(c source.CheckResult) {
		v.Checks = append(v.Checks, c)
		if !c.OK {
			v.OK = false
		}
	}
	for i, t := range meta.Tables {
		c := source.CheckResult{Name: "rows " + t.String(), Want: strconv.FormatInt(t.Rows, 10)}
		if counts[i].err != nil {
			c.Got = "error: " + counts[i].err.Error()
		} else {
			c.Got = strconv.FormatInt(counts[i].n, 10)
			c.OK = counts[i].n == t.Rows
		}
		add(c)
	}
	if len(meta.LargeObjects) > 0 {
		c := source.CheckResult{Name: "large objects", Want: strconv.Itoa(len(meta.LargeObjects))}
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata").Scan(&n); err != nil {
			if conn.IsClosed() || ctx.Err() != nil {
				return nil, fmt.Errorf("validate database %s: %w", s.database, err)
			}
			c.Got = "error: " + err.Error()
		} else {
			c.Got = strconv.FormatInt(n, 10)
			c.OK = n == int64(len(meta.LargeObjects))
		}
		add(c)
	}
	for _, ck := range checks {
		c := source.CheckResult{Name: ck.Name, Want: ck.Expect}
		if c.Name == "" {
			c.Name = ck.Query
		}
		got, err := runCheck(ctx, conn, ck.Query)
		if err != nil {
			if conn.IsClosed() || ctx.Err() != nil {
				return nil, fmt.Errorf("validate database %s: check %s: %w", s.database, c.Name, err)
			}
			c.Got = "error: " + err.Error()
		} else {
			c.Got = got
			c.OK = got == ck.Expect
		}
		add(c)
	}

	failed := v.Failed()
	if len(failed) == 0 {
		v.Summary = fmt.Sprintf("database %s matches the recovery point of %s: %d checks passed (%d tables, %d user checks)",
			s.database, meta.Time.Format("2006-01-02 15:04:05Z07:00"), len(v.Checks), len(meta.Tables), len(checks))
		return v, nil
	}
	var parts []string
	for i, c := range failed {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(failed)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s: got %s, want %s", c.Name, c.Got, c.Want))
	}
	v.Summary = fmt.Sprintf("database %s: %d of %d checks failed: %s", s.database, len(failed), len(v.Checks), strings.Join(parts, "; "))
	return v, nil
}

// rowCount is one table's count(*), or why it could not be counted.
type rowCount struct {
	n   int64
	err error
}

// countSessions is the number of sessions counting rows at once.
const countSessions = 2

// countRows counts the rows of every table, biggest first, on up to
// countSessions sessions at once. JIT is off in these sessions: compiling
// the count's plan costs more than it saves on a table read once. An error
// on one table is its result; a lost session or a cancelled ctx fails the
// whole count.
func countRows(ctx context.Context, s settings, pw string, tables []Table) ([]rowCount, error) {
	out := make([]rowCount, len(tables))
	order := make([]int, len(tables))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return tables[order[a]].Bytes > tables[order[b]].Bytes })
	next := make(chan int, len(order))
	for _, i := range order {
		next <- i
	}
	close(next)
	g := newGroup(ctx)
	for range min(countSessions, len(tables)) {
		g.Go(func(ctx context.Context) error {
			conn, err := connect(ctx, s, pw, "", appValidate, nil)
			if err != nil {
				return err
			}
			defer closeConn(conn)
			if err := jitOff(ctx, conn); err != nil {
				return err
			}
			for i := range next {
				if out[i], err = countTable(ctx, conn, &tables[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// jitOff turns JIT compilation off in conn's session (it exists from
// PostgreSQL 11 on): compiling a count's plan costs more than it saves on a
// table read once.
func jitOff(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config('jit', 'off', false) WHERE pg_catalog.current_setting('server_version_num')::int >= 110000"); err != nil {
		return fmt.Errorf("turn JIT off: %w", err)
	}
	return nil
}

// countTable counts the rows of table t on conn. An error on the table is
// its result; a lost session or a cancelled ctx is the error returned.
func countTable(ctx context.Context, conn *pgx.Conn, t *Table) (rowCount, error) {
	var c rowCount
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ONLY "+t.qname()).Scan(&c.n); err != nil {
		if conn.IsClosed() || ctx.Err() != nil {
			return c, fmt.Errorf("count the rows of table %s: %w", t, err)
		}
		c.err = err
	}
	return c, nil
}

// runCheck runs a user check in a read-only transaction and returns its
// single value as text ("NULL" for null).
func runCheck(ctx context.Context, conn *pgx.Conn, query string) (string, error) {
	if _, err := conn.Exec(ctx, "BEGIN READ ONLY"); err != nil {
		return "", err
	}
	res := conn.PgConn().ExecParams(ctx, query, nil, nil, nil, nil).Read()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil && res.Err == nil {
		return "", err
	}
	switch {
	case res.Err != nil:
		return "", res.Err
	case len(res.FieldDescriptions) != 1:
		return "", fmt.Errorf("the query returns %d columns, want one value", len(res.FieldDescriptions))
	case len(res.Rows) != 1:
		return "", fmt.Errorf("the query returns %d rows, want one value", len(res.Rows))
	case res.Rows[0][0] == nil:
		return "NULL", nil
	}
	return string(res.Rows[0][0]), nil
}
