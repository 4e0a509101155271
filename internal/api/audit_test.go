package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
)

func TestEveryCallAppendsOneAuditEvent(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cl := e.ctx, e.cl
	anon := &Client{BaseURL: e.hs.URL, HTTP: e.hs.Client()}
	var jobID string
	calls := []struct {
		name    string
		call    func() error
		action  string
		outcome string
	}{
		{"health", func() error { _, err := cl.Health(ctx); return err }, "api GET /v1/health", "ok"},
		{"vaults", func() error { _, err := cl.ListVaults(ctx); return err }, "api GET /v1/vaults", "ok"},
		{"missing vault", func() error { _, err := cl.GetVault(ctx, "x"); return err }, "api GET /v1/vaults/{name}", "error 404"},
		{"anonymous", func() error { _, err := anon.ListJobs(ctx, JobQuery{}); return err }, "api GET /v1/jobs", "denied"},
		{"backup", func() error {
			j, err := cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
			jobID = j.ID
			return err
		}, "api POST /v1/jobs/backup", "ok"},
		{"bad backup", func() error {
			_, err := cl.StartBackup(ctx, BackupRequest{Resource: resDocs, Vault: "primary", StartWindowMinutes: intp(1)})
			return err
		}, "api POST /v1/jobs/backup", "error 400"},
		{"abort", func() error { _, err := cl.AbortJob(ctx, jobID); return err }, "api POST /v1/jobs/{id}/abort", "ok"},
		{"audit", func() error { _, err := cl.ListAudit(ctx, 0, 0); return err }, "api GET /v1/audit", "ok"},
		{"verify", func() error { _, err := cl.VerifyAudit(ctx); return err }, "api GET /v1/audit/verify", "ok"},
		{"points", func() error { _, err := cl.ListRecoveryPoints(ctx, "primary", ""); return err }, "api GET /v1/recovery-points", "ok"},
	}
	for _, c := range calls {
		before := e.audit()
		err := c.call()
		after := e.audit()
		if len(after) != len(before)+1 {
			t.Fatalf("%s: audit grew by %d, want 1", c.name, len(after)-len(before))
		}
		ev := after[len(after)-1]
		if ev.Action != c.action || ev.Outcome != c.outcome {
			t.Errorf("%s: audit event %q / %q, want %q / %q", c.name, ev.Action, ev.Outcome, c.action, c.outcome)
		}
		if (c.outcome == "ok") != (err == nil) {
			t.Errorf("%s: error %v with outcome %s", c.name, err, c.outcome)
		}
		ver, err := cl.VerifyAudit(ctx)
		if err != nil || !ver.Intact {
			t.Fatalf("%s: VerifyAudit = %+v, %v", c.name, ver, err)
		}
	}
	ev := e.audit()
	for _, x := range ev {
		if x.Action == "api GET /v1/jobs" && x.Outcome == "denied" && x.Actor != "anonymous" {
			t.Errorf("denied event has actor %q", x.Actor)
		}
	}

	// Tampering with a stored event is reported through the API.
	if err := e.cat.ExecRawForTest(ctx, `UPDATE audit_events SET detail = 'edited' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	ver, err := cl.VerifyAudit(ctx)
	if err != nil || ver.Intact || ver.BrokenSeq != 3 {
		t.Fatalf("VerifyAudit after tampering = %+v, %v; want broken at 3", ver, err)
	}
}

// newPlainServer answers every request with status and a text/plain body.
func newPlainServer(t *testing.T, status int, body string) string {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// failingCatalog fails AppendAudit (when failAudit is set) and ListVaults.
type failingCatalog struct {
	catalog.Catalog
	failAudit atomic.Bool
}

func (f *failingCatalog) AppendAudit(ctx context.Context, e catalog.AuditEvent) (catalog.AuditEvent, error) {
	if f.failAudit.Load() {
		return catalog.AuditEvent{}, errors.New("audit disk full")
	}
	return f.Catalog.AppendAudit(ctx, e)
}

func (f *failingCatalog) ListVaults(ctx context.Context) ([]catalog.Vault, error) {
	return nil, errors.New("vault table on fire")
}

func TestAuditFailureFailsTheCall(t *testing.T) {
	var fc *failingCatalog
	e := newEnv(t, func(c catalog.Catalog) catalog.Catalog { fc = &failingCatalog{Catalog: c}; return fc })
	fc.failAudit.Store(true)

	// A read is refused, its answer withheld.
	_, err := e.cl.GetVault(e.ctx, "primary")
	ae := apiErr(t, err, http.StatusInternalServerError)
	contains(t, "message", ae.Message, "audit")
	// So is an unauthenticated call and an unknown route.
	status, _, _ := e.raw("GET", "/v1/health", "", nil)
	if status != http.StatusInternalServerError {
		t.Errorf("unaudited 401: status %d, want 500", status)
	}
	status, _, _ = e.raw("GET", "/v1/nope", e.bearer(), nil)
	if status != http.StatusInternalServerError {
		t.Errorf("unaudited 404: status %d, want 500", status)
	}
	// A mutation: the change is made first (see route.ServeHTTP), then the
	// client is told it failed and the server logs it.
	_, err = e.cl.StartBackup(e.ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
	apiErr(t, err, http.StatusInternalServerError)
	contains(t, "log", e.logs.String(), "audit disk full")
	contains(t, "log", e.logs.String(), "api POST /v1/jobs/backup")
	if n := len(e.audit()); n != 0 {
		t.Errorf("%d audit events despite the failure", n)
	}
}

func TestInternalErrorsAreNotLeaked(t *testing.T) {
	e := newEnv(t, func(c catalog.Catalog) catalog.Catalog { return &failingCatalog{Catalog: c} })
	_, err := e.cl.ListVaults(e.ctx)
	ae := apiErr(t, err, http.StatusInternalServerError)
	if strings.Contains(ae.Message, "fire") {
		t.Errorf("500 message %q leaks the internal error", ae.Message)
	}
	contains(t, "log", e.logs.String(), "vault table on fire")
	ev := e.lastAudit()
	if ev.Outcome != "error 500" || strings.Contains(ev.Detail, "fire") {
		t.Errorf("audit event %+v", ev)
	}
}

func TestStatusOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{catalog.ErrNotFound, 404},
		{errorsJoin("get job", catalog.ErrNotFound), 404},
		{catalog.ErrInvalid, 400},
		{catalog.ErrConflict, 409},
		{catalog.ErrInvalidTransition, 409},
		{&http.MaxBytesError{Limit: 1}, 400},
		{hint.With(&Error{Status: 405, Message: "x"}, "y"), 405},
		{errors.New("boom"), 500},
	} {
		if got := statusOf(c.err); got != c.want {
			t.Errorf("statusOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func errorsJoin(op string, err error) error { return errors.Join(errors.New(op), err) }

func TestClientError(t *testing.T) {
	e := &Error{Status: 409, Message: "job x is already COMPLETED"}
	contains(t, "Error()", e.Error(), "409")
	contains(t, "Error()", e.Error(), "already COMPLETED")
	// A non-JSON answer (a proxy's page) still becomes an *Error.
	hs := newPlainServer(t, http.StatusBadGateway, "upstream down\n")
	_, err := (&Client{BaseURL: hs, Token: "t"}).Health(context.Background())
	ae := apiErr(t, err, http.StatusBadGateway)
	if ae.Message != "upstream down" || hint.Of(err) != "" {
		t.Errorf("plain error answer = %+v", ae)
	}
	if got, ok := AsError(err); !ok || got != ae {
		t.Errorf("AsError = %v, %v", got, ok)
	}
}

func TestConvertersRoundTrip(t *testing.T) {
	at := func(h int) time.Time { return t0.Add(time.Duration(h)*time.Hour + 123*time.Nanosecond) }
	vault := catalog.Vault{Name: "v", Location: "s3://b/p", KeyRef: "kms:1", Lock: catalog.VaultLock{Mode: catalog.LockCompliance, MinRetentionDays: 1, MaxRetentionDays: 9},
		Tags: map[string]string{"a": "b"}, CreatedAt: at(1)}
	if got := FromVault(vault).ToCatalog(); !reflect.DeepEqual(got, vault) {
		t.Errorf("vault round trip: %+v", got)
	}
	res := catalog.Resource{ID: resDocs, Type: "filesystem", Name: "docs", Settings: map[string]string{"path": "/x"}, Tags: map[string]string{"k": "v"}, CreatedAt: at(2)}
	if got := FromResource(res).ToCatalog(); !reflect.DeepEqual(got, res) {
		t.Errorf("resource round trip: %+v", got)
	}
	plan := catalog.Plan{Name: "p", Rules: []catalog.Rule{{Name: "r", Schedule: "rate(1 hour)", Timezone: "UTC", StartWindowMinutes: 60, CompletionWindowMinutes: 120,
		TargetVault: "v", MoveToColdAfterDays: 1, DeleteAfterDays: 100, CopyActions: []catalog.CopyAction{{TargetVault: "w", MoveToColdAfterDays: 2, DeleteAfterDays: 200}},
		ContinuousBackup: true}}, Tags: map[string]string{"t": "u"}, CreatedAt: at(3)}
	if got := FromPlan(plan).ToCatalog(); !reflect.DeepEqual(got, plan) {
		t.Errorf("plan round trip: %+v", got)
	}
	sel := catalog.Selection{Name: "s", Plan: "p", Resources: []string{"a*"}, NotResources: []string{"b"},
		Conditions: []catalog.Condition{{Op: catalog.StringLike, Key: "k", Value: "v*"}}, CreatedAt: at(4)}
	if got := FromSelection(sel).ToCatalog(); !reflect.DeepEqual(got, sel) {
		t.Errorf("selection round trip: %+v", got)
	}
	job := catalog.Job{ID: "j", Kind: catalog.KindCopy, State: catalog.StateRunning, Resource: "r", Vault: "v", Plan: "p", Rule: "r",
		CreatedAt: at(5), StartBy: at(6), CompleteBy: at(7), StartedAt: at(8), FinishedAt: at(9), Attempt: 2, Owner: "w",
		HeartbeatAt: at(10), RecoveryPoint: "rp", Message: "m", BytesProcessed: 42, Params: map[string]string{"a": "b"}, NotBefore: at(11)}
	if got := FromJob(job).ToCatalog(); !reflect.DeepEqual(got, job) {
		t.Errorf("job round trip: %+v", got)
	}
	rp := catalog.RecoveryPoint{ID: "id", Vault: "v", Resource: "r", CreatedAt: at(12), Status: "PARTIAL", SizeBytes: 7, Tier: catalog.TierCold,
		MoveToColdAt: at(13), DeleteAt: at(14), Plan: "p", Rule: "r", JobID: "j"}
	if got := FromRecoveryPoint(rp).ToCatalog(); !reflect.DeepEqual(got, rp) {
		t.Errorf("recovery point round trip: %+v", got)
	}
	ev := catalog.AuditEvent{Seq: 3, Time: at(15), Actor: "a", Action: "b", Object: "c", Outcome: "ok", Detail: "d", PrevHash: "p", Hash: "h"}
	if got := FromAuditEvent(ev).ToCatalog(); !reflect.DeepEqual(got, ev) {
		t.Errorf("audit event round trip: %+v", got)
	}
	tok := catalog.Token{ID: "i", Name: "n", CreatedAt: at(16), LastUsedAt: at(17)}
	if got := FromToken(tok).ToCatalog(); !reflect.DeepEqual(got, tok) {
		t.Errorf("token round trip: %+v", got)
	}
	// Zero times and no lock are left out of the JSON.
	if j := FromJob(catalog.Job{ID: "x"}); j.StartBy != nil || j.FinishedAt != nil {
		t.Errorf("zero times became %+v", j)
	}
	if v := FromVault(catalog.Vault{Name: "n"}); v.Lock != nil {
		t.Errorf("no lock became %+v", v.Lock)
	}
}
