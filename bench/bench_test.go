package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary serve as the worker subprocess, as the harness binary does.
func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		if err := runChild(raw); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestPayloadIs200BytesWithItsSeq(t *testing.T) {
	t.Parallel()
	for _, seq := range []int{0, 7, 12345, 9999999} {
		p := payload(seq)
		require.Len(t, p, payloadSize)
		require.Equal(t, seq, seqOf(p))
		// Our library marshals benchArgs to the same bytes.
		b, err := json.Marshal(benchArgs{Seq: seq, Data: padding(seq)})
		require.NoError(t, err)
		require.Equal(t, string(p), string(b))
	}
	require.Equal(t, -1, seqOf([]byte(`{"data":"x"}`)))
}

func TestTableAndJSON(t *testing.T) {
	t.Parallel()
	r := newResults()
	for _, v := range []float64{120000, 100000, 140000} {
		r.add(libOurs, "process_c100_tps", v)
	}
	for _, v := range []float64{9000, 10000} {
		r.add(libAsynq, "process_c100_tps", v)
	}
	r.add(libOurs, "pickup_p99_ms", 0.8)
	r.add(libAsynq, "pickup_p99_ms", 1400)
	r.add(libOurs, "recovery_short_s", 2.1)

	r.add(libFloor, "process_c100_tps", 200000)
	r.add(libAsynqTuned, "process_c100_tps", 20000)
	r.add(libAsynqTuned, "pickup_p99_ms", 5)
	r.skip(libBullMQ, "node not on PATH")

	var buf bytes.Buffer
	r.writeTable(&buf)
	out := buf.String()
	require.Contains(t, out, "| measurement | unit | floor | ours | asynq | asynq-tuned | ours vs best peer | ours / floor |")
	require.Contains(t, out, "| process while producing, concurrency 100 | tasks/s | 200,000 | 120,000 [100,000–140,000] | 9,500 [9,000–10,000] | 20,000 | 6.0x (asynq-tuned) | 60% |")
	require.Contains(t, out, "| pickup latency at 500 tasks/s, p99 | ms | n/a | 0.80 | 1,400 | 5.00 | 6.2x less (asynq-tuned) | – |")
	require.Contains(t, out, "| recovery after SIGKILL, lease 2s | s | n/a | 2.10 | n/a | n/a | – | – |")
	require.Contains(t, out, "skipped: bullmq: node not on PATH")
	require.NotContains(t, out, "drain", "a metric without samples has no row")

	path := filepath.Join(t.TempDir(), "results", "latest.json")
	require.NoError(t, r.writeJSON(path))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var got map[string]float64
	require.NoError(t, json.Unmarshal(raw, &got))
	require.Equal(t, map[string]float64{
		"ours_process_tps": 120000, "asynq_process_tps": 9500, "process_ratio": 12.63,
		"ours_pickup_p99_ms": 0.8, "asynq_pickup_p99_ms": 1400, "ours_recovery_s": 2.1, "asynq_tuned_process_tps": 20000,
		"asynq_tuned_pickup_p99_ms": 5, "floor_process_tps": 200000,
	}, got)
	keys := map[string]bool{}
	for _, k := range jsonKeys {
		require.False(t, keys[k.key], "duplicate key %s", k.key)
		keys[k.key] = true
	}
}

func TestParseInfo(t *testing.T) {
	t.Parallel()
	m := parseInfo("# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n# Commandstats\r\n" +
		"cmdstat_evalsha:calls=10,usec=200,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\nredis_version:7.0.15\r\n")
	require.InDelta(t, 1.5, m["used_cpu_sys"], 1e-9)
	require.InDelta(t, 2.25, m["used_cpu_user"], 1e-9)
	require.InDelta(t, 10, m["cmdstat_evalsha.calls"], 1e-9)
	require.InDelta(t, 20, m["cmdstat_evalsha.usec_per_call"], 1e-9)
	require.NotContains(t, m, "redis_version")
}

// TestLatencyProxyAddsRoundTripTime checks that a command through the proxy takes at least the added time.
func TestLatencyProxyAddsRoundTripTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startTestRedis(t)
	p, err := startProxy(srv.addr, 20*time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(p.close)
	l, err := newLib(libOurs, p.addr(), 0)
	require.NoError(t, err)
	t.Cleanup(l.close)
	start := time.Now()
	require.NoError(t, l.enqueue(ctx, 1, 0))
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
	n, err := srv.rdb.LLen(ctx, "{bench}:pending").Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the task went through the proxy")
}

// TestMeasurementsEndToEnd runs every kind of measurement once, with tiny counts, for both libraries.
func TestMeasurementsEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := startTestRedis(t)
	sz := sizes{enqueueWindow: 50 * time.Millisecond, warmup: 1100 * time.Millisecond, processWindow: 200 * time.Millisecond,
		drainN: 300, pickupN: 20, delayN: 5, enqueueBatch: 100}
	var log bytes.Buffer
	b := &bench{srv: srv, sz: sz, res: newResults(), log: &log}
	waitRecovery := b.recoveryRuns(ctx, []string{libOurs, libAsynq}, 1, true)
	for _, name := range []string{libFloor, libOurs, libAsynq} {
		require.NoError(t, b.enqueueRuns(ctx, name))
		require.NoError(t, b.drainRun(ctx, name))
	}
	require.NoError(t, b.processRuns(ctx, libFloor))
	require.NoError(t, b.latencyRuns(ctx, libOurs))
	require.ErrorIs(t, b.latencyRuns(ctx, libFloor), errUnsupported, "the floor has no delayed tasks")
	require.NoError(t, b.proxyRun(ctx, libOurs))
	require.NoError(t, waitRecovery())

	sum := b.res.summary()
	for _, k := range []string{"ours_enqueue_seq_tps", "asynq_enqueue_seq_tps", "ours_enqueue_seq_redis_cpu_us", "asynq_enqueue_seq_redis_cpu_us", "ours_enqueue_batch_tps", "ours_drain_tps",
		"ours_bytes_per_task", "asynq_bytes_per_task", "ours_redis_cpu_us_per_task", "asynq_redis_cpu_us_per_task",
		"ours_rss_mib", "asynq_rss_mib", "ours_pickup_p50_ms", "ours_delay_late_p99_ms", "ours_process_tps_1ms", "ours_recovery_s",
		"floor_drain_tps", "ours_worker_cpu_us_per_task", "asynq_worker_cpu_us_per_task", "ours_redis_cpu_us_per_task_single",
		"ours_worker_redis_cpu_us_per_task", "ours_enqueue_batch_redis_cpu_us", "ours_drain_4x25_tps", "asynq_drain_4x25_tps",
		"ours_delay_dev_p99_ms", "floor_redis_cpu_us_per_task"} {
		require.Greater(t, sum[k], 0.0, k)
	}
	s, ok := b.res.stat(libFloor, "pickup_p99_ms")
	require.True(t, ok)
	require.Positive(t, s.median)
	// The paced producer keeps the backlog at about processBacklog: it may overshoot by at most one batch.
	for _, m := range []string{"process_c10_backlog", "process_c100_backlog"} {
		s, ok := b.res.stat(libFloor, m)
		require.True(t, ok, m)
		require.LessOrEqual(t, s.hi, float64(processBacklog+processBatch), m)
	}
	_, ok = b.res.stat(libFloor, "script_calls_per_task")
	require.True(t, ok, "the floor's script calls are measured (none)")
	require.NotContains(t, sum, "asynq_enqueue_batch_tps", "asynq has no batch enqueue")
	// recoveryRuns' short trial has a lease of 2s: the task comes back once the lease has run out, a reap interval
	// (lease/10) later, not after the default 30s lease; two leases leave the rest for a busy machine.
	require.Less(t, sum["ours_recovery_s"], 4.0)
	var table bytes.Buffer
	b.res.writeTable(&table)
	require.True(t, strings.HasPrefix(table.String(), "| measurement |"))
}

func startTestRedis(t *testing.T) *redisServer {
	t.Helper()
	srv, err := startRedis(context.Background())
	require.NoError(t, err)
	t.Cleanup(srv.stop)
	return srv
}

func TestParseDone(t *testing.T) {
	t.Parallel()
	d, err := parseDone("done 1.500000 20480 0.250000")
	require.NoError(t, err)
	require.InDelta(t, 1.5, d.secs, 1e-9)
	require.InDelta(t, 20.0, d.rssMiB, 1e-9)
	require.InDelta(t, 0.25, d.cpu, 1e-9)
	_, err = parseDone("done 1.5 0 0.25")
	require.Error(t, err)
	_, err = parseDone("done 1.5 20480")
	require.Error(t, err)
	require.Positive(t, peakRSSKiB())
	require.Positive(t, cpuSeconds())
}

// TestRecoveryTrialEndsWithItsContext checks that an interrupted run does not wait minutes for asynq's recovery
// (and that the trial's server and workers are cleaned up on the way out).
func TestRecoveryTrialEndsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	_, err := recoveryTrial(ctx, libAsynq, 0, 6*time.Minute)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 15*time.Second)
}

// TestSelectLibsSkipsMissingRuntime checks that a library whose runtime is missing is reported as skipped with its
// reason, not dropped, and that an unknown name is refused. Not parallel: it registers a library for a moment.
func TestSelectLibsSkipsMissingRuntime(t *testing.T) {
	libDefs["nowhere"] = libDef{check: func(context.Context) error { return errors.New("nowhere not on PATH") }}
	t.Cleanup(func() { delete(libDefs, "nowhere") })
	res := newResults()
	libs, err := selectLibs(context.Background(), "ours,nowhere", res, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{libOurs}, libs)
	var buf bytes.Buffer
	res.writeTable(&buf)
	require.Contains(t, buf.String(), "skipped: nowhere: nowhere not on PATH")
	_, err = selectLibs(context.Background(), "ours,nosuch", newResults(), io.Discard)
	require.ErrorContains(t, err, `unknown library "nosuch"`)
}
