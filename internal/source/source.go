// Package source defines the Adapter interface that database and service sources (PostgreSQL, Redis…) implement to back up through their own protocols, restore into a new target and validate the result; sourcetest is its conformance suite.
package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source/stream"
)

// Conn is how an adapter reaches a resource: its connection settings and a
// way to read the secrets they reference.
type Conn struct {
	// Resource is the protected resource's id, recorded in manifests.
	Resource string
	// Settings are the connection settings (host, port, user, database,
	// db…). A secret setting holds a reference ("env:NAME" or
	// "file:PATH"), never the secret; read it with Secret.
	Settings map[string]string
}

// Secret returns the secret setting key (e.g. "password"), read from the
// environment variable or file its reference names; "" when the setting is
// absent. A plain value is refused: secrets are only taken by reference.
func (c Conn) Secret(key string) (string, error) {
	ref, ok := c.Settings[key]
	if !ok || ref == "" {
		return "", nil
	}
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		v, ok := os.LookupEnv(name)
		if !ok {
			return "", hint.With(fmt.Errorf("resource %s: %s: environment variable %s is not set: %w", c.Resource, key, name, ErrSecretUnavailable),
				"export "+name+" in the environment of the coffre server (or CLI) that runs the job")
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		p := strings.TrimPrefix(ref, "file:")
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("resource %s: %s: %w (%w)", c.Resource, key, ErrSecretUnavailable, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", fmt.Errorf("resource %s: setting %s must be a reference (env:NAME or file:PATH): %w", c.Resource, key, ErrSecretUnavailable)
}

// Port returns the "port" setting as a TCP port, def when it is absent; an
// invalid one is an error wrapping ErrSettings.
func (c Conn) Port(def int) (int, error) {
	p := c.Settings["port"]
	if p == "" {
		return def, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("resource %s: setting port %q is not a TCP port: %w", c.Resource, p, ErrSettings)
	}
	return n, nil
}

// SSLMode returns the "sslmode" setting of a PostgreSQL connection
// ("prefer" when absent); an unknown mode is an error wrapping ErrSettings.
func (c Conn) SSLMode() (string, error) {
	switch m := c.Settings["sslmode"]; m {
	case "":
		return "prefer", nil
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
		return m, nil
	default:
		return "", fmt.Errorf("resource %s: setting sslmode %q: want disable, allow, prefer, require, verify-ca or verify-full: %w", c.Resource, m, ErrSettings)
	}
}

// With returns a copy of c whose settings are overridden by over.
func (c Conn) With(over map[string]string) Conn {
	s := make(map[string]string, len(c.Settings)+len(over))
	for k, v := range c.Settings {
		s[k] = v
	}
	for k, v := range over {
		s[k] = v
	}
	return Conn{Resource: c.Resource, Settings: s}
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	// Overwrite allows a target that already holds data. Without it a
	// restore into anything but a new, empty target fails with
	// ErrTargetNotEmpty before writing.
	Overwrite bool
	// Parallel is how many streams are restored at once (0: adapter default).
	Parallel int
	// ToTime, for adapters with point-in-time recovery, is the instant to
	// recover to (zero: the end of the recovery point).
	ToTime string
	// Validate asks the adapter to validate the target as part of the
	// restore, with Checks, when it can do so more cheaply than a Validate
	// call after it (a PostgreSQL restore counts each table's rows as soon
	// as the table is complete, while other tables still load). An adapter
	// that does returns the result in RestoreResult.Validation; one that
	// does not leaves it nil, and the caller calls Validate.
	Validate bool
	Checks   []Check
}

// RestoreResult summarises a restore.
type RestoreResult struct {
	Summary string // one line for the job's message
	Items   int64  // tables, keys… restored
	Bytes   int64  // bytes of data restored
	// Validation is the target's validation when RestoreOptions.Validate
	// asked for it and the adapter made it during the restore; nil
	// otherwise. It is what Validate would return on the restored target.
	Validation *Validation
}

// Check is a user-supplied validation query and its expected answer (for
// PostgreSQL: SQL whose single value is compared as text).
type Check struct {
	Name   string
	Query  string
	Expect string
}

// CheckResult is one validation check's outcome.
type CheckResult struct {
	Name string
	Got  string
	Want string
	OK   bool
}

// Validation is the outcome of Validate.
type Validation struct {
	OK      bool
	Checks  []CheckResult
	Summary string
}

// Failed returns the checks that did not pass.
func (v *Validation) Failed() []CheckResult {
	var out []CheckResult
	for _, c := range v.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// ErrSecretUnavailable is returned (wrapped) by Conn.Secret when the
// referenced secret cannot be read; retrying does not help.
var ErrSecretUnavailable = errors.New("secret unavailable")

// ErrAuth is what adapters wrap authentication failures with (wrong
// password, unknown user); retrying does not help.
var ErrAuth = errors.New("authentication failed")

// ErrSettings is what adapters wrap invalid connection settings with (a
// missing database, a bad port); retrying does not help.
var ErrSettings = errors.New("invalid settings")

// ErrTargetNotEmpty is returned (wrapped) by Restore when the target holds
// data and Overwrite is off.
var ErrTargetNotEmpty = errors.New("restore target is not empty")

// Adapter backs up one type of resource through its own protocol.
//
// Contract, checked by sourcetest.Run for every implementation:
//   - Backup stores exactly one recovery point of the resource through
//     arch.BackupStreams (so that a failure commits nothing) and records in
//     it what Validate needs (row or key counts, samples). Any error (wrong
//     credentials, the resource vanishing, a connection killed mid-stream)
//     is returned and nothing is committed; never a COMPLETED point that
//     cannot be restored.
//   - Restore writes recovery point m into the target to, which must be new
//     or empty unless opts.Overwrite (ErrTargetNotEmpty otherwise, before
//     anything is written). Every byte read is verified by the repository.
//   - Validate compares the target with what m recorded at backup time and
//     runs checks; it reports mismatches in the Validation (OK false), and
//     returns an error only when it cannot validate at all.
//   - Invalid settings are reported wrapping ErrSettings, authentication
//     failures wrapping ErrAuth, so that jobs fail them at once.
//   - Secrets are read with Conn.Secret when needed and never logged,
//     stored in manifests or put in error messages.
type Adapter interface {
	Type() string
	Backup(ctx context.Context, arch *archiver.Archiver, c Conn) (*snapshot.Manifest, error)
	Restore(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, to Conn, opts RestoreOptions) (*RestoreResult, error)
	Validate(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, target Conn, checks []Check) (*Validation, error)
}

// ReadJSON reads the file at path of recovery point m (whose source must be
// of type typ), verified, and decodes it into v: the meta files adapters
// write beside their streams.
func ReadJSON(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, typ, path string, v any) error {
	if m.Source.Type != typ {
		return fmt.Errorf("recovery point %s is a %s backup, not a %s one", m.ID.Short(), m.Source.Type, typ)
	}
	n, err := stream.Lookup(ctx, r, m.Tree, path)
	if err != nil {
		return fmt.Errorf("recovery point %s: %w", m.ID.Short(), err)
	}
	b, err := io.ReadAll(stream.NewReader(ctx, r, n))
	if err != nil {
		return fmt.Errorf("recovery point %s: %w", m.ID.Short(), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("recovery point %s: parse %s: %w", m.ID.Short(), path, err)
	}
	return nil
}
