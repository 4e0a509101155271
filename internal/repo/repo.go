// Package repo owns a vault's repository: creating and opening it, its config
// and keys, saving and loading deduplicated, compressed, encrypted blobs in
// packs, index files, recovery point manifests and locks.
//
// The on-disk format and its ordering rules are specified in
// docs/repository-format.md.
package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/chunker"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/pack"
)

// FormatVersion is the repository format version this code writes and reads.
const FormatVersion = 1

// Config is the vault config, stored sealed in the file "config".
type Config struct {
	Version       int            `json:"version"`
	ID            string         `json:"id"`
	Created       time.Time      `json:"created"`
	ChunkerSeed   []byte         `json:"chunker_seed"`
	TreeChunker   chunker.Params `json:"tree_chunker"`
	StreamChunker chunker.Params `json:"stream_chunker"`
	Compression   string         `json:"compression"` // "zstd" or "none"
	ZstdLevel     int            `json:"zstd_level"`  // zstd's own scale, MinZstdLevel..MaxZstdLevel
	// ZstdLevelLarge is the level for blobs of LargeBlob bytes and more
	// (0: zstd_level, as in vaults created before it existed).
	ZstdLevelLarge int `json:"zstd_level_large,omitempty"`
	// ZstdLevelStream is the level for the chunks of streams (database
	// sources, standard input, a command's output; 0: zstd_level, as in
	// vaults created before it existed).
	ZstdLevelStream int `json:"zstd_level_stream,omitempty"`
	PackSize        int `json:"pack_size"` // target size of data packs
	TreePackSize    int `json:"tree_pack_size"`
}

// Options tune a repository handle.
type Options struct {
	Clock  clock.Clock  // default clock.Real{}
	Logger *slog.Logger // default slog.Default()
	// IndexCheckpoint writes an index file after this many packs so that a
	// crash loses little (default 32).
	IndexCheckpoint int
}

// InitOptions choose the parameters of a new vault.
type InitOptions struct {
	TreeChunker   chunker.Params
	StreamChunker chunker.Params
	Compression   string
	ZstdLevel     int
	// ZstdLevelLarge is the level for blobs of LargeBlob bytes and more;
	// 0 means ZstdLevel.
	ZstdLevelLarge int
	// ZstdLevelStream is the level for the chunks of streams; 0 means
	// ZstdLevel.
	ZstdLevelStream int
	PackSize        int
}

// Repository is an open vault. Its methods are safe for concurrent use.
type Repository struct {
	be     blob.Storage
	key    *crypto.Key
	keyID  string
	cfg    Config
	hasher *crypto.Hasher
	table  *chunker.Table
	clock  clock.Clock
	log    *slog.Logger
	idx    *index.Master
	comp   *compressor

	checkpoint int

	mu           sync.Mutex
	pending      map[pendingKey]bool
	unsaved      []index.Pack // packs saved but not yet in an index file
	written      []index.Pack // every pack this handle saved
	indexWritten []crypto.ID
	err          error // sticky error of a failed pack upload
	stats        Stats

	pmu      [2]sync.Mutex
	open     [2]*openPack
	packBufs [2]chan []byte // free pack buffers
	saving   chan struct{}  // semaphore of packs being saved
	inflight sync.WaitGroup

	trees *packCache // whole tree packs, for walks of recovery points
}

type pendingKey struct {
	id crypto.ID
	t  pack.BlobType
}

// Stats counts what this handle added to the vault.
type Stats struct {
	BlobsAdded   int64
	BytesAdded   int64 // plaintext bytes of new blobs
	StoredAdded  int64 // bytes of packs written
	PacksWritten int64
}

func (o *Options) fill() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.IndexCheckpoint == 0 {
		o.IndexCheckpoint = 32
	}
}

// DefaultInitOptions are used for new vaults.
var DefaultInitOptions = InitOptions{
	TreeChunker:   chunker.DefaultParams,
	StreamChunker: chunker.StreamParams,
	Compression:   "zstd",
	ZstdLevel:     3,
	// Large blobs are the chunks of big files: level 4's larger match
	// tables find more there (dataset A: 1.3 MB, 0.1% smaller) for little
	// more time, while level 3 keeps small files fast.
	ZstdLevelLarge: 4,
	// Streams are mostly database rows (COPY, RDB): level 1 compressed
	// the benchmark's PostgreSQL streams 12% faster than level 3, and
	// 1% smaller (docs/performance.md).
	ZstdLevelStream: 1,
	PackSize:        8 << 20,
}

// ErrNoVault is returned when a location holds no vault.
var ErrNoVault = errors.New("no vault here")

// Init creates a new vault in an empty storage, protected by kp.
func Init(ctx context.Context, be blob.Storage, kp crypto.KeyProvider, io InitOptions, o Options) (*Repository, error) {
	o.fill()
	if _, err := be.Stat(ctx, blob.Handle{Kind: blob.KindConfig, Name: "config"}); err == nil {
		return nil, hint.With(fmt.Errorf("create vault at %s: a vault already exists there", be.Location()), "open it instead, or choose another location")
	} else if !blob.IsNotExist(err) {
		return nil, fmt.Errorf("create vault at %s: %w", be.Location(), err)
	}
	if io.Compression == "" {
		io = DefaultInitOptions
	}
	for _, p := range []chunker.Params{io.TreeChunker, io.StreamChunker} {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("create vault: %w", err)
		}
	}
	if io.Compression == "zstd" && (io.ZstdLevel < MinZstdLevel || io.ZstdLevel > MaxZstdLevel) {
		return nil, fmt.Errorf("create vault: zstd level %d out of range [%d, %d]", io.ZstdLevel, MinZstdLevel, MaxZstdLevel)
	}
	if io.Compression == "zstd" && io.ZstdLevelLarge != 0 && (io.ZstdLevelLarge < MinZstdLevel || io.ZstdLevelLarge > MaxZstdLevel) {
		return nil, fmt.Errorf("create vault: zstd level for large blobs %d out of range [%d, %d]", io.ZstdLevelLarge, MinZstdLevel, MaxZstdLevel)
	}
	if io.Compression == "zstd" && io.ZstdLevelStream != 0 && (io.ZstdLevelStream < MinZstdLevel || io.ZstdLevelStream > MaxZstdLevel) {
		return nil, fmt.Errorf("create vault: zstd level for streams %d out of range [%d, %d]", io.ZstdLevelStream, MinZstdLevel, MaxZstdLevel)
	}
	if io.Compression != "zstd" && io.Compression != "none" {
		return nil, fmt.Errorf("create vault: unknown compression %q (want zstd or none)", io.Compression)
	}
	if io.PackSize < 1<<20 || io.PackSize > 128<<20 {
		return nil, fmt.Errorf("create vault: pack size %d out of range [1 MiB, 128 MiB]", io.PackSize)
	}
	key, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	cfg := Config{
		Version: FormatVersion, ID: randomHex(16), Created: o.Clock.Now().UTC(),
		ChunkerSeed: key.Derive("chunker seed"), TreeChunker: io.TreeChunker, StreamChunker: io.StreamChunker,
		Compression: io.Compression, ZstdLevel: io.ZstdLevel, ZstdLevelLarge: io.ZstdLevelLarge, ZstdLevelStream: io.ZstdLevelStream,
		PackSize: io.PackSize, TreePackSize: 4 << 20,
	}
	r := newRepo(be, key, cfg, o)
	// Order: key file first, then config. A vault without config is not a
	// vault (Open says so), so a crash in between leaves nothing half-made.
	kid, err := r.AddKey(ctx, kp)
	if err != nil {
		return nil, fmt.Errorf("create vault: %w", err)
	}
	r.keyID = kid
	plain, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sealed, err := key.SealObject("config", plain)
	if err != nil {
		return nil, err
	}
	if err := be.Save(ctx, blob.Handle{Kind: blob.KindConfig, Name: "config"}, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return nil, fmt.Errorf("create vault: save config: %w", err)
	}
	return r, nil
}

func newRepo(be blob.Storage, key *crypto.Key, cfg Config, o Options) *Repository {
	return &Repository{
		be: be, key: key, cfg: cfg, hasher: key.Hasher(), table: chunker.NewTable(cfg.ChunkerSeed),
		clock: o.Clock, log: o.Logger, idx: index.NewMaster(), comp: newCompressor(cfg.Compression, cfg.ZstdLevel, cfg.ZstdLevelLarge, cfg.ZstdLevelStream),
		checkpoint: o.IndexCheckpoint, pending: map[pendingKey]bool{},
		packBufs: [2]chan []byte{make(chan []byte, 2), make(chan []byte, 1)},
		saving:   make(chan struct{}, savesInFlight(be)),
		trees:    newPackCache(treePackCacheMax, treePackCacheOne),
	}
}

// AddKey wraps the data key with another key-encryption key and stores it.
func (r *Repository) AddKey(ctx context.Context, kp crypto.KeyProvider) (string, error) {
	kf, err := kp.Wrap(ctx, r.key.Bytes())
	if err != nil {
		return "", fmt.Errorf("wrap data key (%s): %w", kp.Type(), err)
	}
	kf.Created = r.clock.Now().UTC()
	kf.Hostname, _ = os.Hostname()
	b, err := crypto.EncodeKeyFile(kf)
	if err != nil {
		return "", err
	}
	id := crypto.Hash(b).String()
	if err := r.be.Save(ctx, blob.Handle{Kind: blob.KindKey, Name: id}, bytes.NewReader(b), int64(len(b))); err != nil {
		return "", fmt.Errorf("save key: %w", err)
	}
	return id, nil
}

// Open opens an existing vault with kp, trying every key file.
func Open(ctx context.Context, be blob.Storage, kp crypto.KeyProvider, o Options) (*Repository, error) {
	o.fill()
	cfgH := blob.Handle{Kind: blob.KindConfig, Name: "config"}
	sealed, err := blob.LoadAll(ctx, be, cfgH)
	if blob.IsNotExist(err) {
		return nil, hint.With(fmt.Errorf("open vault at %s: %w (no config file)", be.Location(), ErrNoVault), "check the location, or create a vault with `coffre init`")
	}
	if err != nil {
		return nil, fmt.Errorf("open vault at %s: load config: %w", be.Location(), err)
	}
	var names []string
	err = be.List(ctx, blob.KindKey, func(fi blob.FileInfo) error { names = append(names, fi.Name); return nil })
	if err != nil {
		return nil, fmt.Errorf("open vault at %s: list keys: %w", be.Location(), err)
	}
	if len(names) == 0 {
		return nil, hint.With(fmt.Errorf("open vault at %s: the vault has no key files (keys/ is empty)", be.Location()),
			"the vault cannot be decrypted without a key file; restore keys/ from a copy of the vault")
	}
	var key *crypto.Key
	var keyID string
	var lastErr, configErr error
	tried := 0
	for _, n := range names {
		b, err := blob.LoadAll(ctx, be, blob.Handle{Kind: blob.KindKey, Name: n})
		if err != nil {
			return nil, fmt.Errorf("open vault: load key %s: %w", n, err)
		}
		kf, err := crypto.DecodeKeyFile(b)
		if err != nil {
			o.Logger.Warn("skipping unreadable key file", "key", n, "err", err)
			continue
		}
		if kf.Type != kp.Type() {
			continue
		}
		tried++
		raw, err := kp.Unwrap(ctx, kf)
		if errors.Is(err, crypto.ErrWrongKey) {
			continue
		}
		if err != nil {
			// One bad key file must not stop the others from opening the vault.
			o.Logger.Warn("skipping key file", "key", n, "err", err)
			lastErr = err
			continue
		}
		k, err := crypto.KeyFromBytes(raw)
		if err != nil {
			o.Logger.Warn("skipping key file", "key", n, "err", err)
			lastErr = err
			continue
		}
		// The key must also open the config: a key file left by an
		// interrupted init of another vault at the same place does not.
		if _, err := k.OpenObject("config", sealed); err != nil {
			o.Logger.Warn("key file opens a key that does not decrypt the config", "key", n)
			configErr = err
			continue
		}
		key = k
		keyID = n
		break
	}
	if key == nil {
		what := "passphrase"
		if kp.Type() != "passphrase" {
			what = kp.Type()
		}
		if configErr != nil {
			return nil, hint.With(fmt.Errorf("open vault at %s: the passphrase or key opens a key file, but that key does not decrypt the config: %w", be.Location(), configErr),
				"the config file is damaged (restore it from a copy of the vault), or keys/ holds a key file of another vault")
		}
		if lastErr != nil {
			return nil, fmt.Errorf("open vault at %s: %w", be.Location(), lastErr)
		}
		if tried == 0 {
			return nil, hint.With(fmt.Errorf("open vault at %s: %w: the vault has no %s key", be.Location(), crypto.ErrWrongKey, kp.Type()),
				"use the kind of key the vault was created with")
		}
		return nil, hint.With(fmt.Errorf("open vault at %s: %w: the %s opens none of the vault's %d %s key(s)", be.Location(), crypto.ErrWrongKey, what, tried, kp.Type()),
			"check the passphrase or key file (COFFRE_PASSWORD, --password-file, --key-file)")
	}
	plain, err := key.OpenObject("config", sealed)
	if err != nil {
		return nil, hint.With(fmt.Errorf("open vault at %s: decrypt config: %w", be.Location(), err), "the config file is damaged; restore it from a copy of the vault")
	}
	var cfg Config
	if err := json.Unmarshal(plain, &cfg); err != nil {
		return nil, fmt.Errorf("open vault at %s: parse config: %w", be.Location(), err)
	}
	if cfg.Version != FormatVersion {
		return nil, hint.With(fmt.Errorf("open vault at %s: format version %d, this coffre reads version %d", be.Location(), cfg.Version, FormatVersion), "use a coffre release that supports this version")
	}
	for _, p := range []chunker.Params{cfg.TreeChunker, cfg.StreamChunker} {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("open vault: config: %w", err)
		}
	}
	r := newRepo(be, key, cfg, o)
	r.keyID = keyID
	return r, nil
}

// Config returns the vault config.
func (r *Repository) Config() Config { return r.cfg }

// Backend returns the storage.
func (r *Repository) Backend() blob.Storage { return r.be }

// Key returns the data key.
func (r *Repository) Key() *crypto.Key { return r.key }

// Index returns the master index.
func (r *Repository) Index() *index.Master { return r.idx }

// Clock returns the repository's clock.
func (r *Repository) Clock() clock.Clock { return r.clock }

// Logger returns the repository's logger.
func (r *Repository) Logger() *slog.Logger { return r.log }

// ChunkerTable returns the vault's secret gear table.
func (r *Repository) ChunkerTable() *chunker.Table { return r.table }

// Hash returns the content id of plaintext b.
func (r *Repository) Hash(b []byte) crypto.ID { return r.hasher.Sum(b) }

// Stats returns what this handle has added so far.
func (r *Repository) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close discards unfinished packs and releases the storage.
func (r *Repository) Close() error {
	r.Abort()
	return r.be.Close()
}

// LoadIndex reads every index file not yet loaded.
func (r *Repository) LoadIndex(ctx context.Context) error {
	var ids []crypto.ID
	err := r.be.List(ctx, blob.KindIndex, func(fi blob.FileInfo) error {
		id, err := crypto.ParseID(fi.Name)
		if err != nil {
			r.log.Warn("ignoring index file with a bad name", "name", fi.Name)
			return nil
		}
		if !r.idx.HasFile(id) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list index files: %w", err)
	}
	files := make([]*index.File, len(ids))
	err = parallel(ctx, len(ids), 4, func(i int) error {
		f, err := r.LoadIndexFile(ctx, ids[i])
		files[i] = f
		return err
	})
	if err != nil {
		return err
	}
	// Files superseded by another (a prune's new index, written before the
	// old ones are removed) are skipped; the rest are added in id order, so
	// that which copy of a duplicated blob is used does not depend on timing.
	superseded := map[crypto.ID]bool{}
	for _, f := range files {
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return bytes.Compare(ids[order[a]][:], ids[order[b]][:]) < 0 })
	for _, i := range order {
		if superseded[ids[i]] {
			r.idx.AddFile(ids[i], &index.File{})
			continue
		}
		r.idx.AddFile(ids[i], files[i])
	}
	return nil
}

// LoadIndexFile reads and verifies one index file.
func (r *Repository) LoadIndexFile(ctx context.Context, id crypto.ID) (*index.File, error) {
	plain, err := r.loadSealed(ctx, blob.KindIndex, id, "index")
	if err != nil {
		return nil, err
	}
	f, err := index.Decode(plain)
	if err != nil {
		return nil, hint.With(fmt.Errorf("index %s: %w", id.Short(), err), "run `coffre check` to see what is affected")
	}
	return f, nil
}

// loadSealed loads a file named by the hash of its sealed bytes, checks the
// hash, and decrypts it.
func (r *Repository) loadSealed(ctx context.Context, k blob.Kind, id crypto.ID, kind string) ([]byte, error) {
	h := blob.Handle{Kind: k, Name: id.String()}
	b, err := blob.LoadAll(ctx, r.be, h)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	if crypto.Hash(b) != id {
		return nil, hint.With(fmt.Errorf("load %s: content does not match its name (file corrupted or truncated)", h), "run `coffre check` to see what is affected")
	}
	plain, err := r.key.OpenObject(kind, b)
	if err != nil {
		return nil, hint.With(fmt.Errorf("decrypt %s: %w", h, err), "run `coffre check` to see what is affected")
	}
	return plain, nil
}

// saveSealed seals plain and stores it under the hash of the sealed bytes.
func (r *Repository) saveSealed(ctx context.Context, k blob.Kind, kind string, plain []byte) (crypto.ID, error) {
	sealed, err := r.key.SealObject(kind, plain)
	if err != nil {
		return crypto.ID{}, err
	}
	id := crypto.Hash(sealed)
	h := blob.Handle{Kind: k, Name: id.String()}
	if err := r.be.Save(ctx, h, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return crypto.ID{}, fmt.Errorf("save %s: %w", h, err)
	}
	return id, nil
}

// SaveJSON seals v as JSON into a file of kind k named by its hash.
func (r *Repository) SaveJSON(ctx context.Context, k blob.Kind, v any) (crypto.ID, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return crypto.ID{}, err
	}
	return r.saveSealed(ctx, k, string(k), b)
}

// LoadJSON loads and verifies a file saved by SaveJSON.
func (r *Repository) LoadJSON(ctx context.Context, k blob.Kind, id crypto.ID, v any) error {
	b, err := r.loadSealed(ctx, k, id, string(k))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s/%s: %w", k, id.Short(), err)
	}
	return nil
}

// List lists the ids of files of kind k (index, snapshots).
func (r *Repository) List(ctx context.Context, k blob.Kind) ([]crypto.ID, error) {
	var ids []crypto.ID
	err := r.be.List(ctx, k, func(fi blob.FileInfo) error {
		id, err := crypto.ParseID(fi.Name)
		if err != nil {
			r.log.Warn("ignoring file with a bad name", "kind", k, "name", fi.Name)
			return nil
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", k, err)
	}
	return ids, nil
}

// Remove deletes a file of kind k.
func (r *Repository) Remove(ctx context.Context, k blob.Kind, id crypto.ID) error {
	return r.be.Remove(ctx, blob.Handle{Kind: k, Name: id.String()})
}

func packKind(t pack.BlobType) blob.Kind {
	if t == pack.TreeBlob {
		return blob.KindTree
	}
	return blob.KindData
}

// SaveBlob stores plaintext data as a blob of type t unless the vault already
// has it, and returns its id and whether it was new. The blob is durable only
// after Flush returns.
func (r *Repository) SaveBlob(ctx context.Context, t pack.BlobType, data []byte) (crypto.ID, bool, error) {
	id := r.hasher.Sum(data)
	added, err := r.SaveBlobWithID(ctx, t, id, data)
	return id, added, err
}

// SaveBlobWithID is SaveBlob when the caller already computed the id.
func (r *Repository) SaveBlobWithID(ctx context.Context, t pack.BlobType, id crypto.ID, data []byte) (bool, error) {
	if r.idx.Has(t, id) {
		return false, nil
	}
	return r.addBlob(ctx, t, id, data, false)
}

// SaveStreamBlob is SaveBlob for a data blob cut from a stream (a
// database source, standard input, a command's output): compressed at the
// vault's zstd_level_stream.
func (r *Repository) SaveStreamBlob(ctx context.Context, data []byte) (crypto.ID, bool, error) {
	id := r.hasher.Sum(data)
	if r.idx.Has(pack.DataBlob, id) {
		return id, false, nil
	}
	added, err := r.addBlob(ctx, pack.DataBlob, id, data, true)
	return id, added, err
}

// RepackBlob stores a blob again even though the index knows it (prune
// copies the used blobs of sparse packs). data must be the verified
// plaintext of id.
func (r *Repository) RepackBlob(ctx context.Context, t pack.BlobType, id crypto.ID, data []byte) error {
	_, err := r.addBlob(ctx, t, id, data, false)
	return err
}

// PacksWrittenCount is the number of packs this handle has written; pass it
// to FlushRepacked to get the packs written after this point.
func (r *Repository) PacksWrittenCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.written)
}

// FlushRepacked flushes like Flush and returns the packs this handle wrote
// after the since-th (see PacksWrittenCount).
func (r *Repository) FlushRepacked(ctx context.Context, since int) ([]index.Pack, error) {
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]index.Pack(nil), r.written[since:]...), nil
}

// Abort discards the packs being filled (their temporary files) after a
// failed operation; blobs saved since the last Flush are forgotten. Waits for
// packs being saved.
func (r *Repository) Abort() {
	for t := range r.open {
		r.pmu[t].Lock()
		op := r.open[t]
		r.open[t] = nil
		r.pmu[t].Unlock()
		if op != nil {
			op.abort()
		}
	}
	r.inflight.Wait()
	r.mu.Lock()
	r.pending = map[pendingKey]bool{}
	r.mu.Unlock()
}

func (r *Repository) addBlob(ctx context.Context, t pack.BlobType, id crypto.ID, data []byte, stream bool) (bool, error) {
	pk := pendingKey{id, t}
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return false, r.err
	}
	if r.pending[pk] {
		r.mu.Unlock()
		return false, nil
	}
	r.pending[pk] = true
	r.stats.BlobsAdded++
	r.stats.BytesAdded += int64(len(data))
	r.mu.Unlock()

	cbuf := getBuf(len(data))
	payload, comp := r.comp.compressWith(cbuf[:0], data, stream)

	r.pmu[t].Lock()
	op := r.open[t]
	if op == nil {
		var err error
		if op, err = r.newPack(ctx, t); err != nil {
			r.pmu[t].Unlock()
			putBuf(cbuf)
			return false, r.fail(err)
		}
		r.open[t] = op
	}
	_, err := op.w.Add(t, id, comp, payload, len(data))
	var full *openPack
	if err != nil || op.w.Size() >= r.packSize(t) {
		full, r.open[t] = op, nil
	}
	r.pmu[t].Unlock()
	putBuf(cbuf)
	if err != nil {
		full.abort()
		return false, r.fail(fmt.Errorf("write pack: %w", err))
	}
	if full != nil {
		if err := r.savePackAsync(ctx, t, full); err != nil {
			return false, err
		}
	}
	return true, nil
}

// savesInFlight bounds the packs being saved at once: a streamed pack is
// already in its file (only the fsync is pending), a buffered one holds its
// memory until uploaded.
func savesInFlight(be blob.Storage) int {
	if _, ok := be.(blob.Streamer); ok {
		return 8
	}
	return 2
}

// savePackAsync finishes a full pack in the background (fsync and rename, or
// upload), so that the workers filling packs never wait for storage. At most
// cap(r.saving) packs are in flight; Flush waits for them.
func (r *Repository) savePackAsync(ctx context.Context, t pack.BlobType, op *openPack) error {
	select {
	case r.saving <- struct{}{}:
	case <-ctx.Done():
		// Sticky: Flush must not report success with this pack dropped.
		op.abort()
		return r.fail(fmt.Errorf("save pack: %w", ctx.Err()))
	}
	r.inflight.Add(1)
	// The save must not be cut short by the cancellation of the producer's
	// context (the archiver cancels its workers' context when they are done):
	// Flush waits for it, and its errors are sticky in r.err.
	sctx := context.WithoutCancel(ctx)
	go func() {
		defer r.inflight.Done()
		defer func() { <-r.saving }()
		_ = r.savePack(sctx, t, op)
	}()
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	return err
}

// openPack is a pack being filled: streamed to a temporary file when the
// backend can (no pack is held in memory), else buffered.
type openPack struct {
	w      *pack.Writer
	stream blob.StreamFile
	mem    *pack.MemSink
}

func (o *openPack) abort() {
	if o.stream != nil {
		_ = o.stream.Abort()
	}
}

func (r *Repository) newPack(ctx context.Context, t pack.BlobType) (*openPack, error) {
	op := &openPack{}
	var sink io.Writer
	if st, ok := r.be.(blob.Streamer); ok {
		f, err := st.Create(ctx, packKind(t))
		if err != nil {
			return nil, err
		}
		op.stream, sink = f, f
	} else {
		op.mem = &pack.MemSink{Buf: r.getPackBuf(t)}
		sink = op.mem
	}
	w, err := pack.NewWriter(r.key, sink)
	if err != nil {
		op.abort()
		return nil, err
	}
	op.w = w
	return op, nil
}

// fail records the first error that makes the handle unusable for writing.
func (r *Repository) fail(err error) error {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	return err
}

// Pack buffers (for backends without streaming) are reused: allocating and
// zeroing a fresh one per pack costs more CPU than encrypting its content.
func (r *Repository) getPackBuf(t pack.BlobType) []byte {
	select {
	case b := <-r.packBufs[t]:
		return b[:0]
	default:
		return make([]byte, 0, r.packSize(t)+r.cfg.TreeChunker.MaxSize+(1<<20))
	}
}

func (r *Repository) putPackBuf(t pack.BlobType, b []byte) {
	select {
	case r.packBufs[t] <- b[:0]:
	default:
	}
}

func (r *Repository) packSize(t pack.BlobType) int {
	if t == pack.TreeBlob {
		return r.cfg.TreePackSize
	}
	return r.cfg.PackSize
}

// savePack stores a finished pack, then makes its blobs visible in the index.
func (r *Repository) savePack(ctx context.Context, t pack.BlobType, op *openPack) error {
	size, id, err := op.w.Finish()
	h := blob.Handle{Kind: packKind(t), Name: id.String()}
	switch {
	case err != nil:
		op.abort()
	case op.stream != nil:
		err = op.stream.Commit(ctx, id.String())
	default:
		err = r.be.Save(ctx, h, bytes.NewReader(op.mem.Buf), int64(len(op.mem.Buf)))
		r.putPackBuf(t, op.mem.Buf)
	}
	if err != nil {
		return r.fail(fmt.Errorf("save pack %s: %w", h, err))
	}
	p := index.Pack{ID: id, Salt: op.w.Salt(), Type: t, Size: uint64(size), Blobs: op.w.Entries()}
	r.idx.AddPack(p)
	r.mu.Lock()
	for _, e := range p.Blobs {
		delete(r.pending, pendingKey{e.ID, t})
	}
	r.unsaved = append(r.unsaved, p)
	r.written = append(r.written, p)
	r.stats.StoredAdded += int64(size)
	r.stats.PacksWritten++
	n := len(r.unsaved)
	r.mu.Unlock()
	if n >= r.checkpoint {
		return r.saveIndex(ctx)
	}
	return nil
}

// saveIndex writes an index file for the packs saved so far.
func (r *Repository) saveIndex(ctx context.Context) error {
	r.mu.Lock()
	packs := r.unsaved
	r.unsaved = nil
	r.mu.Unlock()
	if len(packs) == 0 {
		return nil
	}
	f := &index.File{Packs: packs}
	id, err := r.saveSealed(ctx, blob.KindIndex, "index", f.Encode())
	if err != nil {
		r.mu.Lock()
		r.unsaved = append(packs, r.unsaved...)
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
		return err
	}
	r.idx.AddFile(id, &index.File{})
	r.mu.Lock()
	r.indexWritten = append(r.indexWritten, id)
	r.mu.Unlock()
	return nil
}

// IndexFilesWritten returns the index files this handle wrote.
func (r *Repository) IndexFilesWritten() []crypto.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]crypto.ID(nil), r.indexWritten...)
}

// SaveIndexFile writes a complete index file (used by prune and repair).
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	return r.saveSealed(ctx, blob.KindIndex, "index", f.Encode())
}

// Flush stores the open packs and an index file for every pack written, in
// that order. After Flush returns nil every blob saved so far is durable and
// indexed, and a recovery point referencing them may be written.
func (r *Repository) Flush(ctx context.Context) error {
	for t := range r.open {
		r.pmu[t].Lock()
		op := r.open[t]
		r.open[t] = nil
		r.pmu[t].Unlock()
		if op != nil && op.w.Count() > 0 {
			_ = r.savePackAsync(ctx, pack.BlobType(t), op) // errors are sticky in r.err
		} else if op != nil {
			op.abort()
		}
	}
	r.inflight.Wait()
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.saveIndex(ctx)
}

// BlobError is returned when a blob cannot be read back intact.
type BlobError struct {
	Type pack.BlobType
	ID   crypto.ID
	Pack crypto.ID
	Err  error
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("%s blob %s in pack %s: %v", e.Type, e.ID.Short(), e.Pack.Short(), e.Err)
}
func (e *BlobError) Unwrap() error { return e.Err }

// ErrBlobMissing says the index does not know a blob.
var ErrBlobMissing = errors.New("blob not in index")

// LoadBlob reads blob id of type t, decrypts, decompresses and verifies it,
// appending to buf[:0].
func (r *Repository) LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID, buf []byte) ([]byte, error) {
	l, ok := r.idx.Lookup(t, id)
	if !ok {
		return nil, missingBlob(t, id)
	}
	h := blob.Handle{Kind: packKind(t), Name: l.Pack.String()}
	ct, err := r.readSealed(ctx, t, h, l)
	if err != nil {
		return nil, hint.With(&BlobError{Type: t, ID: id, Pack: l.Pack, Err: err}, "run `coffre check` to see what is affected")
	}
	out, err := r.OpenBlob(l, ct, buf)
	if err != nil {
		return nil, hint.With(err, "run `coffre check` to see what is affected")
	}
	return out, nil
}

// missingBlob is the error for blob id of type t that the index lacks.
func missingBlob(t pack.BlobType, id crypto.ID) error {
	return hint.With(&BlobError{Type: t, ID: id, Err: ErrBlobMissing}, "run `coffre check`; the vault is missing data this recovery point needs")
}

// readSealed reads the sealed bytes of blob l from pack h: sliced from the
// pack read whole for a tree blob (see packcache.go), else a ranged read.
func (r *Repository) readSealed(ctx context.Context, t pack.BlobType, h blob.Handle, l index.Location) ([]byte, error) {
	off, n := int64(l.Entry.Offset), int64(l.Entry.Length)
	if t == pack.TreeBlob {
		whole, ok, err := r.trees.get(ctx, r.be, h, l.Pack)
		if err != nil {
			return nil, err
		}
		if ok {
			if off+n > int64(len(whole)) {
				return nil, fmt.Errorf("blob at %d+%d is past the pack's end (%d bytes)", off, n, len(whole))
			}
			return append([]byte(nil), whole[off:off+n]...), nil // a copy: OpenBlob decrypts in place
		}
	}
	return blob.LoadRange(ctx, r.be, h, off, n, nil)
}

// OpenBlob decrypts, decompresses and verifies a sealed blob read from its pack.
func (r *Repository) OpenBlob(l index.Location, ct, buf []byte) ([]byte, error) {
	s, err := r.key.OpenSealer("pack", l.Salt[:])
	if err != nil {
		return nil, err
	}
	return r.openBlob(s, l, ct, buf)
}

// openBlob is OpenBlob with the sealer of l's pack already derived.
func (r *Repository) openBlob(s *crypto.Sealer, l index.Location, ct, buf []byte) ([]byte, error) {
	e := l.Entry
	plain, err := s.Open(ct[:0], uint64(e.Offset), ct, pack.AD(e.Type, e.ID))
	if err != nil {
		return nil, &BlobError{Type: e.Type, ID: e.ID, Pack: l.Pack, Err: err}
	}
	out := plain
	if e.Comp == pack.CompZstd {
		out, err = r.comp.decompress(buf[:0], plain, int(e.RawLength))
		if err != nil {
			return nil, &BlobError{Type: e.Type, ID: e.ID, Pack: l.Pack, Err: fmt.Errorf("decompress: %w", err)}
		}
	} else {
		out = append(buf[:0], plain...)
	}
	if len(out) != int(e.RawLength) {
		return nil, &BlobError{Type: e.Type, ID: e.ID, Pack: l.Pack, Err: fmt.Errorf("length %d, index says %d", len(out), e.RawLength)}
	}
	if got := r.hasher.Sum(out); got != e.ID {
		return nil, &BlobError{Type: e.Type, ID: e.ID, Pack: l.Pack, Err: fmt.Errorf("content hash mismatch (got %s)", got.Short())}
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := cryptoRand(b); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%x", b)
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if workers > n {
		workers = n
	}
	if workers <= 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next int
		ferr error
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if ferr != nil || next >= n || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := fn(i); err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	if ferr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return ferr
}

// Parallel is exported for the layers above.
func Parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	return parallel(ctx, n, workers, fn)
}

// Workers is the default number of CPU workers.
func Workers() int { return max(2, runtime.GOMAXPROCS(0)) }
