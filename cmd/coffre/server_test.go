package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/api"
	"github.com/coffre/coffre/internal/testutil"
)

// plane is a data dir with the demo's HCL applied to it.
type plane struct {
	t    *testing.T
	dir  string
	data string
	src  string
}

func newPlane(t *testing.T) *plane {
	t.Helper()
	t.Setenv("COFFRE_SERVER", "")
	t.Setenv("COFFRE_TOKEN", "")
	t.Setenv("COFFRE_DATA_DIR", "")
	dir := t.TempDir()
	p := &plane{t: t, dir: dir, data: filepath.Join(dir, "data"), src: filepath.Join(dir, "src")}
	testutil.WriteFiles(t, p.src, map[string][]byte{"a.txt": []byte("alpha"), "d/b.bin": testutil.RandomBytes(3, 70_000)})
	hcl := filepath.Join(dir, "dev.hcl")
	if err := os.WriteFile(hcl, []byte(fmt.Sprintf(demoHCL, demoResource, filepath.Join(dir, "vault"), p.src)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.ok("apply", "-f", hcl, "--auto-approve")
	return p
}

func (p *plane) run(args ...string) result {
	p.t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append(args, "--catalog", p.data), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func (p *plane) ok(args ...string) result {
	p.t.Helper()
	r := p.run(args...)
	if r.code != 0 {
		p.t.Fatalf("coffre %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// serve starts a server on the plane's data dir; the cleanup stops it.
func (p *plane) serve() string {
	p.t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	var logs bytes.Buffer
	g := &globals{stdout: &bytes.Buffer{}, stderr: &logs}
	g.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &serverFlags{policyFlags: policyFlags{catalogDir: p.data}, listen: "127.0.0.1:0", workers: 2, tick: 50e6, lifecycleEvery: 3600e9, grace: 1e9, logFormat: "json", perVault: 2, perResource: 1}
	go func() { done <- g.serve(ctx, f, func(url string) { ready <- url }) }()
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		p.t.Fatalf("server did not start: %v\n%s", err, logs.String())
	}
	p.t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			p.t.Errorf("server: %v", err)
		}
		// Structured logs: every line is a JSON object.
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil {
				p.t.Errorf("log line is not structured JSON: %q", line)
			}
		}
		if strings.Contains(logs.String(), "coffre_") {
			p.t.Errorf("a token leaked into the logs")
		}
	})
	return url
}

func TestJobCommandsWithoutServerRunInProcess(t *testing.T) {
	p := newPlane(t)
	r := p.ok("backup", "start", "--resource", demoResource, "--vault", demoVault)
	if !strings.Contains(r.stdout, "BACKUP COMPLETED") || !strings.Contains(r.stdout, "2 files read") {
		t.Fatalf("local backup start: %s", r)
	}
	r = p.ok("points", "list", "--json")
	var pts []api.RecoveryPoint
	if err := json.Unmarshal([]byte(r.stdout), &pts); err != nil || len(pts) != 1 || pts[0].Resource != demoResource {
		t.Fatalf("points list: %v %s", err, r.stdout)
	}
	target := filepath.Join(p.dir, "out")
	r = p.ok("restore", "start", "--vault", demoVault, "--recovery-point", pts[0].ID[:10], "--target", target)
	if !strings.Contains(r.stdout, "RESTORE COMPLETED") {
		t.Fatalf("local restore: %s", r)
	}
	sameFiles(t, testutil.ReadFiles(t, target), testutil.ReadFiles(t, p.src))

	// Bad input: unknown resource or vault, unknown point, relative target.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "start", "--resource", "nope", "--vault", demoVault}, `resource "nope" not found`},
		{[]string{"backup", "start", "--resource", demoResource, "--vault", "nope"}, `vault "nope" not found`},
		{[]string{"restore", "start", "--vault", demoVault, "--recovery-point", "deadbeefdead", "--target", target + "2"}, `recovery point "deadbeefdead" not found`},
		{[]string{"backup", "start", "--resource", demoResource}, "--resource and --vault are required"},
	} {
		r := p.run(c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("coffre %s: %s\nwant an error with %q", strings.Join(c.args, " "), r, c.want)
		}
	}
	r = p.ok("jobs", "list", "--state", "completed", "--json")
	var js []api.Job
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || len(js) != 2 {
		t.Fatalf("jobs list: %v %s", err, r.stdout)
	}
}

func TestServerCommandsThroughTheAPI(t *testing.T) {
	p := newPlane(t)
	url := p.serve()
	tok, err := os.ReadFile(filepath.Join(p.data, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(p.data, adminTokenFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token mode %v", fi.Mode())
	}
	r := p.ok("backup", "start", "--resource", demoResource, "--vault", demoVault, "--json")
	var j api.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || j.State != "COMPLETED" || j.Owner == "" || strings.HasPrefix(j.Owner, "cli") {
		t.Fatalf("backup through the server: %v %s", err, r)
	}
	// A second server on the same SQLite data dir is refused and changes nothing.
	var out, errb bytes.Buffer
	if code := run([]string{"server", "--catalog", p.data, "--listen", "127.0.0.1:0"}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "held by another coffre server") {
		t.Fatalf("second server: exit %d: %s", code, errb.String())
	}
	// Commands find the server; the audit trail shows the API calls.
	r = p.ok("audit", "list", "--json")
	if !strings.Contains(r.stdout, "api POST /v1/jobs/backup") || !strings.Contains(r.stdout, "job.COMPLETED") {
		t.Fatalf("audit list through the server lacks the backup: %s", r.stdout)
	}
	p.ok("audit", "verify")
	// A wrong token is refused with a hint.
	t.Setenv("COFFRE_TOKEN", "coffre_000000000000_"+strings.Repeat("A", 43))
	r = p.run("jobs", "list", "--server", url)
	if r.code == 0 || !strings.Contains(r.stderr, "401") {
		t.Fatalf("wrong token: %s", r)
	}
	t.Setenv("COFFRE_TOKEN", strings.TrimSpace(string(tok)))
	r = p.ok("jobs", "list", "--server", url, "--json")
	if !strings.Contains(r.stdout, j.ID) {
		t.Fatalf("jobs list with the admin token lacks %s", j.ID)
	}
}

func TestTokenCommands(t *testing.T) {
	p := newPlane(t)
	r := p.ok("token", "create", "ci")
	tok := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(tok, "coffre_") {
		t.Fatalf("token create printed %q", r.stdout)
	}
	r = p.ok("token", "list")
	if !strings.Contains(r.stdout, "ci") || strings.Contains(r.stdout, tok) || strings.Contains(r.stdout, api.HashToken(tok)) {
		t.Fatalf("token list: %s", r.stdout)
	}
	id := strings.Split(tok, "_")[1]
	p.ok("token", "delete", id)
	if r = p.run("token", "delete", id); r.code == 0 {
		t.Fatalf("deleting a deleted token succeeded")
	}
	// The server does not create an admin token when the catalog has one.
	p.ok("token", "create", "ops")
	p.serve()
	if _, err := os.Stat(filepath.Join(p.data, adminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("admin token written although a token exists: %v", err)
	}
}
