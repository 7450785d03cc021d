package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// bench holds what every measurement needs.
type bench struct {
	srv   *redisServer
	sz    sizes
	res   *results
	log   io.Writer // progress lines
	round int       // the current round, from 0: the drain step's order reverses in odd ones
}

// withLib flushes the server and runs f with a fresh connection of the named library.
func (b *bench) withLib(ctx context.Context, name, addr string, f func(l lib) error) error {
	if err := b.srv.flush(ctx); err != nil {
		return err
	}
	l, err := newLib(name, addr, 0)
	if err != nil {
		return err
	}
	defer l.close()
	if err := f(l); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// enqueueRuns measures sequential, eight-producer and (where the library has it) batch enqueue, each with the
// Redis CPU per task it cost.
func (b *bench) enqueueRuns(ctx context.Context, name string) error {
	type run struct {
		metric string
		n      int
		batch  int
	}
	for _, r := range []run{{"enqueue_seq", 1, 0}, {"enqueue_par8", producers, 0}, {"enqueue_batch", 1, b.sz.enqueueBatch}} {
		err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
			if r.batch > 0 && !l.batches() {
				return nil
			}
			cpu0, err := b.srv.cpuSeconds(ctx)
			if err != nil {
				return err
			}
			tps, n, err := enqueueRate(ctx, l, r.n, r.batch, b.sz.enqueueWindow)
			b.res.add(name, r.metric+"_tps", tps)
			if err != nil {
				return err
			}
			if n > 0 && onRedis(name) {
				cpu1, err := b.srv.cpuSeconds(ctx)
				if err != nil {
					return err
				}
				b.res.add(name, r.metric+"_redis_cpu_us", (cpu1-cpu0)*1e6/float64(n))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// processRuns measures processing while the paced producer runs, at concurrency 10 and 100.
func (b *bench) processRuns(ctx context.Context, name string) error {
	for _, conc := range []int{10, 100} {
		err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
			st, err := processRate(ctx, l, conc, b.sz)
			if err != nil {
				return err
			}
			m := fmt.Sprintf("process_c%d", conc)
			b.res.add(name, m+"_tps", st.tps)
			b.res.add(name, m+"_produce_tps", st.produceTPS)
			b.res.add(name, m+"_backlog", st.backlog)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// proxyRun measures processing at concurrency 100 with 1 ms of added round-trip time on every connection.
func (b *bench) proxyRun(ctx context.Context, name string) error {
	p, err := startProxy(b.srv.addr, time.Millisecond)
	if err != nil {
		return err
	}
	defer p.close()
	return b.withLib(ctx, name, p.addr(), func(l lib) error {
		st, err := processRate(ctx, l, 100, b.sz)
		if err != nil {
			return err
		}
		b.res.add(name, "process_c100_1ms_tps", st.tps)
		return nil
	})
}

// latencyRuns measures pickup latency at 500 tasks/s and how far from their due time tasks due 2s after enqueue
// start: signed (late is positive), absolute, and the share started early.
func (b *bench) latencyRuns(ctx context.Context, name string) error {
	err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
		lat, err := latencies(ctx, l, b.sz.pickupN, pickupEvery, 0)
		if err != nil {
			return err
		}
		b.res.add(name, "pickup_p50_ms", percentile(lat, 50))
		b.res.add(name, "pickup_p99_ms", percentile(lat, 99))
		return nil
	})
	if err != nil {
		return err
	}
	return b.withLib(ctx, name, b.srv.addr, func(l lib) error {
		lat, err := latencies(ctx, l, b.sz.delayN, delayEvery, delayDue)
		if err != nil {
			return err
		}
		b.addDelayed(name, lat)
		return nil
	})
}

// drainRun drains a backlog with a worker subprocess at concurrency 100: first a backlog enqueued the library's
// fastest way (batches where it has them, else producersOf goroutines of one task per call), which gives the
// drain rate, the worker's peak RSS and Go CPU, Redis memory per pending task and the Redis figures of a lifecycle
// with batch enqueue; then, for a library with batches, half that backlog enqueued by eight producers one task
// per call, drained the same way, so that the lifecycle rows compare single with single. Then 4 workers of 25 in
// one process drain half the backlog.
//
// A library with flow keys (ours) also drains the backlog over 100 flow keys, without limits and with each key
// limited to 10 at once, and without keys under a queue rate it never reaches (flow.go), next to the plain drain,
// in an order that reverses every round; each such rate is also recorded as a share of the plain drain of the
// same round.
func (b *bench) drainRun(ctx context.Context, name string) error {
	single, keyed := "", false
	if err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
		if !l.batches() {
			single = "_single" // its only lifecycle is the single-enqueue one
		}
		fl, ok := l.(flowLib)
		keyed = ok && fl.unkeyed()
		return nil
	}); err != nil {
		return err
	}
	rates := map[string]float64{}
	for _, sc := range drainOrder(b.round, keyed) {
		if sc.metric == "" {
			tps, err := b.plainDrain(ctx, name, single)
			if err != nil {
				return err
			}
			rates[""] = tps
			continue
		}
		tps, err := b.keyedDrain(ctx, name, sc)
		if err != nil {
			return err
		}
		rates[sc.metric] = tps
	}
	for m, tps := range rates {
		if m != "" && rates[""] > 0 {
			b.res.add(name, m+"_pct", 100*tps/rates[""])
		}
	}
	half := b.sz.drainN / 2
	if single == "" && onRedis(name) {
		d, err := b.drainOnce(ctx, name, drainSpec{n: half, workers: 1, conc: drainConc})
		if err != nil {
			return err
		}
		b.res.add(name, "redis_cpu_us_per_task_single", (d.fillCPU+d.drainCPU)*1e6/float64(half))
		b.res.add(name, "script_calls_per_task_single", d.calls/float64(half))
	}
	d, err := b.drainOnce(ctx, name, drainSpec{n: half, workers: drainConc / 25, conc: 25, batched: single == ""})
	if err != nil {
		return err
	}
	b.res.add(name, "drain_4x25_tps", float64(half)/d.secs)
	return nil
}

// plainDrain is the drain of the backlog without keys, enqueued the library's fastest way; it records the drain
// rate, the worker's figures and the lifecycle's Redis figures, and returns the rate.
func (b *bench) plainDrain(ctx context.Context, name, single string) (float64, error) {
	d, err := b.drainOnce(ctx, name, drainSpec{n: b.sz.drainN, workers: 1, conc: drainConc, batched: single == ""})
	if err != nil {
		return 0, err
	}
	n := float64(b.sz.drainN)
	b.res.add(name, "drain_tps", n/d.secs)
	b.res.add(name, "rss_mib", d.rssMiB)
	b.res.add(name, "worker_cpu_us_per_task", d.cpu*1e6/n)
	if onRedis(name) {
		b.res.add(name, "bytes_per_task", d.bytes/n)
		b.res.add(name, "worker_redis_cpu_us_per_task", d.drainCPU*1e6/n)
		b.res.add(name, "redis_cpu_us_per_task"+single, (d.fillCPU+d.drainCPU)*1e6/n)
		b.res.add(name, "script_calls_per_task"+single, d.calls/n)
	}
	return n / d.secs, nil
}

// drainSpec is one drain: n tasks enqueued first (in batches, or by eight producers of one task per call), then
// run by a subprocess of workers workers of concurrency conc each. flow: in batches, under its keys and limits
// (the zero flowScenario: none).
type drainSpec struct {
	n, workers, conc int
	batched          bool
	flow             flowScenario
}

// drained is what one drain measured: the child's report, and on the bench's Redis the memory the backlog took,
// the CPU of the fill and of the drain, and the script calls of both.
type drained struct {
	doneLine
	bytes, fillCPU, drainCPU, calls float64
}

func (b *bench) drainOnce(ctx context.Context, name string, ds drainSpec) (drained, error) {
	var d drained
	err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
		mem0, cpu0, calls0, err := b.redisFigures(ctx)
		if err != nil {
			return err
		}
		switch {
		case ds.flow.metric != "":
			err = fillFlow(ctx, l, ds.n, b.sz.enqueueBatch, ds.flow)
		case ds.batched:
			err = fill(ctx, l, ds.n, b.sz.enqueueBatch)
		default:
			err = fillSingle(ctx, l, ds.n, producers)
		}
		if err != nil {
			return err
		}
		mem1, cpu1, _, err := b.redisFigures(ctx)
		if err != nil {
			return err
		}
		c, err := startChild(ctx, childConfig{Lib: name, Addr: b.srv.addr, Mode: "drain", Conc: ds.conc, Workers: ds.workers, Expect: ds.n})
		if err != nil {
			return err
		}
		line, err := c.expect(ctx, lineDone, 5*time.Minute)
		if err != nil {
			c.kill()
			return err
		}
		if err := c.wait(30 * time.Second); err != nil {
			return err
		}
		if d.doneLine, err = parseDone(line); err != nil {
			return err
		}
		_, cpu2, calls2, err := b.redisFigures(ctx)
		if err != nil {
			return err
		}
		d.bytes, d.fillCPU, d.drainCPU, d.calls = mem1-mem0, cpu1-cpu0, cpu2-cpu1, calls2-calls0
		return nil
	})
	return d, err
}

// redisFigures reads the bench's Redis: used memory, CPU seconds and script calls (EVALSHA + EVAL) so far.
func (b *bench) redisFigures(ctx context.Context) (mem, cpu, calls float64, err error) {
	if mem, err = b.srv.usedMemory(ctx); err != nil {
		return 0, 0, 0, err
	}
	if cpu, err = b.srv.cpuSeconds(ctx); err != nil {
		return 0, 0, 0, err
	}
	cs, err := b.srv.info(ctx, "commandstats")
	if err != nil {
		return 0, 0, 0, err
	}
	return mem, cpu, cs["cmdstat_evalsha.calls"] + cs["cmdstat_eval.calls"], nil
}

// recoveryTrial measures, on a server of its own, the time from the SIGKILL of a worker that is running a task
// to the start of that task in a second worker that was already running.
func recoveryTrial(ctx context.Context, name string, lease, timeout time.Duration) (float64, error) {
	srv, err := startRedis(ctx)
	if err != nil {
		return 0, err
	}
	defer srv.stop()
	l, err := newLib(name, srv.addr, lease)
	if err != nil {
		return 0, err
	}
	defer l.close()
	cfg := childConfig{Lib: name, Addr: srv.addr, Mode: "hang", Conc: 10, LeaseMS: lease.Milliseconds()}
	hang, err := startChild(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer hang.kill()
	if err := l.enqueue(ctx, 0, 0); err != nil {
		return 0, err
	}
	if _, err := hang.expect(ctx, lineStarted, 30*time.Second); err != nil {
		return 0, err
	}
	cfg.Mode = "run"
	survivor, err := startChild(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer survivor.kill()
	killed := time.Now()
	hang.kill()
	if _, err := survivor.expect(ctx, lineStarted, timeout); err != nil {
		return 0, err
	}
	return time.Since(killed).Seconds(), nil
}

// recoveryRuns runs the recovery trials of libs (those whose libDef has a recovery timeout, and ours with a short
// lease) in the background, each on its own server: they mostly wait (asynq's
// take minutes), so they overlap the other measurements. The returned function waits for them.
func (b *bench) recoveryRuns(ctx context.Context, libs []string, trials int, quick bool) func() error {
	type cfg struct {
		lib, metric string
		lease       time.Duration
		timeout     time.Duration
	}
	var cfgs []cfg
	if slices.Contains(libs, libOurs) {
		cfgs = append(cfgs, cfg{libOurs, "recovery_short_s", 2 * time.Second, 30 * time.Second})
	}
	for _, l := range libs {
		if d := libDefs[l]; d.recovery > 0 && !quick {
			cfgs = append(cfgs, cfg{l, "recovery_s", 0, d.recovery})
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, c := range cfgs {
		for range trials {
			wg.Go(func() {
				s, err := recoveryTrial(ctx, c.lib, c.lease, c.timeout)
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("recovery %s %s: %w", c.lib, c.metric, err))
					mu.Unlock()
					return
				}
				b.res.add(c.lib, c.metric, s)
				fmt.Fprintf(b.log, "  recovery %s %s: %.2fs\n", c.lib, c.metric, s)
			})
		}
	}
	return func() error {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			return errs[0]
		}
		return nil
	}
}

// addDelayed records a library's delayed-task figures from lat, each task's start minus its due time: the signed
// percentiles, the percentiles of the absolute deviation, and the share of tasks started early.
func (b *bench) addDelayed(name string, lat []time.Duration) {
	b.res.add(name, "delay_late_p50_ms", percentile(lat, 50))
	b.res.add(name, "delay_late_p99_ms", percentile(lat, 99))
	dev := make([]time.Duration, len(lat))
	early := 0
	for i, d := range lat {
		if d < 0 {
			early++
		}
		dev[i] = d.Abs()
	}
	slices.Sort(dev)
	b.res.add(name, "delay_dev_p50_ms", percentile(dev, 50))
	b.res.add(name, "delay_dev_p99_ms", percentile(dev, 99))
	b.res.add(name, "delay_early_pct", 100*float64(early)/float64(max(len(lat), 1)))
}
