package main

import (
	"context"
	"fmt"
	"slices"
)

// Flow keys in the drain step (issue 17): the drain of a backlog without keys, over 100 flow keys without limits,
// and over 100 flow keys each limited to 10 tasks at once, each as a share of the plain drain of the same round.

// flowScenario is one keyed drain: the backlog spread round-robin over keys flow keys, with a concurrency limit
// of limit per key (0: none). metric names its figures (<metric>_tps, <metric>_pct, redis_cpu_us_per_task_<suffix>).
type flowScenario struct {
	metric string
	keys   int
	limit  int
}

// flowScenarios are the keyed drains of the drain step, after the plain one in even rounds, before it in odd ones.
var flowScenarios = []flowScenario{
	{"drain_keys100", 100, 0},
	{"drain_keys100_limit10", 100, 10},
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

// flowLib is a library with flow keys and per-key concurrency limits (ours).
type flowLib interface {
	// enqueueBatchFlow adds n tasks, seq0 to seq0+n-1, in one call, task seq under flow key "k<seq % keys>".
	enqueueBatchFlow(ctx context.Context, seq0, n, keys int) error
	// setFlowLimit sets the concurrency limit of every flow key.
	setFlowLimit(ctx context.Context, n int) error
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
	d, err := b.drainOnce(ctx, name, drainSpec{n: b.sz.drainN, workers: 1, conc: drainConc, batched: true, keys: sc.keys, limit: sc.limit})
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

// fillFlow enqueues n tasks over keys flow keys in batches of batch, after setting the limit of every key (limit
// > 0).
func fillFlow(ctx context.Context, l lib, n, batch, keys, limit int) error {
	fl, ok := l.(flowLib)
	if !ok {
		return errUnsupported
	}
	if limit > 0 {
		if err := fl.setFlowLimit(ctx, limit); err != nil {
			return err
		}
	}
	for i := 0; i < n; i += batch {
		if err := fl.enqueueBatchFlow(ctx, i, min(batch, n-i), keys); err != nil {
			return err
		}
	}
	return nil
}
