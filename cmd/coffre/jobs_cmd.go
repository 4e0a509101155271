package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/api"
	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/jobs"
)

// controlPlane is what the job commands need: a server through its API, or
// the local catalog with jobs run in this process.
type controlPlane interface {
	StartBackup(ctx context.Context, req api.BackupRequest, wait bool) (api.Job, error)
	StartRestore(ctx context.Context, req api.RestoreRequest, wait bool) (api.Job, error)
	ListJobs(ctx context.Context, q api.JobQuery) ([]api.Job, error)
	GetJob(ctx context.Context, id string) (api.Job, error)
	AbortJob(ctx context.Context, id string) (api.Job, error)
	ListRecoveryPoints(ctx context.Context, vault, resource string) ([]api.RecoveryPoint, error)
	Close() error
}

// open returns the server's API when one is configured (or runs on the data
// dir), else the local catalog.
func (f *clientFlags) open(ctx context.Context, g *globals) (controlPlane, error) {
	c, err := f.client()
	if err != nil {
		return nil, err
	}
	if c != nil {
		g.log.Debug("talking to server", "url", c.BaseURL)
		return remoteCP{c}, nil
	}
	cat, err := f.openCatalog(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := f.keyring()
	if err != nil {
		cat.Close()
		return nil, err
	}
	g.log.Debug("no server configured: using the local catalog")
	r := &jobs.Runner{Cat: cat, Vaults: &jobs.Opener{Keys: keys, Logger: g.log}, Log: g.log}
	return &localCP{cat: cat, runner: r}, nil
}

type remoteCP struct{ c *api.Client }

func (r remoteCP) wait(ctx context.Context, j api.Job, err error, wait bool) (api.Job, error) {
	if err != nil || !wait {
		return j, err
	}
	return r.c.WaitJob(ctx, j.ID, 500*time.Millisecond)
}
func (r remoteCP) StartBackup(ctx context.Context, req api.BackupRequest, wait bool) (api.Job, error) {
	j, err := r.c.StartBackup(ctx, req)
	return r.wait(ctx, j, err, wait)
}
func (r remoteCP) StartRestore(ctx context.Context, req api.RestoreRequest, wait bool) (api.Job, error) {
	j, err := r.c.StartRestore(ctx, req)
	return r.wait(ctx, j, err, wait)
}
func (r remoteCP) ListJobs(ctx context.Context, q api.JobQuery) ([]api.Job, error) {
	return r.c.ListJobs(ctx, q)
}
func (r remoteCP) GetJob(ctx context.Context, id string) (api.Job, error) { return r.c.GetJob(ctx, id) }
func (r remoteCP) AbortJob(ctx context.Context, id string) (api.Job, error) {
	return r.c.AbortJob(ctx, id)
}
func (r remoteCP) ListRecoveryPoints(ctx context.Context, vault, resource string) ([]api.RecoveryPoint, error) {
	return r.c.ListRecoveryPoints(ctx, vault, resource)
}
func (r remoteCP) Close() error { return nil }

// localCP works on the catalog directly and runs jobs in this process.
type localCP struct {
	cat    catalog.Catalog
	runner *jobs.Runner
}

func (l *localCP) Close() error { return l.cat.Close() }

func (l *localCP) audit(ctx context.Context, action, object string) error {
	_, err := l.cat.AppendAudit(ctx, catalog.AuditEvent{Actor: "cli:" + localUser(), Action: action, Object: object, Outcome: "ok"})
	return err
}

func (l *localCP) run(ctx context.Context, j catalog.Job) (api.Job, error) {
	if err := l.audit(ctx, "cli start "+strings.ToLower(string(j.Kind)), "job/"+j.ID); err != nil {
		return api.FromJob(j), err
	}
	done, err := l.runner.RunJob(ctx, j.ID)
	return api.FromJob(done), err
}

func (l *localCP) StartBackup(ctx context.Context, req api.BackupRequest, _ bool) (api.Job, error) {
	j, err := api.NewBackupJob(ctx, l.cat, time.Now(), req)
	if err != nil {
		return api.Job{}, localErr(err)
	}
	return l.run(ctx, j)
}

func (l *localCP) StartRestore(ctx context.Context, req api.RestoreRequest, _ bool) (api.Job, error) {
	j, err := api.NewRestoreJob(ctx, l.cat, time.Now(), req)
	if err != nil {
		return api.Job{}, localErr(err)
	}
	return l.run(ctx, j)
}

// localErr turns the API's request errors into CLI errors with their hint.
func localErr(err error) error {
	if e, ok := api.AsError(err); ok {
		return hint.With(errors.New(e.Message), e.Hint)
	}
	return err
}

func (l *localCP) ListJobs(ctx context.Context, q api.JobQuery) ([]api.Job, error) {
	js, err := l.cat.ListJobs(ctx, catalog.JobFilter{States: q.States, Kind: q.Kind, Resource: q.Resource, Vault: q.Vault, Limit: q.Limit})
	out := make([]api.Job, len(js))
	for i, j := range js {
		out[i] = api.FromJob(j)
	}
	return out, err
}

func (l *localCP) GetJob(ctx context.Context, id string) (api.Job, error) {
	j, err := l.cat.GetJob(ctx, id)
	return api.FromJob(j), err
}

func (l *localCP) AbortJob(ctx context.Context, id string) (api.Job, error) {
	j, err := l.cat.GetJob(ctx, id)
	if err != nil {
		return api.Job{}, err
	}
	if catalog.Terminal(j.State) {
		return api.FromJob(j), fmt.Errorf("job %s is already %s", id, j.State)
	}
	msg := "aborted by cli:" + localUser()
	j, err = l.cat.TransitionJob(ctx, id, j.State, catalog.StateAborted, catalog.JobUpdate{Message: &msg})
	if err != nil {
		return api.FromJob(j), err
	}
	return api.FromJob(j), l.audit(ctx, "cli abort job", "job/"+id)
}

func (l *localCP) ListRecoveryPoints(ctx context.Context, vault, resource string) ([]api.RecoveryPoint, error) {
	ps, err := l.cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: vault, Resource: resource})
	out := make([]api.RecoveryPoint, len(ps))
	for i, p := range ps {
		out[i] = api.FromRecoveryPoint(p)
	}
	return out, err
}

// jobError turns a job that did not complete into the command's error.
func jobError(j api.Job) error {
	switch j.State {
	case catalog.StateCompleted:
		return nil
	case catalog.StatePartial:
		return withCode(exitPartial, fmt.Errorf("job %s is PARTIAL: %s", j.ID, j.Message))
	case catalog.StateCreated, catalog.StatePending, catalog.StateRunning:
		return nil // not waited for
	}
	return fmt.Errorf("job %s ended %s: %s", j.ID, j.State, j.Message)
}

func (g *globals) printJob(j api.Job) error {
	if g.jsonOut {
		return g.printJSON(j)
	}
	fmt.Fprintf(g.stdout, "job %s %s %s", j.ID, j.Kind, j.State)
	if j.RecoveryPoint != "" {
		fmt.Fprintf(g.stdout, " recovery point %s", short(j.RecoveryPoint))
	}
	if j.Message != "" {
		fmt.Fprintf(g.stdout, ": %s", j.Message)
	}
	fmt.Fprintln(g.stdout)
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// startJob opens the control plane, starts a job with start, prints it and
// turns its end state into the command's error.
func (g *globals) startJob(ctx context.Context, f *clientFlags, start func(context.Context, controlPlane) (api.Job, error)) error {
	cp, err := f.open(ctx, g)
	if err != nil {
		return err
	}
	defer cp.Close()
	j, err := start(ctx, cp)
	if err != nil {
		return err
	}
	if err := g.printJob(j); err != nil {
		return err
	}
	return jobError(j)
}

func cmdBackupStart(g *globals) *cobra.Command {
	f := &clientFlags{}
	var req api.BackupRequest
	var noWait bool
	c := &cobra.Command{
		Use:   "start --resource ID --vault NAME",
		Short: "Start an on-demand backup job of a protected resource (through the server, or in this process without one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Resource == "" || req.Vault == "" {
				return withCode(exitUsage, errors.New("--resource and --vault are required"))
			}
			return g.startJob(cmd.Context(), f, func(ctx context.Context, cp controlPlane) (api.Job, error) {
				return cp.StartBackup(ctx, req, !noWait)
			})
		},
	}
	f.register(c)
	c.Flags().StringVar(&req.Resource, "resource", "", "protected resource id (as declared in HCL)")
	c.Flags().StringVar(&req.Vault, "vault", "", "vault name")
	c.Flags().IntVar(&req.DeleteAfterDays, "delete-after-days", 0, "expire the recovery point after this many days (default: keep)")
	c.Flags().IntVar(&req.MoveToColdStorageAfterDays, "cold-after-days", 0, "move the recovery point's data to cold storage after this many days")
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the server has queued the job")
	return c
}

func cmdRestoreStart(g *globals) *cobra.Command {
	f := &clientFlags{}
	var req api.RestoreRequest
	var noWait bool
	var targetSettings []string
	c := &cobra.Command{
		Use:   "start --vault NAME --recovery-point ID --target DIR | --vault NAME --resource ID --to-time T --target-setting data_dir=DIR --target-setting port=P",
		Short: "Start a restore job of a recovery point in the catalog (through the server, or in this process without one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.ToTime == "" && (req.Vault == "" || req.RecoveryPoint == "" || (req.Target == "" && len(targetSettings) == 0)) {
				return withCode(exitUsage, errors.New("--vault, --recovery-point and --target (or --target-setting for a database) are required"))
			}
			if req.ToTime != "" && (req.Vault == "" || req.Resource == "" || len(targetSettings) == 0) {
				return withCode(exitUsage, errors.New("--to-time needs --vault, --resource and --target-setting data_dir=DIR --target-setting port=PORT"))
			}
			if req.Target != "" {
				if abs, err := filepath.Abs(req.Target); err == nil {
					req.Target = abs
				}
			}
			if len(targetSettings) > 0 {
				ts, err := parseTags(targetSettings)
				if err != nil {
					return withCode(exitUsage, fmt.Errorf("--target-setting: %w", err))
				}
				req.TargetSettings = ts
			}
			return g.startJob(cmd.Context(), f, func(ctx context.Context, cp controlPlane) (api.Job, error) {
				return cp.StartRestore(ctx, req, !noWait)
			})
		},
	}
	f.register(c)
	c.Flags().StringVar(&req.Vault, "vault", "", "vault name")
	c.Flags().StringVar(&req.RecoveryPoint, "recovery-point", "", "recovery point id (at least 8 characters)")
	c.Flags().StringVar(&req.Target, "target", "", "directory to restore into, new or empty (on the server's machine)")
	c.Flags().StringVar(&req.Path, "path", "", "restore only this path of the recovery point")
	c.Flags().StringVar(&req.ToTime, "to-time", "", "point-in-time restore of a PostgreSQL resource under a continuous-backup rule, e.g. 2026-11-25T14:03:00Z")
	c.Flags().StringVar(&req.Resource, "resource", "", "with --to-time: the PostgreSQL resource")
	c.Flags().StringArrayVar(&targetSettings, "target-setting", nil, "key=value overriding the resource's connection settings for a database target, e.g. database=app_restored (repeatable)")
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the server has queued the job")
	return c
}

func cmdJobs(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "jobs", Short: "List, show and abort backup and restore jobs"}
	f := &clientFlags{}
	var q api.JobQuery
	var states []string
	list := &cobra.Command{
		Use: "list", Short: "List jobs, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range states {
				for _, p := range strings.Split(s, ",") {
					q.States = append(q.States, catalog.JobState(strings.ToUpper(strings.TrimSpace(p))))
				}
			}
			q.Kind = catalog.JobKind(strings.ToUpper(string(q.Kind)))
			cp, err := f.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer cp.Close()
			js, err := cp.ListJobs(cmd.Context(), q)
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(js)
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tSTATE\tCREATED\tRESOURCE\tVAULT\tRECOVERY POINT\tMESSAGE")
			for _, j := range js {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, j.State, fmtTime(j.CreatedAt), j.Resource, j.Vault,
					short(j.RecoveryPoint), truncate(j.Message, 60))
			}
			return tw.Flush()
		},
	}
	f.register(list)
	list.Flags().StringArrayVar(&states, "state", nil, "only jobs in these states (repeatable or comma-separated)")
	list.Flags().StringVar((*string)(&q.Kind), "kind", "", "only jobs of this kind (backup, restore)")
	list.Flags().StringVar(&q.Resource, "resource", "", "only jobs of this resource")
	list.Flags().StringVar(&q.Vault, "vault", "", "only jobs of this vault")
	list.Flags().IntVar(&q.Limit, "limit", 0, "at most this many jobs")

	fs := &clientFlags{}
	show := &cobra.Command{
		Use: "show ID", Short: "Show one job", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cp, err := fs.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer cp.Close()
			j, err := cp.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(j)
			}
			return g.printJSON(j) // the whole record, readable
		},
	}
	fs.register(show)
	fa := &clientFlags{}
	abort := &cobra.Command{
		Use: "abort ID", Short: "Abort a queued or running job", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cp, err := fa.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer cp.Close()
			j, err := cp.AbortJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printJob(j)
		},
	}
	fa.register(abort)
	c.AddCommand(list, show, abort)
	return c
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func cmdPoints(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "points", Short: "Recovery points in the catalog (see `coffre list` for a vault's own listing)"}
	f := &clientFlags{}
	var vault, resource string
	list := &cobra.Command{
		Use: "list", Short: "List recovery points with their lifecycle", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cp, err := f.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer cp.Close()
			ps, err := cp.ListRecoveryPoints(cmd.Context(), vault, resource)
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(ps)
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVAULT\tRESOURCE\tCREATED\tSTATUS\tSIZE\tTIER\tCOLD AT\tDELETE AT")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(p.ID), p.Vault, p.Resource, fmtTime(p.CreatedAt), p.Status,
					humanBytes(p.SizeBytes), p.Tier, fmtTime(p.MoveToColdAt), fmtTime(p.DeleteAt))
			}
			return tw.Flush()
		},
	}
	f.register(list)
	list.Flags().StringVar(&vault, "vault", "", "only points of this vault")
	list.Flags().StringVar(&resource, "resource", "", "only points of this resource")
	c.AddCommand(list)
	return c
}

func cmdToken(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Create, list and delete API tokens (on the catalog directly)"}
	mk := func(use, short string, args cobra.PositionalArgs, fn func(ctx context.Context, cat catalog.Catalog, args []string) error) *cobra.Command {
		f := &policyFlags{}
		sc := &cobra.Command{Use: use, Short: short, Args: args, RunE: func(cmd *cobra.Command, a []string) error {
			cat, err := f.openCatalog(cmd.Context())
			if err != nil {
				return err
			}
			defer cat.Close()
			return fn(cmd.Context(), cat, a)
		}}
		f.registerCatalog(sc)
		return sc
	}
	create := mk("create NAME", "Create a token; it is printed once and only its hash is stored", cobra.ExactArgs(1), func(ctx context.Context, cat catalog.Catalog, a []string) error {
		tok, rec, err := api.NewToken(ctx, cat, a[0])
		if err != nil {
			return err
		}
		if _, err := cat.AppendAudit(ctx, catalog.AuditEvent{Actor: "cli:" + localUser(), Action: "token.create", Object: "token/" + rec.ID, Outcome: "ok"}); err != nil {
			return err
		}
		if g.jsonOut {
			return g.printJSON(map[string]string{"id": rec.ID, "name": rec.Name, "token": tok})
		}
		fmt.Fprintln(g.stdout, tok)
		fmt.Fprintf(g.stderr, "token %s (%s) created; it is not shown again\n", rec.ID, rec.Name)
		return nil
	})
	list := mk("list", "List tokens (never their secrets)", cobra.NoArgs, func(ctx context.Context, cat catalog.Catalog, a []string) error {
		ts, err := cat.ListTokens(ctx)
		if err != nil {
			return err
		}
		if g.jsonOut {
			out := make([]api.Token, len(ts))
			for i, t := range ts {
				out[i] = api.FromToken(t)
			}
			return g.printJSON(out)
		}
		tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED\tLAST USED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.CreatedAt.Local().Format(time.DateTime), fmtOptTime(t.LastUsedAt))
		}
		return tw.Flush()
	})
	del := mk("delete ID", "Delete (revoke) a token", cobra.ExactArgs(1), func(ctx context.Context, cat catalog.Catalog, a []string) error {
		if err := cat.DeleteToken(ctx, a[0]); err != nil {
			return err
		}
		_, err := cat.AppendAudit(ctx, catalog.AuditEvent{Actor: "cli:" + localUser(), Action: "token.delete", Object: "token/" + a[0], Outcome: "ok"})
		return err
	})
	c.AddCommand(create, list, del)
	return c
}

func fmtOptTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}

// localUser names the OS user for audit events of local CLI actions.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return fmt.Sprintf("uid-%d", os.Getuid())
}
