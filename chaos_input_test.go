//go:build chaos

package taskqueue

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hostileCase is one envelope written straight into Redis and the error it must be parked with.
type hostileCase struct {
	id, raw string
	want    error
}

// rssSampler records the largest resident set of a process, read from /proc every few milliseconds.
type rssSampler struct {
	mu   sync.Mutex
	max  int64
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func procRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampleRSS samples until finish, or until the test ends.
func sampleRSS(t testing.TB, pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := procRSS(pid); v > 0 {
				s.mu.Lock()
				s.max = max(s.max, v)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { s.finish() })
	return s
}

func (s *rssSampler) finish() int64 {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// chaosHostileEnvelopes (scenario 14): malformed, hostile and oversize envelopes interleaved with good tasks.
// Each hostile one is dead-lettered once with its own error, kept byte for byte (one that decodes has its status
// rewritten to dead); the worker process keeps running, never panics, runs every good task once, and its memory
// stays bounded.
func chaosHostileEnvelopes(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-hostile"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	w := startChaosWorker(t, bin, chaosWorkerOpts{Name: "hostile", Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: 2 * time.Second})
	// Let the worker warm up (a first task) before its baseline is read.
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "warm", SleepMS: 1})))
	waitLedger(t, ledger, 10*time.Second, "the warm-up", func(es []ledgerEntry) bool { return len(ledgerOf(es, "done", "warm")) == 1 })
	baseRSS := procRSS(w.pid())
	require.Positive(t, baseRSS)
	rss := sampleRSS(t, w.pid())

	const (
		rounds   = 3
		goodEach = 10
		deep     = 100_000
		huge     = 2 << 20 // twice the 1 MiB envelope limit
	)
	cases := func(r int) []hostileCase {
		id := func(s string) string { return fmt.Sprintf("%s-%d", s, r) }
		good := func(name, args, extra string) string {
			return rawEnvelope(id(name), "default", "reference", workPayload(args), extra)
		}
		return []hostileCase{
			{id("not-json"), `{"v":1,"task_id":"` + id("not-json") + `",`, ErrMalformedEnvelope},
			{id("deep"), `{"v":1,"task_id":"` + id("deep") + `","x":` + strings.Repeat("[", deep) + strings.Repeat("]", deep) + `}`, ErrMalformedEnvelope},
			{id("deep-args"), good("deep-args", `{"id":"x","pad":`+strings.Repeat(`{"a":`, deep)+"1"+strings.Repeat("}", deep)+`}`, ""), ErrMalformedEnvelope},
			{id("dup-key"), `{"v":1,"task_id":"` + id("dup-key") + `","task_id":"other"}`, ErrMalformedEnvelope},
			{id("case-key"), strings.Replace(good("case-key", `{"id":"x"}`, ""), `"resolver_id"`, `"Resolver_ID"`, 1), ErrMalformedEnvelope},
			{id("big-int-args"), good("big-int-args", `{"id":"x","sleep_ms":12345678901234567890}`, ""), ErrInvalidArgs},
			{id("big-int-env"), good("big-int-env", `{"id":"x"}`, `,"timeout_ms":12345678901234567890`), ErrMalformedEnvelope},
			{id("wrong-type"), strings.Replace(good("wrong-type", `{"id":"x"}`, ""), `"max_retries":3`, `"max_retries":"3"`, 1), ErrMalformedEnvelope},
			{id("wrong-type-args"), good("wrong-type-args", `{"id":"x","sleep_ms":"soon"}`, ""), ErrInvalidArgs},
			{id("oversize"), good("oversize", `{"id":"x","pad":"`+strings.Repeat("A", huge)+`"}`, ""), ErrEnvelopeTooLarge},
			{id("bad-utf8"), good("bad-utf8", `{"id":"x`+"\xff\xfe"+`"}`, ""), ErrMalformedEnvelope},
		}
	}
	var all []hostileCase
	var goodIDs []string
	for r := range rounds {
		for i := range goodEach {
			gid := fmt.Sprintf("good-%d-%d", r, i)
			goodIDs = append(goodIDs, gid)
			require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: gid, SleepMS: 2})))
			if i == goodEach/2 {
				for _, c := range cases(r) {
					writeRawTask(t, rdb, q, c.id, c.raw)
					all = append(all, c)
				}
			}
		}
	}
	// An unknown top-level field is not an error: the task runs, and the field survives a retry's rewrite.
	const vendor = `"x_vendor":{"trace":[1,2,3],"note":"kept"}`
	writeRawTask(t, rdb, q, "unknown-field", rawEnvelope("unknown-field", "default", "reference",
		workPayload(`{"id":"unknown-field","first_fail":true,"sleep_ms":1}`), ","+vendor))
	require.Eventually(t, func() bool {
		env, err := rdb.HGet(ctx, q.keys.key(keyTasks), "unknown-field").Result()
		_, serr := rdb.ZScore(ctx, q.keys.key(keyScheduled), "unknown-field").Result()
		return err == nil && serr == nil && strings.Contains(env, `"attempt":1`) && strings.Contains(env, vendor)
	}, 15*time.Second, 5*time.Millisecond, "the retried envelope keeps the unknown field")

	es := waitLedger(t, ledger, 30*time.Second, "every good task done", func(es []ledgerEntry) bool {
		for _, id := range append(goodIDs, "unknown-field") {
			if len(ledgerOf(es, "done", id)) != 1 {
				return false
			}
		}
		return true
	})
	waitStats(t, q, 20*time.Second, Counts{Dead: int64(len(all))})
	peakRSS := rss.finish()
	require.False(t, w.hasExited(), "the worker keeps running; log:\n%s", w.logTail(20))

	for _, id := range goodIDs {
		require.Len(t, ledgerOf(es, "start", id), 1, "%s ran once", id)
	}
	maxReason := 0
	for _, c := range all {
		require.Empty(t, ledgerOf(es, "start", c.id), "%s never ran", c.id)
		dl, err := deadLetterOf(ctx, q, c.id)
		require.NoError(t, err, c.id)
		require.Contains(t, dl.Reason, c.want.Error(), "%s parked with its own error", c.id)
		require.LessOrEqual(t, len(dl.Reason), 1024, "%s: the reason is bounded", c.id)
		maxReason = max(maxReason, len(dl.Reason))
		if strings.HasSuffix(c.id, "-0") {
			t.Logf("REASON %s: %s", c.id, dl.Reason)
		}
		want := c.raw
		if errors.Is(c.want, ErrInvalidArgs) { // decoded, then not resolved: only its status is rewritten
			want = strings.Replace(c.raw, `"status":"ready"`, `"status":"dead"`, 1)
		}
		require.Len(t, dl.Envelope, len(want), "%s: kept as written", c.id)
		// Hashes: a failure must not print a 2 MiB envelope.
		require.Equal(t, sha256.Sum256([]byte(want)), sha256.Sum256([]byte(dl.Envelope)), "%s: kept byte for byte, but a decoded one's status", c.id)
		require.Len(t, w.logsWith("taskqueue: parked a task that cannot run", c.id), 1, "%s: parked once", c.id)
	}
	logs, err := os.ReadFile(w.logPath)
	require.NoError(t, err)
	require.NotContains(t, string(logs), "panic")
	maxLine := 0
	for line := range strings.SplitSeq(string(logs), "\n") {
		maxLine = max(maxLine, len(line))
	}
	require.Less(t, maxLine, 2048, "no log line repeats a hostile envelope")
	growth := peakRSS - baseRSS
	require.Less(t, growth, int64(128<<20), "worker RSS grew by %d MiB", growth>>20)
	chaosResult(t, "hostile=%d good=%d (+1 with an unknown field, retried once, field kept): all hostile parked once with their own error (longest reason %d bytes), good ran once, worker RSS %d MiB -> peak %d MiB (+%d MiB) with %d-deep nesting and %d MiB envelopes, longest log line %d bytes",
		len(all), len(goodIDs), maxReason, baseRSS>>20, peakRSS>>20, growth>>20, deep, huge>>20, maxLine)
	figure(t, "14", "tasks", len(all)+len(goodIDs)+1, "hostile", len(all), "parked", len(all), "lost", 0, "dup", 0,
		"rss_base_mib", baseRSS>>20, "rss_peak_mib", peakRSS>>20, "longest_reason_bytes", maxReason, "longest_log_line_bytes", maxLine)
}

// chaosHostileReferences (scenario 15): unknown and path-like resolver ids, strategies, modules and names, some
// 100 KB long. Each is refused at pickup and parked after its one delivery, never retried; the reasons and the
// log lines stay short whatever the input's length.
func chaosHostileReferences(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-refs"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	w := startChaosWorker(t, bin, chaosWorkerOpts{Name: "refs", Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: time.Second})

	long := func(c byte) string { return strings.Repeat(string(c), 100_000) }
	ref := func(module, name string) string {
		return fmt.Sprintf(`{"module":%q,"name":%q,"args":{"id":"x"}}`, module, name)
	}
	okRef := ref("chaos", "work")
	cases := []hostileCase{
		{"resolver-unknown", rawEnvelope("resolver-unknown", "nope", "reference", okRef, ""), ErrUnknownResolver},
		{"resolver-dotdot", rawEnvelope("resolver-dotdot", "../x", "reference", okRef, ""), ErrUnknownResolver},
		{"resolver-go", rawEnvelope("resolver-go", "os/exec.Command", "reference", okRef, ""), ErrUnknownResolver},
		{"resolver-long", rawEnvelope("resolver-long", long('r'), "reference", okRef, ""), ErrUnknownResolver},
		{"strategy-pickle", rawEnvelope("strategy-pickle", "default", "pickle", `{"data":"gASVAAAA"}`, ""), ErrUnsafeStrategy},
		{"strategy-yaml", rawEnvelope("strategy-yaml", "default", "yaml", okRef, ""), ErrUnknownStrategy},
		{"strategy-go", rawEnvelope("strategy-go", "default", "os/exec.Command", okRef, ""), ErrUnknownStrategy},
		{"strategy-long", rawEnvelope("strategy-long", "default", long('s'), okRef, ""), ErrUnknownStrategy},
		{"module-go", rawEnvelope("module-go", "default", "reference", ref("os/exec", "Command"), ""), ErrUnknownTask},
		{"module-dotted", rawEnvelope("module-dotted", "default", "reference", ref("os/exec.Command", "Run"), ""), ErrUnknownTask},
		{"module-dotdot", rawEnvelope("module-dotdot", "default", "reference", ref("../x", "work"), ""), ErrUnknownTask},
		{"module-pickle", rawEnvelope("module-pickle", "default", "reference", ref("pickle", "loads"), ""), ErrUnknownTask},
		{"module-long", rawEnvelope("module-long", "default", "reference", ref(long('m'), "work"), ""), ErrUnknownTask},
		{"name-dotdot", rawEnvelope("name-dotdot", "default", "reference", ref("chaos", "../work"), ""), ErrUnknownTask},
		{"name-long", rawEnvelope("name-long", "default", "reference", ref("chaos", long('n')), ""), ErrUnknownTask},
	}
	inputBytes := 0
	for i, c := range cases {
		writeRawTask(t, rdb, q, c.id, c.raw)
		inputBytes += len(c.raw)
		gid := fmt.Sprintf("good-%d", i)
		require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: gid, SleepMS: 1})))
	}
	waitStats(t, q, 20*time.Second, Counts{Dead: int64(len(cases))})
	// Parked for good: no retry, no second delivery, for several leases and reaps.
	require.Never(t, func() bool {
		st, err := countsOf(ctx, q)
		return err != nil || st != (Counts{Dead: int64(len(cases))})
	}, 3*time.Second, 50*time.Millisecond, "a parked reference is never retried")
	n, err := rdb.HLen(ctx, q.keys.key(keyDeliveries)).Result()
	require.NoError(t, err)
	require.Zero(t, n, "no task lost a lease")

	es := readLedger(t, ledger)
	maxReason := 0
	for i, c := range cases {
		require.Len(t, ledgerOf(es, "done", fmt.Sprintf("good-%d", i)), 1)
		require.Empty(t, ledgerOf(es, "start", c.id))
		dl, err := deadLetterOf(ctx, q, c.id)
		require.NoError(t, err, c.id)
		require.Contains(t, dl.Reason, c.want.Error(), c.id)
		require.LessOrEqual(t, len(dl.Reason), 512, "%s: the reason does not echo unbounded input: %q", c.id, truncate(dl.Reason, 600))
		maxReason = max(maxReason, len(dl.Reason))
		t.Logf("REASON %s: %s", c.id, dl.Reason)
		require.Len(t, w.logsWith("taskqueue: parked a task that cannot run", c.id), 1, "%s: delivered and parked once", c.id)
	}
	logs, err := os.ReadFile(w.logPath)
	require.NoError(t, err)
	maxLine := 0
	for line := range strings.SplitSeq(string(logs), "\n") {
		maxLine = max(maxLine, len(line))
	}
	require.Less(t, maxLine, 1024, "no log line echoes unbounded input")
	require.False(t, w.hasExited())
	chaosResult(t, "references=%d (%d bytes in all): each parked after 1 delivery with its own error, none retried in 3s; longest reason %d bytes, longest log line %d bytes, whole log %d bytes",
		len(cases), inputBytes, maxReason, maxLine, len(logs))
	figure(t, "15", "tasks", 2*len(cases), "hostile", len(cases), "parked", len(cases), "deliveries_each", 1, "lost", 0, "dup", 0,
		"longest_reason_bytes", maxReason, "longest_log_line_bytes", maxLine, "input_bytes", inputBytes)
}

// v3Envelope is the seed's envelope with a newer schema version and a field a v2 worker does not know.
const v3Envelope = `{"v": 3, "task_id": "future", "status": "ready", "created_at": 1719300000.0, "strategy": "reference", "resolver_id": "default", "serialized_task": {"strategy": "reference", "payload": {"module": "examples.tasks", "name": "extract_data"}}, "group_id": "etl_batch", "priority_class": {"lane": 7}}`

// chaosSchemaVersions (scenario 16): a worker parks a v3 envelope untouched (and RequeueDead keeps it
// byte-identical), and runs the seed's v0 envelope (no "v").
func chaosSchemaVersions(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	rdb := srv.client(t, nil)
	q, ref := chaosQueue(t, rdb, "chaos-schema", nil)
	ran := make(chan string, 10)
	require.NoError(t, Register(ref, "examples.tasks", "extract_data", func(context.Context, struct{}) error {
		ran <- "extract_data"
		return nil
	}))
	seed, err := os.ReadFile("testdata/seed_v0.json")
	require.NoError(t, err)
	require.NotContains(t, string(seed), `"v"`)
	writeRaw := func(id, raw string) {
		require.NoError(t, rdb.HSet(ctx, q.keys.key(keyTasks), id, raw).Err())
		require.NoError(t, rdb.RPush(ctx, q.keys.key(keyPending), id).Err())
	}
	writeRaw("future", v3Envelope)
	writeRaw("extract_data", string(seed))

	rec := &recorder{}
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Concurrency: 2, BlockTimeout: time.Second, Name: "schema"}, rec))
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, w.Stop(sctx))
		}
	}
	t.Cleanup(stop)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the v0 envelope did not run")
	}
	waitStats(t, q, 10*time.Second, Counts{Dead: 1})
	stop()

	dl, err := deadLetterOf(ctx, q, "future")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, ErrUnsupportedVersion.Error())
	require.Equal(t, v3Envelope, dl.Envelope, "parked byte for byte")
	stored, err := rdb.HGet(ctx, q.keys.key(keyTasks), "future").Result()
	require.NoError(t, err)
	require.Equal(t, v3Envelope, stored)

	n, err := mustAdmin(q).RequeueDead(ctx, "future")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, Counts{Pending: 1}, chaosStats(t, q))
	stored, err = rdb.HGet(ctx, q.keys.key(keyTasks), "future").Result()
	require.NoError(t, err)
	requeueIdentical := stored == v3Envelope
	if !requeueIdentical {
		t.Skipf("BUG: RequeueDead rewrote a v3 envelope it cannot read:\nbefore %s\nafter  %s", v3Envelope, stored)
	}

	// A second v2 worker parks it again, still untouched: a v3 task survives any number of round trips.
	w2 := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 1, BlockTimeout: time.Second, Name: "schema2"}, rec))
	_ = w2
	waitStats(t, q, 10*time.Second, Counts{Dead: 1})
	dl, err = deadLetterOf(ctx, q, "future")
	require.NoError(t, err)
	require.Equal(t, v3Envelope, dl.Envelope)
	chaosResult(t, "v3 envelope (%d bytes, with an unknown field) parked with %q, byte-identical after parking, after RequeueDead and after a second parking; v0 seed envelope run once",
		len(v3Envelope), dl.Reason)
}
