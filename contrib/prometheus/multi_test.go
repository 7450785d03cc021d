package tqprom

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// TestInstrumentQueuesRoutesByQueue: a worker of two queues reports each task to its own queue's collector.
func TestInstrumentQueuesRoutesByQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "shop", "ship", func(context.Context, noArgs) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	var cs []*Collector
	var ws []taskqueue.QueueWeight
	for i, prefix := range []string{"eu", "us"} {
		q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, reg, &taskqueue.RedisConfig{Logger: quiet()})
		require.NoError(t, err)
		for range i + 1 {
			require.NoError(t, q.Enqueue(ctx, taskqueue.NewTaskSpec("", taskqueue.Ref("shop", "ship", noArgs{}))))
		}
		c, err := New(adminOf(t, q), &Config{Queue: "label-" + prefix})
		require.NoError(t, err)
		cs = append(cs, c)
		ws = append(ws, taskqueue.QueueWeight{Queue: q, Weight: 1})
	}
	m, err := taskqueue.NewMultiQueue(ws, nil)
	require.NoError(t, err)
	var hooked atomic.Int32
	cfg := &taskqueue.WorkerConfig{Concurrency: 2, Logger: quiet(), OnEvent: func(e taskqueue.Event) {
		if e.Kind == taskqueue.EventSucceeded {
			hooked.Add(1)
		}
	}}
	require.NoError(t, InstrumentQueues(cfg, cs...))
	w, err := taskqueue.NewTaskWorker(m, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	succeeded := func(c *Collector) float64 { return testutil.ToFloat64(c.succeeded.WithLabelValues("shop.ship")) }
	waitFor(t, "every task counted", func() bool { return succeeded(cs[0])+succeeded(cs[1]) == 3 })
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(stop))
	require.Equal(t, 1.0, succeeded(cs[0]), "eu's one task")
	require.Equal(t, 2.0, succeeded(cs[1]), "us's two tasks")
	require.EqualValues(t, 3, hooked.Load(), "the hook already set still runs")
}

func TestInstrumentQueuesValidates(t *testing.T) {
	t.Parallel()
	a, err := New(nil, &Config{Queue: "a"})
	require.NoError(t, err)
	a2, err := New(nil, &Config{Queue: "a"})
	require.NoError(t, err)
	for name, cs := range map[string][]*Collector{"none": nil, "nil": {a, nil}, "duplicate": {a, a2}} {
		cfg := &taskqueue.WorkerConfig{}
		err := InstrumentQueues(cfg, cs...)
		require.ErrorIs(t, err, taskqueue.ErrInvalidConfig, name)
		require.Nil(t, cfg.OnEvent, "%s: cfg unchanged", name)
	}
	// An event of no queue, or of a queue no collector covers, is counted by the first collector.
	b, err := New(nil, &Config{Queue: "b"})
	require.NoError(t, err)
	cfg := &taskqueue.WorkerConfig{}
	require.NoError(t, InstrumentQueues(cfg, a, b))
	cfg.OnEvent(taskqueue.Event{Kind: taskqueue.EventQueueError, Err: errors.New("down")})
	cfg.OnEvent(taskqueue.Event{Kind: taskqueue.EventQueueError, Queue: "b", Err: errors.New("down")})
	cfg.OnEvent(taskqueue.Event{Kind: taskqueue.EventQueueError, Queue: "zz", Err: errors.New("down")})
	require.Equal(t, 2.0, testutil.ToFloat64(a.queueErrors))
	require.Equal(t, 1.0, testutil.ToFloat64(b.queueErrors))
}
