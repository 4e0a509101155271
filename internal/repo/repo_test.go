package repo_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/testutil"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/blob/mem"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
)

func TestInitAndOpenWithPassphrase(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{})
	id := r.Config().ID

	r2, err := repo.Open(ctx, be, repo.TestKeyProvider(repo.TestPassphrase), repo.Options{})
	if err != nil {
		t.Fatalf("Open with the right passphrase: %v", err)
	}
	if r2.Config().ID != id || r2.Config().Version != repo.FormatVersion {
		t.Errorf("opened config %+v, want id %s version %d", r2.Config(), id, repo.FormatVersion)
	}
	if r2.Key().Enc != r.Key().Enc || r2.Key().ID != r.Key().ID {
		t.Error("opened vault has another data key than the one Init made")
	}

	_, err = repo.Open(ctx, be, repo.TestKeyProvider("wrong passphrase"), repo.Options{})
	if !errors.Is(err, crypto.ErrWrongKey) {
		t.Fatalf("Open with a wrong passphrase = %v, want an error wrapping crypto.ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "passphrase opens none of the") {
		t.Errorf("wrong-passphrase error %q does not say the passphrase opens none of the keys", err)
	}
	if hint.Of(err) == "" {
		t.Errorf("wrong-passphrase error %q has no hint", err)
	}
}

func TestOpenEmptyLocation(t *testing.T) {
	ctx := context.Background()
	for name, be := range map[string]blob.Storage{"mem": mem.New(), "local": mustLocal(t)} {
		t.Run(name, func(t *testing.T) {
			_, err := repo.Open(ctx, be, repo.TestKeyProvider(repo.TestPassphrase), repo.Options{})
			if !errors.Is(err, repo.ErrNoVault) {
				t.Fatalf("Open of an empty location = %v, want ErrNoVault", err)
			}
		})
	}
}

func mustLocal(t *testing.T) *local.Storage {
	t.Helper()
	s, err := local.Create(filepath.Join(t.TempDir(), "vault"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInitRefusesExistingVault(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{})
	id := r.Config().ID
	_, err := repo.Init(ctx, be, repo.TestKeyProvider("other"), repo.TestInitOptions(), repo.Options{})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Init over an existing vault = %v, want an 'already exists' error", err)
	}
	// The existing vault is untouched: same id, and the second passphrase
	// was not added.
	r2 := repo.TestOpen(t, be, repo.Options{})
	if r2.Config().ID != id {
		t.Errorf("vault id changed from %s to %s", id, r2.Config().ID)
	}
	if _, err := repo.Open(ctx, be, repo.TestKeyProvider("other"), repo.Options{}); !errors.Is(err, crypto.ErrWrongKey) {
		t.Errorf("refused Init left a usable key for its passphrase: Open = %v", err)
	}
}

func TestKeyFileProvider(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kf1, kf2 := filepath.Join(dir, "k1"), filepath.Join(dir, "k2")
	for _, p := range []string{kf1, kf2} {
		if err := crypto.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := crypto.GenerateKeyFile(kf1); err == nil {
		t.Error("GenerateKeyFile overwrote an existing file")
	}
	be := mem.New()
	r, err := repo.Init(ctx, be, &crypto.KeyFileProvider{Path: kf1}, repo.TestInitOptions(), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := repo.Open(ctx, be, &crypto.KeyFileProvider{Path: kf1}, repo.Options{})
	if err != nil {
		t.Fatalf("Open with the key file: %v", err)
	}
	if r2.Config().ID != r.Config().ID {
		t.Error("opened another vault")
	}
	_, err = repo.Open(ctx, be, &crypto.KeyFileProvider{Path: kf2}, repo.Options{})
	if !errors.Is(err, crypto.ErrWrongKey) {
		t.Errorf("Open with another key file = %v, want ErrWrongKey", err)
	}
	// A passphrase does not open a key-file-only vault, and says why.
	_, err = repo.Open(ctx, be, repo.TestKeyProvider(repo.TestPassphrase), repo.Options{})
	if !errors.Is(err, crypto.ErrWrongKey) || !strings.Contains(err.Error(), "no passphrase key") {
		t.Errorf("Open of a key-file vault with a passphrase = %v, want ErrWrongKey saying it has no passphrase key", err)
	}
}

func TestAddKey(t *testing.T) {
	ctx := context.Background()
	r, be := repo.TestRepository(t)
	if _, err := r.AddKey(ctx, repo.TestKeyProvider("second passphrase")); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{repo.TestPassphrase, "second passphrase"} {
		r2, err := repo.Open(ctx, be, repo.TestKeyProvider(pw), repo.Options{})
		if err != nil {
			t.Fatalf("Open with %q: %v", pw, err)
		}
		if r2.Key().Enc != r.Key().Enc {
			t.Fatalf("passphrase %q unwrapped another data key", pw)
		}
	}
	_, err := repo.Open(ctx, be, repo.TestKeyProvider("third"), repo.Options{})
	if !errors.Is(err, crypto.ErrWrongKey) || !strings.Contains(err.Error(), "2 passphrase key(s)") {
		t.Errorf("Open with an unknown passphrase = %v, want ErrWrongKey naming the 2 keys tried", err)
	}
}

func TestSaveLoadBlobRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, be := repo.TestRepository(t)
	cases := map[string][]byte{
		"text":     testutil.Text(300 << 10),
		"random":   testutil.RandomBytes(1, 200<<10),
		"empty":    {},
		"tiny":     []byte("x"),
		"4MiB":     testutil.RandomBytes(2, 4<<20),
		"4MiBtext": testutil.Text(4 << 20),
	}
	ids := map[string]crypto.ID{}
	for name, data := range cases {
		id, added, err := r.SaveBlob(ctx, pack.DataBlob, data)
		if err != nil {
			t.Fatalf("SaveBlob(%s): %v", name, err)
		}
		if !added {
			t.Errorf("SaveBlob(%s) added = false for new data", name)
		}
		if id != r.Hash(data) {
			t.Errorf("SaveBlob(%s) id %s, want the content hash %s", name, id.Short(), r.Hash(data).Short())
		}
		ids[name] = id
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, r *repo.Repository) {
		for name, data := range cases {
			got, err := r.LoadBlob(ctx, pack.DataBlob, ids[name], nil)
			if err != nil {
				t.Fatalf("LoadBlob(%s): %v", name, err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("LoadBlob(%s) returned %d bytes that differ from the %d saved", name, len(got), len(data))
			}
		}
	}
	check(t, r)
	check(t, repo.TestOpen(t, be, repo.Options{}))
	// Compression happened: the text blobs take much less than their size.
	if st := r.Stats(); st.StoredAdded >= st.BytesAdded-int64(len(cases["4MiBtext"]))/2 {
		t.Errorf("stored %d bytes for %d plaintext bytes: text was not compressed", st.StoredAdded, st.BytesAdded)
	}
	// A tree blob with the same content is a different blob.
	if r.Index().Has(pack.TreeBlob, ids["text"]) {
		t.Error("a data blob is visible as a tree blob")
	}
}

func TestSaveBlobDeduplicates(t *testing.T) {
	ctx := context.Background()
	r, be := repo.TestRepository(t)
	data := testutil.Text(100 << 10)
	id1, added1, err := r.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	id2, added2, err := r.SaveBlob(ctx, pack.DataBlob, bytes.Clone(data))
	if err != nil {
		t.Fatal(err)
	}
	if !added1 || added2 || id1 != id2 {
		t.Fatalf("two saves of the same data: (%s, %v), (%s, %v); want same id, added only the first time", id1.Short(), added1, id2.Short(), added2)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.Index().Count(pack.DataBlob); n != 1 {
		t.Errorf("index holds %d data blobs, want 1", n)
	}
	if st := r.Stats(); st.BlobsAdded != 1 || st.PacksWritten != 1 {
		t.Errorf("stats %+v, want 1 blob in 1 pack", st)
	}
	// Known to the vault: a new handle does not store it again.
	r2 := repo.TestOpen(t, be, repo.Options{})
	if _, added, err := r2.SaveBlob(ctx, pack.DataBlob, data); err != nil || added {
		t.Errorf("SaveBlob of a stored blob in a new handle: added %v, err %v; want false, nil", added, err)
	}
	if err := r2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r2.Stats(); st.PacksWritten != 0 {
		t.Errorf("new handle wrote %d packs for known data", st.PacksWritten)
	}
}

func TestBlobVisibleOnlyAfterFlush(t *testing.T) {
	ctx := context.Background()
	r1, be := repo.TestRepository(t)
	data := testutil.Text(10 << 10)
	id, _, err := r1.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	r2 := repo.TestOpen(t, be, repo.Options{})
	if r2.Index().Has(pack.DataBlob, id) {
		t.Fatal("blob visible in another handle before Flush")
	}
	_, err = r2.LoadBlob(ctx, pack.DataBlob, id, nil)
	if !errors.Is(err, repo.ErrBlobMissing) {
		t.Errorf("LoadBlob before Flush = %v, want ErrBlobMissing", err)
	}
	if err := r1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r2.LoadBlob(ctx, pack.DataBlob, id, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadBlob after Flush and LoadIndex: %d bytes, err %v", len(got), err)
	}
}

// localVault makes a vault on a local directory with one flushed data blob
// and returns its storage, the blob, its id and location.
func localVault(t *testing.T) (*local.Storage, []byte, crypto.ID) {
	t.Helper()
	be := mustLocal(t)
	r := repo.TestInit(t, be, repo.TestInitOptions(), repo.Options{})
	data := testutil.Text(64 << 10)
	id, _, err := r.SaveBlob(context.Background(), pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return be, data, id
}

// packPath returns the file holding blob id, checking it is where the
// layout says: <root>/data/<first two hex digits>/<pack id>.
func packPath(t *testing.T, be *local.Storage, r *repo.Repository, id crypto.ID) (string, int64, int64, crypto.ID) {
	t.Helper()
	l, ok := r.Index().Lookup(pack.DataBlob, id)
	if !ok {
		t.Fatalf("blob %s not indexed", id.Short())
	}
	name := l.Pack.String()
	p := filepath.Join(be.Root(), "data", name[:2], name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("pack file: %v", err)
	}
	return p, int64(l.Entry.Offset), int64(l.Entry.Length), l.Pack
}

func checkBlobError(t *testing.T, err error, id, packID crypto.ID) {
	t.Helper()
	if err == nil {
		t.Fatal("LoadBlob of a damaged blob succeeded")
	}
	var be *repo.BlobError
	if !errors.As(err, &be) {
		t.Fatalf("error %v is not a *repo.BlobError", err)
	}
	if be.ID != id || be.Pack != packID {
		t.Errorf("BlobError names blob %s in pack %s, want %s in %s", be.ID.Short(), be.Pack.Short(), id.Short(), packID.Short())
	}
	if msg := err.Error(); !strings.Contains(msg, id.Short()) || !strings.Contains(msg, packID.Short()) {
		t.Errorf("error %q does not name blob %s and pack %s", msg, id.Short(), packID.Short())
	}
	if hint.Of(err) == "" {
		t.Errorf("error %q has no hint", err)
	}
}

func TestCorruptPackByte(t *testing.T) {
	be, _, id := localVault(t)
	r := repo.TestOpen(t, be, repo.Options{})
	p, off, length, packID := packPath(t, be, r, id)
	flipByteAt(t, p, off+length/2)
	_, err := r.LoadBlob(context.Background(), pack.DataBlob, id, nil)
	checkBlobError(t, err, id, packID)
	if !errors.Is(err, crypto.ErrAuth) {
		t.Errorf("error %v does not wrap crypto.ErrAuth", err)
	}
}

func TestTruncatedPack(t *testing.T) {
	be, _, id := localVault(t)
	r := repo.TestOpen(t, be, repo.Options{})
	p, off, length, packID := packPath(t, be, r, id)
	if err := os.Truncate(p, off+length/2); err != nil {
		t.Fatal(err)
	}
	_, err := r.LoadBlob(context.Background(), pack.DataBlob, id, nil)
	checkBlobError(t, err, id, packID)
}

func TestMissingPack(t *testing.T) {
	be, _, id := localVault(t)
	r := repo.TestOpen(t, be, repo.Options{})
	p, _, _, packID := packPath(t, be, r, id)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	_, err := r.LoadBlob(context.Background(), pack.DataBlob, id, nil)
	checkBlobError(t, err, id, packID)
	if !blob.IsNotExist(err) {
		t.Errorf("error %v does not wrap blob.ErrNotExist", err)
	}
}

// flipByteAt flips one bit of the byte at pos of a file.
func flipByteAt(t *testing.T, p string, pos int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, pos); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, pos); err != nil {
		t.Fatal(err)
	}
}

// flipFileByte flips the middle byte of a file.
func flipFileByte(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	flipByteAt(t, p, fi.Size()/2)
}

func TestCorruptIndexFile(t *testing.T) {
	ctx := context.Background()
	be, _, _ := localVault(t)
	r := repo.TestOpen(t, be, repo.Options{})
	ids, err := r.List(ctx, blob.KindIndex)
	if err != nil || len(ids) != 1 {
		t.Fatalf("index files %v, err %v; want 1", ids, err)
	}
	flipFileByte(t, filepath.Join(be.Root(), "index", ids[0].String()))
	r2, err := repo.Open(ctx, be, repo.TestKeyProvider(repo.TestPassphrase), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = r2.LoadIndex(ctx)
	if err == nil {
		t.Fatal("LoadIndex read a corrupted index file")
	}
	if !strings.Contains(err.Error(), ids[0].Short()) {
		t.Errorf("LoadIndex error %q does not name index file %s", err, ids[0].Short())
	}
	if hint.Of(err) == "" {
		t.Errorf("LoadIndex error %q has no hint", err)
	}
}

func TestCorruptSnapshotManifest(t *testing.T) {
	ctx := context.Background()
	be, _, _ := localVault(t)
	r := repo.TestOpen(t, be, repo.Options{})
	good := &snapshot.Manifest{Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Status: snapshot.StatusCompleted, Source: snapshot.Source{Type: snapshot.SourceStream}}
	bad := &snapshot.Manifest{Time: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), Status: snapshot.StatusCompleted, Source: snapshot.Source{Type: snapshot.SourceStream}}
	for _, m := range []*snapshot.Manifest{good, bad} {
		if err := snapshot.Save(ctx, r, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := snapshot.Load(ctx, r, bad.ID); err != nil {
		t.Fatalf("Load of an intact manifest: %v", err)
	}
	flipFileByte(t, filepath.Join(be.Root(), "snapshots", bad.ID.String()))
	_, err := snapshot.Load(ctx, r, bad.ID)
	if err == nil {
		t.Fatal("snapshot.Load read a corrupted manifest")
	}
	if !strings.Contains(err.Error(), bad.ID.Short()) {
		t.Errorf("error %q does not name recovery point %s", err, bad.ID.Short())
	}
	ms, errs, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].ID != good.ID || len(errs) != 1 {
		t.Errorf("LoadAll: %d manifests, %d errors; want the intact one and 1 error", len(ms), len(errs))
	}
}
