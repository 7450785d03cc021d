package taskqueuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/graflow-go/taskqueue"
)

// Queue is a queue in Redis that [RunEnqueued] can run: a *taskqueue.RedisTaskQueue or a *taskqueue.ShardedQueue.
type Queue interface {
	taskqueue.TaskQueue
	taskqueue.AdminTarget
	Result(ctx context.Context, taskID string) (json.RawMessage, error)
}

var (
	_ Queue = (*taskqueue.RedisTaskQueue)(nil)
	_ Queue = (*taskqueue.ShardedQueue)(nil)
)

// RunResult is one run of a task by [RunEnqueued], or a task parked at pickup.
type RunResult struct {
	TaskID       string
	Module, Name string
	// Args are the task's arguments as stored (JSON).
	Args json.RawMessage
	// Err is the handler's error (a *taskqueue.PanicError for a panic), or why the task was parked; nil when it
	// succeeded.
	Err error
	// Result is what the handler handed back with taskqueue.SetResult (or returned, registered with
	// taskqueue.RegisterResult), read from the queue; nil when it stored none, and for group members (their
	// results are in their group's result).
	Result json.RawMessage
	// State is where the run left the task: "" when it succeeded and left the queue, retry (due again after a
	// backoff, which runs once the test advances the clock), or dead.
	State taskqueue.State
	// Parked is true for a task that was dead-lettered at pickup, without running: its envelope could not be
	// decoded or resolved (an unregistered function, arguments that do not decode).
	Parked   bool
	Attempt  int
	Duration time.Duration
}

// DecodeResult decodes the run's result into v.
func (r RunResult) DecodeResult(v any) error {
	if r.Result == nil {
		return fmt.Errorf("taskqueuetest: task %s stored no result", r.TaskID)
	}
	return json.Unmarshal(r.Result, v)
}

// RequireResult asserts that the run succeeded with a result that decodes into R, and returns it; otherwise it
// fails the test with t.Fatalf.
func RequireResult[R any](t testing.TB, r RunResult) R {
	t.Helper()
	var v R
	if r.Err != nil {
		t.Fatalf("taskqueuetest: task %s (%s.%s) failed: %v", r.TaskID, r.Module, r.Name, r.Err)
	}
	if err := r.DecodeResult(&v); err != nil {
		t.Fatalf("taskqueuetest: task %s (%s.%s): %v", r.TaskID, r.Module, r.Name, err)
	}
	return v
}

// RunOption configures [RunEnqueued].
type RunOption func(*runConfig)

type runConfig struct {
	worker  taskqueue.WorkerConfig
	timeout time.Duration
}

// WithWorkerConfig runs the tasks with cfg's Middleware, Timeout, MaxRetries, Backoff, Logger and OnEvent (called
// after the kit's own). Concurrency, BatchSize and Name are the kit's: one task at a time.
func WithWorkerConfig(cfg *taskqueue.WorkerConfig) RunOption {
	return func(c *runConfig) { c.worker = *cfg }
}

// WithRunTimeout bounds one [RunEnqueued] call (default 30s, or the context's deadline); past it the test fails.
func WithRunTimeout(d time.Duration) RunOption { return func(c *runConfig) { c.timeout = d } }

// RunEnqueued runs the tasks that q holds ready, one at a time in pickup order, until none is ready and none is
// running, and returns a [RunResult] per run, in order. Tasks that the handlers enqueue run too, as do tasks whose
// due time has come; tasks delayed into the future (and retries, on the kit's frozen clock) stay until the test
// advances the clock ([Kit.Advance]). A handler's failure is not a test failure: it is in [RunResult.Err], and
// the task is retried or dead-lettered as a worker would.
//
// The tasks run through a [taskqueue.TaskWorker] of one slot, resolved through q's registry, that lives only for
// the call: middleware, taskqueue.SetResult, timeouts, panics and retries behave as in production, and every
// goroutine the worker started has ended when RunEnqueued returns. While it runs, the test's goroutine waits, so
// no handler runs alongside the test; a handler must report failures by returning an error, not with t.Fatal (it
// runs on the worker's goroutine). ctx's values reach the handlers. No other worker may consume q meanwhile.
//
// Errors of the queue itself and a run that does not end in time fail the test with t.Fatalf.
func RunEnqueued(ctx context.Context, t testing.TB, q Queue, opts ...RunOption) []RunResult {
	t.Helper()
	cfg := runConfig{timeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&cfg)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	adm, err := taskqueue.NewAdmin(q)
	if err != nil {
		t.Fatalf("taskqueuetest: %v", err)
	}
	deadBefore, err := deadIDs(ctx, adm)
	if err != nil {
		t.Fatalf("taskqueuetest: list dead letters: %v", err)
	}
	rec := &recorder{}
	wcfg := cfg.worker
	wcfg.Concurrency, wcfg.BatchSize, wcfg.Name = 1, 1, "taskqueuetest-"+randomHex(t)
	if wcfg.Logger == nil {
		wcfg.Logger = Quiet()
	}
	userHook := wcfg.OnEvent
	wcfg.OnEvent = func(e taskqueue.Event) {
		rec.event(e)
		if userHook != nil {
			userHook(e)
		}
	}
	w, err := taskqueue.NewTaskWorker(q, &wcfg)
	if err != nil {
		t.Fatalf("taskqueuetest: worker: %v", err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatalf("taskqueuetest: start the worker: %v", err)
	}
	waitErr := waitIdle(ctx, q, adm, rec)
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	stopErr := w.Stop(stopCtx)
	if waitErr != nil {
		t.Fatalf("taskqueuetest: RunEnqueued: %v; ran so far: %d", waitErr, len(rec.snapshot()))
	}
	if stopErr != nil {
		t.Fatalf("taskqueuetest: stop the worker: %v", stopErr)
	}
	if err := rec.queueErr(); err != nil {
		t.Fatalf("taskqueuetest: queue error while running: %v", err)
	}
	runs := rec.snapshot()
	for i := range runs {
		if runs[i].Err == nil && runs[i].State == "" {
			raw, err := q.Result(ctx, runs[i].TaskID)
			switch {
			case err == nil:
				runs[i].Result = raw
			case !errors.Is(err, taskqueue.ErrNoResult):
				t.Fatalf("taskqueuetest: result of %s: %v", runs[i].TaskID, err)
			}
		}
	}
	parked, err := parkedSince(ctx, adm, deadBefore, runs)
	if err != nil {
		t.Fatalf("taskqueuetest: list dead letters: %v", err)
	}
	return append(runs, parked...)
}

// waitIdle returns once nothing is pending or active and no delayed task is due. The worker's ack follows its
// success event asynchronously, so the queue's counts, not the events, say when it is done. The worker's own
// pickup promotes due delayed tasks too (and leases them in the same script), so an idle reading is trusted only
// when a Reap that promoted nothing is followed by a second idle reading: a task the worker promoted in between
// shows as active, or has run.
func waitIdle(ctx context.Context, q Queue, adm *taskqueue.Admin, rec *recorder) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	idle := func() (bool, taskqueue.Stats, error) {
		st, err := adm.Stats(ctx)
		return err == nil && st.Pending == 0 && st.Active == 0 && !rec.running(), st, err
	}
	for {
		ok, st, err := idle()
		if err != nil {
			return err
		}
		if ok {
			res, err := q.Reap(ctx) // makes due delayed tasks ready
			if err != nil {
				return err
			}
			if res.Promoted == 0 {
				still, _, err := idle()
				if err != nil {
					return err
				}
				if still {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not idle in time (pending %d, active %d, paused %v): %w", st.Pending, st.Active, st.Paused, ctx.Err())
		case <-tick.C:
		}
	}
}

// recorder collects the worker's events into runs.
type recorder struct {
	mu    sync.Mutex
	runs  []RunResult
	open  bool
	qErrs []error
}

func (r *recorder) event(e taskqueue.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case taskqueue.EventStarted:
		run := RunResult{TaskID: e.TaskID, Attempt: e.Attempt}
		if e.Spec != nil && e.Spec.SerializedTask != nil && e.Spec.SerializedTask.Strategy == taskqueue.StrategyReference {
			var p referencePayload
			if json.Unmarshal(e.Spec.SerializedTask.Payload, &p) == nil {
				run.Module, run.Name, run.Args = p.Module, p.Name, p.Args
			}
		}
		r.runs = append(r.runs, run)
		r.open = true
	case taskqueue.EventSucceeded:
		r.settle(e, "")
	case taskqueue.EventRetried:
		r.settle(e, taskqueue.StateRetry)
	case taskqueue.EventDead:
		r.settle(e, taskqueue.StateDead)
	case taskqueue.EventReleased, taskqueue.EventLeaseLost:
		r.settle(e, taskqueue.StatePending)
	case taskqueue.EventQueueError:
		r.qErrs = append(r.qErrs, e.Err)
	}
}

// settle records the outcome of the last run of e's task (the last event wins: a success whose result is too
// large is followed by its death).
func (r *recorder) settle(e taskqueue.Event, st taskqueue.State) {
	for i := len(r.runs) - 1; i >= 0; i-- {
		if r.runs[i].TaskID == e.TaskID {
			r.runs[i].Err, r.runs[i].State = e.Err, st
			if e.Duration > 0 {
				r.runs[i].Duration = e.Duration
			}
			r.open = false
			return
		}
	}
}

func (r *recorder) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open
}

func (r *recorder) snapshot() []RunResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RunResult(nil), r.runs...)
}

func (r *recorder) queueErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.qErrs...)
}

func deadIDs(ctx context.Context, adm *taskqueue.Admin) (map[string]bool, error) {
	infos, err := listAll(ctx, adm, taskqueue.StateDead)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(infos))
	for _, info := range infos {
		ids[info.TaskID] = true
	}
	return ids, nil
}

// parkedSince returns the tasks dead-lettered during the run without running: parked at pickup.
func parkedSince(ctx context.Context, adm *taskqueue.Admin, before map[string]bool, runs []RunResult) ([]RunResult, error) {
	infos, err := listAll(ctx, adm, taskqueue.StateDead)
	if err != nil {
		return nil, err
	}
	ran := map[string]bool{}
	for i := range runs {
		ran[runs[i].TaskID] = true
	}
	var out []RunResult
	for _, info := range infos {
		if before[info.TaskID] || ran[info.TaskID] {
			continue
		}
		e := fromInfo(info)
		out = append(out, RunResult{TaskID: e.TaskID, Module: e.Module, Name: e.Name, Args: e.Args,
			Err: errors.New(info.Reason), State: taskqueue.StateDead, Parked: true, Attempt: e.Attempt})
	}
	return out, nil
}
