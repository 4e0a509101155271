package crypto

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// KeyProvider wraps and unwraps a vault's data key with one key-encryption
// key (KEK). Contract:
//   - Wrap seals the 64-byte data key and returns a KeyFile holding everything
//     needed (besides the KEK itself) to unwrap it later: KDF parameters, salt,
//     ciphertext. It never puts the KEK or the plaintext data key in the file.
//   - Unwrap returns the data key, or an error wrapping ErrWrongKey when this
//     provider's KEK does not open kf (wrong passphrase, other key file), and an
//     error wrapping ErrProviderMismatch when kf was made by another kind of
//     provider.
//
// Providers now: passphrase (Argon2id) and key file. AWS KMS and HashiCorp
// Vault Transit fit the same seam: Wrap = Encrypt, Unwrap = Decrypt.
type KeyProvider interface {
	Type() string
	Wrap(ctx context.Context, dataKey []byte) (*KeyFile, error)
	Unwrap(ctx context.Context, kf *KeyFile) ([]byte, error)
}

// ErrWrongKey says a key-encryption key does not open a key file.
var ErrWrongKey = errors.New("wrong key")

// ErrProviderMismatch says a key file was made by another kind of provider.
var ErrProviderMismatch = errors.New("key file made by another provider")

// KeyFile is the stored form of a wrapped data key (keys/<id>, plaintext JSON).
type KeyFile struct {
	Version  int       `json:"version"`
	Type     string    `json:"type"` // provider type: "passphrase", "keyfile"
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	KDF      *KDF      `json:"kdf,omitempty"`
	Salt     []byte    `json:"salt"`    // HKDF salt for the KEK / sealer salt
	Wrapped  []byte    `json:"wrapped"` // AES-256-GCM(KEK, data key)
	KeyRef   string    `json:"key_ref,omitempty"`
}

// KDF holds Argon2id parameters.
type KDF struct {
	Alg     string `json:"alg"` // "argon2id"
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
	Salt    []byte `json:"salt"`
}

// DefaultKDF is what new passphrase keys use: 64 MiB, 1 pass, 2 lanes (above
// OWASP's Argon2id minimum of 46 MiB/1 pass; ~40 ms on 2 cores with
// argon2idKey). Each key file records its own parameters, so they can be
// raised without breaking existing vaults.
var DefaultKDF = KDF{Alg: "argon2id", Time: 1, Memory: 64 << 10, Threads: 2}

// TestKDF is a cheap KDF for tests only.
var TestKDF = KDF{Alg: "argon2id", Time: 1, Memory: 64, Threads: 1}

func wrapWith(kek []byte, dataKey []byte) (salt, wrapped []byte, err error) {
	k := &Key{}
	copy(k.Enc[:], kek)
	s, err := k.NewSealer("kek")
	if err != nil {
		return nil, nil, err
	}
	return s.Salt[:], s.Seal(nil, 0, dataKey, []byte("coffre data key")), nil
}

func unwrapWith(kek []byte, salt, wrapped []byte) ([]byte, error) {
	k := &Key{}
	copy(k.Enc[:], kek)
	s, err := k.OpenSealer("kek", salt)
	if err != nil {
		return nil, err
	}
	out, err := s.Open(nil, 0, wrapped, []byte("coffre data key"))
	if err != nil {
		return nil, ErrWrongKey
	}
	return out, nil
}

// Passphrase is a KeyProvider whose KEK is Argon2id(passphrase).
type Passphrase struct {
	Secret string
	Params KDF // used by Wrap; zero value means DefaultKDF
}

// Type returns "passphrase".
func (p *Passphrase) Type() string { return "passphrase" }

func (p *Passphrase) kek(k *KDF) ([]byte, error) {
	if k == nil || k.Alg != "argon2id" || k.Time == 0 || k.Memory == 0 || k.Threads == 0 || len(k.Salt) < 16 {
		return nil, fmt.Errorf("key file has invalid KDF parameters %+v", k)
	}
	if k.Memory > 4<<20 || k.Time > 100 {
		return nil, fmt.Errorf("key file asks for an unreasonable KDF cost (memory %d KiB, time %d)", k.Memory, k.Time)
	}
	// argon2idKey unmaps its working memory (64 MiB by default) before it
	// returns: none of it stays for the backup that follows.
	return argon2idKey([]byte(p.Secret), k.Salt, k.Time, k.Memory, k.Threads, 32), nil
}

// Wrap seals dataKey under Argon2id(passphrase).
func (p *Passphrase) Wrap(ctx context.Context, dataKey []byte) (*KeyFile, error) {
	if p.Secret == "" {
		return nil, errors.New("empty passphrase")
	}
	kdf := p.Params
	if kdf.Alg == "" {
		kdf = DefaultKDF
	}
	kdf.Salt = make([]byte, 16)
	if _, err := rand.Read(kdf.Salt); err != nil {
		return nil, err
	}
	kek, err := p.kek(&kdf)
	if err != nil {
		return nil, err
	}
	salt, wrapped, err := wrapWith(kek, dataKey)
	if err != nil {
		return nil, err
	}
	return &KeyFile{Version: 1, Type: p.Type(), KDF: &kdf, Salt: salt, Wrapped: wrapped}, nil
}

// Unwrap opens a passphrase key file.
func (p *Passphrase) Unwrap(ctx context.Context, kf *KeyFile) ([]byte, error) {
	if kf.Type != p.Type() {
		return nil, ErrProviderMismatch
	}
	kek, err := p.kek(kf.KDF)
	if err != nil {
		return nil, err
	}
	return unwrapWith(kek, kf.Salt, kf.Wrapped)
}

// KeyFileProvider is a KeyProvider whose KEK is the content of a file of at
// least 32 random bytes (any encoding; the bytes are hashed).
type KeyFileProvider struct {
	Path string
}

// Type returns "keyfile".
func (p *KeyFileProvider) Type() string { return "keyfile" }

func (p *KeyFileProvider) kek() ([]byte, error) {
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < 32 {
		return nil, fmt.Errorf("key file %s holds %d bytes, want at least 32 random bytes (make one with `coffre key generate`)", p.Path, len(b))
	}
	h := Hash(b)
	return h[:], nil
}

// Wrap seals dataKey under the key file's content.
func (p *KeyFileProvider) Wrap(ctx context.Context, dataKey []byte) (*KeyFile, error) {
	kek, err := p.kek()
	if err != nil {
		return nil, err
	}
	salt, wrapped, err := wrapWith(kek, dataKey)
	if err != nil {
		return nil, err
	}
	return &KeyFile{Version: 1, Type: p.Type(), Salt: salt, Wrapped: wrapped}, nil
}

// Unwrap opens a key-file key.
func (p *KeyFileProvider) Unwrap(ctx context.Context, kf *KeyFile) ([]byte, error) {
	if kf.Type != p.Type() {
		return nil, ErrProviderMismatch
	}
	kek, err := p.kek()
	if err != nil {
		return nil, err
	}
	return unwrapWith(kek, kf.Salt, kf.Wrapped)
}

// GenerateKeyFile writes 32 random bytes, hex encoded, to path (mode 0600),
// refusing to overwrite an existing file.
func GenerateKeyFile(path string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%x\n", b); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	return f.Close()
}

// EncodeKeyFile serialises a key file.
func EncodeKeyFile(kf *KeyFile) ([]byte, error) { return json.MarshalIndent(kf, "", "  ") }

// DecodeKeyFile parses a key file.
func DecodeKeyFile(b []byte) (*KeyFile, error) {
	kf := &KeyFile{}
	if err := json.Unmarshal(b, kf); err != nil {
		return nil, fmt.Errorf("parse key file: %w", err)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("key file has version %d, this coffre reads version 1", kf.Version)
	}
	return kf, nil
}
