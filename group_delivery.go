package taskqueue

import (
	"encoding/json"
	"regexp"
)

// The delivery side of parallel groups: which KEYS and ARGV the scripts that finish a task get when the task is
// a group member or has a result. Tasks that are neither take the same path as before groups existed.

// groupRunPattern matches the group_id of a dispatched group member: "<name>@<run id>", the run id being a
// generated id (idLen letters and digits) or, for runs dispatched before 2026-12, 32 hex digits. A group_id
// without "@<run id>" (the seed's plain label) is no barrier member and costs nothing.
var groupRunPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@(?:[A-Za-z0-9]{22}|[0-9a-f]{32})$`)

func isGroupRun(groupID string) bool {
	n := len(groupID)
	return (n > idLen+1 && groupID[n-idLen-1] == '@' || n > 33 && groupID[n-33] == '@') && groupRunPattern.MatchString(groupID)
}

// groupKeys is the queue's key set followed by one group run's keys (runKeys: KEYS[numKeys+1] is its hash).
func (q *RedisTaskQueue) groupKeys(groupID string) []string {
	keys := make([]string, numKeys, numKeys+5)
	copy(keys, q.keys.all)
	return append(keys, q.runKeys(groupID)...)
}

// runKeys are the keys a script gets for one group run, in this order: its hash and its done list, then, for a
// workflow's run (isWorkflowRun), the queue's tasks, pending and wake, which it needs to release the nodes that
// become ready (workflow_done, lua/workflow.lua; a workflow is a group run, workflow.go).
func (q *RedisTaskQueue) runKeys(groupID string) []string {
	if isWorkflowRun(groupID) {
		return []string{q.keys.group(groupID), q.keys.groupDone(groupID), q.keys.all[keyTasks], q.keys.all[keyPending], q.keys.all[keyWake]}
	}
	return []string{q.keys.group(groupID), q.keys.groupDone(groupID)}
}

// groupOfStored returns the group run of a task that is being parked: from its decoded envelope when there is
// one, else read leniently from the raw bytes (a newer version, or a field of the wrong type elsewhere), so that
// a member whose envelope cannot be read still completes its group. "" when none can be found.
func groupOfStored(env *envelope, raw string, lim Limits) string {
	if env != nil {
		return env.GroupID
	}
	if len(raw) > 4*lim.MaxEnvelopeBytes {
		return ""
	}
	var top struct {
		GroupID json.RawMessage `json:"group_id"`
	}
	if json.Unmarshal([]byte(raw), &top) != nil {
		return ""
	}
	var gid string
	if json.Unmarshal(top.GroupID, &gid) != nil || !isGroupRun(gid) {
		return ""
	}
	return gid
}
