package pgpitr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/source"
	"github.com/jackc/pgx/v5"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// testServer is a PostgreSQL 15 instance of one test, run by the postgres
// OS user in a directory it owns.
type testServer struct {
	dir      string // owned by postgres; the data directory is dir/data
	port     int
	user     string // LOGIN REPLICATION role
	password string
	pwEnv    string
}

func requireServices() bool {
	return os.Getenv("CI") != "" || os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != ""
}

// ownedTempDir makes a directory under /tmp owned by postgres, removed at
// the end of the test.
func ownedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "coffre-pitr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("OS user postgres: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

func asPostgres(args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	}
	return exec.Command(args[0], args[1:]...)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomToken(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startServer initialises and starts a PostgreSQL 15 instance for physical
// backups (wal_level=replica, full_page_writes on) and creates a LOGIN
// REPLICATION role with a password, whose reference is in the environment.
func startServer(t *testing.T, conf ...string) *testServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		if requireServices() {
			t.Fatalf("PostgreSQL 15 is required (CI or COFFRE_TEST_REQUIRE_SERVICES set): %v", err)
		}
		t.Skipf("PostgreSQL 15 not installed (%v): set CI or COFFRE_TEST_REQUIRE_SERVICES to make this a failure", err)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		if requireServices() {
			t.Fatalf("OS user postgres: %v", err)
		}
		t.Skipf("no OS user postgres: %v", err)
	}
	s := &testServer{dir: ownedTempDir(t), user: "coffre_repl", password: randomToken(t)}
	data := filepath.Join(s.dir, "data")
	if out, err := asPostgres(filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C",
		"--auth-local=trust", "--auth-host=scram-sha-256").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba := "local all all trust\n" +
		"host replication all 127.0.0.1/32 scram-sha-256\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nwal_level = replica\n"+
		"max_wal_senders = 5\nmax_replication_slots = 5\nfsync = off\nsynchronous_commit = on\n", s.dir)
	for _, line := range conf {
		fmt.Fprintln(f, line)
	}
	f.Close()
	var lastErr error
	for try := 0; try < 3; try++ {
		s.port = freePort(t)
		out, err := asPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60",
			"-o", "-p "+strconv.Itoa(s.port), "start").CombinedOutput()
		if err == nil {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	if lastErr != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		t.Fatalf("%v\n%s", lastErr, log)
	}
	t.Cleanup(func() {
		_ = asPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-m", "immediate", "stop").Run()
	})
	s.pwEnv = "COFFRE_TEST_PITR_PW_" + strconv.Itoa(s.port)
	t.Setenv(s.pwEnv, s.password)
	s.exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'", s.user, s.password))
	return s
}

// super connects as the superuser through the server's socket.
func (s *testServer) super(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", s.dir, s.port))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (s *testServer) exec(t *testing.T, sql string) {
	t.Helper()
	c := s.super(t)
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", strings.SplitN(sql, "\n", 2)[0], err)
	}
}

// conn is the source connection of the replication role.
func (s *testServer) conn(slot string) source.Conn {
	return source.Conn{Resource: "pg-physical", Settings: map[string]string{
		"host": "127.0.0.1", "port": strconv.Itoa(s.port), "user": s.user, "password": "env:" + s.pwEnv,
		"sslmode": "disable", "slot": slot,
	}}
}

// stopRestored stops a restored server at the end of the test.
func stopRestored(t *testing.T, dataDir string) {
	t.Cleanup(func() {
		_ = asPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", dataDir, "-m", "immediate", "stop").Run()
	})
}

// waitArchived waits until the streamer has committed WAL up to lsn.
func waitArchived(t *testing.T, w *WALStreamer, lsn LSN, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for w.Stats().ArchivedLSN < lsn {
		select {
		case err := <-errc:
			t.Fatalf("WAL streamer stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL not archived up to %s within 60s: %+v", lsn, w.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func currentLSN(t *testing.T, c *pgx.Conn) LSN {
	t.Helper()
	var s string
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
