package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestRiverDBNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, "taskqueue_bench_river_4242", riverDBName(4242))
	pid, ok := riverDBPID("taskqueue_bench_river_4242")
	require.True(t, ok)
	require.Equal(t, 4242, pid)
	for _, n := range []string{"taskqueue_bench_river_", "taskqueue_bench_river_12x", "postgres", "taskqueue_bench_river_-3", "other_taskqueue_bench_river_1"} {
		_, ok := riverDBPID(n)
		require.False(t, ok, n)
	}
	u, err := withDatabase("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "x_1")
	require.NoError(t, err)
	require.Equal(t, "postgres://postgres@127.0.0.1:5432/x_1?sslmode=disable", u)
	u, err = withDatabase("postgresql://u:p@h", "x_1")
	require.NoError(t, err)
	require.Equal(t, "postgresql://u:p@h/x_1", u)
	_, err = withDatabase("host=127.0.0.1 dbname=postgres", "x")
	require.Error(t, err)
	require.Equal(t, "postgres://u:***@h/db", redactURL("postgres://u:secret@h/db"))
}

// postgresOrSkip returns the admin URL of the machine's PostgreSQL, or skips the test where there is none (fails
// it under CI=true, as the Redis tests do without redis-server).
func postgresOrSkip(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgAdmin())
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("no PostgreSQL at %s under CI=true: %v", redactURL(pgAdmin()), err)
	}
	if err != nil {
		t.Skipf("no PostgreSQL at %s: %v", redactURL(pgAdmin()), err)
	}
	_ = conn.Close(ctx)
	return pgAdmin()
}

// TestRiverEndToEnd creates the run's River database as the harness does, runs the enqueue and drain steps on it
// (the drain's worker subprocess finds the database through the environment) and a worker in this process, and
// checks that the cleanup drops the database.
func TestRiverEndToEnd(t *testing.T) {
	t.Parallel()
	admin := postgresOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	require.NoError(t, riverCheck(ctx))
	t.Cleanup(riverCleanup)
	name := riverDBName(os.Getpid())
	require.Contains(t, riverNote(ctx), "river "+riverVersion+" on PostgreSQL ")

	b := &bench{srv: startTestRedis(t), sz: sizes{enqueueWindow: 50 * time.Millisecond, drainN: 200, enqueueBatch: 100},
		res: newResults(), log: io.Discard}
	require.NoError(t, b.enqueueRuns(ctx, libRiver))
	require.NoError(t, b.drainRun(ctx, libRiver))
	for _, m := range []string{"enqueue_seq_tps", "enqueue_par8_tps", "enqueue_batch_tps", "drain_tps", "drain_4x25_tps",
		"rss_mib", "worker_cpu_us_per_task"} {
		s, ok := b.res.stat(libRiver, m)
		require.True(t, ok, m)
		require.Greater(t, s.median, 0.0, m)
	}
	for _, m := range []string{"enqueue_seq_redis_cpu_us", "bytes_per_task", "redis_cpu_us_per_task", "script_calls_per_task"} {
		_, ok := b.res.stat(libRiver, m)
		require.False(t, ok, "River keeps nothing in Redis: %s is n/a", m)
	}

	l, err := newLib(libRiver, "", 0) // empties River's tables first
	require.NoError(t, err)
	defer l.close()
	require.NoError(t, l.enqueue(ctx, 1, 0))
	require.NoError(t, l.enqueueBatch(ctx, 2, 99))
	var n atomic.Int64
	done := make(chan struct{})
	stop, err := l.startWorker(ctx, 10, func(int) {
		if n.Add(1) == 100 {
			close(done)
		}
	})
	require.NoError(t, err)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("only %d of 100 jobs ran", n.Load())
	}
	stop()

	riverCleanup()
	conn, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	var count int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&count))
	require.Zero(t, count, "the database is dropped")
}

func TestParseBullmqLine(t *testing.T) {
	t.Parallel()
	r, err := parseBullmqLine([]byte("some log\n{\"metrics\":{\"process_c10_tps\":1234.5,\"rss_mib\":80}}\n"))
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"process_c10_tps": 1234.5, "rss_mib": 80}, r.Metrics)
	require.Nil(t, r.Samples)
	r, err = parseBullmqLine([]byte(`{"metrics":{},"samples_ms":[1.5,-0.25]}`))
	require.NoError(t, err)
	require.Empty(t, r.Metrics)
	require.Equal(t, []float64{1.5, -0.25}, r.Samples)
	require.Equal(t, []time.Duration{-250 * time.Microsecond, 1500 * time.Microsecond}, durations(r.Samples))
	_, err = parseBullmqLine([]byte(`{"error":"only 3 of 10 jobs started"}` + "\n"))
	require.EqualError(t, err, "only 3 of 10 jobs started")
	for _, bad := range []string{"", "\n\n", "node: command not found", `{"metrics":{"x":"fast"}}`, `{"other":1}`} {
		_, err = parseBullmqLine([]byte(bad))
		require.Error(t, err, bad)
	}
}

// bullmqOrSkip installs BullMQ as the harness does, or skips the test where Node.js is missing. Under CI=true a
// machine with Node.js that cannot install or load BullMQ fails the test (CI reaches the npm registry).
func bullmqOrSkip(t *testing.T) *bullmqNode {
	t.Helper()
	n, err := bullmqSetup(context.Background(), "bullmq")
	if err == nil {
		return n
	}
	if _, lookErr := exec.LookPath("node"); lookErr == nil && os.Getenv("CI") == "true" {
		t.Fatalf("BullMQ cannot run under CI=true: %v", err)
	}
	t.Skipf("BullMQ cannot run here: %v", err)
	return nil
}

// TestBullMQScenarios runs the scenarios whose figures come from Redis's side (fill, then drain, with memory, CPU
// and script calls around them) and one processing window, with tiny counts; the rest run in the harness.
func TestBullMQScenarios(t *testing.T) {
	t.Parallel()
	n := bullmqOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := startTestRedis(t)
	sz := sizes{warmup: 500 * time.Millisecond, processWindow: time.Second, drainN: 200, enqueueBatch: 100}
	b := &bench{srv: srv, sz: sz, res: newResults(), log: io.Discard}
	r := &bullmqRuns{n: n}
	require.NoError(t, r.drain(ctx, b))
	// Jobs are removed on completion, as the other libraries keep no finished tasks: after the drains the queue
	// has a few keys of its own left, no job.
	keys, err := srv.rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.Less(t, len(keys), 20, keys)
	res, err := r.call(ctx, b, srv.addr, "process", r.processParams(b, 10))
	require.NoError(t, err)
	r.record(b, res.Metrics, nil)
	for _, m := range []string{"drain_tps", "drain_c1_tps", "drain_4x25_tps", "rss_mib", "worker_cpu_us_per_task",
		"bytes_per_task", "worker_redis_cpu_us_per_task", "redis_cpu_us_per_task", "script_calls_per_task",
		"redis_cpu_us_per_task_single", "script_calls_per_task_single", "process_c10_tps", "process_c10_produce_tps",
		"process_c10_backlog"} {
		s, ok := b.res.stat(libBullMQ, m)
		require.True(t, ok, m)
		require.Greater(t, s.median, 0.0, m)
	}
	// A pending job costs Redis at least its payload; its lifecycle runs Lua scripts (add, move to active, finish).
	s, _ := b.res.stat(libBullMQ, "bytes_per_task")
	require.Greater(t, s.median, float64(payloadSize))
	s, _ = b.res.stat(libBullMQ, "script_calls_per_task")
	require.GreaterOrEqual(t, s.median, 1.0)
}

func TestBullMQSkipReasons(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := bullmqSetup(ctx, dir)
	require.ErrorContains(t, err, "no package-lock.json")

	t.Setenv("PATH", t.TempDir()) // no node, no npm
	_, err = bullmqSetup(ctx, "bullmq")
	require.EqualError(t, err, "node is not on PATH (BullMQ runs on Node.js)")
}

func TestRiverSkipReason(t *testing.T) {
	t.Setenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	res := newResults()
	libs, err := selectLibs(context.Background(), libRiver+","+libOurs, res, io.Discard)
	defer cleanupLibs()
	require.NoError(t, err)
	require.Equal(t, []string{libOurs}, libs)
	require.Contains(t, res.skipped[libRiver], "PostgreSQL unreachable at postgres://postgres@127.0.0.1:1/postgres")
	var buf bytes.Buffer
	res.writeTable(&buf)
	require.Contains(t, buf.String(), "skipped: river: PostgreSQL unreachable")
}

func TestPeerJSONKeys(t *testing.T) {
	t.Parallel()
	r := newResults()
	r.add(libBullMQ, "process_c100_tps", 9000)
	r.add(libRiver, "process_c100_tps", 7000)
	r.add(libRiver, "drain_tps", 20000)
	r.add(libBullMQ, "drain_c1_tps", 1500)
	sum := r.summary()
	require.InDelta(t, 9000, sum["bullmq_process_tps"], 1e-9)
	require.InDelta(t, 7000, sum["river_process_tps"], 1e-9)
	require.InDelta(t, 9000, sum["bullmq_process_c100_tps"], 1e-9)
	require.InDelta(t, 20000, sum["river_drain_tps"], 1e-9)
	require.InDelta(t, 1500, sum["bullmq_drain_c1_tps"], 1e-9)
	var buf bytes.Buffer
	r.writeTable(&buf)
	require.Contains(t, buf.String(), "| drain a backlog, concurrency 1 (BullMQ's worker-generic) | tasks/s | 1,500 | n/a |")
}

func TestPostgresURLs(t *testing.T) {
	t.Parallel()
	hp, err := pgHostPort("postgres://postgres@127.0.0.1:5432/db?sslmode=disable")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5432", hp)
	hp, err = pgHostPort("postgresql://u:p@localhost/db")
	require.NoError(t, err)
	require.Equal(t, "localhost:5432", hp)
	u, err := withHostPort("postgres://postgres@127.0.0.1:5432/db?sslmode=disable", "127.0.0.1:40000")
	require.NoError(t, err)
	require.Equal(t, "postgres://postgres@127.0.0.1:40000/db?sslmode=disable", u)
	_, err = pgHostPort("mysql://x/y")
	require.Error(t, err)
}
