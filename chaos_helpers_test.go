//go:build chaos

package taskqueue

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// The chaos tier (make test-chaos, docs/reliability.md): real redis-server processes and worker subprocesses that
// the tests start themselves on free loopback ports, then kill, stop, restart or starve. Nothing here touches a
// Redis the tests did not start; every wait is bounded in time.

// chaosRedis is a redis-server process owned by one test, which may kill it and start it again on the same port
// and data directory (so that an append-only file is reloaded).
type chaosRedis struct {
	*redistest.Server
	addr string
}

// startChaosRedis starts a redis-server for the test on a free loopback port, with its data in a directory of its
// own, and kills it when the test ends. persist gives the persistence flags; none means no persistence at all.
func startChaosRedis(t testing.TB, persist ...string) *chaosRedis {
	t.Helper()
	if len(persist) == 0 {
		persist = redistest.NoPersistence
	}
	srv := redistest.Run(t, redistest.Options{Args: persist})
	return &chaosRedis{Server: srv, addr: srv.Addr}
}

// start starts the server again and waits until it answers and has loaded its data.
func (r *chaosRedis) start() error { return r.Server.Restart() }

// kill ends the server with SIGKILL (no shutdown, no final fsync) and waits until it is gone.
func (r *chaosRedis) kill() { r.Server.Kill() }

// client returns a client of the server, closed when the test ends. opts may be nil.
func (r *chaosRedis) client(t testing.TB, opts *redis.Options) *redis.Client {
	t.Helper()
	o := redis.Options{}
	if opts != nil {
		o = *opts
	}
	o.Addr = r.addr
	rdb := redis.NewClient(&o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// chaosWorkArgs mirror chaos.work's arguments (internal/chaosworker).
type chaosWorkArgs struct {
	ID           string `json:"id"`
	SleepMS      int64  `json:"sleep_ms,omitempty"`
	FirstSleepMS int64  `json:"first_sleep_ms,omitempty"`
	FirstFail    bool   `json:"first_fail,omitempty"`
	HonorCtx     bool   `json:"honor_ctx,omitempty"`
}

type chaosIDArgs struct {
	ID string `json:"id"`
}

// chaosWork returns a spec that runs chaos.work in the worker subprocess.
func chaosWork(a chaosWorkArgs) *TaskSpec {
	return NewTaskSpec(a.ID, Ref("chaos", "work", a))
}

// chaosQueue returns a queue on rdb whose registry also resolves the chaos functions (to stubs that fail), so
// that a test can lease and inspect the tasks it gave to the worker subprocesses.
func chaosQueue(t testing.TB, rdb redis.UniversalClient, prefix string, cfg *RedisConfig) (*RedisTaskQueue, *ReferenceResolver) {
	t.Helper()
	reg, ref := testRegistry(t)
	stub := errors.New("chaos: this function runs only in the worker subprocess")
	require.NoError(t, Register(ref, "chaos", "work", func(context.Context, chaosWorkArgs) error { return stub }))
	require.NoError(t, Register(ref, "chaos", "exit", func(context.Context, chaosIDArgs) error { return stub }))
	require.NoError(t, Register(ref, "chaos", "panic", func(context.Context, chaosIDArgs) error { return stub }))
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	return q, ref
}

// buildChaosWorker builds internal/chaosworker into dir and returns its path. It is built with -race (a data
// race in the worker's signal and stop paths fails the test through the log check of startChaosWorker), unless
// CHAOS_WORKER_RACE=0.
func buildChaosWorker(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the chaos tests build internal/chaosworker with the go command")
	out := filepath.Join(dir, "chaosworker")
	args := []string{"build", "-o", out}
	if os.Getenv("CHAOS_WORKER_RACE") != "0" {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, "./internal/chaosworker")...)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./internal/chaosworker: %s", b)
	return out
}

// chaosWorkerOpts configure one worker subprocess.
type chaosWorkerOpts struct {
	Name        string // --worker-id, also the log file's name
	Addr        string
	Prefix      string
	Queues      string // --queues instead of --key-prefix Prefix, when set (a worker on several queues)
	Ledger      string
	Lease       time.Duration // default 1s
	Grace       time.Duration // default 2s
	Concurrency int           // default 4
	Env         []string      // extra environment, NAME=value
}

// chaosProc is a running worker subprocess: taskqueue.RunWorkerMain in internal/chaosworker.
type chaosProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time

	exited   chan struct{}
	state    *os.ProcessState // set before exited is closed
	exitedAt time.Time
}

// startChaosWorker starts a worker subprocess, waits until it is ready to take tasks, and kills it (SIGKILL)
// when the test ends if it still runs. Its standard error (JSON logs, debug level) goes to a file.
func startChaosWorker(t testing.TB, bin string, o chaosWorkerOpts) *chaosProc {
	t.Helper()
	p := startChaosWorkerNoWait(t, bin, o)
	p.waitLog(t, 15*time.Second, "taskqueue: worker ready")
	return p
}

func startChaosWorkerNoWait(t testing.TB, bin string, o chaosWorkerOpts) *chaosProc {
	t.Helper()
	if o.Lease == 0 {
		o.Lease = time.Second
	}
	if o.Grace == 0 {
		o.Grace = 2 * time.Second
	}
	if o.Concurrency == 0 {
		o.Concurrency = 4
	}
	logPath := filepath.Join(t.TempDir(), o.Name+".log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	queue := []string{"--key-prefix", o.Prefix}
	if o.Queues != "" {
		queue = []string{"--queues", o.Queues}
	}
	cmd := exec.Command(bin, append(append([]string{
		"--redis-url", "redis://" + o.Addr + "/0"}, queue...),
		"--lease", o.Lease.String(),
		"--shutdown-grace", o.Grace.String(),
		"--concurrency", strconv.Itoa(o.Concurrency),
		"--worker-id", o.Name,
		"--log-format", "json",
		"--log-level", "debug")...)
	// atexit_sleep_ms=0: a -race binary otherwise sleeps 1s before it exits, which would blur the exit times.
	cmd.Env = []string{"CHAOS_LEDGER=" + o.Ledger, "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"GORACE=atexit_sleep_ms=0"}
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p := &chaosProc{name: o.Name, cmd: cmd, logPath: logPath, started: time.Now(), exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state, p.exitedAt = cmd.ProcessState, time.Now()
		_ = logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("worker %s did not exit after SIGKILL", p.name)
		}
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "DATA RACE") {
			t.Errorf("worker %s reported a data race; log:\n%s", p.name, b)
		}
	})
	return p
}

func (p *chaosProc) pid() int { return p.cmd.Process.Pid }

func (p *chaosProc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %s to %s", sig, p.name)
}

func (p *chaosProc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns its exit code (-1 when killed by a signal).
func (p *chaosProc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("worker %s did not exit within %s; log:\n%s", p.name, timeout, p.logTail(30))
	}
	return p.state.ExitCode()
}

// chaosLog is one JSON log line of a worker subprocess.
type chaosLog struct {
	Level   string  `json:"level"`
	Msg     string  `json:"msg"`
	TaskID  string  `json:"task_id"`
	Attempt float64 `json:"attempt"`
	Error   string  `json:"error"`
	raw     string
}

func (p *chaosProc) logs() []chaosLog {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []chaosLog
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" {
			continue
		}
		var l chaosLog
		if json.Unmarshal([]byte(line), &l) != nil {
			l.Msg = line // not JSON: a panic trace or a message from main
		}
		l.raw = line
		out = append(out, l)
	}
	return out
}

// logsWith returns the log lines whose message is msg, for the task id if it is not empty.
func (p *chaosProc) logsWith(msg, taskID string) []chaosLog {
	var out []chaosLog
	for _, l := range p.logs() {
		if l.Msg == msg && (taskID == "" || l.TaskID == taskID) {
			out = append(out, l)
		}
	}
	return out
}

func (p *chaosProc) waitLog(t testing.TB, timeout time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(p.logsWith(msg, "")) == 0 {
		if p.hasExited() || time.Now().After(deadline) {
			t.Fatalf("worker %s: no %q within %s (exited: %v); log:\n%s", p.name, msg, timeout, p.hasExited(), p.logTail(30))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *chaosProc) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ledgerEntry is one line of the execution ledger that internal/chaosworker appends to.
type ledgerEntry struct {
	Event  string // start, done, fail, cancel, exit, panic
	ID     string
	PID    int
	At     time.Time
	Detail string
}

func readLedger(t testing.TB, path string) []ledgerEntry {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out []ledgerEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 5)
		require.GreaterOrEqual(t, len(parts), 4, "ledger line %q", sc.Text())
		pid, err := strconv.Atoi(parts[2])
		require.NoError(t, err)
		ns, err := strconv.ParseInt(parts[3], 10, 64)
		require.NoError(t, err)
		e := ledgerEntry{Event: parts[0], ID: parts[1], PID: pid, At: time.Unix(0, ns)}
		if len(parts) == 5 {
			e.Detail = parts[4]
		}
		out = append(out, e)
	}
	require.NoError(t, sc.Err())
	return out
}

// ledgerOf returns the entries of one task and event ("" for every event).
func ledgerOf(entries []ledgerEntry, event, id string) []ledgerEntry {
	var out []ledgerEntry
	for _, e := range entries {
		if (event == "" || e.Event == event) && e.ID == id {
			out = append(out, e)
		}
	}
	return out
}

// ledgerCount counts the entries of each task for one event.
func ledgerCount(entries []ledgerEntry, event string) map[string]int {
	out := map[string]int{}
	for _, e := range entries {
		if e.Event == event {
			out[e.ID]++
		}
	}
	return out
}

// waitLedger waits until cond holds for the ledger.
func waitLedger(t testing.TB, path string, timeout time.Duration, what string, cond func([]ledgerEntry) bool) []ledgerEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		entries := readLedger(t, path)
		if cond(entries) {
			return entries
		}
		if time.Now().After(deadline) {
			var last strings.Builder
			for _, e := range entries[max(0, len(entries)-10):] {
				fmt.Fprintf(&last, "\n  %s %s pid=%d %s %s", e.At.Format("15:04:05.000"), e.Event, e.PID, truncate(e.ID, 40), truncate(e.Detail, 120))
			}
			t.Fatalf("timed out after %s waiting for %s in the ledger (%d lines; the last ones:%s)", timeout, what, len(entries), last.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile returns the p-th percentile (0-100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// durStats formats the samples as n, p50, p99 and max, in milliseconds.
func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64)
	}
	return fmt.Sprintf("n=%d p50=%sms p99=%sms max=%sms", len(ds), ms(percentile(ds, 50)), ms(percentile(ds, 99)), ms(percentile(ds, 100)))
}

// chaosResult logs a scenario's figures in one line that docs/reliability.md quotes (go test -v shows them).
func chaosResult(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("CHAOS RESULT %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

// chaosStats reads the queue's counts.
func chaosStats(t testing.TB, q *RedisTaskQueue) Counts {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	return st
}

// waitStats waits until the queue's counts equal want.
func waitStats(t testing.TB, q *RedisTaskQueue, timeout time.Duration, want Counts) {
	t.Helper()
	var st Counts
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := countsOf(ctx, q)
		cancel()
		if err == nil {
			st = s
			if st == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for stats %+v; last %+v (err %v)", timeout, want, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverNowMS reads the Redis server clock in milliseconds.
func serverNowMS(t testing.TB, rdb redis.UniversalClient) int64 {
	t.Helper()
	now, err := rdb.Time(context.Background()).Result()
	require.NoError(t, err)
	return now.UnixMilli()
}

// hold makes the proxy hold every byte, both ways, until release: the connection goes silent (scenario 5).
func (p *chaosProxy) hold() {
	p.mu.Lock()
	p.open = make(chan struct{})
	p.mu.Unlock()
}

// release lets the held bytes through again.
func (p *chaosProxy) release() {
	p.mu.Lock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
	p.mu.Unlock()
}

// debugRedis are the flags of a redis-server without persistence that accepts DEBUG (off by default since 7.0).
var debugRedis = []string{"--save", "", "--appendonly", "no", "--enable-debug-command", "yes"}

// pendingCount counts the occurrences of id in the pending list.
func pendingCount(t testing.TB, rdb redis.UniversalClient, q *RedisTaskQueue, id string) int {
	t.Helper()
	ids, err := rdb.LRange(context.Background(), q.keys.key(keyPending), 0, -1).Result()
	require.NoError(t, err)
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// msgCounter is a slog handler that counts records by message.
type msgCounter struct {
	mu    sync.Mutex
	count map[string]int
	times map[string][]time.Time
}

func newMsgCounter() *msgCounter {
	return &msgCounter{count: map[string]int{}, times: map[string][]time.Time{}}
}

func (m *msgCounter) Enabled(context.Context, slog.Level) bool { return true }

func (m *msgCounter) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	m.count[r.Message]++
	m.times[r.Message] = append(m.times[r.Message], time.Now())
	m.mu.Unlock()
	return nil
}

func (m *msgCounter) WithAttrs([]slog.Attr) slog.Handler { return m }

func (m *msgCounter) WithGroup(string) slog.Handler { return m }

// offsets returns when each record of msg came, relative to from.
func (m *msgCounter) offsets(msg string, from time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, at := range m.times[msg] {
		if !at.Before(from) {
			out = append(out, at.Sub(from).Round(time.Millisecond).String())
		}
	}
	return out
}

func (m *msgCounter) between(msg string, from, to time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, at := range m.times[msg] {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// figure logs a scenario's figures in the one greppable format that docs/reliability.md is built from:
// FIGURE scenario=<n> key=value ...
func figure(t testing.TB, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURE scenario=%s", scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
}

// ms formats a duration in whole milliseconds, for figures.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// rawEnvelope is a v1 envelope as a foreign producer might write it; payload is the serialized task's payload.
func rawEnvelope(id, resolver, strategy, payload, extra string) string {
	return fmt.Sprintf(`{"v":1,"task_id":%q,"status":"ready","created_at":1,"strategy":%q,"resolver_id":%q,"serialized_task":{"strategy":%q,"payload":%s},"max_retries":3%s}`,
		id, strategy, resolver, strategy, payload, extra)
}

// workPayload is the payload of a chaos.work reference with the given args (a JSON object).
func workPayload(args string) string {
	return `{"module":"chaos","name":"work","args":` + args + `}`
}

// writeRawTask stores an envelope and makes it pending, as enqueue.lua would, without any check.
func writeRawTask(t testing.TB, rdb redis.UniversalClient, q *RedisTaskQueue, id, raw string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, rdb.HSet(ctx, q.keys.key(keyTasks), id, raw).Err())
	require.NoError(t, rdb.RPush(ctx, q.keys.key(keyPending), id).Err())
	require.NoError(t, rdb.LPush(ctx, q.keys.key(keyWake), "1").Err())
}
