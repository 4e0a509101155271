package main

// This file holds `coffre plan` and `coffre apply`: compare HCL
// configuration files with the catalog and reconcile them.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/postgres"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/policy/apply"
	"github.com/coffre/coffre/internal/policy/config"
)

// stdin and stdinIsTerminal are where apply reads its confirmation; tests
// replace them.
var (
	stdin           io.Reader = os.Stdin
	stdinIsTerminal           = func() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
)

// policyFlags are the flags plan and apply share.
type policyFlags struct {
	files       []string
	catalogDir  string
	catalogDSN  string
	keyringDir  string
	skipSecrets bool
}

func (f *policyFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.files, "file", "f", nil, "HCL configuration file (repeatable; required)")
	cmd.Flags().BoolVar(&f.skipSecrets, "skip-secret-check", false, "do not require every env()/file() secret to be readable here (when the server that runs the jobs has them and this machine does not)")
	f.registerCatalog(cmd)
}

// registerCatalog adds the flags that choose the catalog (see openCatalog).
func (f *policyFlags) registerCatalog(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.catalogDir, "catalog", "", "SQLite catalog directory (default $COFFRE_DATA_DIR or ~/.local/share/coffre)")
	fl.StringVar(&f.catalogDSN, "catalog-dsn", "", "PostgreSQL catalog DSN instead of a SQLite directory")
	cmd.MarkFlagsMutuallyExclusive("catalog", "catalog-dsn")
}

// registerKeyring adds --keyring (see keyring), for commands that open the
// catalog's vaults.
func (f *policyFlags) registerKeyring(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.keyringDir, "keyring", "", "directory of the vaults' keys (default DATA_DIR/keys; back it up apart from the vaults)")
}

// keyring returns the vault keyring: --keyring, or keys/ in the data dir.
func (f *policyFlags) keyring() (*jobs.Keyring, error) {
	if f.keyringDir != "" {
		return &jobs.Keyring{Dir: f.keyringDir}, nil
	}
	dir, err := f.dataDir()
	if err != nil {
		return nil, err
	}
	return &jobs.Keyring{Dir: filepath.Join(dir, "keys")}, nil
}

// dataDir is --catalog, $COFFRE_DATA_DIR or ~/.local/share/coffre.
func (f *policyFlags) dataDir() (string, error) {
	dir := f.catalogDir
	if dir == "" {
		dir = os.Getenv("COFFRE_DATA_DIR")
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("data directory: %w (pass --catalog)", err)
		}
		dir = filepath.Join(home, ".local", "share", "coffre")
	}
	return dir, nil
}

// planJSON is what --json prints.
type planJSON struct {
	Changes []apply.Change            `json:"changes"`
	Create  int                       `json:"create"`
	Change  int                       `json:"change"`
	Delete  int                       `json:"delete"`
	Outputs map[string]config.Outputs `json:"outputs"`
	Applied bool                      `json:"applied,omitempty"`
}

func cmdPlan(g *globals) *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "plan -f FILE [-f FILE…]",
		Short: "Show what apply would create, change or delete in the catalog",
		Long: `Show what apply would create, change or delete in the catalog, and the
environment presets' outputs (vault names and ARNs, plan ARNs, topic, key).
The configuration files manage the whole catalog: catalog vaults, resources,
plans and selections the files do not declare are shown as deletions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, cat, p, err := f.prepare(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer cat.Close()
			return printPlan(g, p, r, false)
		},
	}
	f.register(cmd)
	return cmd
}

func cmdApply(g *globals) *cobra.Command {
	var f policyFlags
	var autoApprove bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE [-f FILE…] [--auto-approve]",
		Short: "Reconcile the catalog with the configuration files",
		Long: `Reconcile the catalog with the configuration files: show the plan, ask for
confirmation (or take --auto-approve) and apply it. Every change is recorded in
the audit chain. Applying the same files again changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, cat, p, err := f.prepare(ctx, g)
			if err != nil {
				return err
			}
			defer cat.Close()
			if p.Empty() {
				if err := printPlan(g, p, r, false); err != nil {
					return err
				}
				if !g.jsonOut {
					fmt.Fprintln(g.stdout, "Apply complete: 0 created, 0 changed, 0 deleted.")
				}
				return nil
			}
			if !g.jsonOut {
				if err := apply.Format(g.stdout, p, r.Outputs()); err != nil {
					return err
				}
			}
			if !autoApprove {
				if !stdinIsTerminal() {
					return withCode(exitUsage, errors.New("refusing to apply without confirmation: stdin is not a terminal; run with --auto-approve"))
				}
				fmt.Fprint(g.stderr, "Apply these changes? [y/N] ")
				line, _ := bufio.NewReader(stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					fmt.Fprintln(g.stderr, "Apply cancelled; nothing changed.")
					return withCode(exitFailure, errors.New("apply cancelled"))
				}
			}
			if err := apply.Apply(ctx, cat, p); err != nil {
				return err
			}
			if g.jsonOut {
				return printPlan(g, p, r, true)
			}
			cr, up, del := p.Counts()
			fmt.Fprintf(g.stdout, "\nApply complete: %d created, %d changed, %d deleted.\n", cr, up, del)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&autoApprove, "auto-approve", false, "apply without asking for confirmation")
	return cmd
}

func printPlan(g *globals, p *apply.Plan, r *config.Resolved, applied bool) error {
	if g.jsonOut {
		cr, up, del := p.Counts()
		return g.printJSON(planJSON{Changes: p.Changes, Create: cr, Change: up, Delete: del, Outputs: r.Outputs(), Applied: applied})
	}
	return apply.Format(g.stdout, p, r.Outputs())
}

// prepare loads and expands the configuration (printing its diagnostics as
// "file:line: message"), then opens the catalog and computes the plan. On
// a configuration error the catalog is not even opened.
func (f *policyFlags) prepare(ctx context.Context, g *globals) (*config.Resolved, catalog.Catalog, *apply.Plan, error) {
	if len(f.files) == 0 {
		return nil, nil, nil, withCode(exitUsage, errors.New("no configuration file: pass -f FILE"))
	}
	cfg, diags := config.Load(f.files...)
	if err := reportDiags(g.stderr, diags); err != nil {
		return nil, nil, nil, err
	}
	r, diags := cfg.Expand()
	if err := reportDiags(g.stderr, diags); err != nil {
		return nil, nil, nil, err
	}
	if !f.skipSecrets {
		if err := r.ResolveSecrets(os.LookupEnv); err != nil {
			return nil, nil, nil, hint.With(fmt.Errorf("unreadable secret references; nothing changed:\n%w", err),
				"set them in this environment, or pass --skip-secret-check if only the server running the jobs has them")
		}
	}
	cat, err := f.openCatalog(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := apply.Diff(ctx, cat, r)
	if err != nil {
		cat.Close()
		return nil, nil, nil, err
	}
	return r, cat, p, nil
}

// reportDiags prints diagnostics as "file:line: message" and returns an
// error (exit 1) when any is an error.
func reportDiags(w io.Writer, diags hcl.Diagnostics) error {
	for _, d := range diags {
		where := "configuration"
		if d.Subject != nil {
			where = fmt.Sprintf("%s:%d", d.Subject.Filename, d.Subject.Start.Line)
		}
		sev := ""
		if d.Severity == hcl.DiagWarning {
			sev = "warning: "
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		fmt.Fprintf(w, "%s: %s%s\n", where, sev, msg)
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				n++
			}
		}
		return withCode(exitFailure, fmt.Errorf("configuration has %d error(s); nothing changed", n))
	}
	return nil
}

// openCatalog opens the PostgreSQL catalog of --catalog-dsn or the SQLite
// catalog in --catalog, $COFFRE_DATA_DIR or ~/.local/share/coffre.
func (f *policyFlags) openCatalog(ctx context.Context) (catalog.Catalog, error) {
	if f.catalogDSN != "" {
		return postgres.Open(ctx, f.catalogDSN, clock.Real{})
	}
	dir, err := f.dataDir()
	if err != nil {
		return nil, err
	}
	return sqlite.Open(dir, clock.Real{})
}
