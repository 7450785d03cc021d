package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	bullmqVersion = "6.7.0" // bullmq in bullmq/package.json (with ioredis 5.11.1, the version BullMQ tests with)
	// bullmqBulk is the addBulk size of BullMQ's own benchmark (taskforcesh/bullmq-bench, "queue-add-bulk").
	bullmqBulk = 50
	// bullmqCallTimeout bounds one scenario (one node process).
	bullmqCallTimeout = 6 * time.Minute
)

// bullmqNode runs bullmq/bench.mjs: one scenario per call, whole, inside Node, so that no per-task IPC between Go
// and Node distorts the figures.
type bullmqNode struct {
	dir  string // the folder of package.json, package-lock.json and bench.mjs
	node string // the node binary
}

// bullmqSetup finds node and npm, installs the locked dependencies with `npm ci` where node_modules is missing or
// older than package-lock.json, and checks that bench.mjs loads. Its error is the reason BullMQ is skipped.
func bullmqSetup(ctx context.Context, dir string) (*bullmqNode, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("node is not on PATH (BullMQ runs on Node.js)")
	}
	if err := npmCI(ctx, dir); err != nil {
		return nil, err
	}
	n := &bullmqNode{dir: dir, node: node}
	if _, err := n.run(ctx, "127.0.0.1:0", "check", struct{}{}); err != nil {
		return nil, fmt.Errorf("bench.mjs does not load: %w", err)
	}
	return n, nil
}

// npmCI installs bullmq/node_modules from package-lock.json unless npm's record of the install
// (node_modules/.package-lock.json) is at least as new as the lock file.
func npmCI(ctx context.Context, dir string) error {
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return fmt.Errorf("no package-lock.json in %s: %w", dir, err)
	}
	if inst, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !inst.ModTime().Before(lock.ModTime()) {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errors.New("npm is not on PATH (needed once, to install BullMQ)")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci failed (%v): %s", err, lastLine(out))
	}
	return nil
}

// bullmqResult is what one scenario printed: its metrics, and for latency the samples (ms) of every job.
type bullmqResult struct {
	Metrics map[string]float64 `json:"metrics"`
	Samples []float64          `json:"samples_ms"`
	Error   *string            `json:"error"`
}

// run runs one scenario of bench.mjs against the Redis at addr with params (marshalled to JSON).
func (n *bullmqNode) run(ctx context.Context, addr, scenario string, params any) (bullmqResult, error) {
	raw, err := json.Marshal(params)
	if err != nil {
		return bullmqResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, bullmqCallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.node, "bench.mjs", addr, scenario, string(raw))
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	r, err := parseBullmqLine(stdout.Bytes())
	if err != nil {
		if runErr != nil {
			err = fmt.Errorf("%w (node: %v; stderr: %s)", err, runErr, lastLine(stderr.Bytes()))
		}
		return bullmqResult{}, fmt.Errorf("bullmq %s: %w", scenario, err)
	}
	return r, nil
}

// parseBullmqLine reads the last line of bench.mjs's stdout: {"metrics":{"name":number,...}} (latency adds
// "samples_ms":[...]) or {"error":"..."}.
func parseBullmqLine(out []byte) (bullmqResult, error) {
	line := lastLine(out)
	if line == "" {
		return bullmqResult{}, errors.New("no result line")
	}
	var r bullmqResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return bullmqResult{}, fmt.Errorf("bad result line %q: %w", line, err)
	}
	if r.Error != nil {
		return bullmqResult{}, errors.New(*r.Error)
	}
	if r.Metrics == nil {
		return bullmqResult{}, fmt.Errorf("no metrics in %q", line)
	}
	return r, nil
}

// lastLine is the last non-empty line of out, trimmed.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// bullmqRuns measures BullMQ in each step of a round, with the scenarios of BullMQ's own benchmark (add one at a
// time, addBulk of 50, a worker at concurrency 1 and 100) and the harness's where they map, under the same metric
// names. Every scenario starts on the flushed bench server.
type bullmqRuns struct {
	n *bullmqNode
}

// record adds every metric of m to the results under bullmq; rename maps a metric to another name.
func (r *bullmqRuns) record(b *bench, m map[string]float64, rename map[string]string) {
	for k, v := range m {
		if to, ok := rename[k]; ok {
			k = to
		}
		b.res.add(libBullMQ, k, v)
	}
}

// call flushes the bench server and runs one scenario.
func (r *bullmqRuns) call(ctx context.Context, b *bench, addr, scenario string, params any) (bullmqResult, error) {
	if err := b.srv.flush(ctx); err != nil {
		return bullmqResult{}, err
	}
	return r.n.run(ctx, addr, scenario, params)
}

// ms is d in whole milliseconds, for bench.mjs's parameters.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// enqueue: add from one caller and from eight concurrent callers, addBulk of 50 (BullMQ's own sizes), each with
// the Redis CPU per task it cost.
func (r *bullmqRuns) enqueue(ctx context.Context, b *bench) error {
	res, err := r.call(ctx, b, b.srv.addr, "enqueue", map[string]any{
		"window_ms": ms(b.sz.enqueueWindow), "warmup_ms": ms(b.sz.enqueueWindow / 4), "bulk": bullmqBulk})
	if err != nil {
		return err
	}
	r.record(b, res.Metrics, nil)
	return nil
}

// process: a worker of concurrency 10, then 100, fed by a producer process of addBulk(50) that keeps the backlog
// at about processBacklog, as the harness's paced producer does for the other libraries.
func (r *bullmqRuns) process(ctx context.Context, b *bench) error {
	for _, conc := range []int{10, 100} {
		res, err := r.call(ctx, b, b.srv.addr, "process", r.processParams(b, conc))
		if err != nil {
			return err
		}
		r.record(b, res.Metrics, nil)
	}
	return nil
}

func (r *bullmqRuns) processParams(b *bench, conc int) map[string]any {
	return map[string]any{"conc": conc, "warmup_ms": ms(b.sz.warmup), "window_ms": ms(b.sz.processWindow),
		"bulk": bullmqBulk, "backlog": processBacklog}
}

// drainOnce fills a backlog of n jobs in one node process (addBulk of the harness's batch size, or eight
// concurrent callers of add) and drains it in another, whose peak RSS and CPU are the workers' alone, with the
// bench's Redis read around both as for the other libraries. rate > 0: the workers' limiter lets at most rate
// jobs start per second (BullMQ's queue-wide rate limiter).
func (r *bullmqRuns) drainOnce(ctx context.Context, b *bench, n, workers, conc int, batched bool, rate int) (drained, error) {
	var d drained
	if err := b.srv.flush(ctx); err != nil {
		return d, err
	}
	mem0, cpu0, calls0, err := b.redisFigures(ctx)
	if err != nil {
		return d, err
	}
	fillParams := map[string]any{"n": n, "bulk": 0, "callers": producers}
	if batched {
		fillParams["bulk"] = b.sz.enqueueBatch
	}
	if _, err := r.n.run(ctx, b.srv.addr, "fill", fillParams); err != nil {
		return d, err
	}
	mem1, cpu1, _, err := b.redisFigures(ctx)
	if err != nil {
		return d, err
	}
	drainParams := map[string]any{"n": n, "conc": conc, "workers": workers}
	if rate > 0 {
		drainParams["limiter"] = map[string]any{"max": rate, "duration": 1000}
	}
	res, err := r.n.run(ctx, b.srv.addr, "drain", drainParams)
	if err != nil {
		return d, err
	}
	_, cpu2, calls2, err := b.redisFigures(ctx)
	if err != nil {
		return d, err
	}
	d.secs, d.rssMiB, d.cpu = res.Metrics["secs"], res.Metrics["rss_mib"], res.Metrics["cpu_s"]
	if d.secs <= 0 || d.rssMiB <= 0 {
		return d, fmt.Errorf("bullmq drain: bad figures %v", res.Metrics)
	}
	d.bytes, d.fillCPU, d.drainCPU, d.calls = mem1-mem0, cpu1-cpu0, cpu2-cpu1, calls2-calls0
	return d, nil
}

// drain measures what the harness's drainRun measures for the other libraries (a backlog enqueued in batches,
// then half of it by single adds, then 4 workers of 25 on half of it), plus BullMQ's own "worker-generic" scenario: a
// worker of concurrency 1 on a tenth of the backlog.
//
// And the drain under a queue rate limit it never reaches (drain_qrate, as for ours), before or after the plain
// drain as drainOrder alternates them, with its share of the plain drain.
func (r *bullmqRuns) drain(ctx context.Context, b *bench) error {
	n := float64(b.sz.drainN)
	var d, q drained
	var err error
	rates := []int{0, qrateLimit}
	if b.round%2 == 1 {
		slices.Reverse(rates)
	}
	for _, rate := range rates {
		var dr drained
		if dr, err = r.drainOnce(ctx, b, b.sz.drainN, 1, drainConc, true, rate); err != nil {
			return err
		}
		if rate == 0 {
			d = dr
		} else {
			q = dr
		}
	}
	b.res.add(libBullMQ, "drain_qrate_tps", n/q.secs)
	b.res.add(libBullMQ, "drain_qrate_pct", 100*d.secs/q.secs)
	b.res.add(libBullMQ, "redis_cpu_us_per_task_qrate", (q.fillCPU+q.drainCPU)*1e6/n)
	b.res.add(libBullMQ, "drain_tps", n/d.secs)
	b.res.add(libBullMQ, "rss_mib", d.rssMiB)
	b.res.add(libBullMQ, "worker_cpu_us_per_task", d.cpu*1e6/n)
	b.res.add(libBullMQ, "bytes_per_task", d.bytes/n)
	b.res.add(libBullMQ, "worker_redis_cpu_us_per_task", d.drainCPU*1e6/n)
	b.res.add(libBullMQ, "redis_cpu_us_per_task", (d.fillCPU+d.drainCPU)*1e6/n)
	b.res.add(libBullMQ, "script_calls_per_task", d.calls/n)

	half := b.sz.drainN / 2
	if d, err = r.drainOnce(ctx, b, half, 1, drainConc, false, 0); err != nil {
		return err
	}
	b.res.add(libBullMQ, "redis_cpu_us_per_task_single", (d.fillCPU+d.drainCPU)*1e6/float64(half))
	b.res.add(libBullMQ, "script_calls_per_task_single", d.calls/float64(half))

	if d, err = r.drainOnce(ctx, b, half, drainConc/25, 25, true, 0); err != nil {
		return err
	}
	b.res.add(libBullMQ, "drain_4x25_tps", float64(half)/d.secs)

	tenth := max(b.sz.drainN/10, 100)
	if d, err = r.drainOnce(ctx, b, tenth, 1, 1, true, 0); err != nil {
		return err
	}
	b.res.add(libBullMQ, "drain_c1_tps", float64(tenth)/d.secs)
	return nil
}

// latency: pickup at 500 jobs/s and jobs due 2 s after their add, to a worker of concurrency 10; bench.mjs
// reports each job's start minus its due time, from which the same figures as the other libraries' come.
func (r *bullmqRuns) latency(ctx context.Context, b *bench) error {
	res, err := r.call(ctx, b, b.srv.addr, "latency", map[string]any{
		"n": b.sz.pickupN, "every_ms": ms(pickupEvery), "delay_ms": 0, "conc": latencyConc})
	if err != nil {
		return err
	}
	lat := durations(res.Samples)
	b.res.add(libBullMQ, "pickup_p50_ms", percentile(lat, 50))
	b.res.add(libBullMQ, "pickup_p99_ms", percentile(lat, 99))
	res, err = r.call(ctx, b, b.srv.addr, "latency", map[string]any{
		"n": b.sz.delayN, "every_ms": ms(delayEvery), "delay_ms": ms(delayDue), "conc": latencyConc})
	if err != nil {
		return err
	}
	b.addDelayed(libBullMQ, durations(res.Samples))
	return nil
}

// durations converts milliseconds to sorted durations.
func durations(msecs []float64) []time.Duration {
	out := make([]time.Duration, len(msecs))
	for i, v := range msecs {
		out[i] = time.Duration(v * float64(time.Millisecond))
	}
	slices.Sort(out)
	return out
}

// proxy is the process scenario at concurrency 100 through the harness's latency proxy (+1 ms per round trip).
func (r *bullmqRuns) proxy(ctx context.Context, b *bench) error {
	p, err := startProxy(b.srv.addr, time.Millisecond)
	if err != nil {
		return err
	}
	defer p.close()
	res, err := r.call(ctx, b, p.addr(), "process", r.processParams(b, 100))
	if err != nil {
		return err
	}
	b.res.add(libBullMQ, "process_c100_1ms_tps", res.Metrics["process_c100_tps"])
	return nil
}
