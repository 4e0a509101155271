package pgpitr

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/repo"
)

// TestDropSlot drops a missing slot (nothing to do), a slot in use (refused
// with ErrSlotActive, never waited for) and the same slot once its streamer
// has stopped.
func TestDropSlot(t *testing.T) {
	srv := StartTestServer(t)
	db := srv.Super(t)
	ctx := context.Background()
	c := srv.Conn("")
	exists := func(slot string) bool {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	if existed, err := DropSlot(ctx, c, "never_created"); existed || err != nil {
		t.Fatalf("drop a missing slot: %v, %v", existed, err)
	}
	if _, err := DropSlot(ctx, c, "Not-A-Slot"); err == nil {
		t.Fatal("an invalid slot name was accepted")
	}

	r, _ := repo.TestRepository(t)
	w, errc, cancel := startStreamer(t, r, srv.Conn("in_use"))
	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().ReceivedLSN == 0 {
		if time.Now().After(deadline) {
			t.Fatal("streamer did not start within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if existed, err := DropSlot(ctx, c, "in_use"); existed || !errors.Is(err, ErrSlotActive) || !exists("in_use") {
		t.Fatalf("drop a slot in use: %v, %v; want ErrSlotActive and the slot kept", existed, err)
	}
	stopStreamer(t, cancel, errc)
	for {
		existed, err := DropSlot(ctx, c, "in_use")
		if err == nil && existed {
			break
		}
		if !errors.Is(err, ErrSlotActive) || time.Now().After(deadline) {
			t.Fatalf("drop the slot of a stopped streamer: %v, %v", existed, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if exists("in_use") {
		t.Fatal("slot still there after DropSlot reported it dropped")
	}
}
