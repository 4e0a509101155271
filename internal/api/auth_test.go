package api

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
)

func TestUnauthenticatedCallsAreDeniedAndAudited(t *testing.T) {
	e := newEnv(t, nil)

	// A well-formed token that was never stored.
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		t.Fatal(err)
	}
	forged := "coffre_0123456789ab_" + base64.RawURLEncoding.EncodeToString(secret[:])
	if _, ok := parseToken(forged); !ok {
		t.Fatalf("forged token %q should be well-formed", forged)
	}
	// A token that was stored, then deleted.
	revoked, rec, err := NewToken(e.ctx, e.cat, "revoked")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Client{BaseURL: e.hs.URL, Token: revoked}).Health(e.ctx); err != nil {
		t.Fatalf("token before deletion: %v", err)
	}
	if err := e.cat.DeleteToken(e.ctx, rec.ID); err != nil {
		t.Fatal(err)
	}

	cases := []struct{ name, method, path, authz string }{
		{"no header", "GET", "/v1/health", ""},
		{"not bearer", "GET", "/v1/vaults", "Basic dXNlcjpwYXNz"},
		{"malformed", "GET", "/v1/jobs", "Bearer not-a-token"},
		{"wrong prefix", "GET", "/v1/jobs", "Bearer " + strings.Replace(e.tok, "coffre_", "cofre__", 1)},
		{"unknown token", "GET", "/v1/resources/" + resDocs, "Bearer " + forged},
		{"deleted token", "GET", "/v1/audit", "Bearer " + revoked},
		{"mutation", "POST", "/v1/jobs/backup", "Bearer " + forged},
		{"unknown route", "GET", "/v1/nothing-here", ""},
		{"wrong method", "DELETE", "/v1/vaults/primary", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(e.audit())
			var body *bytes.Reader
			if c.method == "POST" {
				body = bytes.NewReader([]byte(`{"resource":"` + resDocs + `","vault":"primary"}`))
			} else {
				body = bytes.NewReader(nil)
			}
			status, h, eb := e.raw(c.method, c.path, c.authz, body)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d (%s), want 401", status, eb.Error)
			}
			if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q, want Bearer", h.Get("WWW-Authenticate"))
			}
			es := e.audit()
			if len(es) != before+1 {
				t.Fatalf("audit grew by %d events, want 1", len(es)-before)
			}
			ev := es[len(es)-1]
			if ev.Outcome != "denied" || ev.Actor != "anonymous" {
				t.Errorf("audit event %+v: want outcome denied by anonymous", ev)
			}
			if !strings.HasPrefix(ev.Action, "api "+c.method+" ") {
				t.Errorf("audit action %q, want api %s …", ev.Action, c.method)
			}
			for _, secretTok := range []string{e.tok, forged, revoked} {
				if strings.Contains(eb.Error+eb.Hint+ev.Detail+ev.Object, secretTok) {
					t.Errorf("a token is echoed in the answer or the audit event")
				}
			}
		})
	}

	// The denied mutation did nothing.
	jobs, err := e.cat.ListJobs(e.ctx, catalog.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Errorf("denied POST created %d jobs", len(jobs))
	}
	// Routes are audited with their pattern even when denied.
	found := false
	for _, ev := range e.audit() {
		if ev.Action == "api GET /v1/resources/{id...}" && ev.Object == resDocs && ev.Outcome == "denied" {
			found = true
		}
	}
	if !found {
		t.Error("no denied audit event for GET /v1/resources/{id...} naming the resource")
	}

	// Through the client: an *Error with status 401 and a hint.
	_, err = (&Client{BaseURL: e.hs.URL, Token: forged}).ListVaults(e.ctx)
	ae := apiErr(t, err, http.StatusUnauthorized)
	if hint.Of(err) == "" || hint.Of(err) != ae.Hint {
		t.Errorf("hint.Of(err) = %q, want the server's hint %q", hint.Of(err), ae.Hint)
	}
	contains(t, "error", err.Error(), "401")
}

func TestTokenFormatAndStorage(t *testing.T) {
	e := newEnv(t, nil)
	if !regexp.MustCompile(`^coffre_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$`).MatchString(e.tok) {
		t.Fatalf("token %q does not have the documented format", e.tok)
	}
	if !strings.HasPrefix(e.tok, "coffre_"+e.tokID+"_") {
		t.Errorf("token does not start with its id %s", e.tokID)
	}
	toks, err := e.cat.ListTokens(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 1 {
		t.Fatalf("%d tokens stored, want 1", len(toks))
	}
	st := toks[0]
	if st.ID != e.tokID || st.Name != "tester" || st.Hash != HashToken(e.tok) || len(st.Hash) != 64 {
		t.Errorf("stored token %+v: want id %s, name tester and the SHA-256 of the token", st, e.tokID)
	}
	if !st.CreatedAt.Equal(t0) || !st.LastUsedAt.IsZero() {
		t.Errorf("stored token times %v / %v, want created %v, never used", st.CreatedAt, st.LastUsedAt, t0)
	}

	// Using the token records when.
	e.clk.Advance(time.Minute)
	if _, err := e.cl.Health(e.ctx); err != nil {
		t.Fatal(err)
	}
	toks, _ = e.cat.ListTokens(e.ctx)
	if !toks[0].LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("LastUsedAt %v, want %v", toks[0].LastUsedAt, t0.Add(time.Minute))
	}

	// Neither the catalog's files nor the server's log hold the token or its secret.
	secret := e.tok[len("coffre_"+e.tokID+"_"):]
	files, err := filepath.Glob(filepath.Join(e.dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	sawDB := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the lock file may be unreadable on some systems
		}
		if strings.HasPrefix(filepath.Base(f), "catalog.db") {
			sawDB = true
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the token's secret", filepath.Base(f))
		}
	}
	if !sawDB {
		t.Fatalf("no catalog.db among %v: is the check looking at the catalog?", files)
	}
	if strings.Contains(e.logs.String(), secret) {
		t.Error("the server's log holds the token's secret")
	}

	// The record has no hash in its JSON form.
	if FromToken(st).ToCatalog().Hash != "" {
		t.Error("the Token DTO carries the hash")
	}
}

func TestParseToken(t *testing.T) {
	good := "coffre_0123456789ab_" + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))
	if strings.Count(good, "_") < 3 {
		t.Fatalf("fixture %q should have '_' inside its secret", good)
	}
	if id, ok := parseToken(good); !ok || id != "0123456789ab" {
		t.Fatalf("parseToken(%q) = %q, %v", good, id, ok)
	}
	for _, bad := range []string{
		"",
		"coffre_",
		strings.Replace(good, "0123456789ab", "0123456789AB", 1), // upper-case hex
		strings.Replace(good, "0123456789ab", "0123456789ag", 1), // not hex
		strings.Replace(good, "coffre_", "coffee_", 1),
		good[:len(good)-1],
		good + "A",
		good[:len("coffre_0123456789ab")] + "-" + good[len("coffre_0123456789ab_"):],
		good[:len(good)-1] + "=",
		good[:len(good)-1] + "B", // non-zero trailing bits: not canonical base64
	} {
		if _, ok := parseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted a malformed token", bad)
		}
	}
}
