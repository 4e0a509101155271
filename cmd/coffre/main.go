// Command coffre is the coffre backup tool: vaults, backups, restores, checks
// and pruning from the command line. This file wires the global flags, opening
// the vault and exit codes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/location"
	"github.com/coffre/coffre/internal/repo/pack"
)

// Exit codes (documented in README and `coffre --help`).
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed
	exitUsage   = 2 // bad command line
	exitPartial = 3 // backup stored, but some files could not be read (PARTIAL)
	exitDamage  = 4 // check found damage
	exitLocked  = 5 // the vault is locked by another operation
	exitWrongKy = 6 // wrong passphrase or key file
)

type globals struct {
	vault        string
	passwordFile string
	keyFile      string
	jsonOut      bool
	quiet        bool
	verbose      bool
	stdout       io.Writer
	stderr       io.Writer
	log          *slog.Logger
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code, err}
}

func main() {
	hugeHeap()
	// COFFRE_TRACE=file writes a runtime execution trace (go tool trace):
	// where the goroutines of one run waited, for performance work.
	if p := os.Getenv("COFFRE_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if err := trace.Start(f); err == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				trace.Stop()
				f.Close()
				os.Exit(code)
			}
		}
	}
	if p := os.Getenv("COFFRE_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			if hp := os.Getenv("COFFRE_HEAPPROFILE"); hp != "" {
				go func() {
					time.Sleep(5 * time.Second)
					if hf, err := os.Create(hp); err == nil {
						_ = pprof.Lookup("heap").WriteTo(hf, 0)
						hf.Close()
					}
				}()
			}
			code := run(os.Args[1:], os.Stdout, os.Stderr)
			pprof.StopCPUProfile()
			f.Close()
			if hp := os.Getenv("COFFRE_MEMPROFILE"); hp != "" {
				if hf, err := os.Create(hp); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(hf, 0)
					hf.Close()
				}
			}
			os.Exit(code)
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// memoryLimit is the soft memory limit of the Go heap (see run).
const memoryLimit = 72 << 20

func run(args []string, stdout, stderr io.Writer) int {
	// A soft memory limit keeps the garbage collector ahead of the pack and
	// chunk buffers; GOMEMLIMIT overrides it. It leaves room for what Go does
	// not count: the zstd library's C memory and the binary's own pages.
	// It must also stay clear of what a backup keeps live on purpose (the
	// buffer pool's free lists, the chunks in flight, the chunkers' buffers:
	// 48-59 MB on dataset A): at 68 MiB that live heap reached the
	// collector's goal and it ran 1,035 times in one 15 s backup of A
	// (GODEBUG=gctrace=1); at 72 MiB it ran 21 times, the backup took ~7%
	// less time and peak RSS rose by 1-3 MB (86-88 MB; borg's was 93-103 MB
	// in the same benchmark runs).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	} else if strings.Contains(err.Error(), "unknown flag") || strings.Contains(err.Error(), "unknown command") ||
		strings.Contains(err.Error(), "arg(s)") || strings.Contains(err.Error(), "flag needs") || strings.Contains(err.Error(), "invalid argument") {
		code = exitUsage
	}
	switch {
	case errors.Is(err, crypto.ErrWrongKey):
		code = exitWrongKy
	case errors.Is(err, repo.ErrLocked):
		code = exitLocked
	}
	if g.jsonOut {
		_ = json.NewEncoder(stdout).Encode(map[string]any{"error": err.Error(), "hint": hint.Of(err), "exit_code": code})
	}
	fmt.Fprintf(stderr, "coffre: %v\n", err)
	if h := hint.Of(err); h != "" {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
	return code
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "coffre",
		Short: "coffre backs up filesystems and streams into deduplicated, compressed, encrypted vaults",
		Long: `coffre backs up filesystems and streams into deduplicated, compressed, encrypted vaults.

Vault: --vault (or COFFRE_VAULT) is a directory, file:///path or s3://host:port/bucket/prefix
(S3 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or their _FILE variants).
Key: a passphrase from COFFRE_PASSWORD, COFFRE_PASSWORD_FILE or --password-file, or a key file
with --key-file (COFFRE_KEY_FILE).

Exit codes: 0 success, 1 failure, 2 bad usage, 3 backup stored but PARTIAL (unreadable files),
4 check found damage, 5 vault locked by another operation, 6 wrong passphrase or key.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelWarn
			if g.verbose {
				level = slog.LevelDebug
			}
			g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(g.log)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.vault, "vault", os.Getenv("COFFRE_VAULT"), "vault location (env COFFRE_VAULT)")
	pf.StringVar(&g.passwordFile, "password-file", os.Getenv("COFFRE_PASSWORD_FILE"), "file holding the vault passphrase (env COFFRE_PASSWORD_FILE)")
	pf.StringVar(&g.keyFile, "key-file", os.Getenv("COFFRE_KEY_FILE"), "key file instead of a passphrase (env COFFRE_KEY_FILE)")
	pf.BoolVar(&g.jsonOut, "json", false, "print machine-readable JSON on stdout")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "no progress output")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "debug logs on stderr")
	backup, restore := cmdBackup(g), cmdRestore(g)
	backup.AddCommand(cmdBackupStart(g))
	restore.AddCommand(cmdRestoreStart(g))
	root.AddCommand(cmdInit(g), backup, cmdList(g), cmdShow(g), cmdLs(g), restore, cmdCheck(g),
		cmdDelete(g), cmdPrune(g), cmdUnlock(g), cmdKey(g), cmdDemo(g), cmdPlan(g), cmdApply(g), cmdAudit(g), cmdCatalog(g),
		cmdServer(g), cmdJobs(g), cmdPoints(g), cmdToken(g))
	return root
}

// keyProvider returns the key-encryption key source from flags and env.
func (g *globals) keyProvider(confirm bool) (crypto.KeyProvider, error) {
	if g.keyFile != "" {
		return &crypto.KeyFileProvider{Path: g.keyFile}, nil
	}
	if pw := os.Getenv("COFFRE_PASSWORD"); pw != "" {
		return &crypto.Passphrase{Secret: pw}, nil
	}
	if g.passwordFile != "" {
		b, err := os.ReadFile(g.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return nil, fmt.Errorf("password file %s is empty", g.passwordFile)
		}
		return &crypto.Passphrase{Secret: pw}, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(g.stderr, "vault passphrase: ")
		pw, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(g.stderr)
		if err != nil {
			return nil, err
		}
		if confirm {
			fmt.Fprint(g.stderr, "repeat passphrase: ")
			pw2, err := term.ReadPassword(int(os.Stdin.Fd()))
			fmt.Fprintln(g.stderr)
			if err != nil {
				return nil, err
			}
			if string(pw) != string(pw2) {
				return nil, errors.New("passphrases do not match")
			}
		}
		if len(pw) == 0 {
			return nil, errors.New("empty passphrase")
		}
		return &crypto.Passphrase{Secret: string(pw)}, nil
	}
	return nil, hint.With(errors.New("no passphrase or key file given"), "set COFFRE_PASSWORD or COFFRE_PASSWORD_FILE, or pass --password-file or --key-file")
}

// open opens the vault and loads its index.
func (g *globals) open(ctx context.Context, loadIndex bool) (*repo.Repository, error) {
	be, err := location.Open(ctx, g.vault, false)
	if err != nil {
		return nil, err
	}
	kp, err := g.keyProvider(false)
	if err != nil {
		be.Close()
		return nil, err
	}
	r, err := repo.Open(ctx, be, kp, repo.Options{Logger: g.log})
	if err != nil {
		be.Close()
		return nil, err
	}
	g.log.Debug("vault opened", "location", be.Location())
	if loadIndex {
		if err := r.LoadIndex(ctx); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// openLocked opens the vault, takes a lock, and only then loads the index:
// an index read before the lock could list packs a concurrent prune is
// deleting.
func (g *globals) openLocked(ctx context.Context, exclusive bool, op string, loadIndex bool) (*repo.Repository, *repo.Lock, error) {
	r, err := g.open(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	lock, err := r.Lock(ctx, exclusive, op)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	g.log.Debug("vault locked", "exclusive", exclusive, "operation", op)
	if loadIndex {
		if err := r.LoadIndex(ctx); err != nil {
			lock.Unlock()
			r.Close()
			return nil, nil, err
		}
		g.log.Debug("index loaded", "data_blobs", r.Index().Count(pack.DataBlob))
	}
	return r, lock, nil
}

// isTerminal reports whether progress should be drawn on stderr.
func (g *globals) isTerminal() bool {
	if g.quiet || g.jsonOut {
		return false
	}
	f, ok := g.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
