// Periodic: schedules stored in Redis, fired by two schedulers, each tick exactly once.
//
// It creates two schedules (a heartbeat every second and a nightly report at 02:30 Berlin time), runs two
// schedulers (as two worker processes would) and a worker until three heartbeats have run, triggers the nightly
// report by hand, lists the schedules with their last and next runs, and pauses the heartbeat. Without REDIS_URL
// it runs on an embedded miniredis, so it needs nothing installed:
//
//	go run ./examples/periodic
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/periodic
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// ReportArgs are the arguments of reports.nightly.
type ReportArgs struct {
	Format string `json:"format"`
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "periodic:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	rdb, where, closeRedis, err := connect()
	if err != nil {
		return err
	}
	defer closeRedis()
	fmt.Println("taskqueue periodic example on", where)

	heartbeats := make(chan string, 16)
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "ops", "heartbeat", func(_ context.Context, _ struct{}) error {
		heartbeats <- "beat"
		return nil
	})
	reports := make(chan string, 1)
	taskqueue.MustRegister(ref, "reports", "nightly", func(_ context.Context, a ReportArgs) error {
		reports <- a.Format
		return nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	prefix := "periodic-" + time.Now().Format("150405.000000") // a queue of its own on a shared Redis
	q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, reg, &taskqueue.RedisConfig{Logger: quiet})
	if err != nil {
		return err
	}

	// 1. Schedules live in Redis: create them once, from any process (or with `taskqueue schedule create`).
	schedules, err := taskqueue.NewSchedules(q)
	if err != nil {
		return err
	}
	if err := schedules.Create(ctx, &taskqueue.Schedule{Name: "heartbeat", Every: time.Second,
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("ops", "heartbeat", nil)}}); err != nil {
		return err
	}
	if err := schedules.Create(ctx, &taskqueue.Schedule{Name: "nightly-report", Cron: "30 2 * * *", TimeZone: "Europe/Berlin",
		Misfire: taskqueue.MisfireCatchUp, MaxCatchUp: 3,
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("reports", "nightly", ReportArgs{Format: "pdf"}), MaxRetries: 5}}); err != nil {
		return err
	}
	// Bad input is refused with an error naming the field, and nothing is stored.
	err = schedules.Create(ctx, &taskqueue.Schedule{Name: "too-fast", Every: 100 * time.Millisecond,
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("ops", "heartbeat", nil)}})
	var se *taskqueue.ScheduleError
	if errors.As(err, &se) && errors.Is(err, taskqueue.ErrInvalidSchedule) {
		fmt.Printf("refused %q: field %s\n", se.Schedule, se.Field)
	}

	// 2. Two schedulers, as two worker processes run them (worker binaries run one by default), and a worker.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	fired := map[taskqueue.EnqueueOutcome]int{}
	var mu sync.Mutex
	for range 2 {
		s, err := taskqueue.NewScheduler(q, &taskqueue.SchedulerConfig{Logger: quiet, OnEvent: func(e taskqueue.ScheduleEvent) {
			if e.Kind == taskqueue.ScheduleFired {
				mu.Lock()
				fired[e.Outcome]++
				mu.Unlock()
			}
		}})
		if err != nil {
			stop()
			return err
		}
		wg.Go(func() { _ = s.Run(sctx) })
	}
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Concurrency: 2, Logger: quiet})
	if err != nil {
		stop()
		return err
	}
	if err := w.Start(ctx); err != nil {
		stop()
		return err
	}
	for i := 1; i <= 3; i++ {
		<-heartbeats
		fmt.Printf("heartbeat %d ran\n", i)
	}

	// 3. Trigger a run now, beside the schedule's ticks.
	id, err := schedules.Trigger(ctx, "nightly-report")
	if err != nil {
		stop()
		return err
	}
	fmt.Printf("triggered %s: report format %s\n", id, <-reports)

	// 4. Pause the heartbeat; stop the schedulers and the worker.
	if _, err := schedules.Pause(ctx, "heartbeat"); err != nil {
		stop()
		return err
	}
	stop()
	wg.Wait()
	if err := w.Stop(ctx); err != nil {
		return err
	}

	// 5. The schedules with their last and next runs (as `taskqueue schedules` shows them).
	list, err := schedules.List(ctx)
	if err != nil {
		return err
	}
	for i := range list {
		s := &list[i]
		next := "paused"
		if !s.Paused {
			next = "next " + s.Next.In(time.UTC).Format(time.RFC3339)
		}
		fmt.Printf("schedule %-15s last task %-45s %s\n", s.Schedule.Name, s.LastTaskID, next)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("ticks stored by one scheduler: %d; found already there by the other: %d\n",
		fired[taskqueue.Stored], fired[taskqueue.Duplicate]+fired[taskqueue.AlreadyCompleted])
	return nil
}

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
