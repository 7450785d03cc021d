// Quickstart: a producer and a worker in one process.
//
// It registers two reference functions with typed arguments, enqueues four tasks (one delayed, one that fails
// once and is retried), runs a worker until all of them have run, and stops the worker gracefully. Without
// REDIS_URL it runs on an embedded miniredis, so it needs nothing installed:
//
//	go run ./examples/quickstart
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// Arguments of the registered functions. They travel as JSON in the task's payload and arrive typed.
type (
	HelloArgs struct {
		Name string `json:"name"`
	}
	AddArgs struct {
		A int `json:"a"`
		B int `json:"b"`
	}
	UploadArgs struct {
		Report string `json:"report"`
	}
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	rdb, where, closeRedis, err := connect()
	if err != nil {
		return err
	}
	defer closeRedis()
	fmt.Println("taskqueue quickstart on", where)

	// 1. The functions a worker can run, registered under a module and a name. A task names one of them and
	//    carries its arguments: no code ever travels through Redis.
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "greetings", "say_hello", func(_ context.Context, a HelloArgs) error {
		fmt.Printf("  greetings.say_hello: Hello, %s!\n", a.Name)
		return nil
	})
	taskqueue.MustRegister(ref, "math", "add", func(_ context.Context, a AddArgs) error {
		fmt.Printf("  math.add: %d + %d = %d\n", a.A, a.B, a.A+a.B)
		return nil
	})
	var uploads atomic.Int32
	taskqueue.MustRegister(ref, "reports", "upload", func(_ context.Context, a UploadArgs) error {
		if uploads.Add(1) == 1 {
			fmt.Printf("  reports.upload: %s failed: storage temporarily unavailable\n", a.Report)
			return errors.New("storage temporarily unavailable") // returned errors are retried
		}
		fmt.Printf("  reports.upload: %s uploaded\n", a.Report)
		return nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)

	// 2. The queue: a Redis client, a key prefix and the registry. Producers and workers of one queue share the
	//    prefix.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	q, err := taskqueue.NewRedisTaskQueue(rdb, "quickstart", reg, &taskqueue.RedisConfig{Logger: quiet})
	if err != nil {
		return err
	}

	// 3. Enqueue. Task ids make enqueue idempotent; a run id keeps them apart across runs on a real Redis.
	runID := time.Now().Format("150405.000000")
	specs := []*taskqueue.TaskSpec{
		taskqueue.NewTaskSpec("hello-ada-"+runID, taskqueue.Ref("greetings", "say_hello", HelloArgs{Name: "Ada"})),
		taskqueue.NewTaskSpec("add-"+runID, taskqueue.Ref("math", "add", AddArgs{A: 2, B: 3})),
		taskqueue.NewTaskSpec("upload-"+runID, taskqueue.Ref("reports", "upload", UploadArgs{Report: "weekly.pdf"})),
		{TaskID: "hello-grace-" + runID, Executable: taskqueue.Ref("greetings", "say_hello", HelloArgs{Name: "Grace"}), ProcessIn: 200 * time.Millisecond},
	}
	if err := q.EnqueueBatch(ctx, specs); err != nil {
		return err
	}
	fmt.Printf("enqueued %d tasks (hello-grace is delayed by 200ms)\n", len(specs))
	if err := printStats(ctx, q, "before the worker starts"); err != nil {
		return err
	}

	// 4. The worker. Concurrency 1 runs one task at a time, which keeps this output in a fixed order: the three
	//    ready tasks in enqueue order, then the delayed one (due after 200ms), then the retry (due 500ms after
	//    its failure). Real workers run many tasks at once.
	remaining := sync.WaitGroup{}
	remaining.Add(len(specs))
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{
		Concurrency: 1,
		Name:        "quickstart",
		Backoff:     func(int, error) time.Duration { return 500 * time.Millisecond },
		Logger:      quiet,
		OnEvent: func(e taskqueue.Event) {
			switch e.Kind {
			case taskqueue.EventSucceeded:
				remaining.Done()
			case taskqueue.EventRetried:
				fmt.Printf("  (attempt %d failed; retrying in %s)\n", e.Attempt+1, e.Delay)
			case taskqueue.EventDead:
				fmt.Printf("  (task dead-lettered: %v)\n", e.Err)
				remaining.Done()
			}
		},
	})
	if err != nil {
		return err
	}
	fmt.Println("worker started; tasks run:")
	if err := w.Start(ctx); err != nil {
		return err
	}

	// 5. Wait until every task has run (with a deadline), then stop gracefully: Stop waits for running tasks
	//    and flushes their acks before it returns.
	allRan := make(chan struct{})
	go func() { remaining.Wait(); close(allRan) }()
	var waitErr error
	select {
	case <-allRan:
	case <-time.After(10 * time.Second):
		waitErr = errors.New("timed out waiting for the tasks")
	}
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil {
		return err
	}
	if waitErr != nil {
		return waitErr
	}
	fmt.Println("all tasks ran; worker stopped")
	return printStats(ctx, q, "after the worker stopped")
}

// connect returns a client for REDIS_URL, or for an embedded miniredis when REDIS_URL is unset.
func connect() (rdb *redis.Client, where string, closeFn func(), err error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, "", nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opts)
		return rdb, "the Redis at $REDIS_URL", func() { _ = rdb.Close() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, "", nil, err
	}
	rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, "an embedded miniredis (set REDIS_URL to use your Redis)", func() { _ = rdb.Close(); mr.Close() }, nil
}

func printStats(ctx context.Context, q *taskqueue.RedisTaskQueue, when string) error {
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		return err
	}
	st, err := admin.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("stats %s: pending=%d active=%d scheduled=%d dead=%d\n", when, st.Pending, st.Active, st.Scheduled, st.Dead)
	return nil
}
