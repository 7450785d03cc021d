// Command taskqueue inspects and operates a taskqueue Redis queue: counts and health, listing and showing tasks,
// requeueing and deleting dead letters, purging, pausing and resuming pickup, and a live view.
//
//	taskqueue --help
//	REDIS_URL=rediss://ops:secret@redis.example.com:6380/0 taskqueue --key-prefix etl stats
//
// It needs no task registry: it reads the raw JSON envelopes and never runs or resolves a task. Exit codes are
// stable: 0 ok, 1 error, 2 usage, 3 not found, 4 declined at the confirmation prompt, 5 no such
// queue (no key under the prefix in that database) (docs/operations.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis logs failed dials on standard error by itself; the CLI reports the error once, in its own words.
	redis.SetLogger(silent{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

type silent struct{}

func (silent) Printf(context.Context, string, ...any) {}
