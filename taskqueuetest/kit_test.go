package taskqueuetest_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/taskqueuetest"
)

type mailArgs struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	ID      int64  `json:"id"`
}

// backends runs fn on a kit over miniredis and over a real redis-server of the test's own.
func backends(t *testing.T, fn func(t *testing.T, k *taskqueuetest.Kit)) {
	t.Helper()
	for _, name := range []string{"miniredis", "redis"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var opts []taskqueuetest.Option
			if name == "redis" {
				opts = append(opts, taskqueuetest.WithAddr(taskqueuetest.RedisServer(t)))
			}
			fn(t, taskqueuetest.New(t, opts...))
		})
	}
}

func enqueue(t *testing.T, q taskqueue.TaskQueue, spec *taskqueue.TaskSpec) {
	t.Helper()
	if err := q.Enqueue(context.Background(), spec); err != nil {
		t.Fatalf("enqueue %s: %v", spec.TaskID, err)
	}
}

func mail(id string, args mailArgs) *taskqueue.TaskSpec {
	return taskqueue.NewTaskSpec(id, taskqueue.Ref("mail", "send", args))
}

func TestRequireEnqueued(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, k *taskqueuetest.Kit) {
		enqueue(t, k.Queue, mail("m1", mailArgs{To: "a@x", Subject: "hi", ID: 9007199254740993}))
		later := mail("m2", mailArgs{To: "b@x"})
		later.ProcessIn, later.GroupID, later.MaxRetries = time.Hour, "batch", 3
		later.Metadata = map[string]string{"tenant": "t1"}
		enqueue(t, k.Queue, later)

		got := taskqueuetest.RequireEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "a@x", Subject: "hi", ID: 9007199254740993})
		if got.TaskID != "m1" || got.State != taskqueue.StatePending || !got.Due.IsZero() || got.CreatedAt.IsZero() {
			t.Errorf("task %+v", got)
		}
		got = taskqueuetest.RequireEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "b@x"},
			taskqueuetest.WithDelay(time.Hour), taskqueuetest.WithGroup("batch"), taskqueuetest.WithMaxRetries(3),
			taskqueuetest.WithMetadata("tenant", "t1"), taskqueuetest.WithState(taskqueue.StateScheduled),
			taskqueuetest.WithTaskID("m2"))
		if got.State != taskqueue.StateScheduled || got.GroupID != "batch" || got.Due.IsZero() {
			t.Errorf("task %+v", got)
		}
		if k.Clock != nil && !got.Due.Equal(k.Clock.Now().Add(time.Hour)) {
			t.Errorf("due %s, want %s on the frozen clock", got.Due, k.Clock.Now().Add(time.Hour))
		}
		taskqueuetest.RequireEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "B@X"},
			taskqueuetest.WithComparer(func(got, want mailArgs) bool { return strings.EqualFold(got.To, want.To) }))
		taskqueuetest.RequireNotEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "c@x"})
		taskqueuetest.RequireNotEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "b@x"}, taskqueuetest.WithDelay(time.Minute))
		taskqueuetest.RequireNoneEnqueued(t, k.Queue, "mail", "bounce")
		if n := len(taskqueuetest.FindEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "b@x"}, taskqueuetest.WithGroup("other"))); n != 0 {
			t.Errorf("FindEnqueued with another group: %d tasks", n)
		}
	})
}

// A failing assertion reports through t: RequireEnqueued with t.Fatalf (ending the goroutine), listing what the
// queue holds and why each candidate did not match; RequireNotEnqueued and RequireNoneEnqueued with t.Errorf.
func TestFailuresReportThroughT(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, k *taskqueuetest.Kit) {
		enqueue(t, k.Queue, mail("m1", mailArgs{To: "a@x"}))
		enqueue(t, k.Queue, taskqueue.NewTaskSpec("r1", taskqueue.Ref("reports", "build", map[string]int{"year": 2024})))

		f, returned := record(func(tb testing.TB) {
			taskqueuetest.RequireEnqueued(tb, k.Queue, "mail", "send", mailArgs{To: "z@x"})
		})
		msg := f.messages()
		if returned || !f.fatal {
			t.Fatalf("RequireEnqueued did not stop with Fatalf (returned %v): %q", returned, msg)
		}
		for _, want := range []string{"no task mail.send with args {To:z@x", "the queue holds 2:", "m1 mail.send",
			"not a match: args {To:a@x", "r1 reports.build"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q:\n%s", want, msg)
			}
		}

		f, _ = record(func(tb testing.TB) {
			taskqueuetest.RequireEnqueued(tb, k.Queue, "reports", "build", mailArgs{})
		})
		if !strings.Contains(f.messages(), "args do not decode into taskqueuetest_test.mailArgs") {
			t.Errorf("message: %s", f.messages())
		}

		enqueue(t, k.Queue, mail("m2", mailArgs{To: "a@x"}))
		f, _ = record(func(tb testing.TB) {
			taskqueuetest.RequireEnqueued(tb, k.Queue, "mail", "send", mailArgs{To: "a@x"})
		})
		if !f.fatal || !strings.Contains(f.messages(), "2 tasks mail.send with args {To:a@x") {
			t.Errorf("two matches: %s", f.messages())
		}

		f, returned = record(func(tb testing.TB) {
			taskqueuetest.RequireNotEnqueued(tb, k.Queue, "mail", "send", mailArgs{To: "a@x"})
			taskqueuetest.RequireNoneEnqueued(tb, k.Queue, "reports", "build")
		})
		if !returned || f.fatal || len(f.errs) != 2 || !strings.Contains(f.messages(), "found 2") {
			t.Errorf("RequireNotEnqueued/RequireNoneEnqueued: returned %v, %q", returned, f.messages())
		}
	})
}

// The listing of a failure is bounded.
func TestFailureListingIsBounded(t *testing.T) {
	t.Parallel()
	k := taskqueuetest.New(t)
	specs := make([]*taskqueue.TaskSpec, 50)
	for i := range specs {
		specs[i] = taskqueue.NewTaskSpec("", taskqueue.Ref("mail", "send", mailArgs{To: strings.Repeat("x", 1000)}))
	}
	if err := k.Queue.EnqueueBatch(context.Background(), specs); err != nil {
		t.Fatal(err)
	}
	f, _ := record(func(tb testing.TB) { taskqueuetest.RequireEnqueued(tb, k.Queue, "mail", "send", mailArgs{}) })
	if msg := f.messages(); !strings.Contains(msg, "… and 30 more") || len(msg) > 20*1200 {
		t.Errorf("message of %d bytes: %.500s", len(msg), msg)
	}
}

func TestEnqueued(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, k *taskqueuetest.Kit) {
		if got := taskqueuetest.Enqueued(t, k.Queue); len(got) != 0 {
			t.Fatalf("empty queue: %v", got)
		}
		enqueue(t, k.Queue, mail("m1", mailArgs{To: "a@x"}))
		later := mail("m2", mailArgs{To: "b@x"})
		later.ProcessIn = time.Minute
		enqueue(t, k.Queue, later)
		enqueue(t, k.Queue, taskqueue.NewTaskSpec("n1", taskqueue.Ref("mail", "unregistered", nil)))
		registerOther(k)                                            // a worker refuses a registry that resolves nothing
		taskqueuetest.RunEnqueued(context.Background(), t, k.Queue) // parks n1, fails m1 (not registered either)

		got := taskqueuetest.Enqueued(t, k.Queue)
		states := map[string]taskqueue.State{}
		for _, e := range got {
			states[e.TaskID] = e.State
		}
		if states["m2"] != taskqueue.StateScheduled || states["n1"] != taskqueue.StateDead || states["m1"] != taskqueue.StateDead {
			t.Fatalf("states %v in %v", states, got)
		}
		var args mailArgs
		if err := got[0].DecodeArgs(&args); err != nil || args.To != "b@x" {
			t.Errorf("first listed %v: %+v, %v", got[0], args, err)
		}
		if got[1].Reason == "" || got[1].Module != "mail" {
			t.Errorf("dead letter %+v", got[1])
		}
	})
}

type sumArgs struct{ A, B int }

func TestRunEnqueued(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, k *taskqueuetest.Kit) {
		taskqueue.MustRegisterResult(k.Resolver, "calc", "sum", func(ctx context.Context, a sumArgs) (int, error) {
			if a.A < 0 {
				return 0, errors.New("negative")
			}
			if a.A == 0 {
				panic("zero")
			}
			if a.B == 100 { // a chain: the handler enqueues a follow-up task
				spec := taskqueue.NewTaskSpec("chained", taskqueue.Ref("calc", "sum", sumArgs{A: 1, B: 1}))
				if err := k.Queue.Enqueue(ctx, spec); err != nil {
					return 0, err
				}
			}
			return a.A + a.B, nil
		})
		type key struct{}
		taskqueue.MustRegister(k.Resolver, "calc", "ctx", func(ctx context.Context, _ struct{}) error {
			if ctx.Value(key{}) != "v" {
				return errors.New("context value lost")
			}
			return nil
		})
		for id, a := range map[string]sumArgs{"ok": {A: 2, B: 3}, "neg": {A: -1}, "panic": {A: 0}, "chain": {A: 1, B: 100}} {
			enqueue(t, k.Queue, taskqueue.NewTaskSpec(id, taskqueue.Ref("calc", "sum", a)))
		}
		enqueue(t, k.Queue, taskqueue.NewTaskSpec("ctx", taskqueue.Ref("calc", "ctx", nil)))
		noRetry := taskqueue.NewTaskSpec("once", taskqueue.Ref("calc", "sum", sumArgs{A: -5}))
		noRetry.MaxRetries = -1
		enqueue(t, k.Queue, noRetry)
		enqueue(t, k.Queue, taskqueue.NewTaskSpec("bad", taskqueue.Ref("calc", "sum", map[string]string{"C": "x"})))

		runs := taskqueuetest.RunEnqueued(context.WithValue(context.Background(), key{}, "v"), t, k.Queue)
		byID := map[string]taskqueuetest.RunResult{}
		for _, r := range runs {
			byID[r.TaskID] = r
		}
		if len(runs) != 8 {
			t.Fatalf("%d runs: %+v", len(runs), runs)
		}
		if got := taskqueuetest.RequireResult[int](t, byID["ok"]); got != 5 || byID["ok"].Module != "calc" || string(byID["ok"].Args) != `{"A":2,"B":3}` {
			t.Errorf("ok: %d, %+v", got, byID["ok"])
		}
		if got := taskqueuetest.RequireResult[int](t, byID["chained"]); got != 2 {
			t.Errorf("chained: %d", got)
		}
		if r := byID["neg"]; r.Err == nil || r.Err.Error() != "negative" || r.State != taskqueue.StateRetry || r.Result != nil {
			t.Errorf("neg: %+v", r)
		}
		var pe *taskqueue.PanicError
		if r := byID["panic"]; !errors.As(r.Err, &pe) || r.State != taskqueue.StateRetry {
			t.Errorf("panic: %+v", r)
		}
		if r := byID["once"]; r.State != taskqueue.StateDead || r.Parked {
			t.Errorf("once: %+v", r)
		}
		if r := byID["bad"]; !r.Parked || r.State != taskqueue.StateDead || !strings.Contains(r.Err.Error(), "invalid") {
			t.Errorf("bad: %+v", r)
		}
		if r := byID["ctx"]; r.Err != nil {
			t.Errorf("ctx: %v", r.Err)
		}
		// The failed tasks wait for their retry; nothing else is left.
		taskqueuetest.RequireEnqueued(t, k.Queue, "calc", "sum", sumArgs{A: -1}, taskqueuetest.WithState(taskqueue.StateRetry))
		if runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue); len(runs) != 0 {
			t.Errorf("second run: %+v", runs)
		}
	})
}

// The miniredis clock: FastForward does not make a delayed task due (the scripts read TIME), Advance does.
func TestAdvanceRunsDelayedTasks(t *testing.T) {
	t.Parallel()
	k := taskqueuetest.New(t)
	var mu sync.Mutex
	ran := 0
	taskqueue.MustRegister(k.Resolver, "mail", "send", func(context.Context, mailArgs) error {
		mu.Lock()
		defer mu.Unlock()
		ran++
		return nil
	})
	spec := mail("later", mailArgs{To: "a@x"})
	spec.ProcessIn = time.Hour
	enqueue(t, k.Queue, spec)

	k.Miniredis.FastForward(2 * time.Hour)
	if runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue); len(runs) != 0 {
		t.Fatalf("ran after FastForward: %+v", runs)
	}
	k.Advance(t, 59*time.Minute)
	if runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue); len(runs) != 0 {
		t.Fatalf("ran a minute early: %+v", runs)
	}
	k.Advance(t, time.Minute)
	runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue)
	if len(runs) != 1 || runs[0].TaskID != "later" || runs[0].Err != nil || ran != 1 {
		t.Fatalf("after Advance: %+v (ran %d)", runs, ran)
	}
}

// A retry falls due once the test advances the clock by its backoff.
func TestRetryAfterAdvance(t *testing.T) {
	t.Parallel()
	k := taskqueuetest.New(t)
	fail := true
	taskqueue.MustRegister(k.Resolver, "mail", "send", func(context.Context, mailArgs) error {
		if fail {
			fail = false
			return errors.New("smtp down")
		}
		return nil
	})
	enqueue(t, k.Queue, mail("m1", mailArgs{To: "a@x"}))
	backoff := &taskqueue.WorkerConfig{Backoff: func(int, error) time.Duration { return time.Minute }}
	runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue, taskqueuetest.WithWorkerConfig(backoff))
	if len(runs) != 1 || runs[0].State != taskqueue.StateRetry {
		t.Fatalf("first run: %+v", runs)
	}
	task := taskqueuetest.RequireEnqueued(t, k.Queue, "mail", "send", mailArgs{To: "a@x"}, taskqueuetest.WithDelay(time.Minute))
	if task.Attempt != 1 || task.LastError != "smtp down" {
		t.Errorf("retry %+v", task)
	}
	k.Advance(t, time.Minute)
	runs = taskqueuetest.RunEnqueued(context.Background(), t, k.Queue)
	if len(runs) != 1 || runs[0].Err != nil || runs[0].Attempt != 1 {
		t.Fatalf("second run: %+v", runs)
	}
}

// On a real Redis the clock cannot be moved: Advance says so through t.
func TestAdvanceOnRealRedis(t *testing.T) {
	t.Parallel()
	k := taskqueuetest.New(t, taskqueuetest.WithAddr(taskqueuetest.RedisServer(t)))
	if k.Clock != nil || k.Miniredis != nil {
		t.Fatal("a real-Redis kit has a miniredis clock")
	}
	f, returned := record(func(tb testing.TB) { k.Advance(tb, time.Second) })
	if returned || !strings.Contains(f.messages(), "a real Redis's clock cannot be moved") {
		t.Errorf("returned %v: %s", returned, f.messages())
	}
}

// recordingHandler counts the records that reach it.
type recordingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(context.Context, slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// The queue and the worker log nothing to the default logger; WithLogger shows their logs. Not parallel: it sets
// the default logger.
func TestQuietByDefault(t *testing.T) {
	def := &recordingHandler{}
	old := slog.Default()
	slog.SetDefault(slog.New(def))
	t.Cleanup(func() { slog.SetDefault(old) })

	k := taskqueuetest.New(t)
	enqueue(t, k.Queue, taskqueue.NewTaskSpec("n1", taskqueue.Ref("mail", "unregistered", nil))) // parked: a warning
	registerOther(k)
	taskqueuetest.RunEnqueued(context.Background(), t, k.Queue)
	if def.n != 0 {
		t.Errorf("%d records reached the default logger", def.n)
	}

	mine := &recordingHandler{}
	k = taskqueuetest.New(t, taskqueuetest.WithLogger(slog.New(mine)))
	enqueue(t, k.Queue, taskqueue.NewTaskSpec("n1", taskqueue.Ref("mail", "unregistered", nil)))
	registerOther(k)
	taskqueuetest.RunEnqueued(context.Background(), t, k.Queue)
	if mine.n == 0 || def.n != 0 {
		t.Errorf("WithLogger: %d records, default %d", mine.n, def.n)
	}
}

// WithRegistry, WithPrefix and WithConfig build the queue of the code under test.
func TestWithRegistry(t *testing.T) {
	t.Parallel()
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegisterResult(ref, "calc", "double", func(_ context.Context, n int) (int, error) { return 2 * n, nil })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	k := taskqueuetest.New(t, taskqueuetest.WithRegistry(reg), taskqueuetest.WithPrefix("billing"),
		taskqueuetest.WithConfig(&taskqueue.RedisConfig{ResultTTL: time.Minute}))
	if k.Resolver != ref || k.Queue.KeyPrefix() != "billing" {
		t.Fatalf("resolver %p, prefix %q", k.Resolver, k.Queue.KeyPrefix())
	}
	enqueue(t, k.Queue, taskqueue.NewTaskSpec("d1", taskqueue.Ref("calc", "double", 21)))
	runs := taskqueuetest.RunEnqueued(context.Background(), t, k.Queue)
	if len(runs) != 1 || taskqueuetest.RequireResult[int](t, runs[0]) != 42 {
		t.Fatalf("runs %+v", runs)
	}
}

// The helpers take the test's own queues too: here a sharded queue on the kit's Redis.
func TestShardedQueue(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, k *taskqueuetest.Kit) {
		taskqueue.MustRegisterResult(k.Resolver, "calc", "sum", func(_ context.Context, a sumArgs) (int, error) { return a.A + a.B, nil })
		q, err := taskqueue.NewShardedQueue(k.Client, "sharded", 4, k.Registry, &taskqueue.RedisConfig{Logger: taskqueuetest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			enqueue(t, q, taskqueue.NewTaskSpec("", taskqueue.Ref("calc", "sum", sumArgs{A: i, B: 1})))
		}
		taskqueuetest.RequireEnqueued(t, q, "calc", "sum", sumArgs{A: 5, B: 1})
		runs := taskqueuetest.RunEnqueued(context.Background(), t, q)
		total := 0
		for i := range runs {
			total += taskqueuetest.RequireResult[int](t, runs[i])
		}
		if len(runs) != 8 || total != 36 || len(taskqueuetest.Enqueued(t, q)) != 0 {
			t.Fatalf("%d runs, total %d", len(runs), total)
		}
	})
}

// registerOther registers a function that the test's tasks do not name: a worker refuses to start on a registry
// that resolves nothing (ErrNoResolvers), and these tests want their unregistered tasks parked.
func registerOther(k *taskqueuetest.Kit) {
	taskqueue.MustRegister(k.Resolver, "test", "other", func(context.Context, struct{}) error { return nil })
}
