// Command chaosscheduler is the scheduler process of the chaos tests (chaos_schedule_test.go, build tag chaos):
// a [taskqueue.Scheduler] alone, with no worker, that the tests start several times against one redis-server
// and kill with SIGKILL mid-run. It logs JSON at debug level on standard error and stops on SIGINT or SIGTERM.
//
// Flags: --redis-url URL, --key-prefix PREFIX, --claim DURATION (the scheduler's claim). With
// $CHAOS_CLOCK_SKEW set to a Go duration, the scheduler's local clock ([taskqueue.SchedulerConfig.Clock]) runs
// that far off the machine's, as on a host whose clock is wrong.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

func main() {
	url := flag.String("redis-url", "", "Redis URL")
	prefix := flag.String("key-prefix", taskqueue.DefaultKeyPrefix, "key prefix of the queue")
	claim := flag.Duration("claim", 0, "the scheduler's claim (0: the default)")
	flag.Parse()
	if err := run(*url, *prefix, *claim); err != nil {
		fmt.Fprintln(os.Stderr, "chaosscheduler:", err)
		os.Exit(1)
	}
}

func run(url, prefix string, claim time.Duration) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The ticks' tasks are enqueued already serialized: the scheduler resolves nothing, so its registry is empty.
	q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, taskqueue.NewResolverRegistry(), &taskqueue.RedisConfig{Logger: logger})
	if err != nil {
		return err
	}
	cfg := &taskqueue.SchedulerConfig{Logger: logger, Claim: claim}
	if s := os.Getenv("CHAOS_CLOCK_SKEW"); s != "" {
		skew, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("CHAOS_CLOCK_SKEW: %w", err)
		}
		cfg.Clock = func() time.Time { return time.Now().Add(skew) }
		logger.Info("chaosscheduler: local clock skewed", slog.Duration("skew", skew))
	}
	s, err := taskqueue.NewScheduler(q, cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	logger.Info("chaosscheduler: ready")
	return s.Run(ctx)
}
