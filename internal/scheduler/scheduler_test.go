package scheduler

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/sqlite"
	"github.com/coffre/coffre/internal/clock"
)

var ctx = context.Background()

func open(t *testing.T, start time.Time) (catalog.Catalog, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(start)
	cat, err := sqlite.Open(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	return cat, clk
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, cat catalog.Catalog, plans []catalog.Plan, sels []catalog.Selection, res []catalog.Resource) {
	t.Helper()
	for _, r := range res {
		if r.Type == "" {
			r.Type = "filesystem"
		}
		must(t, cat.PutResource(ctx, r))
	}
	for _, p := range plans {
		must(t, cat.PutPlan(ctx, p))
	}
	for _, s := range sels {
		must(t, cat.PutSelection(ctx, s))
	}
}

func jobs(t *testing.T, cat catalog.Catalog) []catalog.Job {
	t.Helper()
	js, err := cat.ListJobs(ctx, catalog.JobFilter{})
	must(t, err)
	return js
}

func tick(t *testing.T, s *Scheduler) Result {
	t.Helper()
	r, err := s.Tick(ctx)
	must(t, err)
	for _, e := range r.Errors {
		t.Errorf("tick error: %v", e)
	}
	return r
}

var day0 = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func dailySetup(t *testing.T, start time.Time) (catalog.Catalog, *clock.Fake) {
	cat, clk := open(t, start)
	put(t, cat,
		[]catalog.Plan{{Name: "daily", Rules: []catalog.Rule{{
			Name: "nightly", Schedule: "cron(0 22 * * ? *)", StartWindowMinutes: 60,
			CompletionWindowMinutes: 240, TargetVault: "main",
		}}}},
		[]catalog.Selection{{Name: "daily/fs", Plan: "daily", Resources: []string{"arn:coffre:fs:local:*"}}},
		[]catalog.Resource{{ID: "arn:coffre:fs:local:a"}, {ID: "arn:coffre:fs:local:b"}, {ID: "arn:coffre:pg:local:c"}})
	return cat, clk
}

// runTicks ticks every 10 minutes from clk's time through end (inclusive).
func runTicks(t *testing.T, s *Scheduler, clk *clock.Fake, end time.Time) (created, existing int) {
	t.Helper()
	for ; !clk.Now().After(end); clk.Advance(10 * time.Minute) {
		r := tick(t, s)
		created += r.Created
		existing += r.Existing
	}
	return created, existing
}

func TestDailyTicksCreateOneJobPerFireAndResource(t *testing.T) {
	cat, clk := dailySetup(t, day0)
	s := New(cat, clk, Options{})

	// Up to the first fire: nothing; at 22:00 both resources get a PENDING job.
	created, _ := runTicks(t, s, clk, day0.Add(21*time.Hour+50*time.Minute))
	if created != 0 {
		t.Fatalf("created %d jobs before the first fire", created)
	}
	r := tick(t, s) // 22:00
	if r.Created != 2 {
		t.Fatalf("first fire created %d jobs, want 2", r.Created)
	}
	for _, j := range jobs(t, cat) {
		if j.State != catalog.StatePending {
			t.Errorf("job %s is %s, want PENDING", j.ID, j.State)
		}
	}
	clk.Advance(10 * time.Minute)
	c, _ := runTicks(t, s, clk, day0.Add(72*time.Hour))
	if c != 4 {
		t.Fatalf("days 2-3 created %d jobs, want 4", c)
	}

	js := jobs(t, cat)
	if len(js) != 6 {
		t.Fatalf("%d jobs, want 6", len(js))
	}
	per := map[string]int{}
	for _, j := range js {
		per[j.Resource]++
		fire := j.StartBy.Add(-60 * time.Minute)
		if fire.Hour() != 22 || fire.Minute() != 0 || !j.CompleteBy.Equal(fire.Add(240*time.Minute)) {
			t.Errorf("job %s: StartBy %v CompleteBy %v", j.ID, j.StartBy, j.CompleteBy)
		}
		if j.Kind != catalog.KindBackup || j.Plan != "daily" || j.Rule != "nightly" || j.Vault != "main" {
			t.Errorf("job fields %+v", j)
		}
		if j.ID != JobID("daily", "nightly", j.Resource, fire) {
			t.Errorf("job id %s is not derived from its fire", j.ID)
		}
		// Nothing ran them: the tick's ExpireStale expired them after StartBy.
		if j.State != catalog.StateExpired || j.Message != ExpiredMessage {
			t.Errorf("job %s: %s %q, want EXPIRED", j.ID, j.State, j.Message)
		}
	}
	if per["arn:coffre:fs:local:a"] != 3 || per["arn:coffre:fs:local:b"] != 3 || len(per) != 2 {
		t.Errorf("jobs per resource %v", per)
	}

	// Replaying the same ticks with a new scheduler (a restart, or a second
	// server on the same catalog) creates nothing.
	clk.Set(day0)
	s2 := New(cat, clk, Options{})
	created, existing := runTicks(t, s2, clk, day0.Add(72*time.Hour))
	if created != 0 || existing != 6 {
		t.Fatalf("replay created %d, found %d existing; want 0 and 6", created, existing)
	}
	if n := len(jobs(t, cat)); n != 6 {
		t.Fatalf("%d jobs after replay", n)
	}
}

func TestFirstTickOnlyLooksBackOneStartWindow(t *testing.T) {
	// 22:30 on day 3: only day 3's 22:00 fire is still startable.
	cat, clk := dailySetup(t, day0.Add(2*24*time.Hour+22*time.Hour+30*time.Minute))
	r := tick(t, New(cat, clk, Options{}))
	if r.Created != 2 || r.Expired != 0 {
		t.Fatalf("first tick: %+v, want 2 created", r)
	}
	// 23:30: the fire is older than its start window, nothing is created.
	cat2, clk2 := dailySetup(t, day0.Add(2*24*time.Hour+23*time.Hour+30*time.Minute))
	if r := tick(t, New(cat2, clk2, Options{})); r.Created != 0 {
		t.Fatalf("first tick after the window: %+v", r)
	}
}

func TestClockJumpCreatesMissedFiresExpired(t *testing.T) {
	cat, clk := dailySetup(t, day0.Add(12*time.Hour))
	s := New(cat, clk, Options{})
	tick(t, s)
	clk.Set(day0.Add(2*24*time.Hour + 22*time.Hour + 30*time.Minute)) // day 3, 22:30
	r := tick(t, s)
	if r.Created != 6 || r.Expired != 4 {
		t.Fatalf("jump: %+v, want 6 created, 4 expired", r)
	}
	states := map[time.Time][]catalog.JobState{}
	for _, j := range jobs(t, cat) {
		states[j.StartBy] = append(states[j.StartBy], j.State)
	}
	for d := 0; d < 3; d++ {
		want := catalog.StateExpired
		if d == 2 {
			want = catalog.StatePending
		}
		sb := day0.Add(time.Duration(d)*24*time.Hour + 23*time.Hour)
		got := states[sb]
		if len(got) != 2 || got[0] != want || got[1] != want {
			t.Errorf("fire of day %d: %v, want 2× %s", d+1, got, want)
		}
	}
}

func TestMaxFiresPerRule(t *testing.T) {
	cat, clk := dailySetup(t, day0.Add(12*time.Hour))
	s := New(cat, clk, Options{MaxFiresPerRule: 2})
	tick(t, s)
	clk.Set(day0.Add(4*24*time.Hour + 22*time.Hour + 30*time.Minute)) // fires on days 1-5
	r, err := s.Tick(ctx)
	must(t, err)
	if r.Created != 4 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error(), "3 fire times") {
		t.Fatalf("capped tick: created %d, errors %v", r.Created, r.Errors)
	}
}

func TestExpireStale(t *testing.T) {
	cat, clk := open(t, day0)
	s := New(cat, clk, Options{})
	// A RUNNING job past its CompleteBy belongs to the runner.
	running, err := cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: "r", CompleteBy: day0.Add(time.Minute)})
	must(t, err)
	claimed, err := cat.ClaimJob(ctx, "w", catalog.ClaimLimits{})
	must(t, err)
	if claimed.ID != running.ID {
		t.Fatalf("claimed %s", claimed.ID)
	}
	pending, err := cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: "r", StartBy: day0.Add(time.Hour)})
	must(t, err)
	created, err := cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StateCreated, Resource: "r", StartBy: day0.Add(time.Hour)})
	must(t, err)
	_, err = cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: "r"}) // no window
	must(t, err)

	for _, at := range []time.Duration{59 * time.Minute, time.Hour} {
		clk.Set(day0.Add(at))
		n, err := s.ExpireStale(ctx)
		must(t, err)
		if n != 0 {
			t.Fatalf("at +%v expired %d jobs before StartBy passed", at, n)
		}
	}
	clk.Set(day0.Add(time.Hour + time.Minute))
	n, err := s.ExpireStale(ctx)
	must(t, err)
	if n != 2 {
		t.Fatalf("expired %d, want 2", n)
	}
	for _, id := range []string{pending.ID, created.ID} {
		j, err := cat.GetJob(ctx, id)
		must(t, err)
		if j.State != catalog.StateExpired || j.Message != ExpiredMessage {
			t.Errorf("job %s: %s %q", id, j.State, j.Message)
		}
	}
	j, err := cat.GetJob(ctx, running.ID)
	must(t, err)
	if j.State != catalog.StateRunning {
		t.Errorf("RUNNING job past CompleteBy was touched: %s", j.State)
	}
	if n, err := s.ExpireStale(ctx); err != nil || n != 0 {
		t.Errorf("second ExpireStale: %d %v", n, err)
	}
}

func TestSelects(t *testing.T) {
	r := catalog.Resource{ID: "arn:coffre:pg:local:main", Tags: map[string]string{"env": "prod", "team": "db-core"}}
	cond := func(op catalog.ConditionOp, k, v string) catalog.Selection {
		return catalog.Selection{Resources: []string{"*"}, Conditions: []catalog.Condition{{Op: op, Key: k, Value: v}}}
	}
	for _, c := range []struct {
		name string
		sel  catalog.Selection
		want bool
	}{
		{"exact", catalog.Selection{Resources: []string{"arn:coffre:pg:local:main"}}, true},
		{"exact other", catalog.Selection{Resources: []string{"arn:coffre:pg:local:mai"}}, false},
		{"wildcard", catalog.Selection{Resources: []string{"x", "arn:coffre:pg:*"}}, true},
		{"wildcard other", catalog.Selection{Resources: []string{"arn:coffre:fs:*"}}, false},
		{"not resources", catalog.Selection{Resources: []string{"*"}, NotResources: []string{"arn:coffre:pg:local:m*"}}, false},
		{"not resources other", catalog.Selection{Resources: []string{"*"}, NotResources: []string{"arn:coffre:fs:*"}}, true},
		{"empty", catalog.Selection{}, false},
		{"conditions only", catalog.Selection{Conditions: []catalog.Condition{{Op: catalog.StringEquals, Key: "env", Value: "prod"}}}, true},
		{"equals", cond(catalog.StringEquals, "env", "prod"), true},
		{"equals aws key", cond(catalog.StringEquals, "aws:ResourceTag/env", "prod"), true},
		{"equals other", cond(catalog.StringEquals, "env", "Prod"), false},
		{"equals missing", cond(catalog.StringEquals, "x", ""), false},
		{"not equals", cond(catalog.StringNotEquals, "env", "prod"), false},
		{"not equals other", cond(catalog.StringNotEquals, "env", "test"), true},
		{"not equals missing", cond(catalog.StringNotEquals, "backup", "no"), true},
		{"like", cond(catalog.StringLike, "team", "db-*"), true},
		{"like inner", cond(catalog.StringLike, "team", "*-c?re"), true},
		{"like other", cond(catalog.StringLike, "team", "web*"), false},
		{"like missing", cond(catalog.StringLike, "x", "*"), false},
		{"not like", cond(catalog.StringNotLike, "team", "db*"), false},
		{"not like other", cond(catalog.StringNotLike, "team", "web*"), true},
		{"not like missing", cond(catalog.StringNotLike, "x", "*"), true},
		{"all conditions", catalog.Selection{Resources: []string{"*"}, Conditions: []catalog.Condition{
			{Op: catalog.StringEquals, Key: "env", Value: "prod"}, {Op: catalog.StringLike, Key: "team", Value: "web*"}}}, false},
	} {
		if got := Selects(c.sel, r); got != c.want {
			t.Errorf("%s: Selects = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSelectionsAcrossPlans(t *testing.T) {
	now := day0.Add(5 * time.Hour) // on the hour: rate(1 hour) fires now
	cat, clk := open(t, now)
	hourly := []catalog.Rule{{Name: "hourly", Schedule: "rate(1 hour)", StartWindowMinutes: 60, CompletionWindowMinutes: 120, TargetVault: "v"}}
	put(t, cat,
		[]catalog.Plan{{Name: "P", Rules: hourly}, {Name: "Q", Rules: hourly}},
		[]catalog.Selection{
			{Name: "P/fs", Plan: "P", Resources: []string{"arn:coffre:fs:*"}, NotResources: []string{"arn:coffre:fs:local:scratch"}},
			{Name: "P/prod", Plan: "P", Resources: []string{"*"}, Conditions: []catalog.Condition{
				{Op: catalog.StringEquals, Key: "env", Value: "prod"}, {Op: catalog.StringNotEquals, Key: "backup", Value: "no"}}},
			{Name: "Q/db", Plan: "Q", Conditions: []catalog.Condition{{Op: catalog.StringLike, Key: "team", Value: "d*"}}},
		},
		[]catalog.Resource{
			{ID: "arn:coffre:pg:local:main", Tags: map[string]string{"env": "prod", "team": "db"}},
			{ID: "arn:coffre:pg:local:test", Tags: map[string]string{"env": "test"}},
			{ID: "arn:coffre:fs:local:home", Tags: map[string]string{"env": "prod"}},
			{ID: "arn:coffre:fs:local:scratch", Tags: map[string]string{"env": "prod", "backup": "no"}},
		})
	r := tick(t, New(cat, clk, Options{}))
	var got []string
	for _, j := range jobs(t, cat) {
		got = append(got, j.Plan+" "+j.Resource)
	}
	sort.Strings(got)
	want := []string{"P arn:coffre:fs:local:home", "P arn:coffre:pg:local:main", "Q arn:coffre:pg:local:main"}
	if strings.Join(got, ",") != strings.Join(want, ",") || r.Created != 3 || r.Existing != 0 {
		t.Fatalf("jobs %v (result %+v), want %v", got, r, want)
	}
}

func TestHourlyAcrossDST(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	must(t, err)
	for _, c := range []struct {
		name       string
		start, end time.Time
		wantFires  int
	}{
		// Spring forward (02:00 CET → 03:00 CEST): 24 real hours after the
		// first fire, 25 fires, one per real hour.
		{"spring", time.Date(2025, 3, 29, 22, 0, 0, 0, time.UTC), time.Date(2025, 3, 30, 22, 0, 0, 0, time.UTC), 25},
		// Fall back (03:00 CEST → 02:00 CET): 25 real hours, but the repeated
		// wall hour 02:00 fires once (schedule package semantics), so 25
		// fires over 26 hour marks.
		{"fall", time.Date(2025, 10, 25, 22, 0, 0, 0, time.UTC), time.Date(2025, 10, 26, 23, 0, 0, 0, time.UTC), 25},
	} {
		t.Run(c.name, func(t *testing.T) {
			cat, clk := open(t, c.start)
			put(t, cat, []catalog.Plan{{Name: "h", Rules: []catalog.Rule{{Name: "hourly", Schedule: "cron(0 * * * ? *)", Timezone: "Europe/Paris",
				StartWindowMinutes: 60, CompletionWindowMinutes: 120, TargetVault: "v"}}}},
				[]catalog.Selection{{Name: "h/all", Plan: "h", Resources: []string{"*"}}},
				[]catalog.Resource{{ID: "r"}})
			runTicks(t, New(cat, clk, Options{}), clk, c.end)
			js := jobs(t, cat)
			if len(js) != c.wantFires {
				t.Fatalf("%d jobs, want %d", len(js), c.wantFires)
			}
			seenInstant, seenWall := map[time.Time]bool{}, map[string]bool{}
			for _, j := range js {
				fire := j.StartBy.Add(-time.Hour)
				wall := fire.In(paris).Format("2006-01-02 15:04")
				if fire.Minute() != 0 || fire.Second() != 0 || seenInstant[fire] || seenWall[wall] {
					t.Errorf("fire %v (%s) duplicated or not on the hour", fire, wall)
				}
				seenInstant[fire], seenWall[wall] = true, true
			}
			if c.name == "spring" {
				for h := c.start; !h.After(c.end); h = h.Add(time.Hour) {
					if !seenInstant[h] {
						t.Errorf("no job for the real hour %v", h)
					}
				}
			}
		})
	}
}

func TestBadRuleDoesNotStopOthers(t *testing.T) {
	now := day0.Add(5 * time.Hour)
	cat, clk := open(t, now)
	put(t, cat,
		[]catalog.Plan{
			{Name: "A", Rules: []catalog.Rule{
				{Name: "badzone", Schedule: "rate(1 hour)", Timezone: "Mars/Olympus_Mons", TargetVault: "v"},
				{Name: "good", Schedule: "rate(1 hour)", TargetVault: "v"},
			}},
			{Name: "B", Rules: []catalog.Rule{{Name: "badexpr", Schedule: "cron(0 25 * * ? *)", TargetVault: "v"}}},
		},
		[]catalog.Selection{{Name: "A/all", Plan: "A", Resources: []string{"*"}}, {Name: "B/all", Plan: "B", Resources: []string{"*"}}},
		[]catalog.Resource{{ID: "r"}})
	r, err := New(cat, clk, Options{}).Tick(ctx)
	must(t, err)
	if len(r.Errors) != 2 || !strings.Contains(r.Errors[0].Error(), "badzone") || !strings.Contains(r.Errors[1].Error(), "badexpr") {
		t.Fatalf("errors %v", r.Errors)
	}
	// Default windows (8 h start) apply when the rule leaves them zero: the
	// first tick looks back 8 hours, so the hourly fires 22:00..05:00.
	js := jobs(t, cat)
	if r.Created != 8 || len(js) != 8 {
		t.Fatalf("result %+v, %d jobs", r, len(js))
	}
	for _, j := range js {
		fire := j.StartBy.Add(-8 * time.Hour)
		if j.Rule != "good" || fire.After(now) || !fire.After(now.Add(-8*time.Hour)) || !j.CompleteBy.Equal(fire.Add(7*24*time.Hour)) {
			t.Errorf("job %s rule %s: StartBy %v CompleteBy %v", j.ID, j.Rule, j.StartBy, j.CompleteBy)
		}
	}
}

func TestJobLeftCreatedIsPromoted(t *testing.T) {
	// A crash between CreateJob and the move to PENDING leaves a CREATED
	// job; the next tick finds it and finishes the move.
	now := day0.Add(22 * time.Hour)
	cat, clk := dailySetup(t, now)
	fire := now
	_, err := cat.CreateJob(ctx, catalog.Job{ID: JobID("daily", "nightly", "arn:coffre:fs:local:a", fire), Kind: catalog.KindBackup,
		Resource: "arn:coffre:fs:local:a", StartBy: fire.Add(time.Hour), CompleteBy: fire.Add(4 * time.Hour)})
	must(t, err)
	r := tick(t, New(cat, clk, Options{}))
	if r.Created != 1 || r.Existing != 1 {
		t.Fatalf("result %+v", r)
	}
	for _, j := range jobs(t, cat) {
		if j.State != catalog.StatePending {
			t.Errorf("job %s on %s is %s", j.ID, j.Resource, j.State)
		}
	}
}

func TestJobStateChangesAreAudited(t *testing.T) {
	cat, clk := dailySetup(t, day0.Add(12*time.Hour))
	s := New(cat, clk, Options{})
	tick(t, s)
	clk.Set(day0.Add(24*time.Hour + 22*time.Hour + 30*time.Minute)) // day 2, 22:30: day 1's fire missed
	tick(t, s)
	evs, err := cat.ListAudit(context.Background(), catalog.AuditFilter{})
	must(t, err)
	count := map[string]int{}
	for _, e := range evs {
		if e.Actor != AuditActor || !strings.HasPrefix(e.Object, "job/") {
			t.Fatalf("unexpected audit event %+v", e)
		}
		count[e.Action]++
	}
	// Two resources × two fires created; day 1's expired, day 2's pending.
	if count["job.CREATED"] != 4 || count["job.EXPIRED"] != 2 || count["job.PENDING"] != 2 {
		t.Fatalf("audit actions %v", count)
	}
	// A pending job left past its start window is expired by a later tick, audited too.
	clk.Set(day0.Add(2*24*time.Hour + 12*time.Hour))
	tick(t, s)
	evs, err = cat.ListAudit(context.Background(), catalog.AuditFilter{AfterSeq: evs[len(evs)-1].Seq})
	must(t, err)
	if len(evs) != 2 || evs[0].Action != "job.EXPIRED" || !strings.Contains(evs[0].Detail, "from PENDING") {
		t.Fatalf("audit of stale expiry: %+v", evs)
	}
	if broken, err := cat.VerifyAudit(context.Background()); broken != 0 || err != nil {
		t.Fatalf("VerifyAudit = %d, %v", broken, err)
	}
}
