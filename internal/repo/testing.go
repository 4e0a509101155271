package repo

import (
	"context"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
)

// TestPassphrase is the passphrase of vaults made by the Test helpers.
const TestPassphrase = "correct horse battery staple"

// TestKeyProvider returns a passphrase key provider with the cheap test KDF.
// For tests only.
func TestKeyProvider(secret string) crypto.KeyProvider {
	return &crypto.Passphrase{Secret: secret, Params: crypto.TestKDF}
}

// TestInitOptions are small-pack vault parameters for tests: 1 MiB packs, so
// that a few MiB of data span several packs.
func TestInitOptions() InitOptions {
	o := DefaultInitOptions
	o.PackSize = 1 << 20
	return o
}

// TestInit creates a vault with TestPassphrase on be and fails the test on
// error. For tests only.
func TestInit(t testing.TB, be blob.Storage, io InitOptions, o Options) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, TestKeyProvider(TestPassphrase), io, o)
	if err != nil {
		t.Fatalf("init test vault: %v", err)
	}
	return r
}

// TestOpen opens the vault on be with TestPassphrase and loads its index;
// it fails the test on error. For tests only.
func TestOpen(t testing.TB, be blob.Storage, o Options) *Repository {
	t.Helper()
	ctx := context.Background()
	r, err := Open(ctx, be, TestKeyProvider(TestPassphrase), o)
	if err != nil {
		t.Fatalf("open test vault: %v", err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatalf("load index of test vault: %v", err)
	}
	return r
}

// TestRepository returns a new vault on in-memory storage, protected by
// TestPassphrase with the cheap test KDF, and that storage (to open more
// handles on the same vault). For tests only.
func TestRepository(t testing.TB) (*Repository, blob.Storage) {
	t.Helper()
	be := mem.New()
	return TestInit(t, be, TestInitOptions(), Options{}), be
}
