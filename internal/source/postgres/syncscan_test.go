package postgres

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coffre/coffre/internal/repo"
)

// TestBackupIgnoresConcurrentScans checks that a backup reads a table from
// its first block even while another session's sequential scan of it is
// half done: with synchronized scans (the server's default) the backup's
// scan would join the other one mid-table, and the rows would come in an
// order that changes from one backup to the next.
func TestBackupIgnoresConcurrentScans(t *testing.T) {
	db := newDBName(t, "sync")
	mustExec(t, dbConnect(t, "postgres"), "CREATE DATABASE "+qi(db))
	conn := dbConnect(t, db)
	// Scans are synchronized on tables of more than a quarter of
	// shared_buffers.
	var buffers int64
	if err := conn.QueryRow(ctxb(), "SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").Scan(&buffers); err != nil {
		t.Fatal(err)
	}
	blocks := buffers/4 + 256
	if blocks > 40000 {
		t.Fatalf("the test server has %d shared buffers: this test would need a table of %d blocks; run it on a server with shared_buffers of 1 GB or less", buffers, blocks)
	}
	// No primary key: the table is copied as it lies, in one scan. About
	// 30 rows of 250 bytes per 8 KiB block.
	mustExec(t, conn, "CREATE TABLE big (n integer NOT NULL, pad text NOT NULL)")
	mustExec(t, conn, "INSERT INTO big SELECT g, repeat('x', 240) FROM generate_series(1, $1::int) g", blocks*30)
	var got int64
	if err := conn.QueryRow(ctxb(), "SELECT pg_relation_size('big') / 8192").Scan(&got); err != nil || got <= buffers/4 {
		t.Fatalf("table big has %d blocks (%v), want more than %d", got, err, buffers/4)
	}
	var first int32
	if err := conn.QueryRow(ctxb(), "SELECT n FROM big WHERE ctid = '(0,1)'").Scan(&first); err != nil {
		t.Fatal(err)
	}

	// Another session reads half the table and keeps its scan open.
	other := dbConnect(t, db)
	mustExec(t, other, "BEGIN")
	mustExec(t, other, "DECLARE c NO SCROLL CURSOR FOR SELECT n FROM big")
	mustExec(t, other, fmt.Sprintf("MOVE FORWARD %d IN c", blocks*15))
	defer mustExec(t, other, "COMMIT")

	r, _ := repo.TestRepository(t)
	src := connFor(t, db)
	m := mustBackup(t, Adapter{}, r, src)
	meta, err := ReadMeta(ctxb(), r, m)
	if err != nil {
		t.Fatal(err)
	}
	tb := findTable(t, meta, "public", "big")
	if tb.Path == "" || !tb.binary() || len(tb.OrderBy) != 0 {
		t.Fatalf("table big: path %q, format %q, order by %v: want one binary stream in physical order", tb.Path, tb.Format, tb.OrderBy)
	}
	b := readFile(t, r, m, tb.Path)
	// The binary COPY header (19 bytes), then the first row: field count
	// (2 bytes), the first field's length (4) and value (4).
	if len(b) < 29 || !strings.HasPrefix(string(b), copySignature) {
		t.Fatalf("stream of %d bytes without a binary COPY header", len(b))
	}
	n := int32(uint32(b[25])<<24 | uint32(b[26])<<16 | uint32(b[27])<<8 | uint32(b[28]))
	if n != first {
		t.Errorf("the backup's first row is n = %d, want %d (the table's first block): the scan started mid-table", n, first)
	}
}
