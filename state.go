package taskqueue

// State is where a task is in its lifecycle: one vocabulary for the envelope's "status" field
// ([TaskSpec.Status]), the [Admin] calls and the taskqueue CLI. See docs/lifecycle.md.
//
// The envelope records the state that its last write put the task in (pending or scheduled at enqueue, retry,
// dead); the queue's keys say where the task is now, which is what [Admin.Inspect] and [Admin.List] report.
type State string

// The states of a task. A task that finished leaves Redis (unless its result is kept), so it has no state.
const (
	StatePending   State = "pending"   // ready to run, in pickup order; the seed's "ready" reads as pending
	StateScheduled State = "scheduled" // waiting for the due time of its first run (a delayed enqueue)
	StateRetry     State = "retry"     // waiting for the due time of its next run after a failure
	StateActive    State = "active"    // leased by a worker
	StateDead      State = "dead"      // dead-lettered, waiting for an operator
	StateCancelled State = "cancelled" // cancelled by Admin.Cancel; kept for a retention period (docs/control.md)
	StateDone      State = "done"      // acknowledged: only a ControlError reports it (the task left the queue)
)

// statusReady is the seed's name of [StatePending], still read in an envelope's status and by [ParseState].
const statusReady = "ready"

var allStates = [...]State{StatePending, StateScheduled, StateRetry, StateActive, StateDead}

// ParseState returns the [State] named s, or a [*StateError]. The seed's "ready" is [StatePending].
func ParseState(s string) (State, error) {
	if s == statusReady {
		return StatePending, nil
	}
	for _, st := range allStates {
		if string(st) == s {
			return st, nil
		}
	}
	return "", &StateError{Op: "parse", State: State(truncate(s, 64)), Reason: "want pending, scheduled, retry, active or dead"}
}

// stateOfStatus reads an envelope's status: "ready", the seed's name, is [StatePending]; any other value is kept
// as it is (an unknown status is not an error: the queue's keys, not the envelope, say where a task is).
func stateOfStatus(s string) State {
	if s == statusReady {
		return StatePending
	}
	return State(s)
}

// stateKey is the key that holds the tasks of a state: retrying tasks wait with the scheduled ones.
func stateKey(s State) int {
	switch s {
	case StateScheduled, StateRetry:
		return keyScheduled
	case StateActive:
		return keyActive
	case StateDead:
		return keyDead
	}
	return keyPending
}
