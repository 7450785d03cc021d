package tqotel

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/graflow-go/taskqueue"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type orderArgs struct {
	ID int `json:"id"`
}

// env is a queue on a miniredis with the functions shop.ship (fails for id 0), shop.flaky (fails on its first
// run) and shop.panics registered, and a tracer provider that records spans in memory.
type env struct {
	q   *taskqueue.RedisTaskQueue
	tp  *sdktrace.TracerProvider
	exp *tracetest.InMemoryExporter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ref := taskqueue.NewReferenceResolver()
	var flaky atomic.Int32
	taskqueue.MustRegister(ref, "shop", "ship", func(ctx context.Context, a orderArgs) error {
		if a.ID == 0 {
			return errors.New("no order id")
		}
		return nil
	})
	taskqueue.MustRegister(ref, "shop", "flaky", func(context.Context, orderArgs) error {
		if flaky.Add(1) == 1 {
			return errors.New("first run fails")
		}
		return nil
	})
	taskqueue.MustRegister(ref, "shop", "panics", func(context.Context, orderArgs) error { panic("boom") })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "orders", reg, &taskqueue.RedisConfig{Logger: quiet()})
	require.NoError(t, err)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &env{q: q, tp: tp, exp: exp}
}

// admin returns the Admin of the env's queue.
func (e *env) admin(t *testing.T) *taskqueue.Admin {
	t.Helper()
	a, err := taskqueue.NewAdmin(e.q)
	require.NoError(t, err)
	return a
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// runWorker runs a worker with the middleware until n consumer spans have ended, then stops it.
func (e *env) runWorker(t *testing.T, n int, opts ...Option) []tracetest.SpanStub {
	t.Helper()
	opts = append([]Option{WithTracerProvider(e.tp), WithQueue("orders")}, opts...)
	w, err := taskqueue.NewTaskWorker(e.q, &taskqueue.WorkerConfig{
		Logger: quiet(), Backoff: func(int, error) time.Duration { return 0 },
		Middleware: []taskqueue.Middleware{Middleware(opts...)},
	})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	deadline := time.Now().Add(10 * time.Second)
	for len(e.spans(trace.SpanKindConsumer)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d consumer spans", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(ctx))
	return e.spans(trace.SpanKindConsumer)
}

func (e *env) spans(kind trace.SpanKind) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	all := e.exp.GetSpans()
	for i := range all {
		if all[i].SpanKind == kind {
			out = append(out, all[i])
		}
	}
	return out
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(s.Attributes))
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestConsumerSpanLinksToProducerSpan(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := NewProducer(e.q, WithTracerProvider(e.tp), WithQueue("orders"))
	spec := &taskqueue.TaskSpec{TaskID: "o-1", Executable: taskqueue.Ref("shop", "ship", orderArgs{ID: 1}), GroupID: "batch-7"}
	require.NoError(t, p.Enqueue(ctx, spec))
	require.Nil(t, spec.Metadata, "the caller's spec is not modified")

	stored, err := e.admin(t).Inspect(ctx, "o-1")
	require.NoError(t, err)
	raw := stored.Envelope
	producers := e.spans(trace.SpanKindProducer)
	require.Len(t, producers, 1)
	prod := producers[0]
	require.Equal(t, "send orders", prod.Name)
	require.Contains(t, raw, `"meta":{"traceparent":"00-`+prod.SpanContext.TraceID().String()+"-"+prod.SpanContext.SpanID().String()+`-01"}`)
	require.Equal(t, "o-1", attrs(prod)["messaging.message.id"].AsString())

	spans := e.runWorker(t, 1)
	require.Len(t, spans, 1)
	cons := spans[0]
	require.Equal(t, "process shop.ship", cons.Name)
	require.Len(t, cons.Links, 1)
	require.Equal(t, prod.SpanContext.TraceID(), cons.Links[0].SpanContext.TraceID())
	require.Equal(t, prod.SpanContext.SpanID(), cons.Links[0].SpanContext.SpanID())
	require.True(t, cons.Links[0].SpanContext.IsRemote())
	require.NotEqual(t, prod.SpanContext.TraceID(), cons.SpanContext.TraceID(), "by default the run starts a trace of its own")
	require.False(t, cons.Parent.IsValid())
	require.Equal(t, codes.Unset, cons.Status.Code)

	a := attrs(cons)
	require.Equal(t, "taskqueue", a["messaging.system"].AsString())
	require.Equal(t, "process", a["messaging.operation.type"].AsString())
	require.Equal(t, "orders", a["messaging.destination.name"].AsString())
	require.Equal(t, "o-1", a["messaging.message.id"].AsString())
	require.Equal(t, int64(0), a[AttemptKey].AsInt64())
	require.Equal(t, "default", a[ResolverIDKey].AsString())
	require.Equal(t, "batch-7", a[GroupIDKey].AsString())
	require.Equal(t, "shop.ship", a[TaskNameKey].AsString())
	require.Equal(t, "pending", a[StatusKey].AsString())
}

func TestProducerAsParent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := NewProducer(e.q, WithTracerProvider(e.tp), WithQueue("orders"))
	require.NoError(t, p.EnqueueBatch(ctx, []*taskqueue.TaskSpec{
		taskqueue.NewTaskSpec("a", taskqueue.Ref("shop", "ship", orderArgs{ID: 1})),
		taskqueue.NewTaskSpec("b", taskqueue.Ref("shop", "ship", orderArgs{ID: 2})),
	}))
	producers := e.spans(trace.SpanKindProducer)
	require.Len(t, producers, 1, "one span for the batch")
	prod := producers[0]
	require.Equal(t, int64(2), attrs(prod)["messaging.batch.message_count"].AsInt64())

	spans := e.runWorker(t, 2, WithProducerAsParent())
	for _, cons := range spans {
		require.Equal(t, prod.SpanContext.TraceID(), cons.SpanContext.TraceID(), "inside the producer's trace")
		require.Equal(t, prod.SpanContext.SpanID(), cons.Parent.SpanID())
		require.Len(t, cons.Links, 1)
		require.Equal(t, prod.SpanContext.SpanID(), cons.Links[0].SpanContext.SpanID())
	}
}

func TestFailingHandlerRecordsTheError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := NewProducer(e.q, WithTracerProvider(e.tp))
	require.NoError(t, p.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: "bad", Executable: taskqueue.Ref("shop", "ship", orderArgs{}), MaxRetries: -1}))
	require.NoError(t, p.Enqueue(ctx, taskqueue.NewTaskSpec("flaky", taskqueue.Ref("shop", "flaky", nil))))
	require.NoError(t, p.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: "panics", Executable: taskqueue.Ref("shop", "panics", nil), MaxRetries: -1}))
	prod := map[string]trace.SpanContext{}
	for _, s := range e.spans(trace.SpanKindProducer) {
		require.Equal(t, "send", s.Name, "no queue name given")
		prod[attrs(s)["messaging.message.id"].AsString()] = s.SpanContext
	}

	spans := e.runWorker(t, 4) // bad, flaky twice, panics
	byTask := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		id := attrs(s)["messaging.message.id"].AsString()
		byTask[id] = append(byTask[id], s)
		require.Len(t, s.Links, 1)
		require.Equal(t, prod[id].SpanID(), s.Links[0].SpanContext.SpanID(), "every run links to its producer span")
	}

	bad := byTask["bad"][0]
	require.Equal(t, codes.Error, bad.Status.Code)
	require.Equal(t, "no order id", bad.Status.Description)
	require.Len(t, bad.Events, 1)
	require.Equal(t, "exception", bad.Events[0].Name)
	require.Contains(t, bad.Events[0].Attributes, attribute.String("exception.message", "no order id"))
	require.Equal(t, "*errors.errorString", attrs(bad)["error.type"].AsString())

	flaky := byTask["flaky"]
	require.Len(t, flaky, 2)
	var attempts []int64
	for _, s := range flaky {
		attempts = append(attempts, attrs(s)[AttemptKey].AsInt64())
	}
	require.ElementsMatch(t, []int64{0, 1}, attempts)
	for _, s := range flaky {
		if attrs(s)[AttemptKey].AsInt64() == 1 {
			require.Equal(t, codes.Unset, s.Status.Code, "the retry succeeded")
			require.Equal(t, "retry", attrs(s)[StatusKey].AsString())
		} else {
			require.Equal(t, codes.Error, s.Status.Code)
		}
	}

	panics := byTask["panics"][0]
	require.Equal(t, codes.Error, panics.Status.Code)
	require.Contains(t, panics.Status.Description, "panicked")
	require.Equal(t, "panic", attrs(panics)["error.type"].AsString())
	dead, err := e.admin(t).Inspect(ctx, "panics")
	require.NoError(t, err)
	require.Equal(t, taskqueue.StateDead, dead.State)
	require.Contains(t, dead.Reason, "boom", "the worker still recovers the panic into the task's error")
}

func TestInject(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	sc := span.SpanContext()

	t.Run("no span, no metadata", func(t *testing.T) {
		spec := &taskqueue.TaskSpec{}
		Inject(context.Background(), spec)
		require.Nil(t, spec.Metadata)
	})
	t.Run("W3C trace context by default", func(t *testing.T) {
		shared := map[string]string{"tenant": "acme"}
		spec := &taskqueue.TaskSpec{Metadata: shared}
		Inject(ctx, spec)
		require.Equal(t, map[string]string{
			"tenant":      "acme",
			"traceparent": "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01",
		}, spec.Metadata)
		require.Len(t, shared, 1, "the old map is not modified")
	})
	t.Run("tracestate travels too", func(t *testing.T) {
		ts, err := trace.ParseTraceState("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
		require.NoError(t, err)
		spec := &taskqueue.TaskSpec{}
		Inject(trace.ContextWithSpanContext(ctx, sc.WithTraceState(ts)), spec)
		require.Equal(t, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", spec.Metadata["tracestate"])
	})
	t.Run("headers that do not fit are left out", func(t *testing.T) {
		m, err := baggage.NewMember("big", strings.Repeat("x", 2000))
		require.NoError(t, err)
		b, err := baggage.New(m)
		require.NoError(t, err)
		prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		spec := &taskqueue.TaskSpec{Metadata: map[string]string{"TraceParent": "mine"}}
		Inject(baggage.ContextWithBaggage(ctx, b), spec, WithPropagator(prop))
		require.Equal(t, map[string]string{"TraceParent": "mine"}, spec.Metadata, "a case variant is kept, the long baggage dropped")
	})
	t.Run("baggage that fits travels to the handler", func(t *testing.T) {
		e := newEnv(t)
		m, err := baggage.NewMember("tenant", "acme")
		require.NoError(t, err)
		b, err := baggage.New(m)
		require.NoError(t, err)
		prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		spec := taskqueue.NewTaskSpec("with-baggage", taskqueue.Ref("shop", "ship", orderArgs{ID: 1}))
		Inject(baggage.ContextWithBaggage(ctx, b), spec, WithPropagator(prop))
		require.Equal(t, "tenant=acme", spec.Metadata["baggage"])
		require.NoError(t, e.q.Enqueue(context.Background(), spec))

		got := make(chan string, 1)
		w, err := taskqueue.NewTaskWorker(e.q, &taskqueue.WorkerConfig{Logger: quiet(), Middleware: []taskqueue.Middleware{
			Middleware(WithTracerProvider(e.tp), WithPropagator(prop)),
			func(next taskqueue.Handler) taskqueue.Handler {
				return func(ctx context.Context, spec *taskqueue.TaskSpec) error {
					got <- baggage.FromContext(ctx).Member("tenant").Value()
					return next(ctx, spec)
				}
			},
		}})
		require.NoError(t, err)
		require.NoError(t, w.Start(context.Background()))
		select {
		case v := <-got:
			require.Equal(t, "acme", v)
		case <-time.After(10 * time.Second):
			t.Fatal("the task did not run")
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, w.Stop(stopCtx))
	})
}

func TestTaskWithoutTraceContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, e.q.Enqueue(context.Background(), taskqueue.NewTaskSpec("plain", taskqueue.Ref("shop", "ship", orderArgs{ID: 1}))))
	spans := e.runWorker(t, 1)
	require.Empty(t, spans[0].Links)
	require.Equal(t, "process shop.ship", spans[0].Name)

	// A memory queue's closures have no task name.
	mq := taskqueue.NewMemoryQueue(0, 0)
	defer mq.Close()
	h := Middleware(WithTracerProvider(e.tp))(func(context.Context, *taskqueue.TaskSpec) error { return nil })
	require.NoError(t, h(context.Background(), &taskqueue.TaskSpec{TaskID: "local", Executable: taskqueue.Func(func(context.Context) error { return nil })}))
	var names []string
	for _, s := range e.spans(trace.SpanKindConsumer) {
		names = append(names, s.Name)
	}
	require.Contains(t, names, "process task")
}

func TestProducerRecordsEnqueueErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := NewProducer(e.q, WithTracerProvider(e.tp))
	err := p.Enqueue(context.Background(), taskqueue.NewTaskSpec("bad id", taskqueue.Ref("shop", "ship", nil)))
	require.ErrorIs(t, err, taskqueue.ErrInvalidTaskID)
	spans := e.spans(trace.SpanKindProducer)
	require.Len(t, spans, 1)
	require.Equal(t, codes.Error, spans[0].Status.Code)
	require.Equal(t, taskqueue.ErrInvalidTaskID.Error(), attrs(spans[0])["error.type"].AsString())
}

func TestLongErrorsAreCut(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	msg := "\xff" + strings.Repeat("é", 1000) // invalid UTF-8 first, a two-byte rune across the cut
	h := Middleware(WithTracerProvider(tp))(func(context.Context, *taskqueue.TaskSpec) error { return errors.New(msg) })
	require.Error(t, h(context.Background(), &taskqueue.TaskSpec{TaskID: "t"}))
	spans := exp.GetSpans()
	require.Len(t, spans, 1)
	desc := spans[0].Status.Description
	require.LessOrEqual(t, len(desc), 1024)
	require.Greater(t, len(desc), 1000)
	require.True(t, strings.HasPrefix(msg, desc), "cut at a rune boundary")
}

func TestProducerWritesBackIDAndOutcome(t *testing.T) {
	t.Parallel()
	mq := taskqueue.NewMemoryQueue(0, 0)
	defer mq.Close()
	p := NewProducer(mq)
	ctx := context.Background()
	exe := taskqueue.Func(func(context.Context) error { return nil })
	spec := &taskqueue.TaskSpec{Executable: exe}
	require.NoError(t, p.Enqueue(ctx, spec))
	require.NotEmpty(t, spec.TaskID, "the generated id reaches the caller through the producer")
	require.Equal(t, taskqueue.Stored, spec.Enqueued)
	batch := []*taskqueue.TaskSpec{{TaskID: spec.TaskID, Executable: exe}, {Executable: exe}}
	require.NoError(t, p.EnqueueBatch(ctx, batch))
	require.Equal(t, taskqueue.Duplicate, batch[0].Enqueued)
	require.NotEmpty(t, batch[1].TaskID)
	require.Equal(t, taskqueue.Stored, batch[1].Enqueued)
}
