package redis

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/testutil"
)

// serviceAddr returns the address and password of the redis-server that
// scripts/services.sh started (COFFRE_TEST_REDIS_ADDR and _PASSWORD), or
// skips — unless COFFRE_TEST_REQUIRE_SERVICES or CI is set, then it fails.
func serviceAddr(t *testing.T) (addr, password string) {
	t.Helper()
	addr = os.Getenv("COFFRE_TEST_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" || os.Getenv("CI") != "" {
			t.Fatal("COFFRE_TEST_REDIS_ADDR is not set; run: scripts/services.sh start ENVFILE && set -a && . ENVFILE && set +a")
		}
		t.Skip("COFFRE_TEST_REDIS_ADDR not set; start Redis with scripts/services.sh")
	}
	return addr, os.Getenv("COFFRE_TEST_REDIS_PASSWORD")
}

// serviceConn returns a connection to database db of the services' Redis,
// emptied now and when t ends.
func serviceConn(t *testing.T, db int) source.Conn {
	t.Helper()
	addr, _ := serviceAddr(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("COFFRE_TEST_REDIS_ADDR %q: %v", addr, err)
	}
	c := source.Conn{Resource: "redis-service", Settings: map[string]string{
		"host": host, "port": port, "db": strconv.Itoa(db), "password": "env:COFFRE_TEST_REDIS_PASSWORD",
	}}
	cl := testClient(t, c, db)
	if err := cl.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("flush database %d of %s: %v", db, addr, err)
	}
	t.Cleanup(func() { _ = cl.FlushDB(context.Background()).Err() })
	return c
}

// testServer is a redis-server the test started, stopped when it ends.
type testServer struct {
	bin, dir string
	port     string
	pwFile   string
	extra    []string
	cmd      *exec.Cmd
	exited   chan struct{}
	mu       sync.Mutex
	log      strings.Builder
}

// startServer starts a new, empty redis-server on 127.0.0.1 at a free port
// with a random password and no persistence; extra lines go to its config.
// Its diskless replication starts at once (repl-diskless-sync-delay 0, not
// the default 5 s) so that PSYNC backups do not wait.
func startServer(t *testing.T, extra ...string) *testServer {
	t.Helper()
	serviceAddr(t) // the services script installed redis-server
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("COFFRE_TEST_REDIS_ADDR is set but redis-server is not on PATH: %v", err)
	}
	dir := t.TempDir()
	ts := &testServer{bin: bin, dir: dir, pwFile: filepath.Join(dir, "password"), extra: extra}
	if err := os.WriteFile(ts.pwFile, []byte(randomHex(t, 16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.stop)
	for try := 1; ; try++ {
		port := strconv.Itoa(testutil.FreePort(t))
		if ts.launch(t, port) {
			return ts
		}
		if try == 3 {
			t.Fatalf("redis-server did not start:\n%s", ts.logText())
		}
		t.Logf("redis-server did not start on port %s, retrying:\n%s", port, ts.logText())
	}
}

// launch starts the server on port and waits until it logs that it is
// ready; false if it exited first.
func (ts *testServer) launch(t *testing.T, port string) bool {
	t.Helper()
	pw := mustSecret(t, source.Conn{Settings: map[string]string{"password": "file:" + ts.pwFile}})
	conf := filepath.Join(ts.dir, "redis.conf")
	lines := append([]string{
		"bind 127.0.0.1", "port " + port, "requirepass " + pw, `save ""`, "appendonly no",
		"daemonize no", "dir " + ts.dir, `logfile ""`, "repl-diskless-sync-delay 0",
	}, ts.extra...)
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ts.bin, conf)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			ts.mu.Lock()
			ts.log.WriteString(sc.Text() + "\n")
			ts.mu.Unlock()
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
		ts.port, ts.cmd, ts.exited = port, cmd, exited
		return true
	case <-exited:
		_ = cmd.Wait()
		return false
	case <-time.After(time.Minute): // a guard against a hung server, not synchronisation
		_ = cmd.Process.Kill()
		t.Fatalf("redis-server not ready after a minute:\n%s", ts.logText())
		return false
	}
}

// stop kills the server (if it still runs) and waits for it.
func (ts *testServer) stop() {
	if ts.cmd == nil {
		return
	}
	_ = ts.cmd.Process.Kill()
	<-ts.exited
	_ = ts.cmd.Wait()
	ts.cmd = nil
}

// restart replaces the server with a new, empty one on the same port and
// with the same password.
func (ts *testServer) restart(t *testing.T) {
	t.Helper()
	ts.stop()
	if !ts.launch(t, ts.port) {
		t.Fatalf("redis-server did not restart on port %s:\n%s", ts.port, ts.logText())
	}
}

func (ts *testServer) logText() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.log.String()
}

// conn returns a connection to the server; kv are extra settings.
func (ts *testServer) conn(kv ...string) source.Conn {
	s := map[string]string{"host": "127.0.0.1", "port": ts.port, "password": "file:" + ts.pwFile}
	for i := 0; i+1 < len(kv); i += 2 {
		s[kv[i]] = kv[i+1]
	}
	return source.Conn{Resource: "redis-test-" + ts.port, Settings: s}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func mustSecret(t *testing.T, c source.Conn) string {
	t.Helper()
	pw, err := c.Secret("password")
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

// testClient connects to database db of the server c names, closed when t ends.
func testClient(t *testing.T, c source.Conn, db int) *goredis.Client {
	t.Helper()
	cl := goredis.NewClient(&goredis.Options{
		Addr:            net.JoinHostPort(c.Settings["host"], c.Settings["port"]),
		Password:        mustSecret(t, c),
		DB:              db,
		Protocol:        2,
		DisableIdentity: true,
	})
	t.Cleanup(func() { cl.Close() })
	if err := cl.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("connect to redis %s db %d: %v", cl.Options().Addr, db, err)
	}
	return cl
}

// mustDo runs one command and fails t on error.
func mustDo(t *testing.T, cl *goredis.Client, args ...any) any {
	t.Helper()
	v, err := cl.Do(context.Background(), args...).Result()
	if err != nil && err != goredis.Nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

func ctxb() context.Context { return context.Background() }
