// Package crypto owns a vault's cryptography: the data key, keyed content ids,
// authenticated encryption of every object and pack blob, and the wrapping of
// the data key by key-encryption keys (passphrase, key file; KMS later).
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
)

// IDSize is the length of a content id in bytes.
const IDSize = 32

// ID is a content id: the keyed BLAKE3 hash of a blob's plaintext, or the
// unkeyed BLAKE3 hash of a stored file (packs).
type ID [IDSize]byte

// String returns the id as lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex characters, for messages.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is all zeros.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText encodes the id as hex.
func (id ID) MarshalText() ([]byte, error) {
	b := make([]byte, 2*IDSize)
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText decodes a hex id.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) != 2*IDSize {
		return fmt.Errorf("invalid id %q: want %d hex characters", b, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], b); err != nil {
		return fmt.Errorf("invalid id %q: %w", b, err)
	}
	return nil
}

// ParseID parses a hex id.
func ParseID(s string) (ID, error) {
	var id ID
	err := id.UnmarshalText([]byte(s))
	return id, err
}

// Hash returns the unkeyed BLAKE3 hash of b (used to name packs by their
// stored, encrypted bytes).
func Hash(b []byte) ID { return ID(blake3.Sum256(b)) }

// KeySize is the size of each part of the data key.
const KeySize = 32

// Key is a vault's data key. Enc encrypts; ID keys the content-id hash. Both
// are random, made when the vault is created, and never stored unwrapped.
type Key struct {
	Enc [KeySize]byte
	ID  [KeySize]byte
}

// NewRandomKey makes a fresh data key.
func NewRandomKey() (*Key, error) {
	k := &Key{}
	if _, err := rand.Read(k.Enc[:]); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	return k, nil
}

// Bytes returns the 64-byte serialisation of the key (Enc then ID).
func (k *Key) Bytes() []byte { return append(append([]byte{}, k.Enc[:]...), k.ID[:]...) }

// KeyFromBytes is the inverse of Bytes.
func KeyFromBytes(b []byte) (*Key, error) {
	if len(b) != 2*KeySize {
		return nil, fmt.Errorf("data key has %d bytes, want %d", len(b), 2*KeySize)
	}
	k := &Key{}
	copy(k.Enc[:], b[:KeySize])
	copy(k.ID[:], b[KeySize:])
	return k, nil
}

// Hasher computes content ids. It is safe for concurrent use.
type Hasher struct{ pool sync.Pool }

// Hasher returns the content-id hasher of this key.
func (k *Key) Hasher() *Hasher {
	key := k.ID
	h := &Hasher{}
	h.pool.New = func() any {
		hh, _ := blake3.NewKeyed(key[:]) // the key size is fixed: cannot fail
		return hh
	}
	return h
}

// Sum returns the content id of plaintext b: keyed BLAKE3, so that an observer
// of the vault cannot confirm that it holds a given plaintext.
func (h *Hasher) Sum(b []byte) ID {
	hh := h.pool.Get().(*blake3.Hasher)
	hh.Reset()
	_, _ = hh.Write(b)
	var id ID
	hh.Sum(id[:0])
	h.pool.Put(hh)
	return id
}

// Derive returns a 32-byte subkey of the data key for a purpose (e.g. the
// chunker's gear table seed).
func (k *Key) Derive(purpose string) []byte {
	out, err := hkdf.Key(sha256.New, k.Enc[:], nil, "coffre "+purpose, 32)
	if err != nil {
		panic(err) // only for lengths > 255*32: a programming error
	}
	return out
}

// SaltSize is the size of the random salt of each sealed object and pack.
const SaltSize = 16

// Overhead is the AEAD tag size added to each sealed blob.
const Overhead = 16

// Sealer encrypts and authenticates many messages under one subkey derived
// from the data key and a random salt. Each message gets a distinct nonce
// (its sequence number), so the subkey is never used twice with a nonce.
type Sealer struct {
	aead cipher.AEAD
	Salt [SaltSize]byte
}

// ErrAuth is returned (wrapped) when a ciphertext fails authentication: a
// wrong key, or data that was altered.
var ErrAuth = errors.New("authentication failed (data corrupted or tampered with, or wrong key)")

func (k *Key) subkey(salt []byte, purpose string) (cipher.AEAD, error) {
	sk, err := hkdf.Key(sha256.New, k.Enc[:], salt, "coffre "+purpose+" v1", 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(sk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// NewSealer makes a sealer with a fresh random salt for the given purpose
// ("pack" or "object").
func (k *Key) NewSealer(purpose string) (*Sealer, error) {
	s := &Sealer{}
	if _, err := rand.Read(s.Salt[:]); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	aead, err := k.subkey(s.Salt[:], purpose)
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return s, nil
}

// OpenSealer returns the sealer of an existing salt, for decryption.
func (k *Key) OpenSealer(purpose string, salt []byte) (*Sealer, error) {
	if len(salt) != SaltSize {
		return nil, fmt.Errorf("salt has %d bytes, want %d", len(salt), SaltSize)
	}
	s := &Sealer{}
	copy(s.Salt[:], salt)
	aead, err := k.subkey(salt, purpose)
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return s, nil
}

func nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// Seal appends the encryption of plain with sequence number seq and
// additional data ad to dst. A Sealer must never seal two messages with the
// same seq.
func (s *Sealer) Seal(dst []byte, seq uint64, plain, ad []byte) []byte {
	return s.aead.Seal(dst, nonce(seq), plain, ad)
}

// Open decrypts and authenticates ct sealed with seq and ad, appending to dst.
func (s *Sealer) Open(dst []byte, seq uint64, ct, ad []byte) ([]byte, error) {
	out, err := s.aead.Open(dst, nonce(seq), ct, ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// objectVersion is the first byte of a sealed object.
const objectVersion = 1

// SealObject encrypts a whole small file (config, index, manifest, lock):
// version byte, random salt, AES-256-GCM ciphertext with tag. kind is bound
// as additional data so that one kind of object cannot be passed off as another.
func (k *Key) SealObject(kind string, plain []byte) ([]byte, error) {
	s, err := k.NewSealer("object")
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+SaltSize+len(plain)+Overhead)
	out = append(out, objectVersion)
	out = append(out, s.Salt[:]...)
	return s.Seal(out, 0, plain, []byte(kind)), nil
}

// OpenObject decrypts a file sealed by SealObject.
func (k *Key) OpenObject(kind string, b []byte) ([]byte, error) {
	if len(b) < 1+SaltSize+Overhead {
		return nil, fmt.Errorf("sealed %s is %d bytes, too short to be valid (truncated?)", kind, len(b))
	}
	if b[0] != objectVersion {
		return nil, fmt.Errorf("sealed %s has format version %d, this coffre reads version %d", kind, b[0], objectVersion)
	}
	s, err := k.OpenSealer("object", b[1:1+SaltSize])
	if err != nil {
		return nil, err
	}
	return s.Open(nil, 0, b[1+SaltSize:], []byte(kind))
}

// StreamHash computes Hash incrementally.
type StreamHash struct{ h *blake3.Hasher }

// NewStreamHash starts an incremental unkeyed BLAKE3 hash.
func NewStreamHash() *StreamHash { return &StreamHash{h: blake3.New()} }

// Write adds b to the hash.
func (s *StreamHash) Write(b []byte) (int, error) { return s.h.Write(b) }

// ID returns the hash of everything written.
func (s *StreamHash) ID() ID {
	var id ID
	s.h.Sum(id[:0])
	return id
}
