package catalog

import "fmt"

// Transitions is the job state machine, shared by every implementation:
// Transitions[from][to] is true when a job may move from one state to the
// other. Terminal states have no way out.
//
//	CREATED → PENDING | ABORTED | FAILED | EXPIRED
//	PENDING → RUNNING | ABORTED | FAILED | EXPIRED (start window passed)
//	RUNNING → COMPLETED | PARTIAL | FAILED | ABORTED | EXPIRED (completion
//	          window passed) | PENDING (requeued after a worker crash)
var Transitions = map[JobState]map[JobState]bool{
	StateCreated: {StatePending: true, StateAborted: true, StateFailed: true, StateExpired: true},
	StatePending: {StateRunning: true, StateAborted: true, StateFailed: true, StateExpired: true},
	StateRunning: {
		StateCompleted: true, StatePartial: true, StateFailed: true,
		StateAborted: true, StateExpired: true, StatePending: true,
	},
	StateCompleted: {},
	StatePartial:   {},
	StateFailed:    {},
	StateAborted:   {},
	StateExpired:   {},
}

// AllStates lists every job state.
var AllStates = []JobState{
	StateCreated, StatePending, StateRunning, StateCompleted,
	StatePartial, StateFailed, StateAborted, StateExpired,
}

// CheckTransition returns ErrInvalidTransition unless from→to is allowed.
func CheckTransition(from, to JobState) error {
	next, ok := Transitions[from]
	if !ok {
		return fmt.Errorf("%w: unknown state %q", ErrInvalidTransition, from)
	}
	if !next[to] {
		return fmt.Errorf("%w: %s → %s", ErrInvalidTransition, from, to)
	}
	return nil
}

// Terminal reports whether a job in state s is finished.
func Terminal(s JobState) bool {
	next, ok := Transitions[s]
	return ok && len(next) == 0
}

// ValidateJob checks a job given to CreateJob.
func ValidateJob(j Job) error {
	switch j.Kind {
	case KindBackup, KindRestore, KindCopy, KindRestoreTest:
	default:
		return invalid("job kind %q", j.Kind)
	}
	if j.State != StateCreated && j.State != StatePending {
		return invalid("a new job starts CREATED or PENDING, not %q", j.State)
	}
	return nil
}
