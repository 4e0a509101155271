package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/api"
	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/lifecycle"
	"github.com/coffre/coffre/internal/server"
)

// serverInfo is what a running server writes to DATA_DIR/server.json so
// that the CLI on the same machine finds it.
type serverInfo struct {
	URL string `json:"url"`
	PID int    `json:"pid"`
}

const (
	serverInfoFile = "server.json"
	adminTokenFile = "admin.token"
)

type serverFlags struct {
	policyFlags
	listen         string
	workers        int
	tick           time.Duration
	lifecycleEvery time.Duration
	grace          time.Duration
	logFormat      string
	perVault       int
	perResource    int
	noScheduler    bool // coffre demo: no plan rule makes a job (no flag)
}

func cmdServer(g *globals) *cobra.Command {
	f := &serverFlags{}
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: scheduler, job workers, lifecycle and the HTTP API",
		Long: `Run the control plane over the catalog: the scheduler turns plan rules into jobs,
workers run backup and restore jobs, the lifecycle worker expires and tiers recovery
points, and the HTTP JSON API serves the CLI and other clients (every call needs a token).

On first start with no token in the catalog, an admin token is written to
DATA_DIR/admin.token (mode 0600); the CLI on this machine finds the server through
DATA_DIR/server.json and that token. SIGINT or SIGTERM stops the server: running
jobs get --shutdown-grace to finish and are requeued otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.serve(cmd.Context(), f, nil)
		},
	}
	f.registerCatalog(c)
	f.registerKeyring(c)
	fl := c.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8420", "API address (host:port; port 0 picks a free one)")
	fl.IntVar(&f.workers, "workers", jobs.DefaultWorkers, "jobs run at once")
	fl.DurationVar(&f.tick, "tick", server.DefaultTick, "how often the scheduler looks for due rules")
	fl.DurationVar(&f.lifecycleEvery, "lifecycle-every", server.DefaultLifecycleEvery, "how often expired points are deleted and cold points moved")
	fl.DurationVar(&f.grace, "shutdown-grace", jobs.DefaultShutdownGrace, "how long running jobs may finish on shutdown")
	fl.IntVar(&f.perVault, "max-jobs-per-vault", jobs.DefaultLimits.PerVault, "running jobs per vault, counted over every server sharing the catalog")
	fl.IntVar(&f.perResource, "max-jobs-per-resource", jobs.DefaultLimits.PerResource, "running jobs per resource, counted over every server sharing the catalog")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	return c
}

// serve runs the server until ctx ends; ready, when set, gets the API URL.
func (g *globals) serve(ctx context.Context, f *serverFlags, ready func(url string)) error {
	var h slog.Handler
	lvl := slog.LevelInfo
	if g.verbose {
		lvl = slog.LevelDebug
	}
	switch f.logFormat {
	case "text":
		h = slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl})
	case "json":
		h = slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: lvl})
	default:
		return withCode(exitUsage, fmt.Errorf("--log-format %q: want text or json", f.logFormat))
	}
	log := slog.New(h)
	cat, err := f.openCatalog(ctx)
	if err != nil {
		return err
	}
	defer cat.Close()
	keys, err := f.keyring()
	if err != nil {
		return err
	}
	var dataDir string
	if f.catalogDSN == "" {
		if dataDir, err = f.dataDir(); err != nil {
			return err
		}
		if err := bootstrapToken(ctx, cat, dataDir, log); err != nil {
			return err
		}
	}
	clk := clock.Real{}
	vaults := &jobs.Opener{Keys: keys, Clock: clk, Logger: log.With("component", "vault")}
	if f.workers < 1 || f.perVault < 1 || f.perResource < 1 {
		return withCode(exitUsage, errors.New("--workers, --max-jobs-per-vault and --max-jobs-per-resource must be at least 1"))
	}
	runner := &jobs.Runner{Vaults: vaults, Workers: f.workers, ShutdownGrace: f.grace,
		Limits: catalog.ClaimLimits{PerVault: f.perVault, PerResource: f.perResource}}
	lc := &lifecycle.Worker{Cat: cat, Vaults: vaults, Clock: clk, Log: log.With("component", "lifecycle")}
	cfg := server.Config{
		Cat: cat, Runner: runner, Clock: clk, Log: log, Listen: f.listen,
		Handler: (&api.Server{Cat: cat, Clock: clk, Log: log.With("component", "api")}).Handler(),
		Tick:    f.tick, LifecycleEvery: f.lifecycleEvery, NoScheduler: f.noScheduler,
		WAL: &jobs.WALSupervisor{Cat: cat, Vaults: vaults},
		Lifecycle: func(ctx context.Context) error {
			res, err := lc.RunOnce(ctx)
			for _, e := range res.Errors {
				log.Warn("lifecycle", "component", "lifecycle", "err", e)
			}
			return err
		},
		Ready: func(addr string) {
			url := "http://" + addr
			if dataDir != "" {
				if err := writeFileAtomic(filepath.Join(dataDir, serverInfoFile), mustJSON(serverInfo{URL: url, PID: os.Getpid()}), 0o644); err != nil {
					log.Warn("cannot write server.json; the CLI will need --server", "err", err)
				}
			}
			fmt.Fprintf(g.stdout, "coffre server listening on %s\n", url)
			if ready != nil {
				ready(url)
			}
		},
	}
	err = server.Run(ctx, cfg)
	if dataDir != "" {
		_ = os.Remove(filepath.Join(dataDir, serverInfoFile))
	}
	return err
}

// bootstrapToken writes an admin token to DATA_DIR/admin.token when the
// catalog has no token at all, so that the first server is usable at once.
func bootstrapToken(ctx context.Context, cat catalog.Catalog, dataDir string, log *slog.Logger) error {
	toks, err := cat.ListTokens(ctx)
	if err != nil || len(toks) > 0 {
		return err
	}
	tok, rec, err := api.NewToken(ctx, cat, "admin")
	if err != nil {
		return err
	}
	p := filepath.Join(dataDir, adminTokenFile)
	if err := writeFileAtomic(p, []byte(tok+"\n"), 0o600); err != nil {
		_ = cat.DeleteToken(ctx, rec.ID)
		return fmt.Errorf("write admin token: %w", err)
	}
	log.Info("admin token created", "token_id", rec.ID, "file", p)
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// writeFileAtomic writes b to p through a temp file, fsync and rename.
func writeFileAtomic(p string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// serverFlagsCommon are the flags of commands that talk to a server or, with
// none configured, work on the local catalog.
type clientFlags struct {
	policyFlags
	server    string
	tokenFile string
}

func (f *clientFlags) register(c *cobra.Command) {
	f.registerCatalog(c)
	f.registerKeyring(c)
	c.Flags().StringVar(&f.server, "server", "", "coffre server URL (default $COFFRE_SERVER, or the server running on this data dir)")
	c.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the API token (default $COFFRE_TOKEN, or DATA_DIR/admin.token)")
}

// client returns an API client when a server is configured or runs on the
// data dir, else nil.
func (f *clientFlags) client() (*api.Client, error) {
	url := f.server
	if url == "" {
		url = os.Getenv("COFFRE_SERVER")
	}
	dataDir, _ := f.dataDir()
	if url == "" && f.catalogDSN == "" && dataDir != "" {
		b, err := os.ReadFile(filepath.Join(dataDir, serverInfoFile))
		if err == nil {
			var si serverInfo
			if json.Unmarshal(b, &si) == nil && si.URL != "" && processAlive(si.PID) {
				url = si.URL
			}
		}
	}
	if url == "" {
		return nil, nil
	}
	tok := os.Getenv("COFFRE_TOKEN")
	tf := f.tokenFile
	if tf == "" && tok == "" && dataDir != "" {
		tf = filepath.Join(dataDir, adminTokenFile)
	}
	if tf != "" {
		b, err := os.ReadFile(tf)
		if err != nil {
			return nil, hint.With(fmt.Errorf("API token: %w", err), "pass --token-file or set COFFRE_TOKEN (create one with `coffre token create NAME` while the server is stopped)")
		}
		tok = string(trimNL(b))
	}
	if tok == "" {
		return nil, hint.With(errors.New("no API token for "+url), "set COFFRE_TOKEN or pass --token-file")
	}
	return &api.Client{BaseURL: url, Token: tok}, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscall.Signal(0)) == nil
}
