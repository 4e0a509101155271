package api

import (
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
)

func TestReadRoutes(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cl := e.ctx, e.cl

	h, err := cl.Health(ctx)
	if err != nil || h.Status != "ok" || h.Time == nil || !h.Time.Equal(t0) {
		t.Fatalf("Health = %+v, %v; want ok at %v", h, err, t0)
	}

	vs, err := cl.ListVaults(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := vaultNames(vs); !slices.Equal(names, []string{"primary", "secondary"}) {
		t.Errorf("ListVaults = %v", names)
	}
	v, err := cl.GetVault(ctx, "primary")
	if err != nil {
		t.Fatal(err)
	}
	want := catalog.Vault{Name: "primary", Location: "file:///srv/vaults/primary", KeyRef: "env:PRIMARY_KEY",
		Lock: catalog.VaultLock{Mode: catalog.LockGovernance, MinRetentionDays: 7}, Tags: map[string]string{"team": "ops"}, CreatedAt: t0}
	if got := v.ToCatalog(); !reflect.DeepEqual(got, want) {
		t.Errorf("GetVault = %+v, want %+v", got, want)
	}
	_, err = cl.GetVault(ctx, "nope")
	ae := apiErr(t, err, http.StatusNotFound)
	contains(t, "message", ae.Message, `vault "nope" not found`)
	if hint.Of(err) == "" {
		t.Error("404 carries no hint")
	}

	rs, err := cl.ListResources(ctx, "")
	if err != nil || len(rs) != 2 {
		t.Fatalf("ListResources = %v, %v; want 2", rs, err)
	}
	rs, err = cl.ListResources(ctx, "filesystem")
	if err != nil || len(rs) != 1 || rs[0].ID != resDocs {
		t.Fatalf("ListResources(filesystem) = %+v, %v", rs, err)
	}
	r, err := cl.GetResource(ctx, resDB)
	if err != nil || r.Type != "postgres" || r.Settings["dsn_password"] != "env:PGPASSWORD" {
		t.Fatalf("GetResource(%s) = %+v, %v", resDB, r, err)
	}

	ps, err := cl.ListPlans(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "daily" || ps[1].Name != "weekly" {
		t.Fatalf("ListPlans = %+v, %v", ps, err)
	}
	p, err := cl.GetPlan(ctx, "daily")
	if err != nil {
		t.Fatal(err)
	}
	rule := p.Rules[0]
	if len(p.Rules) != 1 || rule.Name != "nightly" || rule.Timezone != "Europe/Paris" || rule.StartWindowMinutes != 60 ||
		rule.CompletionWindowMinutes != 180 || len(rule.CopyActions) != 1 || rule.CopyActions[0].TargetVault != "secondary" {
		t.Errorf("GetPlan(daily) = %+v", p)
	}
	_, err = cl.GetPlan(ctx, "monthly")
	apiErr(t, err, http.StatusNotFound)

	ss, err := cl.ListSelections(ctx, "")
	if err != nil || len(ss) != 2 {
		t.Fatalf("ListSelections = %+v, %v", ss, err)
	}
	ss, err = cl.ListSelections(ctx, "daily")
	if err != nil || len(ss) != 1 || ss[0].Name != "daily-docs" || ss[0].Conditions[0].Op != catalog.StringEquals {
		t.Fatalf("ListSelections(daily) = %+v, %v", ss, err)
	}

	rps, err := cl.ListRecoveryPoints(ctx, "", "")
	if err != nil || len(rps) != 4 {
		t.Fatalf("ListRecoveryPoints = %d points, %v; want 4", len(rps), err)
	}
	rps, err = cl.ListRecoveryPoints(ctx, "primary", resDocs)
	if err != nil || len(rps) != 3 || rps[0].ID != rpA { // newest first
		t.Fatalf("ListRecoveryPoints(primary, docs) = %+v, %v", rps, err)
	}
	rps, err = cl.ListRecoveryPoints(ctx, "", resDB)
	if err != nil || len(rps) != 1 || rps[0].Vault != "secondary" || rps[0].Tier != catalog.TierCold {
		t.Fatalf("ListRecoveryPoints(resource %s) = %+v, %v", resDB, rps, err)
	}
	rp, err := cl.GetRecoveryPoint(ctx, "primary", rpUnique)
	if err != nil || rp.SizeBytes != 3000 || rp.DeleteAt == nil || !rp.DeleteAt.Equal(t0.Add(30*24*time.Hour)) {
		t.Fatalf("GetRecoveryPoint(full id) = %+v, %v", rp, err)
	}
	rp, err = cl.GetRecoveryPoint(ctx, "primary", rpUnique[:8])
	if err != nil || rp.ID != rpUnique {
		t.Fatalf("GetRecoveryPoint(prefix) = %+v, %v", rp, err)
	}
	_, err = cl.GetRecoveryPoint(ctx, "secondary", rpUnique)
	apiErr(t, err, http.StatusNotFound)

	// Jobs: one of each kind, one of them RUNNING.
	b1, err := e.cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	b2, err := e.cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: resDB, Vault: "secondary"})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	r1, err := e.cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindRestore, State: catalog.StateCreated, Resource: resDocs, Vault: "primary",
		Params: map[string]string{"recovery_point": rpA, "target": "/tmp/x"}})
	if err != nil {
		t.Fatal(err)
	}
	if running, err := e.cat.ClaimJob(ctx, "w1", catalog.ClaimLimits{}); err != nil || running.ID != b1.ID {
		t.Fatalf("ClaimJob = %v, %v; want the oldest job", running.ID, err)
	}
	for _, c := range []struct {
		q    JobQuery
		want []string
	}{
		{JobQuery{}, []string{b1.ID, b2.ID, r1.ID}},
		{JobQuery{Limit: 2}, []string{b1.ID, b2.ID}},
		{JobQuery{States: []catalog.JobState{catalog.StateRunning}}, []string{b1.ID}},
		{JobQuery{States: []catalog.JobState{catalog.StatePending, catalog.StateCreated}}, []string{b2.ID, r1.ID}},
		{JobQuery{Kind: catalog.KindRestore}, []string{r1.ID}},
		{JobQuery{Resource: resDocs}, []string{b1.ID, r1.ID}},
		{JobQuery{Vault: "secondary"}, []string{b2.ID}},
		{JobQuery{Kind: catalog.KindBackup, Vault: "primary"}, []string{b1.ID}},
	} {
		js, err := cl.ListJobs(ctx, c.q)
		if err != nil {
			t.Fatalf("ListJobs(%+v): %v", c.q, err)
		}
		if got := jobIDs(js); !slices.Equal(got, c.want) {
			t.Errorf("ListJobs(%+v) = %v, want %v", c.q, got, c.want)
		}
	}
	// A comma list works like repeated parameters; bad values are 400.
	status, _, _ := e.raw("GET", "/v1/jobs?state=running,pending", e.bearer(), nil)
	if status != http.StatusOK {
		t.Errorf("state comma list: status %d", status)
	}
	for _, q := range []string{"state=SLEEPING", "kind=NAP", "limit=-1", "limit=ten"} {
		if status, _, eb := e.raw("GET", "/v1/jobs?"+q, e.bearer(), nil); status != http.StatusBadRequest {
			t.Errorf("GET /v1/jobs?%s: status %d (%s), want 400", q, status, eb.Error)
		}
	}
	j, err := cl.GetJob(ctx, b1.ID)
	if err != nil || j.State != catalog.StateRunning || j.Owner != "w1" || j.Attempt != 1 || j.StartedAt == nil {
		t.Fatalf("GetJob(running) = %+v, %v", j, err)
	}
	j, err = cl.GetJob(ctx, r1.ID)
	if err != nil || j.Params["recovery_point"] != rpA || j.Kind != catalog.KindRestore {
		t.Fatalf("GetJob(restore) = %+v, %v", j, err)
	}
	_, err = cl.GetJob(ctx, "0000")
	apiErr(t, err, http.StatusNotFound)

	// The audit routes see every call above.
	es, err := cl.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) == 0 || es[0].Seq != 1 || es[0].Hash == "" || es[0].Time == nil {
		t.Fatalf("ListAudit = %+v", es)
	}
	page, err := cl.ListAudit(ctx, 2, 3)
	if err != nil || len(page) != 3 || page[0].Seq != 3 || page[2].Seq != 5 {
		t.Fatalf("ListAudit(after 2, limit 3) = %+v, %v", page, err)
	}
	if page[0].PrevHash != es[1].Hash {
		t.Errorf("event 3 links to %s, want event 2's hash %s", page[0].PrevHash, es[1].Hash)
	}
	// The events served verify on the client side too.
	for _, ev := range es {
		if catalog.AuditHash(ev.ToCatalog()) != ev.Hash {
			t.Fatalf("event %d as served does not hash to its Hash", ev.Seq)
		}
	}
	ver, err := cl.VerifyAudit(ctx)
	if err != nil || !ver.Intact || ver.BrokenSeq != 0 {
		t.Fatalf("VerifyAudit = %+v, %v", ver, err)
	}
}

func TestIDsWithSlashes(t *testing.T) {
	e := newEnv(t, nil)
	// Through the client, which escapes the '/' as %2F.
	r, err := e.cl.GetResource(e.ctx, resDocs)
	if err != nil || r.ID != resDocs || r.Settings["path"] != "/srv/docs" {
		t.Fatalf("GetResource(%s) = %+v, %v", resDocs, r, err)
	}
	if ev := e.lastAudit(); ev.Object != resDocs || ev.Action != "api GET /v1/resources/{id...}" || ev.Outcome != "ok" {
		t.Errorf("audit event %+v", ev)
	}
	// Unescaped, as curl users write it.
	if status, _, eb := e.raw("GET", "/v1/resources/"+resDocs, e.bearer(), nil); status != http.StatusOK {
		t.Errorf("unescaped resource path: status %d (%s)", status, eb.Error)
	}
	// A missing id with a slash is a 404 naming the whole id.
	_, err = e.cl.GetResource(e.ctx, "arn:coffre:filesystem:::resource/none/deeper")
	ae := apiErr(t, err, http.StatusNotFound)
	contains(t, "message", ae.Message, "resource/none/deeper")
	// Query parameters carry them too.
	j, err := e.cl.StartBackup(e.ctx, BackupRequest{Resource: resDocs, Vault: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.cl.ListJobs(e.ctx, JobQuery{Resource: resDocs})
	if err != nil || len(js) != 1 || js[0].ID != j.ID {
		t.Fatalf("ListJobs(resource %s) = %v, %v", resDocs, jobIDs(js), err)
	}
	rps, err := e.cl.ListRecoveryPoints(e.ctx, "", resDocs)
	if err != nil || len(rps) != 3 {
		t.Fatalf("ListRecoveryPoints(resource %s) = %d, %v", resDocs, len(rps), err)
	}
	// A vault name with a slash stays one path segment.
	_, err = e.cl.GetRecoveryPoint(e.ctx, "primary/x", rpUnique)
	ae = apiErr(t, err, http.StatusNotFound)
	contains(t, "message", ae.Message, `vault "primary/x"`)
}

func TestNoRouteAndWrongMethod(t *testing.T) {
	e := newEnv(t, nil)
	status, h, eb := e.raw("DELETE", "/v1/vaults/primary", e.bearer(), nil)
	if status != http.StatusMethodNotAllowed || !strings.Contains(h.Get("Allow"), "GET") {
		t.Errorf("DELETE vault: status %d, Allow %q; want 405 allowing GET", status, h.Get("Allow"))
	}
	contains(t, "error", eb.Error, "DELETE")
	if ev := e.lastAudit(); ev.Outcome != "error 405" || ev.Actor != "token:"+e.tokID {
		t.Errorf("audit event %+v, want outcome error 405 by the token", ev)
	}
	status, _, _ = e.raw("GET", "/v1/jobs/backup/x", e.bearer(), nil)
	if status != http.StatusNotFound {
		t.Errorf("unknown route: status %d, want 404", status)
	}
	if ev := e.lastAudit(); ev.Outcome != "error 404" || ev.Object != "/v1/jobs/backup/x" {
		t.Errorf("audit event %+v, want outcome error 404 naming the path", ev)
	}
	status, _, _ = e.raw("GET", "/v1/jobs/backup", e.bearer(), nil) // a job id "backup"
	if status != http.StatusNotFound {
		t.Errorf("GET /v1/jobs/backup: status %d, want 404", status)
	}
	status, _, _ = e.raw("PUT", "/v1/jobs/backup", e.bearer(), nil)
	if status != http.StatusMethodNotAllowed {
		t.Errorf("PUT /v1/jobs/backup: status %d, want 405", status)
	}
}

func vaultNames(vs []Vault) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

func jobIDs(js []Job) []string {
	out := []string{}
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}
