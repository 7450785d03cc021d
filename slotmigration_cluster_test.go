//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestClusterSlotMigration moves a queue's slot to another primary and back, live, with the documented protocol
// (migrateSlot), while a producer and three workers use the queue. Nothing acknowledged may be lost, no producer
// call may fail (enqueue retries what a moving slot answers: TRYAGAIN, ASK, MOVED), no task may run twice when
// the moves are shorter than what is left of a lease when they start, and no raw redirection error may reach the
// worker's logs. It logs what each move cost: keys, duration, and for each script the calls refused and the longest
// time without a successful call (docs/scaling.md).
func TestClusterSlotMigration(t *testing.T) {
	c := startCluster(t, 3, 0)
	cc := c.client(nil)
	ctx := context.Background()

	const lease = 5 * time.Second
	const heartbeat = time.Second
	reg, ref, rec := clRegistry(t)
	// The tasks of the backlog keep a result, as the operator's did: the slot then holds a key per task, and the
	// move grows with them. The producer's tasks run for 20 ms, so that some are running when a move starts, and
	// one in four keeps a result (an ack that stores a result is refused for the whole move: its key does not
	// exist yet, see docs/scaling.md).
	require.NoError(t, Register(ref, "mig", "run", func(ctx context.Context, a migArgs) error {
		rec.mu.Lock()
		rec.runs[a.ID]++
		rec.mu.Unlock()
		time.Sleep(time.Duration(a.SleepMS) * time.Millisecond)
		if a.Result {
			return SetResult(ctx, a.ID)
		}
		return nil
	}))
	migTask := func(id string, result bool, sleepMS int) *TaskSpec {
		return NewTaskSpec(id, Ref("mig", "run", migArgs{ID: id, Result: result, SleepMS: sleepMS}))
	}
	q, err := NewRedisTaskQueue(cc, "mig", reg, quiet(&RedisConfig{Lease: lease}))
	require.NoError(t, err)
	spy := newScriptSpy(q)
	cc.AddHook(spy)
	slot, err := cc.ClusterKeySlot(ctx, q.keys.key(keyTasks)).Result()
	require.NoError(t, err)
	home := c.primaryFor(t, cc, q.keys.key(keyTasks))
	away := c.primaries[0]
	if away == home {
		away = c.primaries[1]
	}

	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var workers []*TaskWorker
	for i := range 3 {
		w, err := NewTaskWorker(q, &WorkerConfig{Concurrency: 8, BlockTimeout: time.Second, Heartbeat: heartbeat,
			Logger: logger, Name: fmt.Sprintf("mig-%d", i), Backoff: func(int, error) time.Duration { return 50 * time.Millisecond }})
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		workers = append(workers, w)
	}
	stopWorkers := sync.OnceFunc(func() {
		for _, w := range workers {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = w.Stop(sctx)
			cancel()
		}
	})
	t.Cleanup(stopWorkers)

	// One producer: one Enqueue per millisecond at most, each within a context of 10 s, up to 20000 tasks.
	var (
		pmu      sync.Mutex
		acked    []string
		failures []string
		slowest  time.Duration
	)
	stop := make(chan struct{})
	stopProducer := sync.OnceFunc(func() { close(stop) })
	var producing sync.WaitGroup
	producing.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := range 20000 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("m%d", i)
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			sent := time.Now()
			err := q.Enqueue(pctx, migTask(id, i%4 == 0, 20))
			took := time.Since(sent)
			cancel()
			pmu.Lock()
			slowest = max(slowest, took)
			if err != nil {
				failures = append(failures, err.Error())
			} else {
				acked = append(acked, id)
			}
			pmu.Unlock()
		}
	})
	t.Cleanup(func() { stopProducer(); producing.Wait() })
	processed := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.runs)
	}
	waitMore := func(n int, what string) {
		base := processed()
		waitFor(t, 20*time.Second, what, func() bool { return processed() >= base+n })
	}

	// A backlog first, so that the slot holds a few thousand keys (results) when it moves.
	for i := range 50 {
		var specs []*TaskSpec
		for j := range 200 {
			specs = append(specs, migTask(fmt.Sprintf("b%d-%d", i, j), true, 0))
		}
		require.NoError(t, q.EnqueueBatch(ctx, specs))
		pmu.Lock()
		for _, s := range specs {
			acked = append(acked, s.TaskID)
		}
		pmu.Unlock()
	}
	waitFor(t, 30*time.Second, "the backlog of 10000 tasks to run", func() bool { return processed() >= 10000 })
	waitMore(200, "200 tasks of the producer to run before the first move")
	there := c.migrateSlot(t, int(slot), home, away, 10)
	waitMore(500, "500 tasks to run after the first move")
	back := c.migrateSlot(t, int(slot), away, home, 10)
	waitMore(500, "500 tasks to run after the move back")
	stopProducer()
	producing.Wait()

	pmu.Lock()
	ids, failed, slow := slices.Clone(acked), slices.Clone(failures), slowest
	pmu.Unlock()
	waitFor(t, 30*time.Second, "every acknowledged task to run", func() bool {
		done, _ := rec.count(ids...)
		return done == len(ids)
	})
	stopWorkers()
	_, dups := rec.count(ids...)

	for i, m := range []slotMove{there, back} {
		t.Logf("move %d: %d keys in %d MIGRATE calls, %s; refused script calls: %s", i+1, m.keys, m.batches,
			m.took.Round(time.Millisecond), spy.report(m.start, m.start.Add(m.took)))
	}
	t.Logf("%d tasks acknowledged, %d enqueues failed, slowest enqueue %s, %d tasks ran twice",
		len(ids), len(failed), slow.Round(time.Millisecond), dups)

	require.Empty(t, failed, "no producer call fails while the slot moves")
	if max(there.took, back.took) < lease-heartbeat {
		require.Zero(t, dups, "no task runs twice when the moves are shorter than what is left of a lease")
	} else {
		t.Logf("a move took longer than a lease less a heartbeat (%s): duplicates allowed", lease-heartbeat)
	}
	raw := regexp.MustCompile(`\b(ASK|MOVED) \d+ [\d.]+:\d+|TRYAGAIN \w|CLUSTERDOWN \w`)
	var shown []string // what an operator sees at the default level; the reply stays available at debug level
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "level=DEBUG") {
			shown = append(shown, line)
		}
	}
	require.Empty(t, raw.FindAllString(strings.Join(shown, "\n"), 5), "no raw redirection error in the worker logs above debug level:\n%s", truncate(logs.String(), 4000))
}

// migArgs are the arguments of the task of TestClusterSlotMigration.
type migArgs struct {
	ID      string `json:"id"`
	Result  bool   `json:"result"`
	SleepMS int    `json:"sleep_ms"`
}

// scriptSpy is a go-redis hook that records, for each of the queue's scripts, when a call succeeded or failed, as
// the caller sees it (after go-redis's own redirects and retries).
type scriptSpy struct {
	names   map[string]string // sha or source -> script name
	ackKeys []string          // the KEYS of a plain ack
	mu      sync.Mutex
	calls   []spyCall // bounded
}

type spyCall struct {
	at     time.Time
	script string
	err    string // "" when it succeeded; else the error's first word
}

func newScriptSpy(q *RedisTaskQueue) *scriptSpy {
	s := &scriptSpy{names: map[string]string{}, ackKeys: q.keys.ack}
	for name, sc := range map[string]*redis.Script{"enqueue": enqueueScript, "dequeue": dequeueScript, "ack": ackScript,
		"settle": settleScript, "extend": extendScript, "reap": reapScript} {
		s.names[sc.Hash()] = name
	}
	for name, src := range map[string]string{"enqueue": enqueueSrc, "dequeue": dequeueSrc, "ack": ackSrc,
		"settle": settleSrc, "extend": extendSrc, "reap": reapSrc} {
		s.names[src] = name
	}
	return s
}

func (s *scriptSpy) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *scriptSpy) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		s.record(cmd, err)
		return err
	}
}

func (s *scriptSpy) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			s.record(cmd, cmd.Err())
		}
		return err
	}
}

func (s *scriptSpy) record(cmd redis.Cmder, err error) {
	args := cmd.Args()
	name := cmd.Name()
	if (name == "evalsha" || name == "eval") && len(args) > 1 {
		if n, ok := s.names[fmt.Sprint(args[1])]; ok {
			name = n
			if n == "ack" && fmt.Sprint(args[2]) != fmt.Sprint(len(s.ackKeys)) {
				name = "ack+" // with more keys than the plain four: a result's, a group's or the deliveries hash
			}
		}
	}
	c := spyCall{at: time.Now(), script: name}
	if err != nil && err != redis.Nil {
		c.err, _, _ = strings.Cut(err.Error(), " ")
	}
	if c.err == "NOSCRIPT" {
		return // Script.Run sends EVAL next, which the spy sees
	}
	s.mu.Lock()
	if len(s.calls) < 500000 {
		s.calls = append(s.calls, c)
	}
	s.mu.Unlock()
}

// report tells, for each script called between from and to, how many calls failed and with what, and the longest
// time without a successful call that overlaps [from, to] (the stall of that call).
func (s *scriptSpy) report(from, to time.Time) string {
	s.mu.Lock()
	calls := slices.Clone(s.calls)
	s.mu.Unlock()
	type agg struct {
		ok, failed int
		errs       map[string]int
		lastOK     time.Time
		stall      time.Duration
	}
	by := map[string]*agg{}
	for _, c := range calls {
		a := by[c.script]
		if a == nil {
			a = &agg{errs: map[string]int{}}
			by[c.script] = a
		}
		if c.err != "" {
			if !c.at.Before(from) && !c.at.After(to) {
				a.failed++
				a.errs[c.err]++
			}
			continue
		}
		if !a.lastOK.IsZero() && c.at.After(from) && a.lastOK.Before(to) {
			a.stall = max(a.stall, c.at.Sub(a.lastOK))
		}
		if !c.at.Before(from) && !c.at.After(to) {
			a.ok++
		}
		a.lastOK = c.at
	}
	var parts []string
	for _, name := range []string{"enqueue", "dequeue", "ack", "ack+", "extend", "reap"} {
		a := by[name]
		if a == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d of %d %v, longest stall %s", name, a.failed, a.ok+a.failed, a.errs,
			a.stall.Round(time.Millisecond)))
	}
	return strings.Join(parts, "; ")
}
