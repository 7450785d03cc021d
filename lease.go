package taskqueue

import (
	"context"
	"fmt"
	"time"
)

// ExtendLeases implements [TaskQueue].
func (q *RedisTaskQueue) ExtendLeases(ctx context.Context, ds []*Delivery) ([]*Delivery, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	sent := time.Now()
	args := make([]any, 1, 1+2*len(ds))
	args[0] = q.cfg.Lease.Milliseconds()
	for _, d := range ds {
		args = append(args, d.Spec.TaskID, d.Token)
	}
	res, err := extendScript.Run(ctx, q.rdb, q.keys.extend, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: extend leases: %w", classify(err))
	}
	if len(res) != len(ds)+1 {
		return nil, fmt.Errorf("taskqueue: extend leases: unexpected reply of %d items", len(res))
	}
	deadline := time.UnixMilli(res[0]).Add(q.cfg.Lease)
	var lost []*Delivery
	for i, d := range ds {
		if res[i+1] == 1 {
			d.LeaseDeadline = deadline
			d.localEnds = sent.Add(q.cfg.Lease)
		} else {
			lost = append(lost, d)
		}
	}
	return lost, nil
}
