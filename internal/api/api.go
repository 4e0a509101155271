// Package api serves coffre's HTTP JSON API (vaults, resources, plans, selections, jobs, recovery points, restore, audit) with token authentication on every call, and provides the Go client the CLI uses.
//
// Every request, whatever its route (unknown routes and wrong methods
// included), is authenticated with an "Authorization: Bearer <token>" header
// and appended to the catalog's audit chain exactly once, with its outcome.
// Errors are JSON objects {"error": "...", "hint": "..."}.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
)

// MaxBodyBytes is the largest request body the server reads (1 MiB); a
// larger one is refused with 400.
const MaxBodyBytes = 1 << 20

// Audit outcomes.
const (
	outcomeOK     = "ok"
	outcomeDenied = "denied"
)

// Server serves the API over a catalog. The zero Clock and Log are
// clock.Real{} and slog.Default().
type Server struct {
	Cat   catalog.Catalog
	Clock clock.Clock
	Log   *slog.Logger

	once sync.Once
	mux  *http.ServeMux
}

// Handler returns the API's HTTP handler. It may be called more than once;
// the routes are built the first time.
func (s *Server) Handler() http.Handler {
	s.once.Do(s.init)
	return http.HandlerFunc(s.serve)
}

func (s *Server) init() {
	if s.Clock == nil {
		s.Clock = clock.Real{}
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		rt.srv = s
		s.mux.Handle(rt.method+" "+rt.path, rt)
	}
}

// route is one registered endpoint. object names the path parameters that
// identify the object the call is about (joined with "/" for the audit
// event).
type route struct {
	method, path string
	object       []string
	fn           func(c *call) (any, error)
	srv          *Server
}

// call is one authenticated request as a handler sees it. A handler may set
// object (a created job's id), detail (a short note for the audit event) and
// status (the success status, 200 when zero).
type call struct {
	r      *http.Request
	token  catalog.Token
	actor  string
	object string
	detail string
	status int
}

func (c *call) ctx() context.Context { return c.r.Context() }

// serve sends registered routes to the mux (which sets the path values) and
// answers everything else — unknown paths, wrong methods, paths the mux would
// redirect — itself, still authenticating and auditing the call.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	if _, ok := h.(*route); ok {
		s.mux.ServeHTTP(w, r)
		return
	}
	s.noRoute(w, r, h)
}

// ServeHTTP authenticates the call, runs the route's handler, appends the
// audit event and only then writes the response.
//
// The audit event is appended after the handler has run, with the outcome:
// the catalog has no transaction spanning a change and its audit event, and an
// event appended before the change could only record an intent, not what
// happened. If the append fails the client gets 500 instead of the handler's
// answer, so no call is reported as done without its audit record; a
// mutation that did happen is then logged at error level, and its effect
// (a job) is visible in the catalog. The append ignores the client's
// disconnection (context.WithoutCancel), so hanging up cannot leave a change
// unaudited.
func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := rt.srv
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	c := &call{r: r, actor: "anonymous"}
	var parts []string
	for _, p := range rt.object {
		parts = append(parts, r.PathValue(p))
	}
	c.object = truncate(strings.Join(parts, "/"), 300)
	action := "api " + r.Method + " " + rt.path

	tok, outcome, err := s.authenticate(r)
	var body any
	if err == nil {
		c.token, c.actor = tok, "token:"+tok.ID
		body, err = rt.run(c)
	}
	status := c.status
	if status == 0 {
		status = http.StatusOK
	}
	if err != nil {
		status = statusOf(err)
		if outcome == "" {
			outcome = fmt.Sprintf("error %d", status)
		}
		c.detail = joinDetail(c.detail, auditDetail(err, status))
		if status >= 500 {
			s.Log.Error("api call failed", "action", action, "object", c.object, "actor", c.actor, "err", err)
		}
	} else {
		outcome = outcomeOK
		if c.detail == "" && r.URL.RawQuery != "" {
			c.detail = "query " + r.URL.RawQuery
		}
	}
	c.detail = truncate(c.detail, 300)
	if !s.audit(w, r, catalog.AuditEvent{Actor: c.actor, Action: action, Object: c.object, Outcome: outcome, Detail: c.detail}) {
		return
	}
	s.Log.Debug("api call", "action", action, "object", c.object, "actor", c.actor, "status", status)
	if err != nil {
		writeError(w, status, err)
		return
	}
	writeJSON(w, status, body)
}

// run calls the handler, turning a panic into an error so that the call is
// still audited.
func (rt *route) run(c *call) (body any, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			body, err = nil, fmt.Errorf("api: panic in %s %s: %v", rt.method, rt.path, p)
		}
	}()
	return rt.fn(c)
}

// noRoute answers a request no route matches: 401 without a valid token,
// else 405 (with Allow) when the path exists for another method, else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request, h http.Handler) {
	object := truncate(r.URL.EscapedPath(), 200)
	ev := catalog.AuditEvent{Actor: "anonymous", Action: "api " + r.Method + " (no route)", Object: object}
	tok, outcome, err := s.authenticate(r)
	if err == nil {
		ev.Actor = "token:" + tok.ID
		// Ask the mux's own handler what it would answer (404, 405 with
		// Allow, or a redirect), without letting it write the response.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			err = &Error{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path),
				Hint: "allowed: " + rec.header.Get("Allow")}
		} else {
			err = &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path),
				Hint: "routes are under /v1, e.g. GET /v1/health"}
		}
	}
	status := statusOf(err)
	if outcome == "" {
		outcome = fmt.Sprintf("error %d", status)
	}
	ev.Outcome, ev.Detail = outcome, auditDetail(err, status)
	if status >= 500 {
		s.Log.Error("api call failed", "method", r.Method, "err", err)
	}
	if !s.audit(w, r, ev) {
		return
	}
	writeError(w, status, err)
}

// audit appends ev; when that fails it answers 500 and returns false.
func (s *Server) audit(w http.ResponseWriter, r *http.Request, ev catalog.AuditEvent) bool {
	if _, err := s.Cat.AppendAudit(context.WithoutCancel(r.Context()), ev); err != nil {
		s.Log.Error("api: cannot append audit event; refusing the call",
			"action", ev.Action, "object", ev.Object, "actor", ev.Actor, "outcome", ev.Outcome, "err", err)
		writeError(w, http.StatusInternalServerError, &Error{Status: http.StatusInternalServerError,
			Message: "audit log unavailable: the call is refused", Hint: "the server could not record this call (see its log); a POST may still have taken effect: check before retrying"})
		return false
	}
	return true
}

// statusRecorder captures the status and headers a handler writes.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// errorBody is the JSON of an error response.
type errorBody struct {
	Error string `json:"error"`
	Hint  string `json:"hint,omitempty"`
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var e *Error
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e.Status
	case errors.As(err, &mb):
		return http.StatusBadRequest
	case errors.Is(err, catalog.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, catalog.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, catalog.ErrConflict), errors.Is(err, catalog.ErrInvalidTransition):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// publicMessage is what a client is told about err: the message and hint of
// a 4xx error, a generic sentence for anything else (logged in full).
func publicMessage(err error, status int) (string, string) {
	if status >= 500 {
		var e *Error
		if errors.As(err, &e) {
			return e.Message, e.Hint
		}
		return "internal server error", "the server's log has the details"
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message, e.Hint
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return fmt.Sprintf("request body is larger than %d bytes", mb.Limit), ""
	}
	return err.Error(), hint.Of(err)
}

// auditDetail is the audit event's short note about a failed call.
func auditDetail(err error, status int) string {
	msg, _ := publicMessage(err, status)
	return truncate(msg, 200)
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + ": " + b
}

// truncate cuts s to at most n bytes (plus an ellipsis), on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func writeError(w http.ResponseWriter, status int, err error) {
	msg, h := publicMessage(err, status)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="coffre"`)
	}
	writeJSON(w, status, errorBody{Error: msg, Hint: h})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own DTOs are marshalled
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal server error: cannot encode the response"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// authenticate checks the bearer token. On failure it returns the error to
// answer (401, or 500 when the catalog fails) and the audit outcome.
func (s *Server) authenticate(r *http.Request) (catalog.Token, string, error) {
	deny := func(msg, h string) (catalog.Token, string, error) {
		return catalog.Token{}, outcomeDenied, &Error{Status: http.StatusUnauthorized, Message: msg, Hint: h}
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return deny("authentication required", "send the header Authorization: Bearer <token>")
	}
	scheme, tok, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return deny("the Authorization header is not a bearer token", "send the header Authorization: Bearer <token>")
	}
	id, ok := parseToken(strings.TrimSpace(tok))
	if !ok {
		return deny("malformed token", "tokens look like coffre_<12 hex digits>_<secret>")
	}
	t, err := s.Cat.TokenByHash(r.Context(), HashToken(strings.TrimSpace(tok)), true)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && t.ID != id) {
		return deny(fmt.Sprintf("unknown or revoked token %s", id), "create a new token")
	}
	if err != nil {
		return catalog.Token{}, "", fmt.Errorf("api: authenticate: %w", err)
	}
	return t, "", nil
}
