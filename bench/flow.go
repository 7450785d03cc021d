package main

import (
	"context"
	"fmt"
	"slices"
)

// Flow control in the drain step (issue 17): the drain of a backlog without keys, over 100 flow keys without
// limits, over 100 flow keys each limited to 10 tasks at once, and without keys under a queue-wide rate limit that
// is never reached, each also as a share of the plain drain of the same round.

// flowScenario is one drain with flow control: the backlog spread round-robin over keys flow keys (0: no keys),
// with a concurrency limit of limit per key (0: none), under a queue rate of rate starts per second (0: none).
// metric names its figures (<metric>_tps, <metric>_pct, redis_cpu_us_per_task_<metric without "drain_">).
type flowScenario struct {
	metric string
	keys   int
	limit  int
	rate   int
}

// qrateLimit is the queue rate of the drain_qrate scenario: 1,000,000 starts per second, far above any drain
// here, so that the figure is what a limiter costs while it never holds a task back.
const qrateLimit = 1_000_000

// flowScenarios are the drains with flow control of the drain step (for ours), after the plain one in even
// rounds, before it in odd ones.
var flowScenarios = []flowScenario{
	{metric: "drain_keys100", keys: 100},
	{metric: "drain_keys100_limit10", keys: 100, limit: 10},
	{metric: "drain_qrate", rate: qrateLimit},
}

// flowUnsupported says, for a library that has no keyed scenario, why: the table shows "n/a (<reason>)" in its
// cells of the keyed rows. From each project's documentation (docs/flow-control.md, "Compared with peers").
var flowUnsupported = map[string]string{
	libFloor:      "no keys",
	libAsynq:      "none",
	libAsynqTuned: "none",
	libBullMQ:     "Pro only",
	libRiver:      "Pro only",
}

// qrateUnsupported is flowUnsupported for the queue-rate rows: BullMQ OSS has a queue limiter (its Worker's
// limiter option), asynq and River none.
var qrateUnsupported = map[string]string{
	libFloor:      "no limiter",
	libAsynq:      "none",
	libAsynqTuned: "none",
	libRiver:      "none",
}

// flowLib is a library with flow keys, per-key concurrency limits and a queue rate limit (ours).
type flowLib interface {
	// enqueueBatchFlow adds n tasks, seq0 to seq0+n-1, in one call, task seq under flow key "k<seq % keys>".
	enqueueBatchFlow(ctx context.Context, seq0, n, keys int) error
	// setFlowLimit sets the concurrency limit of every flow key.
	setFlowLimit(ctx context.Context, n int) error
	// setQueueRate sets the queue's rate limit: at most n starts per second.
	setQueueRate(ctx context.Context, n int) error
	// unkeyed reports whether the library's plain tasks carry no key (false for the opt-in keyed variants of
	// ours, whose every task is keyed: they run no drains with flow control).
	unkeyed() bool
}

// drainOrder is the order of the drain step's drains in round r: the plain drain (the zero flowScenario) then the
// keyed ones, reversed in odd rounds (as the libraries alternate), so that neither kind always runs first.
func drainOrder(r int, keyed bool) []flowScenario {
	order := []flowScenario{{}}
	if keyed {
		order = append(order, flowScenarios...)
	}
	if r%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// keyedDrain drains the backlog of sc and records its rate and Redis CPU per task lifecycle; it returns the rate.
func (b *bench) keyedDrain(ctx context.Context, name string, sc flowScenario) (float64, error) {
	d, err := b.drainOnce(ctx, name, drainSpec{n: b.sz.drainN, workers: 1, conc: drainConc, batched: true, flow: sc})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", sc.metric, err)
	}
	n := float64(b.sz.drainN)
	tps := n / d.secs
	b.res.add(name, sc.metric+"_tps", tps)
	b.res.add(name, "redis_cpu_us_per_task_"+flowSuffix(sc), (d.fillCPU+d.drainCPU)*1e6/n)
	return tps, nil
}

// flowSuffix is sc's metric without "drain_": keys100, keys100_limit10.
func flowSuffix(sc flowScenario) string { return sc.metric[len("drain_"):] }

// fillFlow sets the limits of sc, then enqueues n tasks in batches of batch, over sc.keys flow keys (or none).
func fillFlow(ctx context.Context, l lib, n, batch int, sc flowScenario) error {
	fl, ok := l.(flowLib)
	if !ok {
		return errUnsupported
	}
	if sc.limit > 0 {
		if err := fl.setFlowLimit(ctx, sc.limit); err != nil {
			return err
		}
	}
	if sc.rate > 0 {
		if err := fl.setQueueRate(ctx, sc.rate); err != nil {
			return err
		}
	}
	if sc.keys == 0 {
		return fill(ctx, l, n, batch)
	}
	for i := 0; i < n; i += batch {
		if err := fl.enqueueBatchFlow(ctx, i, min(batch, n-i), sc.keys); err != nil {
			return err
		}
	}
	return nil
}
