package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// sweepConfigs are the asynq configurations the sweep tries: its defaults, then its documented knobs one at a
// time and together (producers feeding it one task per call, TaskCheckInterval, several Servers).
var sweepConfigs = []asynqConfig{
	asynqDefault,
	{producers: 1},
	{producers: 1, taskCheck: 10 * time.Millisecond},
	{producers: 2, taskCheck: 10 * time.Millisecond},
	{producers: 4, taskCheck: 10 * time.Millisecond},
	{producers: 8, taskCheck: 10 * time.Millisecond},
	{producers: 2, taskCheck: time.Millisecond},
	{producers: 2, taskCheck: 10 * time.Millisecond, serverConc: 50},
	{producers: 2, taskCheck: 10 * time.Millisecond, serverConc: 25},
	{producers: 4, taskCheck: 10 * time.Millisecond, serverConc: 25},
	{producers: 4, taskCheck: 10 * time.Millisecond, serverConc: 10},
}

func (c asynqConfig) String() string {
	s := fmt.Sprintf("%d producer(s), TaskCheckInterval %s", c.producers, orDefault(c.taskCheck, time.Second))
	if c.delayedCheck > 0 {
		s += fmt.Sprintf(", DelayedTaskCheckInterval %s", c.delayedCheck)
	}
	if c.serverConc > 0 {
		s += fmt.Sprintf(", Servers of %d", c.serverConc)
	}
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// sweep measures every configuration of sweepConfigs, rounds times in alternating order: processing at
// concurrency 10 and 100 with the paced producer, and an in-process drain of half the drain backlog at
// concurrency 100. It prints the medians; asynqTuned is set from its results (docs/benchmarks.md).
func (b *bench) sweep(ctx context.Context, rounds int, w io.Writer) error {
	res := newResults()
	for r := range rounds {
		for i := range sweepConfigs {
			if r%2 == 1 {
				i = len(sweepConfigs) - 1 - i
			}
			cfg := sweepConfigs[i]
			key := fmt.Sprint(i)
			for _, conc := range []int{10, 100} {
				err := b.withAsynq(ctx, cfg, func(l lib) error {
					st, err := processRate(ctx, l, conc, b.sz)
					res.add(key, fmt.Sprintf("c%d", conc), st.tps)
					res.add(key, fmt.Sprintf("c%d_backlog", conc), st.backlog)
					return err
				})
				if err != nil {
					return err
				}
			}
			err := b.withAsynq(ctx, cfg, func(l lib) error {
				tps, err := drainInProcess(ctx, l, b.sz.drainN/2)
				res.add(key, "drain", tps)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(b.log, "sweep round %d/%d: %s\n", r+1, rounds, cfg)
		}
	}
	fmt.Fprintf(w, "asynq sweep: %d round(s), medians, paced producer (backlog ≤%d), drain of %d in one process\n\n",
		rounds, processBacklog, b.sz.drainN/2)
	fmt.Fprintln(w, "| configuration | process c10, tasks/s | mean backlog | process c100, tasks/s | mean backlog | drain c100, tasks/s |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	for i, cfg := range sweepConfigs {
		key := fmt.Sprint(i)
		cells := make([]any, 0, 5)
		for _, m := range []string{"c10", "c10_backlog", "c100", "c100_backlog", "drain"} {
			s, ok := res.stat(key, m)
			cells = append(cells, cell(s, ok))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", append([]any{cfg}, cells...)...)
	}
	return nil
}

// withAsynq flushes the server and runs f with asynq in configuration cfg.
func (b *bench) withAsynq(ctx context.Context, cfg asynqConfig, f func(l lib) error) error {
	if err := b.srv.flush(ctx); err != nil {
		return err
	}
	l := newAsynq(b.srv.addr, "asynq-sweep", cfg)
	defer l.close()
	return f(l)
}

// drainInProcess enqueues n tasks the library's fastest way and drains them with a worker in this process at
// concurrency drainConc; it returns the tasks per second from the worker's start to the last task's start.
func drainInProcess(ctx context.Context, l lib, n int) (float64, error) {
	if err := fill(ctx, l, n, 1000); err != nil {
		return 0, err
	}
	var count atomic.Int64
	all := make(chan struct{})
	start := time.Now()
	stop, err := l.startWorker(ctx, drainConc, func(int) {
		if count.Add(1) == int64(n) {
			close(all)
		}
	})
	if err != nil {
		return 0, err
	}
	defer stop()
	select {
	case <-all:
		return float64(n) / time.Since(start).Seconds(), nil
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("drain: %d of %d tasks started in 5 minutes", count.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
