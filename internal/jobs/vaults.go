// Package jobs runs the control plane's work: it opens the catalog's vaults with their keys, claims BACKUP and RESTORE jobs, runs them through the source adapters, records recovery points with their lifecycle, retries transient failures and recovers the jobs of crashed workers.
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/location"
)

// Keyring resolves a vault's key reference (catalog.Vault.KeyRef) to the key
// that wraps the vault's data key. It plays the part KMS plays for AWS
// Backup: the server holds key-encryption keys, the catalog holds only their
// names.
//
//   - "env:NAME": a passphrase in environment variable NAME;
//   - "file:PATH": a key file (32+ random bytes, `coffre key generate`);
//   - "" (default encryption) and any other value (a KMS key id, ARN or
//     alias): a key file in Dir, named after the reference, created (mode
//     0600) when the vault is initialized. Back Dir up separately from the
//     vaults: without it their data cannot be read.
type Keyring struct {
	Dir string
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Path returns the key file Dir holds for a reference that is not env: or
// file:.
func (k *Keyring) Path(ref string) string {
	if ref == "" {
		return filepath.Join(k.Dir, "default.key")
	}
	base := ref
	if i := strings.LastIndexAny(base, "/:"); i >= 0 && i < len(base)-1 {
		base = base[i+1:]
	}
	base = strings.Trim(unsafeName.ReplaceAllString(base, "_"), "._")
	if len(base) > 48 {
		base = base[:48]
	}
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(k.Dir, base+"-"+hex.EncodeToString(sum[:4])+".key")
}

// Provider returns the key provider for ref. With create, a missing keyring
// key file is generated; otherwise a missing key is an error that names it.
func (k *Keyring) Provider(ref string, create bool) (crypto.KeyProvider, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		pw := os.Getenv(name)
		if pw == "" {
			return nil, hint.With(fmt.Errorf("vault key: environment variable %s is not set", name),
				"export "+name+" with the vault's passphrase in the server's environment")
		}
		return &crypto.Passphrase{Secret: pw}, nil
	case strings.HasPrefix(ref, "file:"):
		p := strings.TrimPrefix(ref, "file:")
		if _, err := os.Stat(p); err != nil {
			return nil, hint.With(fmt.Errorf("vault key: %w", err), "create the key file with `coffre key generate "+p+"`, or fix the path")
		}
		return &crypto.KeyFileProvider{Path: p}, nil
	}
	if k == nil || k.Dir == "" {
		return nil, fmt.Errorf("vault key %q: no keyring directory configured", ref)
	}
	p := k.Path(ref)
	_, err := os.Stat(p)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist) && create:
		if err := os.MkdirAll(k.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if err := crypto.GenerateKeyFile(p); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("keyring: key %q: %w", ref, err)
		}
		if err := syncDir(k.Dir); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
		what := "the default key"
		if ref != "" {
			what = "key " + ref
		}
		return nil, hint.With(fmt.Errorf("keyring: %s is missing (%s)", what, p),
			"restore the keyring directory from its backup; the vault cannot be decrypted without it")
	default:
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return &crypto.KeyFileProvider{Path: p}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Vaults opens the catalog's vaults.
type Vaults interface {
	// Open returns the vault's repository (index not loaded, no lock taken),
	// creating the vault at its location first when nothing is there yet.
	// The caller closes it.
	Open(ctx context.Context, v catalog.Vault) (*repo.Repository, error)
}

// Opener is the Vaults implementation over location.Open and a Keyring.
type Opener struct {
	Keys   *Keyring
	Clock  clock.Clock  // recovery point times; default clock.Real{}
	Logger *slog.Logger // default slog.Default()

	mu    sync.Mutex
	inits map[string]*sync.Mutex
}

func (o *Opener) vaultMu(name string) *sync.Mutex {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inits == nil {
		o.inits = map[string]*sync.Mutex{}
	}
	m := o.inits[name]
	if m == nil {
		m = &sync.Mutex{}
		o.inits[name] = m
	}
	return m
}

// Open implements Vaults.
func (o *Opener) Open(ctx context.Context, v catalog.Vault) (*repo.Repository, error) {
	clk, log := o.Clock, o.Logger
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.Default()
	}
	opts := repo.Options{Clock: clk, Logger: log}
	mu := o.vaultMu(v.Name)
	mu.Lock()
	defer mu.Unlock()

	be, err := location.Open(ctx, v.Location, false)
	if blob.IsNotExist(err) && isLocal(v.Location) {
		be, err = location.Open(ctx, v.Location, true)
	}
	if err != nil {
		return nil, fmt.Errorf("open vault %s: %w", v.Name, err)
	}
	kp, kerr := o.Keys.Provider(v.KeyRef, false)
	if kerr == nil {
		r, err := repo.Open(ctx, be, kp, opts)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, repo.ErrNoVault) {
			be.Close()
			return nil, fmt.Errorf("open vault %s: %w", v.Name, err)
		}
	} else {
		// Without its key, a vault may only be created, never opened.
		_, lerr := blob.LoadAll(ctx, be, blob.Handle{Kind: blob.KindConfig, Name: "config"})
		if !blob.IsNotExist(lerr) {
			be.Close()
			return nil, fmt.Errorf("open vault %s: %w", v.Name, kerr)
		}
	}
	// Nothing at the location yet: create the vault (and its key).
	kp, err = o.Keys.Provider(v.KeyRef, true)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("create vault %s: %w", v.Name, err)
	}
	r, err := repo.Init(ctx, be, kp, repo.InitOptions{}, opts)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("create vault %s at %s: %w", v.Name, v.Location, err)
	}
	log.Info("vault created", "vault", v.Name, "location", be.Location())
	return r, nil
}

func isLocal(loc string) bool {
	return !strings.Contains(loc, "://") || strings.HasPrefix(loc, "file://")
}
