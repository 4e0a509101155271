package lifecycle

import (
	"fmt"
	"time"
)

// clockGuard decides whether the wall clock may be trusted for irreversible
// lifecycle actions (deletions, and moves to a cold storage class).
//
// Rule: every observation is a pair (wall time, monotonic elapsed time).
//
//   - The first observation (or one where the monotonic time went backwards,
//     which means the reference is unusable) only records the reference: the
//     clock is not trusted for that run.
//   - A jump is a forward step of the wall clock that exceeds the monotonic
//     step by more than maxJump. A jump starts a settling period at that
//     observation; the clock is trusted again once later observations have
//     all stepped in line with the monotonic clock (no new jump) for at least
//     settle of monotonic time. A new jump while settling restarts the
//     period. Each jump is reported once.
//   - A wall clock that goes backwards is not special: it makes fewer points
//     due.
//
// The monotonic clock (CLOCK_MONOTONIC on Linux) does not advance while the
// machine is suspended, so waking from a long sleep looks like a jump and
// holds deletions for settle: a conservative outcome.
type clockGuard struct {
	have     bool
	wall     time.Time
	elapsed  time.Duration
	settling bool
	since    time.Duration // monotonic time of the last jump
}

// observe records an observation and reports whether the wall clock may be
// trusted; hold says why not (empty when trusted), and jump describes a jump
// seen by this observation (empty when none).
func (g *clockGuard) observe(wall time.Time, elapsed, maxJump, settle time.Duration) (trusted bool, hold, jump string) {
	wall = wall.Round(0) // compare wall readings, never monotonic ones
	if !g.have || elapsed < g.elapsed {
		why := "first run: the wall clock has no reference yet"
		if g.have {
			why = "the monotonic clock went backwards: the wall clock has no reference"
		}
		*g = clockGuard{have: true, wall: wall, elapsed: elapsed}
		return false, why, ""
	}
	dWall, dMono := wall.Sub(g.wall), elapsed-g.elapsed
	if excess := dWall - dMono; excess > maxJump {
		jump = fmt.Sprintf("wall clock jumped forward by %s (from %s to %s) while %s passed on the monotonic clock",
			roundDur(excess), g.wall.UTC().Format(time.RFC3339), wall.UTC().Format(time.RFC3339), roundDur(dMono))
		g.settling, g.since = true, elapsed
	}
	g.wall, g.elapsed = wall, elapsed
	if g.settling {
		if left := settle - (elapsed - g.since); left > 0 {
			return false, fmt.Sprintf("wall clock jumped; waiting %s more of steady time before deleting", roundDur(left)), jump
		}
		g.settling = false
	}
	return true, "", jump
}

func roundDur(d time.Duration) time.Duration {
	if d > time.Hour || d < -time.Hour {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
