package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/testutil"
)

// Fixture ids.
const (
	resDocs = "arn:coffre:filesystem:::resource/docs" // contains ':' and '/'
	resDB   = "arn:coffre:postgres:local:main"
	// Two points share the prefix "aabbccdd"; "ffee0011…" is unique.
	rpA      = "aabbccdd11112222"
	rpB      = "aabbccdd33334444"
	rpUnique = "ffee001122334455"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is a server on a real SQLite catalog with a fake clock, behind
// httptest, and a client holding a valid token.
type env struct {
	t     *testing.T
	ctx   context.Context
	clk   *clock.Fake
	cat   *sqlite.Catalog
	dir   string
	srv   *Server
	hs    *httptest.Server
	cl    *Client
	tok   string
	tokID string
	logs  *testutil.LockedBuffer
}

// newEnv starts the server; wrap, when given, decorates the catalog the
// server sees (the fixtures and the env's own reads use the real one).
func newEnv(t *testing.T, wrap func(catalog.Catalog) catalog.Catalog) *env {
	t.Helper()
	ctx := context.Background()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	cat, err := sqlite.Open(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	var served catalog.Catalog = cat
	if wrap != nil {
		served = wrap(cat)
	}
	logs := &testutil.LockedBuffer{}
	srv := &Server{Cat: served, Clock: clk, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	tok, rec, err := NewToken(ctx, cat, "tester")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, clk: clk, cat: cat, dir: dir, srv: srv, hs: hs, tok: tok, tokID: rec.ID, logs: logs,
		cl: &Client{BaseURL: hs.URL, Token: tok, HTTP: hs.Client()}}
	e.seed()
	return e
}

func (e *env) seed() {
	t, ctx, cat := e.t, e.ctx, e.cat
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cat.PutVault(ctx, catalog.Vault{Name: "primary", Location: "file:///srv/vaults/primary", KeyRef: "env:PRIMARY_KEY",
		Lock: catalog.VaultLock{Mode: catalog.LockGovernance, MinRetentionDays: 7}, Tags: map[string]string{"team": "ops"}}))
	must(cat.PutVault(ctx, catalog.Vault{Name: "secondary", Location: "s3://bucket/secondary"}))
	must(cat.PutResource(ctx, catalog.Resource{ID: resDocs, Type: "filesystem", Name: "docs",
		Settings: map[string]string{"path": "/srv/docs"}, Tags: map[string]string{"backup": "daily"}}))
	must(cat.PutResource(ctx, catalog.Resource{ID: resDB, Type: "postgres", Name: "main",
		Settings: map[string]string{"dsn_password": "env:PGPASSWORD"}}))
	must(cat.PutPlan(ctx, catalog.Plan{Name: "daily", Rules: []catalog.Rule{{
		Name: "nightly", Schedule: "cron(0 3 * * ? *)", Timezone: "Europe/Paris", StartWindowMinutes: 60,
		CompletionWindowMinutes: 180, TargetVault: "primary", DeleteAfterDays: 35,
		CopyActions: []catalog.CopyAction{{TargetVault: "secondary", DeleteAfterDays: 90}},
	}}}))
	must(cat.PutPlan(ctx, catalog.Plan{Name: "weekly", Rules: []catalog.Rule{{Name: "sunday", Schedule: "cron(0 4 ? * SUN *)", TargetVault: "secondary"}}}))
	must(cat.PutSelection(ctx, catalog.Selection{Name: "daily-docs", Plan: "daily", Resources: []string{resDocs},
		Conditions: []catalog.Condition{{Op: catalog.StringEquals, Key: "backup", Value: "daily"}}}))
	must(cat.PutSelection(ctx, catalog.Selection{Name: "weekly-all", Plan: "weekly", Resources: []string{"arn:coffre:*"}}))
	for i, id := range []string{rpA, rpB, rpUnique} {
		must(cat.PutRecoveryPoint(ctx, catalog.RecoveryPoint{ID: id, Vault: "primary", Resource: resDocs,
			CreatedAt: t0.Add(-time.Duration(i+1) * time.Hour), Status: "COMPLETED", SizeBytes: int64(1000 * (i + 1)),
			Tier: catalog.TierWarm, DeleteAt: t0.Add(30 * 24 * time.Hour), Plan: "daily", Rule: "nightly"}))
	}
	must(cat.PutRecoveryPoint(ctx, catalog.RecoveryPoint{ID: "0123456789abcdef", Vault: "secondary", Resource: resDB,
		CreatedAt: t0.Add(-time.Hour), Status: "COMPLETED", Tier: catalog.TierCold}))
}

// raw sends a request with the given Authorization header ("" for none)
// and returns the status, the headers and the decoded JSON error, if any.
func (e *env) raw(method, path, authz string, body io.Reader) (int, http.Header, errorBody) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.hs.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var eb errorBody
	if resp.StatusCode >= 300 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			e.t.Errorf("%s %s: error answer has Content-Type %q, want application/json", method, path, ct)
		}
		if err := json.Unmarshal(data, &eb); err != nil || eb.Error == "" {
			e.t.Errorf("%s %s: error answer %q is not a JSON error", method, path, data)
		}
	}
	return resp.StatusCode, resp.Header, eb
}

func (e *env) bearer() string { return "Bearer " + e.tok }

// audit returns the whole audit chain.
func (e *env) audit() []catalog.AuditEvent {
	e.t.Helper()
	es, err := e.cat.ListAudit(e.ctx, catalog.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

// lastAudit returns the newest audit event.
func (e *env) lastAudit() catalog.AuditEvent {
	e.t.Helper()
	es := e.audit()
	if len(es) == 0 {
		e.t.Fatal("audit chain is empty")
	}
	return es[len(es)-1]
}

// apiErr asserts that err is an *Error with the given status.
func apiErr(t *testing.T, err error, status int) *Error {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *api.Error", err)
	}
	if ae.Status != status {
		t.Fatalf("status %d (%s), want %d", ae.Status, ae.Message, status)
	}
	return ae
}

func contains(t *testing.T, what, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%s %q does not contain %q", what, s, sub)
	}
}
