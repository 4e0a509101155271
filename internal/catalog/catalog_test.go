package catalog

import (
	"errors"
	"testing"
	"time"
)

func TestTransitionsTable(t *testing.T) {
	allowed := map[[2]JobState]bool{
		{StateCreated, StatePending}: true, {StateCreated, StateAborted}: true,
		{StateCreated, StateFailed}: true, {StateCreated, StateExpired}: true,
		{StatePending, StateRunning}: true, {StatePending, StateAborted}: true,
		{StatePending, StateFailed}: true, {StatePending, StateExpired}: true,
		{StateRunning, StateCompleted}: true, {StateRunning, StatePartial}: true,
		{StateRunning, StateFailed}: true, {StateRunning, StateAborted}: true,
		{StateRunning, StateExpired}: true, {StateRunning, StatePending}: true,
	}
	for _, from := range AllStates {
		for _, to := range AllStates {
			err := CheckTransition(from, to)
			if allowed[[2]JobState{from, to}] {
				if err != nil {
					t.Errorf("%s→%s refused: %v", from, to, err)
				}
			} else if !errors.Is(err, ErrInvalidTransition) {
				t.Errorf("%s→%s: got %v, want ErrInvalidTransition", from, to, err)
			}
		}
	}
	if !errors.Is(CheckTransition("BOGUS", StatePending), ErrInvalidTransition) {
		t.Error("unknown state accepted")
	}
	for _, s := range []JobState{StateCompleted, StatePartial, StateFailed, StateAborted, StateExpired} {
		if !Terminal(s) {
			t.Errorf("%s not terminal", s)
		}
	}
	if Terminal(StateRunning) {
		t.Error("RUNNING terminal")
	}
}

func TestAuditChain(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	var evs []AuditEvent
	prev := ""
	for i := int64(1); i <= 3; i++ {
		e := AuditEvent{Seq: i, Time: base.Add(time.Duration(i) * time.Second), Actor: "a", Action: "x", PrevHash: prev}
		e.Hash = AuditHash(e)
		prev = e.Hash
		evs = append(evs, e)
	}
	verify := func(evs []AuditEvent) int64 {
		i := 0
		n, err := VerifyChain(func() (AuditEvent, bool, error) {
			if i == len(evs) {
				return AuditEvent{}, false, nil
			}
			i++
			return evs[i-1], true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := verify(evs); n != 0 {
		t.Fatalf("intact chain broken at %d", n)
	}
	bad := append([]AuditEvent(nil), evs...)
	bad[1].Detail = "changed"
	if n := verify(bad); n != 2 {
		t.Fatalf("tampered detail: got %d, want 2", n)
	}
	if n := verify([]AuditEvent{evs[0], evs[2]}); n != 2 {
		t.Fatalf("gap: got %d, want 2", n)
	}
	// Same time in another zone hashes the same: canonical form is UTC.
	e := evs[0]
	e.Time = e.Time.In(time.FixedZone("x", 3600))
	if AuditHash(e) != evs[0].Hash {
		t.Fatal("hash depends on time zone")
	}
}

func TestValidateResourceRefusesSecrets(t *testing.T) {
	r := Resource{ID: "arn:coffre:postgres:local:main", Type: "postgres", Settings: map[string]string{"Password": "hunter2"}}
	if !errors.Is(ValidateResource(r), ErrInvalid) {
		t.Fatal("inline password accepted")
	}
	r.Settings["Password"] = "env:PGPASSWORD"
	if err := ValidateResource(r); err != nil {
		t.Fatal(err)
	}
}
