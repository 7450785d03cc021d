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
	order, counts := byBatch(ds)
	args := make([]any, 1, 1+2*len(counts)+len(ds))
	args[0] = q.cfg.Lease.Milliseconds()
	at := 0
	for _, c := range counts {
		args = append(args, ds[order[at]].base, c)
		for _, i := range order[at : at+c] {
			args = append(args, ds[i].pos)
		}
		at += c
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
	for k, i := range order {
		d := ds[i]
		if res[k+1] == 1 {
			d.LeaseDeadline = deadline
			d.localEnds = sent.Add(q.cfg.Lease)
		} else {
			lost = append(lost, d)
		}
	}
	return lost, nil
}
