package main

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
)

// asynqLib drives github.com/hibiken/asynq v0.26.0 at its defaults, except the server's concurrency and a log
// level that keeps its info lines off the table.
type asynqLib struct {
	addr   string
	client *asynq.Client
}

func newAsynq(addr string) *asynqLib {
	return &asynqLib{addr: addr, client: asynq.NewClient(asynq.RedisClientOpt{Addr: addr})}
}

func (a *asynqLib) name() string { return libAsynq }

func (a *asynqLib) enqueue(ctx context.Context, seq int, delay time.Duration) error {
	var opts []asynq.Option
	if delay > 0 {
		opts = append(opts, asynq.ProcessIn(delay))
	}
	_, err := a.client.EnqueueContext(ctx, asynq.NewTask(taskType, payload(seq)), opts...)
	return err
}

func (a *asynqLib) enqueueBatch(context.Context, int, int) error { return errUnsupported }

func (a *asynqLib) startWorker(_ context.Context, conc int, onStart func(seq int)) (func(), error) {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: a.addr}, asynq.Config{Concurrency: conc, LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskType, func(_ context.Context, t *asynq.Task) error {
		if onStart != nil {
			onStart(seqOf(t.Payload()))
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return nil, err
	}
	return srv.Shutdown, nil
}

func (a *asynqLib) close() { _ = a.client.Close() }

func (a *asynqLib) batches() bool { return false }
