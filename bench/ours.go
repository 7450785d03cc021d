package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// benchArgs are the arguments of our registered no-op function; their JSON is the 200-byte payload.
type benchArgs struct {
	Seq  int    `json:"seq"`
	Data string `json:"data"`
}

// ours drives github.com/graflow-go/taskqueue through its public API only, at its defaults except the worker's
// concurrency (and the lease, in the recovery measurement).
type ours struct {
	rdb     *redis.Client
	q       *taskqueue.RedisTaskQueue
	onStart atomic.Pointer[func(seq int)] // set by startWorker while other workers of the process may run tasks
	quiet   *slog.Logger
	lib     string // the name it runs under: libOurs, or a keyed variant (newOursKeyed)
	keys    int    // > 0: every task gets the flow key "k<seq mod keys>"
}

func newOurs(addr string, lease time.Duration) (*ours, error) {
	o := &ours{
		rdb:   redis.NewClient(&redis.Options{Addr: addr}),
		quiet: slog.New(slog.DiscardHandler),
	}
	ref := taskqueue.NewReferenceResolver()
	err := taskqueue.Register(ref, "bench", taskType, func(_ context.Context, a benchArgs) error {
		if f := o.onStart.Load(); f != nil {
			(*f)(a.Seq)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	reg := taskqueue.NewResolverRegistry()
	if err := reg.Register(taskqueue.DefaultResolverID, ref); err != nil {
		return nil, err
	}
	o.q, err = taskqueue.NewRedisTaskQueue(o.rdb, "bench", reg, &taskqueue.RedisConfig{Lease: lease, Logger: o.quiet})
	if err != nil {
		_ = o.rdb.Close()
		return nil, err
	}
	return o, nil
}

func (o *ours) name() string {
	if o.lib != "" {
		return o.lib
	}
	return libOurs
}

// newOursKeyed is ours with every task keyed over keys flow keys and, when limit > 0, a concurrency limit of limit
// for every key.
func newOursKeyed(addr string, lease time.Duration, name string, keys, limit int) (*ours, error) {
	o, err := newOurs(addr, lease)
	if err != nil {
		return nil, err
	}
	o.lib, o.keys = name, keys
	if limit > 0 {
		a, err := taskqueue.NewAdmin(o.q)
		if err == nil {
			err = a.SetConcurrencyLimit(context.Background(), taskqueue.AllFlowKeys, limit)
		}
		if err != nil {
			o.close()
			return nil, err
		}
	}
	return o, nil
}

// spec is the package's spec with the flow key of seq, when o keys its tasks.
func (o *ours) spec(seq int, delay time.Duration) *taskqueue.TaskSpec {
	s := spec(seq, delay)
	if o.keys > 0 {
		s.FlowKey = flowKey(seq, o.keys)
	}
	return s
}

func spec(seq int, delay time.Duration) *taskqueue.TaskSpec {
	s := taskqueue.NewTaskSpec("", taskqueue.Ref("bench", taskType, benchArgs{Seq: seq, Data: padding(seq)}))
	s.ProcessIn = delay
	return s
}

func (o *ours) enqueue(ctx context.Context, seq int, delay time.Duration) error {
	return o.q.Enqueue(ctx, o.spec(seq, delay))
}

func (o *ours) enqueueBatch(ctx context.Context, seq0, n int) error {
	specs := make([]*taskqueue.TaskSpec, n)
	for i := range specs {
		specs[i] = o.spec(seq0+i, 0)
	}
	return o.q.EnqueueBatch(ctx, specs)
}

func (o *ours) startWorker(ctx context.Context, conc int, onStart func(seq int)) (func(), error) {
	o.onStart.Store(&onStart)
	w, err := taskqueue.NewTaskWorker(o.q, &taskqueue.WorkerConfig{Concurrency: conc, Logger: o.quiet})
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	}, nil
}

func (o *ours) close() { _ = o.rdb.Close() }

func (o *ours) batches() bool { return true }

// enqueueBatchFlow is enqueueBatch with task seq under flow key "k<seq % keys>" (flowLib).
func (o *ours) enqueueBatchFlow(ctx context.Context, seq0, n, keys int) error {
	specs := make([]*taskqueue.TaskSpec, n)
	for i := range specs {
		specs[i] = spec(seq0+i, 0)
		specs[i].FlowKey = flowKey(seq0+i, keys)
	}
	return o.q.EnqueueBatch(ctx, specs)
}

// flowKey is the flow key of task seq over keys keys: k0 to k<keys-1>, round-robin.
func flowKey(seq, keys int) string { return "k" + strconv.Itoa(seq%keys) }

// setFlowLimit sets the concurrency limit of every flow key without one of its own (taskqueue.AllFlowKeys):
// each of the backlog's keys runs at most n tasks at once (flowLib).
func (o *ours) setFlowLimit(ctx context.Context, n int) error {
	adm, err := taskqueue.NewAdmin(o.q)
	if err != nil {
		return err
	}
	return adm.SetConcurrencyLimit(ctx, taskqueue.AllFlowKeys, n)
}

// unkeyed reports whether o's own tasks carry no flow key: the keyed variants (newOursKeyed) run the plain drain
// alone, not the drains with flow control over it (flowLib).
func (o *ours) unkeyed() bool { return o.keys == 0 }

// setQueueRate sets the queue's own rate limit (key ""): at most n starts per second (flowLib).
func (o *ours) setQueueRate(ctx context.Context, n int) error {
	adm, err := taskqueue.NewAdmin(o.q)
	if err != nil {
		return err
	}
	return adm.SetRateLimit(ctx, "", n, time.Second)
}
