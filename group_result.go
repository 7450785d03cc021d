package taskqueue

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MemberState is where one member of a group run stands.
type MemberState string

// The states of a group member.
const (
	MemberPending   MemberState = "pending"   // not completed yet (queued, running, or retrying)
	MemberSucceeded MemberState = "succeeded" // acknowledged
	MemberFailed    MemberState = "failed"    // dead-lettered: retries exhausted, ErrSkipRetry, lost too often, or parked
	MemberCancelled MemberState = "cancelled" // cancelled or deleted before it completed (Admin.Cancel, Admin.CancelGroup)
)

// MemberOutcome is the outcome of one member of a group run.
type MemberOutcome struct {
	// ID is the member id; TaskID its task id.
	ID, TaskID string
	// State tells whether it completed, and how.
	State MemberState
	// Error is the reason a failed member was dead-lettered ("cancelled" or "deleted" for a cancelled one).
	Error string
	// Result is the JSON result a succeeded member's handler set ([SetResult]), nil if none.
	Result json.RawMessage
}

// Decode unmarshals the member's result into v; [ErrNoResult] if it has none.
func (m MemberOutcome) Decode(v any) error {
	if len(m.Result) == 0 {
		return fmt.Errorf("%w: member %s", ErrNoResult, quote(m.ID))
	}
	return json.Unmarshal(m.Result, v)
}

// GroupResult is what [GroupRun.Wait] returns: every member's outcome, in dispatch order when the run came from
// [RedisTaskQueue.DispatchGroup] (else ordered by member id, numbers by value).
type GroupResult struct {
	GroupID string
	Name    string
	RunID   string
	// Total, Succeeded, Failed, Cancelled and Pending count the members.
	Total, Succeeded, Failed, Pending int
	Cancelled                         int
	Members                           []MemberOutcome
}

// Member returns the outcome of the member with the given id.
func (g *GroupResult) Member(id string) (MemberOutcome, bool) {
	for _, m := range g.Members {
		if m.ID == id {
			return m, true
		}
	}
	return MemberOutcome{}, false
}

// FailedIDs returns the ids of the failed members.
func (g *GroupResult) FailedIDs() []string {
	var ids []string
	for _, m := range g.Members {
		if m.State == MemberFailed {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// newGroupResult builds a GroupResult from a run's hash: "m:<task id>" -> "" (pending), "1"+result or
// "0"+reason (group.lua).
func newGroupResult(r *GroupRun, h map[string]string) *GroupResult {
	gid := r.GroupID()
	res := &GroupResult{GroupID: gid, Name: r.Name, RunID: r.RunID}
	order := make(map[string]int, len(r.TaskIDs))
	for i, id := range r.TaskIDs {
		order[id] = i
	}
	for f, v := range h {
		taskID, ok := strings.CutPrefix(f, "m:")
		if !ok {
			continue
		}
		m := MemberOutcome{ID: strings.TrimPrefix(taskID, gid+":"), TaskID: taskID, State: MemberPending}
		switch {
		case v == "":
			res.Pending++
		case v[0] == '1':
			m.State = MemberSucceeded
			if len(v) > 1 {
				m.Result = json.RawMessage(v[1:])
			}
			res.Succeeded++
		case v[0] == '3': // lua/cancel.lua (the code a workflow's cancelled node has too, workflow.lua)
			m.State, m.Error = MemberCancelled, v[1:]
			res.Cancelled++
		default:
			m.State, m.Error = MemberFailed, v[1:]
			res.Failed++
		}
		res.Members = append(res.Members, m)
	}
	res.Total = len(res.Members)
	slices.SortFunc(res.Members, func(a, b MemberOutcome) int {
		oa, aok := order[a.TaskID]
		ob, bok := order[b.TaskID]
		if aok && bok {
			return cmp.Compare(oa, ob)
		}
		na, aerr := strconv.Atoi(a.ID)
		nb, berr := strconv.Atoi(b.ID)
		if aerr == nil && berr == nil {
			return cmp.Compare(na, nb)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return res
}

// GroupPolicy decides whether a completed group run succeeded: Evaluate returns nil to accept the outcome, or
// an error saying why not ([GroupRun.Wait] wraps it in [ErrGroupFailed]). Implement it for rules of your own.
type GroupPolicy interface {
	Evaluate(r *GroupResult) error
}

// GroupPolicyFunc adapts a function to [GroupPolicy].
type GroupPolicyFunc func(r *GroupResult) error

// Evaluate implements [GroupPolicy].
func (f GroupPolicyFunc) Evaluate(r *GroupResult) error { return f(r) }

// StrictPolicy (the default) fails the group if any member failed or was cancelled (then the error also wraps
// [ErrCancelled]).
func StrictPolicy() GroupPolicy {
	return GroupPolicyFunc(func(r *GroupResult) error {
		if r.Cancelled > 0 {
			return fmt.Errorf("%w: %s: strict: %d of %d members cancelled (%w), %d failed", ErrGroupFailed, r.GroupID, r.Cancelled, r.Total, ErrCancelled, r.Failed)
		}
		if r.Failed > 0 {
			return fmt.Errorf("%w: %s: strict: %d of %d members failed: %s", ErrGroupFailed, r.GroupID, r.Failed, r.Total, idList(r.FailedIDs()))
		}
		return nil
	})
}

// BestEffortPolicy accepts any outcome: the caller reads the members' states.
func BestEffortPolicy() GroupPolicy {
	return GroupPolicyFunc(func(*GroupResult) error { return nil })
}

// AtLeastPolicy accepts the group when at least n members succeeded.
func AtLeastPolicy(n int) GroupPolicy {
	return GroupPolicyFunc(func(r *GroupResult) error {
		if r.Succeeded < n {
			return fmt.Errorf("%w: %s: at least %d successes wanted, %d of %d members succeeded", ErrGroupFailed, r.GroupID, n, r.Succeeded, r.Total)
		}
		return nil
	})
}

// CriticalPolicy accepts the group when every listed member succeeded, whatever the others did. A listed id
// that is no member of the run fails it (a typo must not pass silently).
func CriticalPolicy(memberIDs ...string) GroupPolicy {
	ids := slices.Clone(memberIDs)
	return GroupPolicyFunc(func(r *GroupResult) error {
		var errs []error
		for _, id := range ids {
			m, ok := r.Member(id)
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("critical member %s is not in the group", quote(id)))
			case m.State != MemberSucceeded:
				errs = append(errs, fmt.Errorf("critical member %s %s", quote(id), m.State))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %s: %w", ErrGroupFailed, r.GroupID, errors.Join(errs...))
		}
		return nil
	})
}

// idList formats member ids for an error message, bounded.
func idList(ids []string) string {
	const most = 10
	if len(ids) > most {
		return strings.Join(ids[:most], ", ") + fmt.Sprintf(" and %d more", len(ids)-most)
	}
	return strings.Join(ids, ", ")
}
