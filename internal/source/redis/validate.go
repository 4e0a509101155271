package redis

import (
	"context"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// Validate compares the target with what m recorded: each database's key
// count (DBSIZE) and, for the sampled keys, their type, value digest and
// whether they have a TTL. A key with a TTL that expired since the restore
// counts as a difference. Checks are Redis commands split on spaces (e.g.
// "HGET user:1 name"), run in the target's `db` (default 0); the reply is
// compared as text with Expect: a string as is, an integer in decimal, a
// missing value as "(nil)", an array as its elements one per line.
func (a Adapter) Validate(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, target source.Conn, checks []source.Check) (*source.Validation, error) {
	mt, s, ctl, si, dbmap, err := openTarget(ctx, r, m, target)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	pexp := versionAtLeast(si.Version, 7, 0)

	v := &source.Validation{OK: true}
	add := func(c source.CheckResult) {
		v.Checks = append(v.Checks, c)
		if !c.OK {
			v.OK = false
		}
	}
	var samples, sampleOK int
	for _, d := range mt.DBs {
		tdb := dbmap[d.DB]
		err := func() error {
			cl := s.client(tdb, 1)
			defer cl.Close()
			n, err := cl.DBSize(ctx).Result()
			if err != nil {
				return s.fail(fmt.Sprintf("database %d", tdb), err)
			}
			add(source.CheckResult{
				Name: fmt.Sprintf("database %d: key count", tdb),
				Got:  fmt.Sprint(n), Want: fmt.Sprint(d.Keys), OK: n == d.Keys,
			})
			var bad []string
			for _, smp := range d.Sample {
				kr, err := readKey(ctx, cl, string(smp.Key), pexp)
				if err != nil {
					return s.fail(fmt.Sprintf("read sampled key %q of database %d", smp.Key, tdb), err)
				}
				var why string
				switch {
				case !kr.exists:
					why = "missing"
				case kr.typ != smp.Type:
					why = fmt.Sprintf("type %s, want %s", kr.typ, smp.Type)
				case kr.digest != smp.Digest:
					why = "value differs"
				case (kr.expireAt >= 0) != smp.TTL:
					why = fmt.Sprintf("has a TTL: %v, want %v", kr.expireAt >= 0, smp.TTL)
				}
				if why != "" {
					bad = append(bad, fmt.Sprintf("%q (%s)", smp.Key, why))
				}
			}
			samples += len(d.Sample)
			sampleOK += len(d.Sample) - len(bad)
			got := fmt.Sprintf("%d match", len(d.Sample)-len(bad))
			if len(bad) > 0 {
				if len(bad) > 10 {
					bad = append(bad[:10], fmt.Sprintf("and %d more", len(bad)-10))
				}
				got += "; differ: " + strings.Join(bad, ", ")
			}
			add(source.CheckResult{
				Name: fmt.Sprintf("database %d: sampled values", tdb),
				Got:  got, Want: fmt.Sprintf("%d match", len(d.Sample)), OK: len(bad) == 0,
			})
			return nil
		}()
		if err != nil {
			return nil, err
		}
	}

	cdb := 0
	if s.hasDB {
		cdb = s.db
	}
	userOK := 0
	if len(checks) > 0 {
		cl := s.client(cdb, 1)
		defer cl.Close()
		for _, c := range checks {
			got := runCheck(ctx, cl, c.Query)
			ok := got == c.Expect
			if ok {
				userOK++
			}
			add(source.CheckResult{Name: c.Name, Got: got, Want: c.Expect, OK: ok})
		}
	}
	v.Summary = fmt.Sprintf("%d database(s) of redis %s at %s: key counts %s, %d/%d sampled values match, %d/%d checks pass",
		len(mt.DBs), si.Version, s.addr(), map[bool]string{true: "match", false: "differ"}[countsOK(v)], sampleOK, samples, userOK, len(checks))
	return v, nil
}

func countsOK(v *source.Validation) bool {
	for _, c := range v.Checks {
		if strings.HasSuffix(c.Name, ": key count") && !c.OK {
			return false
		}
	}
	return true
}

// runCheck runs a check's command and formats its reply as text; an error
// becomes "error: …" (and so fails the check).
func runCheck(ctx context.Context, cl *goredis.Client, query string) string {
	f := strings.Fields(query)
	if len(f) == 0 {
		return "error: empty check query"
	}
	args := make([]any, len(f))
	for i, x := range f {
		args[i] = x
	}
	val, err := cl.Do(ctx, args...).Result()
	if err == goredis.Nil {
		return "(nil)"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return replyText(val)
}

func replyText(v any) string {
	switch x := v.(type) {
	case nil:
		return "(nil)"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = replyText(e)
		}
		return strings.Join(parts, "\n")
	}
	return fmt.Sprint(v)
}
