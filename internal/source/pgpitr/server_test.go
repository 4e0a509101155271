package pgpitr

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

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
