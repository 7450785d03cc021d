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
	srv *redisServer
	sz  sizes
	res *results
	log io.Writer // progress lines
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

// enqueueRuns measures sequential, eight-producer and (ours) batch enqueue.
func (b *bench) enqueueRuns(ctx context.Context, name string) error {
	type run struct {
		metric string
		n      int
		batch  int
	}
	for _, r := range []run{{"enqueue_seq_tps", 1, 0}, {"enqueue_par8_tps", producers, 0}, {"enqueue_batch_tps", 1, b.sz.enqueueBatch}} {
		err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
			if r.batch > 0 && !l.batches() {
				return nil
			}
			cpu0, err := b.srv.cpuSeconds(ctx)
			if err != nil {
				return err
			}
			tps, n, err := enqueueRate(ctx, l, r.n, r.batch, b.sz.enqueueWindow)
			b.res.add(name, r.metric, tps)
			if err != nil {
				return err
			}
			if r.metric == "enqueue_seq_tps" && n > 0 && onRedis(name) {
				cpu1, err := b.srv.cpuSeconds(ctx)
				if err != nil {
					return err
				}
				b.res.add(name, "enqueue_seq_redis_cpu_us", (cpu1-cpu0)*1e6/float64(n))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// processRuns measures processing while a producer runs, at concurrency 10 and 100.
func (b *bench) processRuns(ctx context.Context, name string) error {
	for _, conc := range []int{10, 100} {
		err := b.withLib(ctx, name, b.srv.addr, func(l lib) error {
			tps, err := processRate(ctx, l, conc, b.sz)
			b.res.add(name, fmt.Sprintf("process_c%d_tps", conc), tps)
			return err
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
		tps, err := processRate(ctx, l, 100, b.sz)
		b.res.add(name, "process_c100_1ms_tps", tps)
		return err
	})
}

// latencyRuns measures pickup latency at 500 tasks/s and the lateness of tasks due 2s after enqueue.
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
		b.res.add(name, "delay_late_p50_ms", percentile(lat, 50))
		b.res.add(name, "delay_late_p99_ms", percentile(lat, 99))
		return nil
	})
}

// drainRun enqueues a backlog, then drains it with a worker subprocess (concurrency 100): drain rate, Redis memory
// per pending task, Redis CPU and script calls per lifecycle (enqueue + pickup + ack), and the worker's peak RSS.
func (b *bench) drainRun(ctx context.Context, name string) error {
	return b.withLib(ctx, name, b.srv.addr, func(l lib) error {
		n := b.sz.drainN
		mem0, err := b.srv.usedMemory(ctx)
		if err != nil {
			return err
		}
		cpu0, err := b.srv.cpuSeconds(ctx)
		if err != nil {
			return err
		}
		cs0, err := b.srv.info(ctx, "commandstats")
		if err != nil {
			return err
		}
		if err := fill(ctx, l, n, b.sz.enqueueBatch); err != nil {
			return err
		}
		mem1, err := b.srv.usedMemory(ctx)
		if err != nil {
			return err
		}
		c, err := startChild(ctx, childConfig{Lib: name, Addr: b.srv.addr, Mode: "drain", Conc: drainConc, Expect: n})
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
		secs, rss, err := parseDone(line)
		if err != nil {
			return err
		}
		cpu1, err := b.srv.cpuSeconds(ctx)
		if err != nil {
			return err
		}
		cs1, err := b.srv.info(ctx, "commandstats")
		if err != nil {
			return err
		}
		calls := func(m map[string]float64) float64 { return m["cmdstat_evalsha.calls"] + m["cmdstat_eval.calls"] }
		b.res.add(name, "drain_tps", float64(n)/secs)
		b.res.add(name, "rss_mib", rss)
		if onRedis(name) {
			b.res.add(name, "bytes_per_task", (mem1-mem0)/float64(n))
			b.res.add(name, "redis_cpu_us_per_task", (cpu1-cpu0)*1e6/float64(n))
			b.res.add(name, "script_calls_per_task", (calls(cs1)-calls(cs0))/float64(n))
		}
		return nil
	})
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
