package pgpitr

// Helpers for tests (of this package and of the control plane) that need
// their own PostgreSQL 15 instance set up for physical backups.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/testutil"
	"github.com/jackc/pgx/v5"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// TestServer is a PostgreSQL 15 instance of one test, run by the postgres
// OS user in a directory it owns.
type TestServer struct {
	Dir      string // owned by postgres; the data directory is Dir/data
	Port     int
	User     string // LOGIN REPLICATION role
	Password string
	PwEnv    string // the environment variable holding Password
}

func requireServices() bool {
	return os.Getenv("CI") != "" || os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != ""
}

// OwnedTempDir makes a directory under /tmp owned by postgres, removed at
// the end of the test.
func OwnedTempDir(t testing.TB) string {
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

func AsPostgres(args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	}
	return exec.Command(args[0], args[1:]...)
}

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// StartTestServer initialises and starts a PostgreSQL 15 instance for physical
// backups (wal_level=replica, full_page_writes on) and creates a LOGIN
// REPLICATION role with a password, whose reference is in the environment.
func StartTestServer(t testing.TB, conf ...string) *TestServer {
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
	s := &TestServer{Dir: OwnedTempDir(t), User: "coffre_repl", Password: randomToken(t)}
	data := filepath.Join(s.Dir, "data")
	if out, err := AsPostgres(filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C",
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
		"max_wal_senders = 5\nmax_replication_slots = 5\nfsync = off\nsynchronous_commit = on\n", s.Dir)
	for _, line := range conf {
		fmt.Fprintln(f, line)
	}
	f.Close()
	var lastErr error
	for try := 0; try < 3; try++ {
		s.Port = testutil.FreePort(t)
		out, err := AsPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-l", filepath.Join(s.Dir, "log"), "-w", "-t", "60",
			"-o", "-p "+strconv.Itoa(s.Port), "start").CombinedOutput()
		if err == nil {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	if lastErr != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
		t.Fatalf("%v\n%s", lastErr, log)
	}
	t.Cleanup(func() {
		_ = AsPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-m", "immediate", "stop").Run()
	})
	s.PwEnv = "COFFRE_TEST_PITR_PW_" + strconv.Itoa(s.Port)
	t.Setenv(s.PwEnv, s.Password)
	s.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'", s.User, s.Password))
	return s
}

// Super connects as the superuser through the server's socket.
func (s *TestServer) Super(t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", s.Dir, s.Port))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (s *TestServer) Exec(t testing.TB, sql string) {
	t.Helper()
	c := s.Super(t)
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", strings.SplitN(sql, "\n", 2)[0], err)
	}
}

// Conn is the source connection of the replication role.
func (s *TestServer) Conn(slot string) source.Conn {
	return source.Conn{Resource: "pg-physical", Settings: map[string]string{
		"host": "127.0.0.1", "port": strconv.Itoa(s.Port), "user": s.User, "password": "env:" + s.PwEnv,
		"sslmode": "disable", "slot": slot,
	}}
}

// StopRestored stops a restored server at the end of the test.
func StopRestored(t testing.TB, dataDir string) {
	t.Cleanup(func() {
		_ = AsPostgres(filepath.Join(pgBin, "pg_ctl"), "-D", dataDir, "-m", "immediate", "stop").Run()
	})
}
