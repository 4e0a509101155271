package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// AuditCanonicalJSON is the byte string an audit event's hash covers: the
// event without Hash, as JSON with fixed field order and the time in UTC
// RFC 3339 with nanoseconds.
func AuditCanonicalJSON(e AuditEvent) []byte {
	b, err := json.Marshal(struct {
		Seq      int64  `json:"seq"`
		Time     string `json:"time"`
		Actor    string `json:"actor"`
		Action   string `json:"action"`
		Object   string `json:"object"`
		Outcome  string `json:"outcome"`
		Detail   string `json:"detail"`
		PrevHash string `json:"prev_hash"`
	}{e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Object, e.Outcome, e.Detail, e.PrevHash})
	if err != nil { // cannot happen: only strings and an integer
		panic(fmt.Sprintf("catalog: audit json: %v", err))
	}
	return b
}

// AuditHash returns hex(SHA-256(PrevHash || canonical JSON)), where PrevHash
// is the previous event's hash as bytes (empty for the first event). An
// undecodable PrevHash is hashed as its text, so it can never verify.
func AuditHash(e AuditEvent) string {
	h := sha256.New()
	prev, err := hex.DecodeString(e.PrevHash)
	if err != nil {
		prev = []byte(e.PrevHash)
	}
	h.Write(prev)
	h.Write(AuditCanonicalJSON(e))
	return hex.EncodeToString(h.Sum(nil))
}

// VerifyChain checks events sorted by Seq from the start of the chain and
// returns the first Seq that does not verify (a gap, a broken link or a wrong
// hash), or 0 when all do.
func VerifyChain(next func() (AuditEvent, bool, error)) (int64, error) {
	want, prev := int64(1), ""
	for {
		e, ok, err := next()
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, nil
		}
		if e.Seq != want {
			return want, nil
		}
		if e.PrevHash != prev || AuditHash(e) != e.Hash {
			return e.Seq, nil
		}
		want, prev = want+1, e.Hash
	}
}
