// Package blob owns the storage contract of a vault: named, immutable files
// grouped by kind, on a local directory, an S3-compatible bucket or in memory.
//
// The storage layer knows files, never chunks, packs or recovery points. Every
// implementation passes the conformance suite in package blobtest.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Kind groups the files of a vault. Each kind maps to a prefix (a directory on
// disk, a key prefix on S3) so that backends can treat kinds differently
// (e.g. a colder storage class for data packs).
type Kind string

// The kinds of files a vault holds.
const (
	KindConfig   Kind = "config"    // the single vault config file, Name is "config"
	KindKey      Kind = "keys"      // wrapped data keys, one file per key-encryption key
	KindData     Kind = "data"      // packs of file and stream content
	KindTree     Kind = "tree"      // packs of tree (directory metadata) blobs
	KindIndex    Kind = "index"     // index files: which blob is in which pack
	KindSnapshot Kind = "snapshots" // recovery point manifests
	KindLock     Kind = "locks"     // lock files of running operations
)

// Kinds lists every kind, in the order a listing of the whole vault uses.
var Kinds = []Kind{KindConfig, KindKey, KindData, KindTree, KindIndex, KindSnapshot, KindLock}

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	for _, x := range Kinds {
		if k == x {
			return true
		}
	}
	return false
}

// Handle names one file of a vault.
type Handle struct {
	Kind Kind
	Name string // lower-case hex id for content files; "config" for the config
}

func (h Handle) String() string {
	if h.Kind == KindConfig {
		return "config"
	}
	return string(h.Kind) + "/" + h.Name
}

// Valid reports whether h has a known kind and a name that is safe as a path
// element and an object key: 1..128 characters of [0-9a-z._-], not starting with
// '.' (names starting with '.' are reserved for a backend's temporary files).
func (h Handle) Valid() error {
	if !h.Kind.Valid() {
		return fmt.Errorf("invalid kind %q", h.Kind)
	}
	if len(h.Name) == 0 || len(h.Name) > 128 || h.Name[0] == '.' {
		return fmt.Errorf("invalid name %q", h.Name)
	}
	for i := 0; i < len(h.Name); i++ {
		c := h.Name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid name %q", h.Name)
		}
	}
	return nil
}

// FileInfo describes one stored file.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time // when the file was stored, as the backend reports it
}

// ErrNotExist is returned (wrapped) when a file does not exist.
var ErrNotExist = errors.New("file does not exist")

// IsNotExist reports whether err says a file does not exist.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }

// Storage is the contract every vault backend implements.
//
//   - Save stores exactly size bytes read from rd under h, atomically: a reader
//     sees either no file or the whole file, never a part of it, also after a
//     crash of the process or the machine at any point. When Save returns nil
//     the file is durable (fsync'ed / acknowledged by the store) and visible to
//     Load, Stat and List (read-after-write). If rd yields fewer or more than
//     size bytes, Save fails and stores nothing. Saving a name that exists
//     replaces it atomically (vault files are content addressed, so the content
//     is the same; the only exceptions are lock refreshes).
//   - Load returns a reader of length bytes starting at offset (length 0 means
//     to the end of the file). It returns an error wrapping ErrNotExist if the
//     file does not exist, and an error if offset+length is past the end. The
//     reader may return fewer bytes than asked only together with an error.
//   - Stat returns the file's info or an error wrapping ErrNotExist.
//   - List calls fn for every file of kind k, in no particular order, never for a
//     backend's temporary files. If fn returns an error, List stops and returns it.
//   - Remove deletes the file; removing a file that does not exist returns an
//     error wrapping ErrNotExist.
//   - Close releases resources; the Storage is not used afterwards.
//
// All methods are safe for concurrent use and honour ctx cancellation.
type Storage interface {
	Location() string // a human-readable location, without secrets
	Save(ctx context.Context, h Handle, rd io.Reader, size int64) error
	Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	List(ctx context.Context, k Kind, fn func(FileInfo) error) error
	Remove(ctx context.Context, h Handle) error
	Close() error
}

// StorageClass is an optional capability: backends with storage tiers (S3
// storage classes) implement it so that cold recovery points' data can move to
// a cheaper tier. Backends without tiers don't implement it.
type StorageClass interface {
	// SetStorageClass changes the storage class of an existing file.
	SetStorageClass(ctx context.Context, h Handle, class string) error
}

// LoadAll reads a whole file.
func LoadAll(ctx context.Context, s Storage, h Handle) ([]byte, error) {
	rd, err := s.Load(ctx, h, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	buf, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("read %v: %w", h, err)
	}
	return buf, nil
}

// LoadRange reads length bytes at offset and fails unless all of them arrive.
func LoadRange(ctx context.Context, s Storage, h Handle, offset, length int64, buf []byte) ([]byte, error) {
	rd, err := s.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	if int64(cap(buf)) < length {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if _, err := io.ReadFull(rd, buf); err != nil {
		return nil, fmt.Errorf("read %v at %d+%d: %w", h, offset, length, err)
	}
	return buf, nil
}

// Streamer is an optional capability: backends that can write a file
// incrementally, naming it only when complete (a pack is named by the hash of
// its bytes), implement it so that packs need not be held in memory.
type Streamer interface {
	// Create starts a new, invisible file of kind k.
	Create(ctx context.Context, k Kind) (StreamFile, error)
}

// StreamFile is a file being written. Contract: nothing is visible under
// any name until Commit returns nil; after that the file is durable and
// visible as Handle{k, name}, exactly as after Save. Abort discards it. A
// crash before Commit leaves at most an invisible temporary file.
type StreamFile interface {
	io.Writer
	Commit(ctx context.Context, name string) error
	Abort() error
}

// TempCleaner is an optional capability: backends that write temporary files
// (a crash can leave them behind) implement it so that prune can sweep them.
type TempCleaner interface {
	// RemoveTemp removes the backend's temporary files last modified before
	// olderThan and returns how many it removed.
	RemoveTemp(ctx context.Context, olderThan time.Time) (int, error)
}
