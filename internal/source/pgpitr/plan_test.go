package pgpitr

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

func TestSegmentName(t *testing.T) {
	for _, c := range []struct {
		tli  int32
		lsn  LSN
		want string
	}{
		{1, 0x1000000, "000000010000000000000001"},
		{1, 0x1FFFFFF, "000000010000000000000001"},
		{2, 0x1_00000000, "000000020000000100000000"},
		{1, 0xA_FF000028, "000000010000000A000000FF"},
	} {
		if got := segmentName(c.tli, c.lsn, 16<<20); got != c.want {
			t.Errorf("segmentName(%d, %s) = %s, want %s", c.tli, c.lsn, got, c.want)
		}
	}
	if l, err := ParseLSN("A/FF000028"); err != nil || l != 0xA_FF000028 || l.String() != "A/FF000028" {
		t.Errorf("ParseLSN: %s %v", l, err)
	}
}

// planVault is a vault with synthetic base backups and WAL points.
type planVault struct {
	t  *testing.T
	r  *repo.Repository
	t0 time.Time
}

func (v *planVault) base(start, end LSN, endTime time.Time) *snapshot.Manifest {
	v.t.Helper()
	meta := BaseMeta{Format: metaFormat, SystemID: "42", Timeline: 1, StartLSN: start, EndLSN: end,
		StartTime: endTime.Add(-time.Second), EndTime: endTime, SegmentSize: 16 << 20}
	b, _ := marshalMeta(meta)
	m, err := archiver.New(v.r, archiver.Options{}).BackupStreams(context.Background(), snapshot.Source{Type: TypeBase, Resource: "db"},
		func(ctx context.Context, s *archiver.Streams) error { return s.AddBytes("meta.json", b) })
	if err != nil {
		v.t.Fatal(err)
	}
	return m
}

func (v *planVault) wal(start, end LSN, covered time.Duration, slot string) *snapshot.Manifest {
	v.t.Helper()
	w := &WALStreamer{Repo: v.r, Conn: source.Conn{Resource: "db"}}
	m := WALMeta{Format: metaFormat, SystemID: "42", Timeline: 1, Slot: slot, SegmentSize: 16 << 20, StartLSN: start, EndLSN: end,
		CoveredUntil: v.t0.Add(covered)}
	man, err := w.commit(context.Background(), "db", &m, make([]byte, end-start))
	if err != nil {
		v.t.Fatal(err)
	}
	return man
}

func chainRange(chain []walPoint) string {
	var s []string
	for _, w := range chain {
		s = append(s, w.meta.StartLSN.String()+"-"+w.meta.EndLSN.String())
	}
	return strings.Join(s, " ")
}

func TestPlan(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	v := &planVault{t: t, r: r, t0: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	base := v.base(0x2000028, 0x2000100, v.t0)
	v.wal(0x1000000, 0x2000000, -time.Minute, "s") // before the base backup: not needed
	v.wal(0x2000000, 0x2000200, time.Second, "s")
	p2 := v.wal(0x2000200, 0x2000400, 2*time.Second, "s")
	v.wal(0x2000400, 0x2000600, 20*time.Second, "s")
	v.wal(0x2000600, 0x2000600, 40*time.Second, "s") // heartbeat

	b, chain, err := plan(ctx, r, v.t0.Add(1500*time.Millisecond), "")
	if err != nil || b.m.ID != base.ID {
		t.Fatalf("plan: %v", err)
	}
	// Up to the point covering the target, then as far as 10s past it.
	if got, want := chainRange(chain), "0/2000000-0/2000200 0/2000200-0/2000400 0/2000400-0/2000600"; got != want {
		t.Fatalf("chain %s, want %s", got, want)
	}
	if _, chain, err = plan(ctx, r, v.t0.Add(35*time.Second), ""); err != nil || len(chain) != 3 {
		t.Fatalf("plan to a time covered by a heartbeat: %d points, %v", len(chain), err)
	}
	if _, _, err := plan(ctx, r, v.t0.Add(41*time.Second), ""); err == nil || !strings.Contains(err.Error(), "after the newest archived WAL") {
		t.Fatalf("plan after the newest WAL: %v", err)
	}
	if _, _, err := plan(ctx, r, v.t0.Add(-time.Second), ""); err == nil || !strings.Contains(err.Error(), "before the oldest base backup") {
		t.Fatalf("plan before the base: %v", err)
	}
	if _, _, err := plan(ctx, r, v.t0.Add(time.Second), "other"); err == nil || !strings.Contains(err.Error(), "no PostgreSQL base backup") {
		t.Fatalf("plan for another resource: %v", err)
	}

	// A second slot's overlapping points do not disturb the chain.
	v.wal(0x2000000, 0x2000300, 2*time.Second, "t")
	if _, chain, err = plan(ctx, r, v.t0.Add(1500*time.Millisecond), ""); err != nil || chain[len(chain)-1].meta.EndLSN != 0x2000600 {
		t.Fatalf("plan with overlapping points: %s, %v", chainRange(chain), err)
	}

	// A missing point is a gap, named; a target before it is still fine.
	if err := snapshot.Delete(ctx, r, p2.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = plan(ctx, r, v.t0.Add(15*time.Second), "")
	if !errors.Is(err, ErrWALGap) || !strings.Contains(err.Error(), "from 0/2000300 to 0/2000400") {
		t.Fatalf("plan across a gap: %v", err)
	}
	if _, chain, err = plan(ctx, r, v.t0.Add(500*time.Millisecond), ""); err != nil || chainRange(chain) != "0/2000000-0/2000300" { // the other slot's point
		t.Fatalf("plan before the gap: %s, %v", chainRange(chain), err)
	}

	// WAL that starts after the base backup's start is a gap too.
	r2, _ := repo.TestRepository(t)
	v2 := &planVault{t: t, r: r2, t0: v.t0}
	v2.base(0x2000028, 0x2000100, v.t0)
	v2.wal(0x2000100, 0x2000200, time.Second, "s")
	if _, _, err := plan(ctx, r2, v.t0.Add(500*time.Millisecond), ""); !errors.Is(err, ErrWALGap) || !strings.Contains(err.Error(), "from 0/2000028 to 0/2000100") {
		t.Fatalf("plan with WAL missing at the base's start: %v", err)
	}
	// WAL that stops before the base backup's end.
	r3, _ := repo.TestRepository(t)
	v3 := &planVault{t: t, r: r3, t0: v.t0}
	v3.base(0x2000028, 0x2000100, v.t0)
	v3.wal(0x2000000, 0x2000080, time.Second, "s")
	if _, _, err := plan(ctx, r3, v.t0.Add(500*time.Millisecond), ""); !errors.Is(err, ErrWALGap) || !strings.Contains(err.Error(), "before the end of base backup") {
		t.Fatalf("plan with WAL ending inside the base backup: %v", err)
	}
}
