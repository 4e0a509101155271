package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/coffre/coffre/internal/catalog"
)

// Token format: "coffre_" + id + "_" + secret, where id is 12 lowercase hex
// digits (6 random bytes, public: it names the token in audit events) and
// secret is 32 random bytes in unpadded base64url (43 characters, which may
// themselves contain '_' or '-'). The catalog stores only
// hex(SHA-256(whole token)).
const (
	tokenPrefix    = "coffre_"
	tokenIDLen     = 12
	tokenSecretLen = 43 // base64.RawURLEncoding.EncodedLen(32)
	tokenLen       = len(tokenPrefix) + tokenIDLen + 1 + tokenSecretLen
)

// NewToken creates a token named name, stores its hash, and returns the token (shown once) and its record.
func NewToken(ctx context.Context, cat catalog.Catalog, name string) (string, catalog.Token, error) {
	for attempt := 0; ; attempt++ {
		var idb [tokenIDLen / 2]byte
		var secret [32]byte
		if _, err := rand.Read(idb[:]); err != nil {
			return "", catalog.Token{}, fmt.Errorf("api: new token: %w", err)
		}
		if _, err := rand.Read(secret[:]); err != nil {
			return "", catalog.Token{}, fmt.Errorf("api: new token: %w", err)
		}
		id := hex.EncodeToString(idb[:])
		tok := tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
		hash := HashToken(tok)
		err := cat.CreateToken(ctx, catalog.Token{ID: id, Name: name, Hash: hash})
		if errors.Is(err, catalog.ErrConflict) && attempt < 3 {
			continue // a 48-bit id collided; draw another
		}
		if err != nil {
			return "", catalog.Token{}, fmt.Errorf("api: new token %q: %w", name, err)
		}
		rec, err := cat.TokenByHash(ctx, hash, false)
		if err != nil {
			return "", catalog.Token{}, fmt.Errorf("api: new token %q: read back: %w", name, err)
		}
		return tok, rec, nil
	}
}

// HashToken returns hex(SHA-256(tok)), the form in which the catalog stores
// a token.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// parseToken checks tok's shape and returns its public id.
func parseToken(tok string) (id string, ok bool) {
	if len(tok) != tokenLen || !strings.HasPrefix(tok, tokenPrefix) {
		return "", false
	}
	rest := tok[len(tokenPrefix):]
	id, sep, secret := rest[:tokenIDLen], rest[tokenIDLen], rest[tokenIDLen+1:]
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	if sep != '_' {
		return "", false
	}
	if b, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil || len(b) != 32 {
		return "", false
	}
	return id, true
}
