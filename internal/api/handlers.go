package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/policy/schedule"
)

// MinPrefixLen is the shortest recovery point id prefix the API resolves.
const MinPrefixLen = 8

// routes lists the API. Patterns use Go 1.22 ServeMux syntax; "GET" routes
// also answer HEAD.
func (s *Server) routes() []*route {
	return []*route{
		{method: "GET", path: "/v1/health", fn: s.health},
		{method: "GET", path: "/v1/vaults", fn: s.listVaults},
		{method: "GET", path: "/v1/vaults/{name}", object: []string{"name"}, fn: s.getVault},
		{method: "GET", path: "/v1/resources", fn: s.listResources},
		{method: "GET", path: "/v1/resources/{id...}", object: []string{"id"}, fn: s.getResource},
		{method: "GET", path: "/v1/plans", fn: s.listPlans},
		{method: "GET", path: "/v1/plans/{name}", object: []string{"name"}, fn: s.getPlan},
		{method: "GET", path: "/v1/selections", fn: s.listSelections},
		{method: "GET", path: "/v1/jobs", fn: s.listJobs},
		{method: "GET", path: "/v1/jobs/{id}", object: []string{"id"}, fn: s.getJob},
		{method: "POST", path: "/v1/jobs/backup", fn: s.startBackup},
		{method: "POST", path: "/v1/jobs/restore", fn: s.startRestore},
		{method: "POST", path: "/v1/jobs/{id}/abort", object: []string{"id"}, fn: s.abortJob},
		{method: "GET", path: "/v1/recovery-points", fn: s.listRecoveryPoints},
		{method: "GET", path: "/v1/recovery-points/{vault}/{id}", object: []string{"vault", "id"}, fn: s.getRecoveryPoint},
		{method: "GET", path: "/v1/audit", fn: s.listAudit},
		{method: "GET", path: "/v1/audit/verify", fn: s.verifyAudit},
	}
}

// badRequest is a 400 error.
func badRequest(h, format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Hint: h}
}

// notFound turns catalog.ErrNotFound into a 404 naming the object.
func notFound(err error, what, key, h string) error {
	if errors.Is(err, catalog.ErrNotFound) {
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("%s %q not found", what, key), Hint: h}
	}
	return err
}

// decodeBody reads the request's JSON object into v, refusing unknown
// fields, trailing data and bodies over MaxBodyBytes.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("unexpected data after the JSON object")
			}
		}
	}
	var mb *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mb):
		return badRequest("", "request body is larger than %d bytes", mb.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("send a JSON object", "request body is empty")
	}
	return badRequest("send one JSON object with the documented fields", "invalid JSON body: %v", err)
}

// queryInt parses an optional non-negative integer query parameter.
func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("", "query parameter %s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

func (s *Server) health(c *call) (any, error) {
	return Health{Status: "ok", Time: tp(s.Clock.Now())}, nil
}

func (s *Server) listVaults(c *call) (any, error) {
	vs, err := s.Cat.ListVaults(c.ctx())
	if err != nil {
		return nil, err
	}
	out := make([]Vault, 0, len(vs))
	for _, v := range vs {
		out = append(out, FromVault(v))
	}
	return out, nil
}

func (s *Server) getVault(c *call) (any, error) {
	name := c.r.PathValue("name")
	v, err := s.Cat.GetVault(c.ctx(), name)
	if err != nil {
		return nil, notFound(err, "vault", name, "list vaults with GET /v1/vaults")
	}
	return FromVault(v), nil
}

func (s *Server) listResources(c *call) (any, error) {
	rs, err := s.Cat.ListResources(c.ctx(), c.r.URL.Query().Get("type"))
	if err != nil {
		return nil, err
	}
	out := make([]Resource, 0, len(rs))
	for _, r := range rs {
		out = append(out, FromResource(r))
	}
	return out, nil
}

func (s *Server) getResource(c *call) (any, error) {
	id := c.r.PathValue("id")
	r, err := s.Cat.GetResource(c.ctx(), id)
	if err != nil {
		return nil, notFound(err, "resource", id, "list resources with GET /v1/resources")
	}
	return FromResource(r), nil
}

func (s *Server) listPlans(c *call) (any, error) {
	ps, err := s.Cat.ListPlans(c.ctx())
	if err != nil {
		return nil, err
	}
	out := make([]Plan, 0, len(ps))
	for _, p := range ps {
		out = append(out, FromPlan(p))
	}
	return out, nil
}

func (s *Server) getPlan(c *call) (any, error) {
	name := c.r.PathValue("name")
	p, err := s.Cat.GetPlan(c.ctx(), name)
	if err != nil {
		return nil, notFound(err, "plan", name, "list plans with GET /v1/plans")
	}
	return FromPlan(p), nil
}

func (s *Server) listSelections(c *call) (any, error) {
	ss, err := s.Cat.ListSelections(c.ctx(), c.r.URL.Query().Get("plan"))
	if err != nil {
		return nil, err
	}
	out := make([]Selection, 0, len(ss))
	for _, sel := range ss {
		out = append(out, FromSelection(sel))
	}
	return out, nil
}

var jobKinds = []catalog.JobKind{catalog.KindBackup, catalog.KindRestore, catalog.KindCopy, catalog.KindRestoreTest}

func (s *Server) listJobs(c *call) (any, error) {
	q := c.r.URL.Query()
	var f catalog.JobFilter
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			st = strings.ToUpper(strings.TrimSpace(st))
			if st == "" {
				continue
			}
			if !slices.Contains(catalog.AllStates, catalog.JobState(st)) {
				return nil, badRequest(fmt.Sprintf("states: %v", catalog.AllStates), "unknown job state %q", st)
			}
			f.States = append(f.States, catalog.JobState(st))
		}
	}
	if k := strings.ToUpper(q.Get("kind")); k != "" {
		if !slices.Contains(jobKinds, catalog.JobKind(k)) {
			return nil, badRequest(fmt.Sprintf("kinds: %v", jobKinds), "unknown job kind %q", k)
		}
		f.Kind = catalog.JobKind(k)
	}
	f.Resource, f.Vault = q.Get("resource"), q.Get("vault")
	limit, err := queryInt(c.r, "limit")
	if err != nil {
		return nil, err
	}
	f.Limit = int(min(limit, 1<<30))
	js, err := s.Cat.ListJobs(c.ctx(), f)
	if err != nil {
		return nil, err
	}
	out := make([]Job, 0, len(js))
	for _, j := range js {
		out = append(out, FromJob(j))
	}
	return out, nil
}

func (s *Server) getJob(c *call) (any, error) {
	id := c.r.PathValue("id")
	j, err := s.Cat.GetJob(c.ctx(), id)
	if err != nil {
		return nil, notFound(err, "job", id, "list jobs with GET /v1/jobs")
	}
	return FromJob(j), nil
}

// backupWindows checks a backup request's optional windows against AWS
// Backup's rules (see schedule.Windows.Validate) and returns them, zero when
// not given.
func backupWindows(req BackupRequest) (start, completion time.Duration, err error) {
	maxMin := int(schedule.MaxWindow / time.Minute)
	minStart := int(schedule.MinStartWindow / time.Minute)
	margin := int(schedule.MinCompletionMargin / time.Minute)
	if p := req.StartWindowMinutes; p != nil {
		if *p < minStart || *p > maxMin {
			return 0, 0, badRequest("", "start_window_minutes is %d; it must be between %d and %d", *p, minStart, maxMin)
		}
		start = time.Duration(*p) * time.Minute
	}
	if p := req.CompletionWindowMinutes; p != nil {
		least := int(start/time.Minute) + margin
		if *p < least || *p > maxMin {
			return 0, 0, badRequest("", "completion_window_minutes is %d; it must be at least the start window plus %d minutes (%d) and at most %d", *p, margin, least, maxMin)
		}
		completion = time.Duration(*p) * time.Minute
	}
	return start, completion, nil
}

func (s *Server) startBackup(c *call) (any, error) {
	var req BackupRequest
	if err := decodeBody(c.r, &req); err != nil {
		return nil, err
	}
	if req.Resource == "" || req.Vault == "" {
		return nil, badRequest(`send {"resource": "<id>", "vault": "<name>"}`, "a backup needs a resource and a vault")
	}
	c.detail = "resource " + req.Resource + " vault " + req.Vault
	j, err := NewBackupJob(c.ctx(), s.Cat, s.Clock.Now(), req)
	if err != nil {
		return nil, err
	}
	c.object, c.status = j.ID, http.StatusAccepted
	return FromJob(j), nil
}

// FindPoint resolves ref — a full recovery point id, or a prefix of at least
// MinPrefixLen characters unique among the vault's points — in the catalog.
func FindPoint(ctx context.Context, cat catalog.Catalog, vault, ref string) (catalog.RecoveryPoint, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == "" {
		return catalog.RecoveryPoint{}, badRequest("", "no recovery point id given")
	}
	rp, err := cat.GetRecoveryPoint(ctx, vault, ref)
	if err == nil || !errors.Is(err, catalog.ErrNotFound) {
		return rp, err
	}
	missing := &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("recovery point %q not found in vault %q", ref, vault),
		Hint: "list the vault's points with GET /v1/recovery-points?vault=" + vault}
	if len(ref) < MinPrefixLen {
		missing.Hint = fmt.Sprintf("give the full id or a unique prefix of at least %d characters", MinPrefixLen)
		return rp, missing
	}
	all, err := cat.ListRecoveryPoints(ctx, catalog.RecoveryPointFilter{Vault: vault})
	if err != nil {
		return rp, err
	}
	var matches []catalog.RecoveryPoint
	for _, p := range all {
		if strings.HasPrefix(p.ID, ref) {
			matches = append(matches, p)
		}
	}
	switch len(matches) {
	case 0:
		return rp, missing
	case 1:
		return matches[0], nil
	}
	ids := make([]string, 0, 3)
	for _, m := range matches[:min(3, len(matches))] {
		ids = append(ids, m.ID)
	}
	more := ""
	if len(matches) > 3 {
		more = ", …"
	}
	return rp, badRequest("give more characters of the id",
		"recovery point prefix %q is ambiguous in vault %q: %d points match (%s%s)", ref, vault, len(matches), strings.Join(ids, ", "), more)
}

func (s *Server) startRestore(c *call) (any, error) {
	var req RestoreRequest
	if err := decodeBody(c.r, &req); err != nil {
		return nil, err
	}
	c.detail = "vault " + req.Vault + " point " + req.RecoveryPoint
	j, err := NewRestoreJob(c.ctx(), s.Cat, s.Clock.Now(), req)
	if err != nil {
		return nil, err
	}
	c.detail = "vault " + req.Vault + " point " + j.Params["recovery_point"]
	c.object, c.status = j.ID, http.StatusAccepted
	return FromJob(j), nil
}

// NewRestoreJob checks a restore request against the catalog and creates its
// PENDING job: Params "recovery_point" (the full id), "target" and "path"
// for a directory restore, "target.<setting>" for a database or service
// target (a new database, another instance). Its errors are *Error values
// carrying the HTTP status.
func NewRestoreJob(ctx context.Context, cat catalog.Catalog, now time.Time, req RestoreRequest) (catalog.Job, error) {
	if req.ToTime != "" {
		return newPITRJob(ctx, cat, now, req)
	}
	if req.Vault == "" || req.RecoveryPoint == "" || (req.Target == "" && len(req.TargetSettings) == 0) {
		return catalog.Job{}, badRequest(`send {"vault": "<name>", "recovery_point": "<id>", "target": "/absolute/dir"} or "target_settings": {"database": "new_db"}`,
			"a restore needs a vault, a recovery_point and a target (a directory, or target_settings for a database)")
	}
	if req.Target != "" && (!filepath.IsAbs(req.Target) || strings.ContainsRune(req.Target, 0)) {
		return catalog.Job{}, badRequest("give an absolute path on the server", "target %q is not an absolute path", req.Target)
	}
	if strings.ContainsRune(req.Path, 0) {
		return catalog.Job{}, badRequest("", "path contains a NUL byte")
	}
	for k, v := range req.TargetSettings {
		if k == "" || strings.ContainsAny(k, "\x00=") {
			return catalog.Job{}, badRequest("", "target setting name %q is not valid", k)
		}
		if catalog.IsSecretKey(k) && !strings.HasPrefix(v, "env:") && !strings.HasPrefix(v, "file:") {
			return catalog.Job{}, badRequest(`write it as "env:NAME" or "file:PATH", read on the server`,
				"target setting %q must be a reference to the secret, not the secret itself", k)
		}
	}
	if _, err := cat.GetVault(ctx, req.Vault); err != nil {
		return catalog.Job{}, notFound(err, "vault", req.Vault, "list vaults with GET /v1/vaults")
	}
	rp, err := FindPoint(ctx, cat, req.Vault, req.RecoveryPoint)
	if err != nil {
		return catalog.Job{}, err
	}
	if rp.Status == "DELETING" || rp.Status == "EXPIRED" {
		return catalog.Job{}, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("recovery point %s in vault %q is %s and cannot be restored", rp.ID, rp.Vault, rp.Status)}
	}
	params := map[string]string{"recovery_point": rp.ID}
	if req.Target != "" {
		params["target"] = filepath.Clean(req.Target)
	}
	if req.Path != "" {
		params["path"] = req.Path
	}
	for k, v := range req.TargetSettings {
		params["target."+k] = v
	}
	return cat.CreateJob(ctx, catalog.Job{
		Kind: catalog.KindRestore, State: catalog.StatePending, Vault: rp.Vault, Resource: rp.Resource,
		Params: params, CreatedAt: now,
	})
}

// abortJob moves a CREATED, PENDING or RUNNING job to ABORTED. The
// transition is optimistic (from the state just read); when another server
// or the runner moved the job first, it re-reads the job and tries once
// more. The runner of a RUNNING job learns of the abort when its next
// heartbeat fails.
func (s *Server) abortJob(c *call) (any, error) {
	id := c.r.PathValue("id")
	j, err := s.Cat.GetJob(c.ctx(), id)
	if err != nil {
		return nil, notFound(err, "job", id, "list jobs with GET /v1/jobs")
	}
	msg := "aborted by " + c.actor
	for attempt := 0; ; attempt++ {
		if catalog.Terminal(j.State) {
			return nil, &Error{Status: http.StatusConflict,
				Message: fmt.Sprintf("job %s is already %s; only CREATED, PENDING or RUNNING jobs can be aborted", id, j.State)}
		}
		from := j.State
		out, err := s.Cat.TransitionJob(c.ctx(), id, from, catalog.StateAborted, catalog.JobUpdate{Message: &msg})
		if err == nil {
			c.detail = "was " + string(from)
			return FromJob(out), nil
		}
		if !errors.Is(err, catalog.ErrConflict) {
			return nil, notFound(err, "job", id, "")
		}
		if attempt > 0 {
			return nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("job %s kept changing state while being aborted", id), Hint: "try again"}
		}
		if j, err = s.Cat.GetJob(c.ctx(), id); err != nil {
			return nil, notFound(err, "job", id, "")
		}
	}
}

func (s *Server) listRecoveryPoints(c *call) (any, error) {
	q := c.r.URL.Query()
	rps, err := s.Cat.ListRecoveryPoints(c.ctx(), catalog.RecoveryPointFilter{Vault: q.Get("vault"), Resource: q.Get("resource")})
	if err != nil {
		return nil, err
	}
	out := make([]RecoveryPoint, 0, len(rps))
	for _, rp := range rps {
		out = append(out, FromRecoveryPoint(rp))
	}
	return out, nil
}

func (s *Server) getRecoveryPoint(c *call) (any, error) {
	rp, err := FindPoint(c.ctx(), s.Cat, c.r.PathValue("vault"), c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return FromRecoveryPoint(rp), nil
}

func (s *Server) listAudit(c *call) (any, error) {
	after, err := queryInt(c.r, "after")
	if err != nil {
		return nil, err
	}
	limit, err := queryInt(c.r, "limit")
	if err != nil {
		return nil, err
	}
	es, err := s.Cat.ListAudit(c.ctx(), catalog.AuditFilter{AfterSeq: after, Limit: int(min(limit, 1<<30))})
	if err != nil {
		return nil, err
	}
	out := make([]AuditEvent, 0, len(es))
	for _, e := range es {
		out = append(out, FromAuditEvent(e))
	}
	return out, nil
}

func (s *Server) verifyAudit(c *call) (any, error) {
	broken, err := s.Cat.VerifyAudit(c.ctx())
	if err != nil {
		return nil, err
	}
	return AuditVerification{Intact: broken == 0, BrokenSeq: broken}, nil
}

// NewBackupJob checks an on-demand backup request against the catalog and
// creates its PENDING job. Its errors are *Error values carrying the HTTP
// status (the CLI without a server uses it too).
func NewBackupJob(ctx context.Context, cat catalog.Catalog, now time.Time, req BackupRequest) (catalog.Job, error) {
	if req.Resource == "" || req.Vault == "" {
		return catalog.Job{}, badRequest(`send {"resource": "<id>", "vault": "<name>"}`, "a backup needs a resource and a vault")
	}
	start, completion, err := backupWindows(req)
	if err != nil {
		return catalog.Job{}, err
	}
	if _, err := cat.GetResource(ctx, req.Resource); err != nil {
		return catalog.Job{}, notFound(err, "resource", req.Resource, "list resources with GET /v1/resources (coffre plan shows those in your HCL)")
	}
	v, err := cat.GetVault(ctx, req.Vault)
	if err != nil {
		return catalog.Job{}, notFound(err, "vault", req.Vault, "list vaults with GET /v1/vaults")
	}
	params, err := backupLifecycle(req, v)
	if err != nil {
		return catalog.Job{}, err
	}
	j := catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending, Resource: req.Resource, Vault: req.Vault, CreatedAt: now, Params: params}
	if start > 0 {
		j.StartBy = now.Add(start)
	}
	if completion > 0 {
		j.CompleteBy = now.Add(completion)
	}
	return cat.CreateJob(ctx, j)
}

// backupLifecycle checks an on-demand backup's lifecycle as AWS does (cold
// storage at least 90 days before deletion; within the vault lock's
// retention bounds) and returns it as job params.
func backupLifecycle(req BackupRequest, v catalog.Vault) (map[string]string, error) {
	cold, del := req.MoveToColdStorageAfterDays, req.DeleteAfterDays
	if cold < 0 || del < 0 {
		return nil, badRequest("", "lifecycle days cannot be negative")
	}
	if cold > 0 && del > 0 && del < cold+90 {
		return nil, badRequest("delete at least 90 days after the move to cold storage, or do not move it",
			"delete_after_days %d is less than move_to_cold_storage_after_days %d + 90 (the minimum stay in cold storage)", del, cold)
	}
	if l := v.Lock; l.Mode != catalog.LockNone {
		if l.MinRetentionDays > 0 && del > 0 && del < l.MinRetentionDays {
			return nil, badRequest("", "vault %q is locked with a minimum retention of %d days; delete_after_days %d is shorter", v.Name, l.MinRetentionDays, del)
		}
		if l.MaxRetentionDays > 0 && (del == 0 || del > l.MaxRetentionDays) {
			return nil, badRequest("set delete_after_days within the lock's maximum", "vault %q is locked with a maximum retention of %d days; the point would be kept longer", v.Name, l.MaxRetentionDays)
		}
	}
	p := map[string]string{}
	if cold > 0 {
		p["move_to_cold_storage_after_days"] = strconv.Itoa(cold)
	}
	if del > 0 {
		p["delete_after_days"] = strconv.Itoa(del)
	}
	return p, nil
}

// newPITRJob checks a point-in-time restore request and creates its job.
func newPITRJob(ctx context.Context, cat catalog.Catalog, now time.Time, req RestoreRequest) (catalog.Job, error) {
	at, err := time.Parse(time.RFC3339, req.ToTime)
	if err != nil {
		return catalog.Job{}, badRequest("write it like 2026-11-25T14:03:00Z", "to_time %q is not an RFC 3339 time", req.ToTime)
	}
	if req.Vault == "" || req.Resource == "" {
		return catalog.Job{}, badRequest("", "a point-in-time restore needs a vault and a resource")
	}
	if at.After(now) {
		return catalog.Job{}, badRequest("", "to_time %s is in the future", at.UTC().Format(time.RFC3339))
	}
	if _, err := cat.GetVault(ctx, req.Vault); err != nil {
		return catalog.Job{}, notFound(err, "vault", req.Vault, "list vaults with GET /v1/vaults")
	}
	res, err := cat.GetResource(ctx, req.Resource)
	if err != nil {
		return catalog.Job{}, notFound(err, "resource", req.Resource, "list resources with GET /v1/resources")
	}
	if res.Type != "postgres" {
		return catalog.Job{}, badRequest("", "point-in-time restore is for PostgreSQL resources under a continuous-backup rule; %s is %s", res.ID, res.Type)
	}
	dir, port := req.TargetSettings["data_dir"], req.TargetSettings["port"]
	if dir == "" || !filepath.IsAbs(dir) || port == "" {
		return catalog.Job{}, badRequest(`send "target_settings": {"data_dir": "/new/absolute/dir", "port": "5433"}`,
			"a point-in-time restore needs a new data directory (absolute) and a port")
	}
	params := map[string]string{"to_time": at.UTC().Format(time.RFC3339)}
	for k, v := range req.TargetSettings {
		if catalog.IsSecretKey(k) && !strings.HasPrefix(v, "env:") && !strings.HasPrefix(v, "file:") {
			return catalog.Job{}, badRequest(`write it as "env:NAME" or "file:PATH"`, "target setting %q must be a reference to the secret", k)
		}
		params["target."+k] = v
	}
	return cat.CreateJob(ctx, catalog.Job{Kind: catalog.KindRestore, State: catalog.StatePending, Vault: req.Vault, Resource: res.ID,
		Params: params, CreatedAt: now})
}
