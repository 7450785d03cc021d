package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sizes are the counts and durations of one run; quick mode shrinks them for a smoke test.
type sizes struct {
	enqueueWindow time.Duration // how long each enqueue measurement runs
	warmup        time.Duration // processing runs before the measured window
	processWindow time.Duration // the measured window of a processing run
	drainN        int           // backlog drained (also the N of memory and Redis CPU per task)
	pickupN       int           // tasks of the pickup latency run, one every 2ms
	delayN        int           // delayed tasks, one every 5ms
	enqueueBatch  int           // tasks per EnqueueBatch call
}

var (
	fullSizes  = sizes{enqueueWindow: 2 * time.Second, warmup: 1500 * time.Millisecond, processWindow: 3 * time.Second, drainN: 100000, pickupN: 1000, delayN: 200, enqueueBatch: 1000}
	quickSizes = sizes{enqueueWindow: 200 * time.Millisecond, warmup: 1200 * time.Millisecond, processWindow: 300 * time.Millisecond, drainN: 2000, pickupN: 100, delayN: 20, enqueueBatch: 1000}
)

const (
	producers      = 8               // the "eight producers" of the enqueue run, and asynq's producer in processing runs
	delayDue       = 2 * time.Second // delayed tasks are due this long after enqueue
	pickupEvery    = 2 * time.Millisecond
	delayEvery     = 5 * time.Millisecond
	latencyConc    = 10   // worker concurrency of the latency runs
	drainConc      = 100  // worker concurrency of the drain run
	processBatch   = 500  // the producer's batch size while a worker processes (libraries with batch enqueue)
	processBacklog = 5000 // the producer keeps the backlog of a processing run at about this many tasks
	settleTimeout  = 30 * time.Second
)

// enqueueRate measures enqueue throughput for window: n goroutines each calling enqueue (batch 0) or
// enqueueBatch of batch tasks. It returns the tasks per second and the tasks enqueued.
func enqueueRate(ctx context.Context, l lib, n, batch int, window time.Duration) (float64, int64, error) {
	var total atomic.Int64
	var seq atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(window)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				var err error
				if batch > 0 {
					s := int(seq.Add(int64(batch))) - batch
					err = l.enqueueBatch(ctx, s, batch)
				} else {
					err = l.enqueue(ctx, int(seq.Add(1)), 0)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				total.Add(int64(max(batch, 1)))
			}
		})
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds(), total.Load(), firstErr
}

// produce feeds l until ctx ends, keeping the backlog (tasks enqueued, counted in enq, minus tasks started,
// counted in started) at most about bound: the library's batch enqueue of processBatch tasks from one goroutine,
// or, for a library without one, producersOf goroutines enqueueing one task per call. Every library gets the same
// producer: fast enough to keep its worker busy, never flooding Redis with work the worker cannot take.
func produce(ctx context.Context, l lib, enq, started *atomic.Int64, bound int64) (wait func()) {
	var wg sync.WaitGroup
	full := func() bool {
		if enq.Load()-started.Load() < bound {
			return false
		}
		sleepCtx(ctx, time.Millisecond) // at 100k tasks/s the backlog loses at most 100 tasks meanwhile
		return true
	}
	if l.batches() {
		wg.Go(func() {
			for ctx.Err() == nil {
				if full() {
					continue
				}
				s := int(enq.Load())
				if l.enqueueBatch(ctx, s, processBatch) == nil {
					enq.Add(processBatch)
				}
			}
		})
		return wg.Wait
	}
	var seq atomic.Int64
	for range producersOf(l) {
		wg.Go(func() {
			for ctx.Err() == nil {
				if full() {
					continue
				}
				if l.enqueue(ctx, int(seq.Add(1)), 0) == nil {
					enq.Add(1)
				}
			}
		})
	}
	return wg.Wait
}

// procStats are the figures of one processing run.
type procStats struct {
	tps        float64 // tasks started per second in the window
	produceTPS float64 // tasks enqueued per second in the window
	backlog    float64 // the mean backlog (enqueued minus started) over the window
}

// processRate runs the paced producer and a worker of concurrency conc, and measures over a window (after a
// warm-up) the tasks started per second, the producer's rate and the mean backlog.
func processRate(ctx context.Context, l lib, conc int, sz sizes) (procStats, error) {
	var done, enq atomic.Int64
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := produce(pctx, l, &enq, &done, processBacklog)
	// A backlog first: a worker that finds the queue empty at its start may wait a poll interval (asynq's is 1s at
	// its defaults), which the warm-up also covers.
	sleepCtx(ctx, 100*time.Millisecond)
	stop, err := l.startWorker(ctx, conc, func(int) { done.Add(1) })
	if err != nil {
		cancel()
		wait()
		return procStats{}, err
	}
	sleepCtx(ctx, sz.warmup)
	c0, e0, t0 := done.Load(), enq.Load(), time.Now()
	var backlog, samples float64
	tick := time.NewTicker(10 * time.Millisecond)
	for end := t0.Add(sz.processWindow); time.Now().Before(end) && ctx.Err() == nil; {
		<-tick.C
		backlog += float64(enq.Load() - done.Load())
		samples++
	}
	tick.Stop()
	c1, e1, t1 := done.Load(), enq.Load(), time.Now()
	cancel()
	wait()
	stop()
	if c1 == c0 {
		return procStats{}, errors.New("no task completed in the window")
	}
	secs := t1.Sub(t0).Seconds()
	return procStats{tps: float64(c1-c0) / secs, produceTPS: float64(e1-e0) / secs, backlog: backlog / max(samples, 1)}, ctx.Err()
}

// latencies sends n tasks, one every `every`, each due after delay, to a running worker of concurrency
// latencyConc, and returns for each task the time from the start of its enqueue (plus delay) to the start of its
// handler, sorted.
func latencies(ctx context.Context, l lib, n int, every, delay time.Duration) ([]time.Duration, error) {
	sent := make([]atomic.Int64, n)
	got := make([]atomic.Int64, n)
	var count atomic.Int64
	all := make(chan struct{})
	stop, err := l.startWorker(ctx, latencyConc, func(seq int) {
		if seq >= 0 && seq < n && got[seq].CompareAndSwap(0, time.Now().UnixNano()) && count.Add(1) == int64(n) {
			close(all)
		}
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	sleepCtx(ctx, 200*time.Millisecond) // let the worker settle into its wait
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		sent[i].Store(time.Now().UnixNano())
		if err := l.enqueue(ctx, i, delay); err != nil {
			return nil, err
		}
	}
	select {
	case <-all:
	case <-time.After(delay + settleTimeout):
		return nil, fmt.Errorf("only %d of %d tasks started", count.Load(), n)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(got[i].Load()-sent[i].Load()) - delay
	}
	slices.Sort(out)
	return out, nil
}

// percentile returns the p-th percentile (0-100) of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(float64(len(sorted))*p/100), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

// fill enqueues n tasks as fast as the library allows: batches, or producersOf goroutines of one task per call.
func fill(ctx context.Context, l lib, n, batch int) error {
	if !l.batches() {
		return fillSingle(ctx, l, n, producersOf(l))
	}
	for i := 0; i < n; i += batch {
		if err := l.enqueueBatch(ctx, i, min(batch, n-i)); err != nil {
			return err
		}
	}
	return nil
}

// fillSingle enqueues n tasks from p goroutines, one task per call.
func fillSingle(ctx context.Context, l lib, n, p int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, p)
	for p := range errs {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := l.enqueue(ctx, i, 0); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
