package taskqueue

import (
	"context"
	"fmt"
	"slices"
)

// Reap implements [TaskQueue]. A group member dead-lettered for too many lost deliveries completes its group as
// failed (see reap).
func (q *RedisTaskQueue) Reap(ctx context.Context) (ReapResult, error) {
	return q.reap(ctx)
}

// reap runs reap.lua; when it holds back group members due for the dead letters (their group's keys were not
// passed), it calls again with them as claims and their groups' keys, so that each is dead-lettered and
// completes its group in one script. A claim whose lease was renewed in between is left alone by the script.
func (q *RedisTaskQueue) reap(ctx context.Context) (ReapResult, error) {
	var total ReapResult
	keys := q.keys.all
	var claims []any
	for range 3 {
		args := append([]any{q.cfg.ReapBatch, q.cfg.MaxDeliveries, q.cfg.PromoteBatch, ErrMaxDeliveries.Error(), q.cfg.SettledWindow}, claims...)
		res, err := reapScript.Run(ctx, q.rdb, keys, args...).Slice()
		if err != nil {
			return total, fmt.Errorf("taskqueue: reap: %w", classify(err))
		}
		if len(res) < 3 || (len(res)-3)%4 != 0 {
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

// claims turns the held (id, envelope, base, position) quads of reap.lua into its claims (base, position, id,
// KEYS index of the group's hash) and the KEYS that go with them.
func (q *RedisTaskQueue) claims(held []any) ([]string, []any) {
	keys := slices.Clone(q.keys.all)
	claims := make([]any, 0, len(held))
	runs := map[string]int{}
	for i := 0; i+3 < len(held); i += 4 {
		id, _ := held[i].(string)
		raw, _ := held[i+1].(string)
		base, pos := held[i+2], held[i+3]
		env, err := decodeEnvelope([]byte(raw), q.cfg.Limits)
		if err != nil {
			env = nil
		}
		g := 0
		if gid := groupOfStored(env, raw, q.cfg.Limits); isGroupRun(gid) {
			if g = runs[gid]; g == 0 {
				g = len(keys) + 1 // the run's hash: KEYS[g] (runKeys)
				keys = append(keys, q.runKeys(gid)...)
				runs[gid] = g
			}
		}
		claims = append(claims, base, pos, id, g)
	}
	return keys, claims
}
