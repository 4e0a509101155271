// Package sourcetest is the conformance suite every source.Adapter passes against a real server: back up, restore to a new target, validate, deduplicate the next day's backup, and fail cleanly (wrong credentials, a target that has data, a damaged vault, a connection killed mid-backup).
package sourcetest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
)

// Harness is what an adapter's test gives the suite. Every func gets the
// running test so it can fail it and register cleanups.
type Harness struct {
	Adapter source.Adapter
	// Source returns a connection to a new resource holding a known
	// dataset (big enough to span several chunks: a few MiB).
	Source func(t *testing.T) source.Conn
	// Mutate changes about 1% of the resource's data.
	Mutate func(t *testing.T, c source.Conn)
	// NewTarget returns a connection to a new, empty restore target.
	NewTarget func(t *testing.T) source.Conn
	// Fill puts some data into a target (to test that restores refuse it).
	Fill func(t *testing.T, c source.Conn)
	// Fingerprint digests the data reachable through c canonically: two
	// resources with the same data have the same fingerprint.
	Fingerprint func(t *testing.T, c source.Conn) string
	// BadCredentials returns c with a wrong password.
	BadCredentials func(c source.Conn) source.Conn
	// Kill, when set, breaks the resource while a backup reads it (drops
	// the database, kills the connection); it is called once the backup
	// has read its first bytes.
	Kill func(t *testing.T, c source.Conn)
	// Checks are passing user checks for Validate on a restored target, and
	// FailingCheck one that fails (nil: the adapter takes no checks).
	Checks       []source.Check
	FailingCheck *source.Check
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("RoundTripValidateDedup", func(t *testing.T) { roundTrip(t, h) })
	t.Run("RefusesNonEmptyTarget", func(t *testing.T) { nonEmpty(t, h) })
	t.Run("BadCredentialsCommitNothing", func(t *testing.T) { badCreds(t, h) })
	t.Run("DamagedVaultFailsRestore", func(t *testing.T) { damaged(t, h) })
	if h.Kill != nil {
		t.Run("KilledMidBackup", func(t *testing.T) { killed(t, h) })
	}
}

func ctx() context.Context { return context.Background() }

func backup(t *testing.T, h Harness, r *repo.Repository, c source.Conn, prog *archiver.Progress) (*snapshot.Manifest, error) {
	t.Helper()
	lock, err := r.Lock(ctx(), false, "sourcetest backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := r.LoadIndex(ctx()); err != nil {
		t.Fatal(err)
	}
	return h.Adapter.Backup(ctx(), archiver.New(r, archiver.Options{Progress: prog, BeforeCommit: lock.Check}), c)
}

func points(t *testing.T, r *repo.Repository) int {
	t.Helper()
	ids, err := r.List(ctx(), blob.KindSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

func roundTrip(t *testing.T, h Harness) {
	r, _ := repo.TestRepository(t)
	src := h.Source(t)
	want := h.Fingerprint(t, src)
	m1, err := backup(t, h, r, src, nil)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if m1.Status != snapshot.StatusCompleted || m1.Source.Type != h.Adapter.Type() || m1.Source.Resource != src.Resource {
		t.Fatalf("manifest: status %s, source %+v", m1.Status, m1.Source)
	}
	for k, v := range m1.Tags {
		if strings.Contains(k+v, "env:") || strings.Contains(k+v, "password") {
			t.Fatalf("manifest tag %s=%s looks like a secret reference", k, v)
		}
	}

	target := h.NewTarget(t)
	res, err := h.Adapter.Restore(ctx(), r, m1, target, source.RestoreOptions{})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.Summary == "" || res.Items == 0 {
		t.Fatalf("restore result %+v: want a summary and a count", res)
	}
	if got := h.Fingerprint(t, target); got != want {
		t.Fatalf("restored target differs from the source:\n got  %s\n want %s", clip(got), clip(want))
	}
	v, err := h.Adapter.Validate(ctx(), r, m1, target, h.Checks)
	if err != nil || !v.OK {
		t.Fatalf("validate restored target: %v %+v", err, v)
	}
	if h.FailingCheck != nil {
		v, err = h.Adapter.Validate(ctx(), r, m1, target, append(append([]source.Check(nil), h.Checks...), *h.FailingCheck))
		if err != nil || v.OK || len(v.Failed()) != 1 || v.Failed()[0].Name != h.FailingCheck.Name {
			t.Fatalf("validate with a failing check: %v %+v", err, v)
		}
	}

	// The next day: ~1% changed. The second point stores far less than the
	// first, and restores to the changed data.
	h.Mutate(t, src)
	want2 := h.Fingerprint(t, src)
	if want2 == want {
		t.Fatal("Mutate did not change the fingerprint")
	}
	m2, err := backup(t, h, r, src, nil)
	if err != nil {
		t.Fatalf("second backup: %v", err)
	}
	if m2.Stats.StoredAdded*2 > m1.Stats.StoredAdded {
		t.Errorf("second backup after a 1%% change stored %d bytes, first %d: want at most half", m2.Stats.StoredAdded, m1.Stats.StoredAdded)
	}
	target2 := h.NewTarget(t)
	if _, err := h.Adapter.Restore(ctx(), r, m2, target2, source.RestoreOptions{Parallel: 1}); err != nil {
		t.Fatalf("restore second point: %v", err)
	}
	if got := h.Fingerprint(t, target2); got != want2 {
		t.Fatalf("second restore differs from the changed source")
	}
	// Validation notices a target that does not match the point.
	v, err = h.Adapter.Validate(ctx(), r, m1, target2, nil)
	if err != nil {
		t.Fatalf("validate a mismatching target: %v", err)
	}
	if v.OK {
		t.Fatalf("validate of point 1 against the restore of point 2 (changed data) passed: %+v", v)
	}
}

func nonEmpty(t *testing.T, h Harness) {
	r, _ := repo.TestRepository(t)
	m, err := backup(t, h, r, h.Source(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	target := h.NewTarget(t)
	h.Fill(t, target)
	before := h.Fingerprint(t, target)
	_, err = h.Adapter.Restore(ctx(), r, m, target, source.RestoreOptions{})
	if !errors.Is(err, source.ErrTargetNotEmpty) {
		t.Fatalf("restore into a target with data: %v, want ErrTargetNotEmpty", err)
	}
	if after := h.Fingerprint(t, target); after != before {
		t.Fatal("a refused restore changed the target")
	}
}

func badCreds(t *testing.T, h Harness) {
	r, _ := repo.TestRepository(t)
	bad := h.BadCredentials(h.Source(t))
	_, err := backup(t, h, r, bad, nil)
	if err == nil {
		t.Fatal("backup with a wrong password succeeded")
	}
	for k := range bad.Settings {
		if v, _ := bad.Secret(k); len(v) >= 4 && strings.Contains(err.Error(), v) && strings.Contains(strings.ToLower(k), "pass") {
			t.Fatalf("error %q contains the secret", err)
		}
	}
	if n := points(t, r); n != 0 {
		t.Fatalf("%d recovery points after a failed backup", n)
	}
}

func damaged(t *testing.T, h Harness) {
	r, be := repo.TestRepository(t)
	m, err := backup(t, h, r, h.Source(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the middle of every data pack.
	var handles []blob.Handle
	if err := be.List(ctx(), blob.KindData, func(fi blob.FileInfo) error {
		handles = append(handles, blob.Handle{Kind: blob.KindData, Name: fi.Name})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(handles) == 0 {
		t.Fatal("no data pack to damage")
	}
	for _, hd := range handles {
		b, err := blob.LoadAll(ctx(), be, hd)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := be.Remove(ctx(), hd); err != nil {
			t.Fatal(err)
		}
		if err := be.Save(ctx(), hd, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	r2 := repo.TestOpen(t, be, repo.Options{})
	if err := r2.LoadIndex(ctx()); err != nil {
		t.Fatal(err)
	}
	_, err = h.Adapter.Restore(ctx(), r2, m, h.NewTarget(t), source.RestoreOptions{})
	if err == nil {
		t.Fatal("restore from a damaged vault succeeded")
	}
}

func killed(t *testing.T, h Harness) {
	r, _ := repo.TestRepository(t)
	src := h.Source(t)
	prog := &archiver.Progress{}
	var fired atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for prog.BytesRead.Load() == 0 {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		fired.Store(true)
		h.Kill(t, src)
	}()
	m, err := backup(t, h, r, src, prog)
	close(stop)
	<-done
	switch {
	case err != nil:
		if n := points(t, r); n != 0 {
			t.Fatalf("backup failed (%v) but left %d recovery points", err, n)
		}
	case !fired.Load():
		t.Fatal("backup finished before it read anything: the kill never fired")
	default:
		// The backup won the race: what it committed must restore whole.
		target := h.NewTarget(t)
		if _, err := h.Adapter.Restore(ctx(), r, m, target, source.RestoreOptions{}); err != nil {
			t.Fatalf("backup completed despite the kill, but its point does not restore: %v", err)
		}
		if v, err := h.Adapter.Validate(ctx(), r, m, target, nil); err != nil || !v.OK {
			t.Fatalf("backup completed despite the kill, but its restore does not validate: %v %+v", err, v)
		}
	}
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
