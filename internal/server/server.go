// Package server assembles `coffre server`: the scheduler, the job runner, the lifecycle worker and the HTTP API over one catalog, with one clock, and shuts them down gracefully.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/scheduler"
)

// Defaults of Config.
const (
	DefaultTick           = 30 * time.Second
	DefaultLifecycleEvery = time.Hour
)

// Config is what a server runs.
type Config struct {
	Cat    catalog.Catalog
	Runner *jobs.Runner // Cat, Clock and Log are filled from here when unset
	Clock  clock.Clock  // default clock.Real{}
	Log    *slog.Logger // default slog.Default()

	// Listen is the API's TCP address ("127.0.0.1:8420"); with Handler nil
	// or Listen "" no HTTP server runs. Listener, when set, is used instead.
	Listen   string
	Listener net.Listener
	Handler  http.Handler

	Tick           time.Duration // scheduler period; default DefaultTick
	LifecycleEvery time.Duration // lifecycle period; default DefaultLifecycleEvery
	// Lifecycle runs one lifecycle pass (expiry, garbage collection, cold
	// storage); nil: none.
	Lifecycle func(ctx context.Context) error
	// WAL, when set, keeps the WAL streamers of continuous-backup rules
	// running (ticked with the scheduler, stopped at shutdown).
	WAL *jobs.WALSupervisor
	// Ready is called once the API listens, with its address.
	Ready func(addr string)
	// Scheduler options.
	Scheduler scheduler.Options
	// NoScheduler keeps the scheduler from running: the server serves the
	// API and runs the jobs asked of it, and no plan rule makes a job (nor
	// expires a stale one). coffre demo runs its server so, since its
	// plan's daily rule may be due while it runs.
	NoScheduler bool
}

// Run runs the server until ctx ends, then shuts down: the API stops
// accepting requests (in-flight ones get 10 s), the scheduler and lifecycle
// stop, and running jobs get the runner's ShutdownGrace to finish before
// being requeued. It returns the first fatal error (the API cannot listen).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Cat == nil || cfg.Runner == nil {
		return errors.New("server: Config needs Cat and Runner")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.LifecycleEvery <= 0 {
		cfg.LifecycleEvery = DefaultLifecycleEvery
	}
	r := cfg.Runner
	if r.Cat == nil {
		r.Cat = cfg.Cat
	}
	if r.Clock == nil {
		r.Clock = cfg.Clock
	}
	if r.Log == nil {
		r.Log = cfg.Log.With("component", "runner")
	}
	log := cfg.Log

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup

	var srv *http.Server
	if cfg.Handler != nil && (cfg.Listen != "" || cfg.Listener != nil) {
		ln := cfg.Listener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
				return fmt.Errorf("server: API cannot listen on %s: %w", cfg.Listen, err)
			}
		}
		srv = &http.Server{Handler: cfg.Handler, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				cancel(fmt.Errorf("server: API: %w", err))
			}
		}()
		log.Info("API listening", "addr", ln.Addr().String())
		if cfg.Ready != nil {
			cfg.Ready(ln.Addr().String())
		}
	} else if cfg.Ready != nil {
		cfg.Ready("")
	}

	if !cfg.NoScheduler {
		sched := scheduler.New(cfg.Cat, cfg.Clock, cfg.Scheduler)
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(ctx, cfg.Tick, func() {
				res, err := sched.Tick(ctx)
				if err != nil && ctx.Err() == nil {
					log.Error("scheduler tick failed", "component", "scheduler", "err", err)
					return
				}
				for _, e := range res.Errors {
					log.Warn("scheduler", "component", "scheduler", "err", e)
				}
				if res.Created > 0 || res.Expired > 0 {
					log.Info("scheduler tick", "component", "scheduler", "created", res.Created, "expired", res.Expired, "existing", res.Existing)
				}
			})
		}()
	}
	if cfg.Lifecycle != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(ctx, cfg.LifecycleEvery, func() {
				if err := cfg.Lifecycle(ctx); err != nil && ctx.Err() == nil {
					log.Error("lifecycle pass failed", "component", "lifecycle", "err", err)
				}
			})
		}()
	}
	if cfg.WAL != nil {
		if cfg.WAL.Log == nil {
			cfg.WAL.Log = log.With("component", "wal")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cfg.WAL.Stop()
			every(ctx, cfg.Tick, func() {
				if err := cfg.WAL.Tick(ctx); err != nil && ctx.Err() == nil {
					log.Warn("WAL supervisor", "component", "wal", "err", err)
				}
			})
		}()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()

	<-ctx.Done()
	log.Info("shutting down", "cause", context.Cause(ctx))
	if srv != nil {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("API shutdown", "err", err)
		}
		scancel()
	}
	err := <-runErr
	wg.Wait()
	log.Info("stopped")
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// every runs fn now and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
