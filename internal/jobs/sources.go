package jobs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/fs"
	"github.com/coffre/coffre/internal/source/postgres"
	"github.com/coffre/coffre/internal/source/redis"
)

// Source backs up and restores one resource type for the job runner.
//
// Contract: Backup stores exactly one recovery point of res into r and
// returns its manifest, or stores nothing and returns an error. The caller
// has opened r, taken a shared lock and loaded the index; opts carries the
// tags, lifecycle, parent and the BeforeCommit guard, which Backup must pass
// to the archiver unchanged. Restore writes recovery point m of res to the
// target that params name ("target", and optionally "path" inside the point)
// and returns a one-line summary; it never overwrites existing data. Errors
// that retrying cannot fix (bad settings, a missing path) are wrapped with
// Permanent.
type Source interface {
	Backup(ctx context.Context, r *repo.Repository, res catalog.Resource, opts archiver.Options) (*snapshot.Manifest, error)
	Restore(ctx context.Context, r *repo.Repository, res catalog.Resource, m *snapshot.Manifest, params map[string]string) (string, error)
}

// DefaultSources returns the sources of every resource type this coffre
// backs up.
func DefaultSources() map[string]Source {
	return map[string]Source{
		"filesystem": Filesystem{},
		"redis":      Adapted{Adapter: redis.Adapter{}},
		"postgres":   Adapted{Adapter: postgres.Adapter{}},
	}
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// permanentSource marks the errors of source adapters that retrying cannot
// fix.
func permanentSource(err error) error {
	if errors.Is(err, source.ErrSecretUnavailable) || errors.Is(err, source.ErrAuth) || errors.Is(err, source.ErrSettings) ||
		errors.Is(err, source.ErrTargetNotEmpty) {
		return Permanent(err)
	}
	return err
}

// Filesystem is the Source for resources of type "filesystem".
//
// Settings: "path" (required, absolute: the directory or file to back up)
// and "exclude" (optional, comma-separated patterns as `coffre backup
// --exclude` takes them). Restore params: "target" (absolute directory, new
// or empty) and "path" (optional subtree).
type Filesystem struct{}

// Backup implements Source.
func (Filesystem) Backup(ctx context.Context, r *repo.Repository, res catalog.Resource, opts archiver.Options) (*snapshot.Manifest, error) {
	path := res.Settings["path"]
	if path == "" || !filepath.IsAbs(path) {
		return nil, Permanent(hint.With(fmt.Errorf("resource %s: setting path is %q, want an absolute path", res.ID, path),
			"set settings = { path = \"/absolute/dir\" } on the resource and run coffre apply"))
	}
	var excludes []string
	for _, e := range strings.Split(res.Settings["exclude"], ",") {
		if e = strings.TrimSpace(e); e != "" {
			excludes = append(excludes, e)
		}
	}
	src, err := fs.New(path, excludes)
	if err != nil {
		return nil, Permanent(fmt.Errorf("resource %s: %w", res.ID, err))
	}
	return archiver.New(r, opts).Backup(ctx, src, snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{src.Path()}, Resource: res.ID})
}

// Restore implements Source.
func (Filesystem) Restore(ctx context.Context, r *repo.Repository, res catalog.Resource, m *snapshot.Manifest, params map[string]string) (string, error) {
	target := params["target"]
	if target == "" || !filepath.IsAbs(target) {
		return "", Permanent(fmt.Errorf("restore of %s: target %q is not an absolute path", m.ID.Short(), target))
	}
	st, err := fs.Restore(ctx, r, m, fs.RestoreOptions{Target: target, Subpath: params["path"]})
	if err != nil {
		if errors.Is(err, fs.ErrTargetNotEmpty) {
			return "", Permanent(err)
		}
		return "", err
	}
	msg := fmt.Sprintf("restored %d files, %d dirs, %d bytes to %s (every chunk verified)", st.Files, st.Dirs, st.Bytes, target)
	if len(st.Warnings) > 0 {
		msg += fmt.Sprintf("; %d warning(s), first: %s", len(st.Warnings), st.Warnings[0])
	}
	return msg, nil
}

// Adapted runs a source.Adapter (PostgreSQL, Redis…) as a job Source.
//
// Restore params: "target.<setting>" override the resource's connection
// settings for the target (e.g. target.database = app_restored for a new
// database, target.port for another instance); "overwrite" = "true" allows
// a target that has data; "parallel" sets the restore's parallelism;
// "to_time" asks for point-in-time recovery where the adapter has it;
// "check.<name>" = "<query>" and "expect.<name>" = "<value>" are validation
// checks. After the restore the target is validated against what the point
// recorded (row or key counts, samples) and the checks; a failed validation
// fails the job, naming what differed.
type Adapted struct {
	Adapter source.Adapter
}

func conn(res catalog.Resource) source.Conn {
	return source.Conn{Resource: res.ID, Settings: res.Settings}
}

// Backup implements Source.
func (a Adapted) Backup(ctx context.Context, r *repo.Repository, res catalog.Resource, opts archiver.Options) (*snapshot.Manifest, error) {
	if res.Type != a.Adapter.Type() {
		return nil, Permanent(fmt.Errorf("resource %s is of type %s, not %s", res.ID, res.Type, a.Adapter.Type()))
	}
	m, err := a.Adapter.Backup(ctx, archiver.New(r, opts), conn(res))
	return m, permanentSource(err)
}

// Restore implements Source.
func (a Adapted) Restore(ctx context.Context, r *repo.Repository, res catalog.Resource, m *snapshot.Manifest, params map[string]string) (string, error) {
	over := map[string]string{}
	var checks []source.Check
	for k, v := range params {
		switch {
		case strings.HasPrefix(k, "target."):
			over[strings.TrimPrefix(k, "target.")] = v
		case strings.HasPrefix(k, "check."):
			name := strings.TrimPrefix(k, "check.")
			checks = append(checks, source.Check{Name: name, Query: v, Expect: params["expect."+name]})
		}
	}
	if len(over) == 0 {
		return "", Permanent(fmt.Errorf("restore of %s: no target given: name the new target with target settings (e.g. target.database=NAME)", res.ID))
	}
	opts := source.RestoreOptions{Overwrite: params["overwrite"] == "true", ToTime: params["to_time"], Validate: true, Checks: checks}
	if p := params["parallel"]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return "", Permanent(fmt.Errorf("restore param parallel=%q is not a positive number", p))
		}
		opts.Parallel = n
	}
	target := conn(res).With(over)
	out, err := a.Adapter.Restore(ctx, r, m, target, opts)
	if err != nil {
		return "", permanentSource(err)
	}
	v := out.Validation
	if v == nil {
		if v, err = a.Adapter.Validate(ctx, r, m, target, checks); err != nil {
			return "", fmt.Errorf("%s; validation could not run: %w", out.Summary, err)
		}
	}
	if !v.OK {
		var bad []string
		for _, c := range v.Failed() {
			bad = append(bad, fmt.Sprintf("%s: got %q, want %q", c.Name, c.Got, c.Want))
		}
		return "", Permanent(fmt.Errorf("%s, but validation failed: %s", out.Summary, strings.Join(bad, "; ")))
	}
	return fmt.Sprintf("%s; validated (%d checks)", out.Summary, len(v.Checks)), nil
}
