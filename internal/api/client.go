package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
)

// Client calls a coffre server's API.
type Client struct {
	BaseURL string       // the server's address, e.g. "http://127.0.0.1:8420" (without /v1)
	Token   string       // the API token, sent as a bearer token
	HTTP    *http.Client // nil: http.DefaultClient
}

// Error is an error answered by the server. A client method returns it
// wrapped with hint.With when the server sent a hint, so hint.Of(err) finds
// the hint and errors.As(err, &apiErr) the Error.
type Error struct {
	Status  int // HTTP status
	Message string
	Hint    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// JobQuery filters ListJobs; zero fields match everything.
type JobQuery struct {
	States   []catalog.JobState
	Kind     catalog.JobKind
	Resource string
	Vault    string
	Limit    int // 0: no limit
}

// DefaultPoll is WaitJob's polling interval when it is given none.
const DefaultPoll = time.Second

// Health checks that the server is up and the token is accepted.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var out Health
	return out, c.do(ctx, "GET", "/v1/health", nil, nil, &out)
}

// ListVaults lists the vaults, by name.
func (c *Client) ListVaults(ctx context.Context) ([]Vault, error) {
	var out []Vault
	return out, c.do(ctx, "GET", "/v1/vaults", nil, nil, &out)
}

// GetVault returns one vault.
func (c *Client) GetVault(ctx context.Context, name string) (Vault, error) {
	var out Vault
	return out, c.do(ctx, "GET", "/v1/vaults/"+url.PathEscape(name), nil, nil, &out)
}

// ListResources lists the protected resources of type typ ("": all), by id.
func (c *Client) ListResources(ctx context.Context, typ string) ([]Resource, error) {
	var out []Resource
	return out, c.do(ctx, "GET", "/v1/resources", query("type", typ), nil, &out)
}

// GetResource returns one resource.
func (c *Client) GetResource(ctx context.Context, id string) (Resource, error) {
	var out Resource
	return out, c.do(ctx, "GET", "/v1/resources/"+url.PathEscape(id), nil, nil, &out)
}

// ListPlans lists the backup plans with their rules, by name.
func (c *Client) ListPlans(ctx context.Context) ([]Plan, error) {
	var out []Plan
	return out, c.do(ctx, "GET", "/v1/plans", nil, nil, &out)
}

// GetPlan returns one backup plan.
func (c *Client) GetPlan(ctx context.Context, name string) (Plan, error) {
	var out Plan
	return out, c.do(ctx, "GET", "/v1/plans/"+url.PathEscape(name), nil, nil, &out)
}

// ListSelections lists the selections of plan ("": all), by name.
func (c *Client) ListSelections(ctx context.Context, plan string) ([]Selection, error) {
	var out []Selection
	return out, c.do(ctx, "GET", "/v1/selections", query("plan", plan), nil, &out)
}

// ListJobs lists the jobs q selects, oldest first.
func (c *Client) ListJobs(ctx context.Context, q JobQuery) ([]Job, error) {
	v := url.Values{}
	for _, s := range q.States {
		v.Add("state", string(s))
	}
	for k, x := range map[string]string{"kind": string(q.Kind), "resource": q.Resource, "vault": q.Vault} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out []Job
	return out, c.do(ctx, "GET", "/v1/jobs", v, nil, &out)
}

// GetJob returns one job.
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	var out Job
	return out, c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, nil, &out)
}

// StartBackup creates a PENDING backup job.
func (c *Client) StartBackup(ctx context.Context, req BackupRequest) (Job, error) {
	var out Job
	return out, c.do(ctx, "POST", "/v1/jobs/backup", nil, req, &out)
}

// StartRestore creates a PENDING restore job.
func (c *Client) StartRestore(ctx context.Context, req RestoreRequest) (Job, error) {
	var out Job
	return out, c.do(ctx, "POST", "/v1/jobs/restore", nil, req, &out)
}

// AbortJob aborts a CREATED, PENDING or RUNNING job and returns it.
func (c *Client) AbortJob(ctx context.Context, id string) (Job, error) {
	var out Job
	return out, c.do(ctx, "POST", "/v1/jobs/"+url.PathEscape(id)+"/abort", nil, nil, &out)
}

// ListRecoveryPoints lists the recovery points of vault and resource (""
// for either: all), newest first.
func (c *Client) ListRecoveryPoints(ctx context.Context, vault, resource string) ([]RecoveryPoint, error) {
	v := query("vault", vault)
	if resource != "" {
		v.Set("resource", resource)
	}
	var out []RecoveryPoint
	return out, c.do(ctx, "GET", "/v1/recovery-points", v, nil, &out)
}

// GetRecoveryPoint returns one recovery point of a vault, by full id or
// unique prefix of at least MinPrefixLen characters.
func (c *Client) GetRecoveryPoint(ctx context.Context, vault, id string) (RecoveryPoint, error) {
	var out RecoveryPoint
	return out, c.do(ctx, "GET", "/v1/recovery-points/"+url.PathEscape(vault)+"/"+url.PathEscape(id), nil, nil, &out)
}

// ListAudit returns up to limit (0: all) audit events after sequence number
// after, in order.
func (c *Client) ListAudit(ctx context.Context, after int64, limit int) ([]AuditEvent, error) {
	v := url.Values{}
	if after > 0 {
		v.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out []AuditEvent
	return out, c.do(ctx, "GET", "/v1/audit", v, nil, &out)
}

// VerifyAudit asks the server to re-walk the audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	var out AuditVerification
	return out, c.do(ctx, "GET", "/v1/audit/verify", nil, nil, &out)
}

// WaitJob polls the job every poll (DefaultPoll when ≤ 0) until it is
// terminal (COMPLETED, PARTIAL, FAILED, ABORTED or EXPIRED) and returns it.
// It stops at the first error, or when ctx is done (returning the job as
// last seen).
func (c *Client) WaitJob(ctx context.Context, id string, poll time.Duration) (Job, error) {
	if poll <= 0 {
		poll = DefaultPoll
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		j, err := c.GetJob(ctx, id)
		if err != nil || j.Terminal() {
			return j, err
		}
		t.Reset(poll)
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("api: wait for job %s (%s): %w", id, j.State, ctx.Err())
		case <-t.C:
		}
	}
}

func query(k, v string) url.Values {
	q := url.Values{}
	if v != "" {
		q.Set(k, v)
	}
	return q
}

// do sends one request (in, when not nil, as the JSON body) and decodes the
// JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/") + path)
	if err != nil {
		return fmt.Errorf("api: bad server address %q: %w", c.BaseURL, err)
	}
	u.RawQuery = q.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("api: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errorFrom(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("api: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// errorFrom turns an error answer into an *Error (with its hint attached by
// hint.With). A body that is not the API's JSON error becomes the message.
func errorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var eb errorBody
	if err := json.Unmarshal(data, &eb); err == nil && eb.Error != "" {
		e.Message, e.Hint = eb.Error, eb.Hint
	} else {
		e.Message = strings.TrimSpace(string(data))
		if len(e.Message) > 200 {
			e.Message = truncate(e.Message, 200)
		}
		if e.Message == "" {
			e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
		}
	}
	if e.Hint != "" {
		return hint.With(e, e.Hint)
	}
	return e
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
