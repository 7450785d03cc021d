package main

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
)

// asynqConfig is one configuration of asynq: its documented knobs and how the harness feeds it.
type asynqConfig struct {
	// producers is how many goroutines enqueue one task per call (asynq has no batch enqueue).
	producers int
	// taskCheck is Config.TaskCheckInterval, the wait after an empty poll (0: asynq's 1 s default).
	taskCheck time.Duration
	// delayedCheck is Config.DelayedTaskCheckInterval, how often due tasks are moved to pending (0: asynq's 5 s).
	delayedCheck time.Duration
	// serverConc > 0 splits a worker of concurrency c into ceil(c/serverConc) Servers of at most serverConc each
	// (asynq's documented way to scale a worker: more Servers, each with its own fetch loop).
	serverConc int
}

var (
	// asynqDefault is asynq at its defaults; the harness feeds it with eight producers, its fastest way to fill a
	// backlog.
	asynqDefault = asynqConfig{producers: producers}
	// asynqTuned is asynq's best configuration on this harness, from the sweep (go run . -only sweep; see
	// docs/benchmarks.md): Servers of 25 sharing the concurrency, which drained fastest (asynq's documented way to
	// scale a worker), fed by 8 producers (1, 2 or 4 let the paced backlog run low in front of 4 Servers; paced
	// producers cost nothing while the backlog is full); a 10 ms TaskCheckInterval (1 ms was no faster); and due
	// tasks moved every 100 ms instead of 5 s.
	asynqTuned = asynqConfig{producers: 8, taskCheck: 10 * time.Millisecond, delayedCheck: 100 * time.Millisecond, serverConc: 25}
)

// asynqLib drives github.com/hibiken/asynq v0.26.0 in one configuration, with a log level that keeps its info
// lines off the table.
type asynqLib struct {
	lib    string
	addr   string
	cfg    asynqConfig
	client *asynq.Client
}

func newAsynq(addr, name string, cfg asynqConfig) *asynqLib {
	return &asynqLib{lib: name, addr: addr, cfg: cfg, client: asynq.NewClient(asynq.RedisClientOpt{Addr: addr})}
}

func (a *asynqLib) name() string { return a.lib }

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
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskType, func(_ context.Context, t *asynq.Task) error {
		if onStart != nil {
			onStart(seqOf(t.Payload()))
		}
		return nil
	})
	var servers []*asynq.Server
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}
	for left := conc; left > 0; {
		c := left
		if a.cfg.serverConc > 0 {
			c = min(left, a.cfg.serverConc)
		}
		left -= c
		srv := asynq.NewServer(asynq.RedisClientOpt{Addr: a.addr}, asynq.Config{
			Concurrency:              c,
			TaskCheckInterval:        a.cfg.taskCheck,
			DelayedTaskCheckInterval: a.cfg.delayedCheck,
			LogLevel:                 asynq.ErrorLevel,
		})
		if err := srv.Start(mux); err != nil {
			stop()
			return nil, err
		}
		servers = append(servers, srv)
	}
	return stop, nil
}

func (a *asynqLib) close() { _ = a.client.Close() }

func (a *asynqLib) batches() bool { return false }

func (a *asynqLib) producers() int { return a.cfg.producers }
