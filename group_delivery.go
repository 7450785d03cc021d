package taskqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
)

// The delivery side of parallel groups: which KEYS and ARGV the scripts that finish a task get when the task is
// a group member or has a result. Tasks that are neither take the same path as before groups existed.

// groupRunPattern matches the group_id of a dispatched group member: "<name>@<run id>", the run id being 32 hex
// digits. A group_id without "@<run id>" (the seed's plain label) is no barrier member and costs nothing.
var groupRunPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[0-9a-f]{32}$`)

func isGroupRun(groupID string) bool {
	return len(groupID) > 33 && groupID[len(groupID)-33] == '@' && groupRunPattern.MatchString(groupID)
}

// groupKeys is the queue's key set followed by one group run's hash and done list (KEYS[14], KEYS[15]).
func (q *RedisTaskQueue) groupKeys(groupID string) []string {
	keys := make([]string, numKeys, numKeys+2)
	copy(keys, q.keys.all)
	return append(keys, q.keys.group(groupID), q.keys.groupDone(groupID))
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

// ackArgs returns the KEYS and ARGV of ack.lua for a batch. A batch without group members or results sends
// pairs (id, token); otherwise every delivery sends five values and each group run's keys (or result key) are
// appended once. The deliveries hash is passed only when a delivery of the batch is not its task's first since it
// last settled: only such a task can have an entry there (reap.lua counts a lease that expired, and the next
// pickup reports it in Delivery.Deliveries), and the hash usually does not exist, which a Cluster refuses in a
// call's KEYS while the queue's slot moves (keySet in keys.go).
func (q *RedisTaskQueue) ackArgs(ds []*Delivery) ([]string, []any) {
	plain, redelivered := true, false
	for _, d := range ds {
		if d.result != nil || isGroupRun(d.Spec.GroupID) {
			plain = false
		}
		if d.Deliveries != 1 {
			redelivered = true
		}
	}
	keys, dk := q.keys.ack, 0
	if redelivered {
		keys, dk = q.keys.ackRedelivered, len(q.keys.ackRedelivered)
	}
	if plain {
		args := make([]any, 4, 4+2*len(ds))
		args[0], args[1], args[2], args[3] = q.cfg.SettledWindow, 2, 0, dk
		for _, d := range ds {
			args = append(args, d.Spec.TaskID, d.Token)
		}
		return keys, args
	}
	keys = slices.Clone(keys)
	args := make([]any, 4, 4+5*len(ds))
	args[0], args[1], args[2], args[3] = q.cfg.SettledWindow, 5, q.cfg.ResultTTL.Milliseconds(), dk
	runs := map[string]int{}
	for _, d := range ds {
		g, r := 0, 0
		if gid := d.Spec.GroupID; isGroupRun(gid) {
			if g = runs[gid]; g == 0 {
				keys = append(keys, q.keys.group(gid), q.keys.groupDone(gid))
				g = len(keys) - 1 // KEYS is 1-based: the hash is KEYS[g], the done list KEYS[g+1]
				runs[gid] = g
			}
		} else if d.result != nil {
			keys = append(keys, q.keys.result(d.Spec.TaskID))
			r = len(keys)
		}
		args = append(args, d.Spec.TaskID, d.Token, g, r, d.result)
	}
	return keys, args
}

// reap runs reap.lua; when it holds back group members due for the dead letters (their group's keys were not
// passed), it calls again with them as claims and their groups' keys, so that each is dead-lettered and
// completes its group in one script. A claim whose lease was renewed in between is left alone by the script.
func (q *RedisTaskQueue) reap(ctx context.Context) (ReapResult, error) {
	var total ReapResult
	keys := q.keys.all
	var claims []any
	for range 3 {
		args := append([]any{q.cfg.ReapBatch, q.cfg.MaxDeliveries, q.cfg.PromoteBatch, ErrMaxDeliveries.Error()}, claims...)
		res, err := reapScript.Run(ctx, q.rdb, keys, args...).Slice()
		if err != nil {
			return total, fmt.Errorf("taskqueue: reap: %w", classify(err))
		}
		if len(res) < 3 || (len(res)-3)%2 != 0 {
			return total, fmt.Errorf("taskqueue: reap: unexpected reply of %d items", len(res))
		}
		for i, n := range []*int{&total.Requeued, &total.Dead, &total.Promoted} {
			v, _ := res[i].(int64)
			*n += int(v)
		}
		held := res[3:]
		if len(held) == 0 {
			break
		}
		keys, claims = q.claims(held)
	}
	return total, nil
}

// claims turns the held (id, envelope) pairs of reap.lua into its claims (id, KEYS index of the group's hash)
// and the KEYS that go with them.
func (q *RedisTaskQueue) claims(held []any) ([]string, []any) {
	keys := slices.Clone(q.keys.all)
	claims := make([]any, 0, len(held))
	runs := map[string]int{}
	for i := 0; i+1 < len(held); i += 2 {
		id, _ := held[i].(string)
		raw, _ := held[i+1].(string)
		env, err := decodeEnvelope([]byte(raw), q.cfg.Limits)
		if err != nil {
			env = nil
		}
		g := 0
		if gid := groupOfStored(env, raw, q.cfg.Limits); isGroupRun(gid) {
			if g = runs[gid]; g == 0 {
				keys = append(keys, q.keys.group(gid), q.keys.groupDone(gid))
				g = len(keys) - 1
				runs[gid] = g
			}
		}
		claims = append(claims, id, g)
	}
	return keys, claims
}
