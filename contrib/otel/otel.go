// Package tqotel carries OpenTelemetry traces across a taskqueue queue.
//
// Import it as github.com/graflow-go/taskqueue/contrib/otel; it is a module of its own, so the core module does
// not depend on OpenTelemetry.
//
// The producer's trace context travels inside the task: [Inject] writes the W3C "traceparent" and "tracestate"
// headers into [taskqueue.TaskSpec.Metadata], which the queue stores in the envelope's "meta" field, and a
// [Producer] does that inside a producer span of its own. On the worker, [Middleware] reads them back and runs
// each task inside a consumer span ([trace.SpanKindConsumer]) linked to the producer's span, with the task's
// attributes, and the handler's error recorded on it.
//
//	// producer
//	p := tqotel.NewProducer(q, tqotel.WithQueue("etl"))
//	err := p.Enqueue(ctx, spec) // a "send etl" span; the task carries its context
//
//	// worker
//	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{
//		Middleware: []taskqueue.Middleware{tqotel.Middleware(tqotel.WithQueue("etl"))},
//	})
//
// # Link or parent
//
// By default a consumer span does not join the producer's trace: it is a root span (or a child of the span the
// handler's context already holds) with a link to the producer's span, as the OpenTelemetry messaging
// conventions recommend. A task may run long after it was enqueued, several times (retries), or never, and the
// producer's trace is complete without it. [WithProducerAsParent] makes the producer's span the parent too, so
// that each run appears inside the producer's trace; the link stays.
//
// # Propagator
//
// The propagator is the one given with [WithPropagator], else the global one ([otel.GetTextMapPropagator]) when
// it was set, else W3C Trace Context ([propagation.TraceContext]): the global default propagates nothing, and
// then no trace would cross the queue. Headers that do not fit task metadata (keys of [A-Za-z0-9._-] up to 64
// characters, values up to 1024 bytes, 32 entries; see [taskqueue.TaskSpec]) are left out rather than failing
// the enqueue: a W3C "baggage" header longer than 1024 bytes does not travel, say.
package tqotel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/graflow-go/taskqueue"
)

// ScopeName is the instrumentation scope of the spans this package starts.
const ScopeName = "github.com/graflow-go/taskqueue/contrib/otel"

// MessagingSystem is the value of the messaging.system attribute.
const MessagingSystem = "taskqueue"

// Attributes of a task, beside the messaging conventions' messaging.system, messaging.operation.type,
// messaging.destination.name (the queue, from [WithQueue]) and messaging.message.id (the task id).
const (
	AttemptKey    = attribute.Key("taskqueue.task.attempt") // handler failures before this run
	TaskNameKey   = attribute.Key("taskqueue.task.name")    // "module.name" of a reference task
	StatusKey     = attribute.Key("taskqueue.task.status")  // the envelope's status: pending, scheduled, retry
	ResolverIDKey = attribute.Key("taskqueue.resolver_id")  // the resolver that rehydrated the task
	GroupIDKey    = attribute.Key("taskqueue.group_id")     // the seed's group id, when set
)

// Option configures [Inject], [NewProducer] and [Middleware].
type Option func(*config)

type config struct {
	tp         trace.TracerProvider
	prop       propagation.TextMapPropagator
	queue      string
	parentLink bool
}

// WithTracerProvider sets the tracer provider. Default the global one ([otel.GetTracerProvider]).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithPropagator sets the propagator that writes and reads the task's metadata. Default: see the package
// documentation.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// WithQueue names the queue in span names ("send etl") and in the messaging.destination.name attribute; use the
// queue's key prefix.
func WithQueue(name string) Option {
	return func(c *config) { c.queue = name }
}

// WithProducerAsParent makes the consumer span a child of the producer's span, besides linking to it. See the
// package documentation.
func WithProducerAsParent() Option {
	return func(c *config) { c.parentLink = true }
}

func newConfig(opts []Option) *config {
	c := &config{}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *config) tracer() trace.Tracer {
	tp := c.tp
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// propagator resolves the propagator at each use, so that a global one set after start-up is taken.
func (c *config) propagator() propagation.TextMapPropagator {
	if c.prop != nil {
		return c.prop
	}
	if p := otel.GetTextMapPropagator(); len(p.Fields()) > 0 {
		return p
	}
	return propagation.TraceContext{}
}

func (c *config) queueAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	attrs = append(attrs, semconv.MessagingSystemKey.String(MessagingSystem))
	if c.queue != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(c.queue))
	}
	return attrs
}

// Inject writes the trace context of ctx into spec.Metadata, through the configured propagator (see the package
// documentation): "traceparent" and, when there is one, "tracestate". It replaces spec.Metadata with a new map
// (the old one is not modified, so specs may share one), and leaves it alone when ctx holds no trace context.
// Headers that do not fit task metadata are left out. Of the options, only [WithPropagator] applies.
func Inject(ctx context.Context, spec *taskqueue.TaskSpec, opts ...Option) {
	inject(ctx, spec, newConfig(opts).propagator())
}

func inject(ctx context.Context, spec *taskqueue.TaskSpec, prop propagation.TextMapPropagator) {
	headers := propagation.MapCarrier{}
	prop.Inject(ctx, headers)
	if len(headers) == 0 {
		return
	}
	m := maps.Clone(spec.Metadata)
	if m == nil {
		m = make(map[string]string, len(headers))
	}
	for k, v := range headers {
		if fits(m, k, v) {
			m[k] = v
		}
	}
	spec.Metadata = m
}

// fits reports whether the header k: v can join the metadata m within the bounds the queue enforces.
func fits(m map[string]string, k, v string) bool {
	if len(k) == 0 || len(k) > taskqueue.MaxMetadataKeyLen || len(v) > taskqueue.MaxMetadataValueLen || !utf8.ValidString(v) {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	if _, replace := m[k]; replace {
		return true
	}
	for old := range m {
		if strings.EqualFold(old, k) {
			return false // a case variant of a key the caller set: the queue would refuse both
		}
	}
	return len(m) < taskqueue.MaxMetadataEntries
}

// Enqueuer is the producer side of a queue: [*taskqueue.RedisTaskQueue], [*taskqueue.MemoryQueue], or any
// [taskqueue.TaskQueue].
type Enqueuer interface {
	Enqueue(ctx context.Context, spec *taskqueue.TaskSpec) error
	EnqueueBatch(ctx context.Context, specs []*taskqueue.TaskSpec) error
}

// Producer enqueues through a queue inside a producer span ([trace.SpanKindProducer], named "send" and the
// queue), and writes that span's context into each task it enqueues. The caller's specs are not modified: each
// is copied with its new metadata.
type Producer struct {
	q   Enqueuer
	cfg *config
}

// NewProducer returns a [Producer] that enqueues through q.
func NewProducer(q Enqueuer, opts ...Option) *Producer {
	return &Producer{q: q, cfg: newConfig(opts)}
}

// Enqueue enqueues spec inside a producer span.
func (p *Producer) Enqueue(ctx context.Context, spec *taskqueue.TaskSpec) error {
	if spec == nil {
		return p.q.Enqueue(ctx, spec)
	}
	ctx, span := p.start(ctx, 1)
	defer span.End()
	s := *spec
	if s.TaskID != "" {
		span.SetAttributes(semconv.MessagingMessageID(s.TaskID))
	}
	inject(ctx, &s, p.cfg.propagator())
	err := p.q.Enqueue(ctx, &s)
	spec.TaskID, spec.Enqueued = s.TaskID, s.Enqueued // the queue writes back a generated id and the outcome
	recordError(span, err)
	return err
}

// EnqueueBatch enqueues specs inside one producer span, whose context every task carries.
func (p *Producer) EnqueueBatch(ctx context.Context, specs []*taskqueue.TaskSpec) error {
	ctx, span := p.start(ctx, len(specs))
	defer span.End()
	prop := p.cfg.propagator()
	copies := make([]*taskqueue.TaskSpec, len(specs))
	for i, spec := range specs {
		if spec != nil {
			s := *spec
			inject(ctx, &s, prop)
			spec = &s
		}
		copies[i] = spec
	}
	err := p.q.EnqueueBatch(ctx, copies)
	for i, spec := range specs {
		if spec != nil {
			spec.TaskID, spec.Enqueued = copies[i].TaskID, copies[i].Enqueued
		}
	}
	recordError(span, err)
	return err
}

func (p *Producer) start(ctx context.Context, n int) (context.Context, trace.Span) {
	attrs := p.cfg.queueAttrs(make([]attribute.KeyValue, 0, 5))
	attrs = append(attrs, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"))
	if n != 1 {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(n))
	}
	return p.cfg.tracer().Start(ctx, spanName("send", p.cfg.queue), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

// Middleware returns a worker middleware that runs each task inside a consumer span: linked to the producer's
// span found in the task's metadata (and its child, with [WithProducerAsParent]), named "process" and the task
// name, with the task's attributes. An error from the handler is recorded on the span (an exception event and
// an Error status, cut to 1024 bytes); so is a panic, which goes on to the worker unrecovered. Baggage that the
// producer's context carried is put in the handler's context.
func Middleware(opts ...Option) taskqueue.Middleware {
	cfg := newConfig(opts)
	tracer := cfg.tracer()
	return func(next taskqueue.Handler) taskqueue.Handler {
		return func(ctx context.Context, spec *taskqueue.TaskSpec) (err error) {
			ctx, span := startConsumer(ctx, tracer, cfg, spec)
			finished := false
			defer func() {
				if !finished { // a panic unwinds through here: mark the span, let the worker recover it
					span.SetStatus(codes.Error, "taskqueue: handler panicked")
					span.SetAttributes(semconv.ErrorTypeKey.String("panic"))
				}
				span.End()
			}()
			err = next(ctx, spec)
			finished = true
			recordError(span, err)
			return err
		}
	}
}

func startConsumer(ctx context.Context, tracer trace.Tracer, cfg *config, spec *taskqueue.TaskSpec) (context.Context, trace.Span) {
	name := taskName(spec)
	attrs := cfg.queueAttrs(make([]attribute.KeyValue, 0, 10))
	attrs = append(attrs, semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
		semconv.MessagingMessageID(spec.TaskID), AttemptKey.Int(spec.Attempt), ResolverIDKey.String(spec.ResolverID))
	if name != "" {
		attrs = append(attrs, TaskNameKey.String(name))
	} else {
		name = "task"
	}
	if spec.Status != "" {
		attrs = append(attrs, StatusKey.String(string(spec.Status)))
	}
	if spec.GroupID != "" {
		attrs = append(attrs, GroupIDKey.String(spec.GroupID))
	}
	startOpts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if len(spec.Metadata) > 0 {
		produced := cfg.propagator().Extract(context.Background(), propagation.MapCarrier(spec.Metadata))
		if sc := trace.SpanContextFromContext(produced); sc.IsValid() {
			startOpts = append(startOpts, trace.WithLinks(trace.Link{SpanContext: sc}))
			if cfg.parentLink {
				ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			}
		}
		if b := baggage.FromContext(produced); b.Len() > 0 {
			ctx = baggage.ContextWithBaggage(ctx, b)
		}
	}
	return tracer.Start(ctx, spanName("process", name), startOpts...)
}

// taskName is "module.name" for a reference task, read from the resolved executable; "" otherwise.
func taskName(spec *taskqueue.TaskSpec) string {
	if ref, ok := spec.Executable.(taskqueue.Referencer); ok {
		module, name, _ := ref.TaskReference()
		return module + "." + name
	}
	return ""
}

func spanName(op, target string) string {
	if target == "" {
		return op
	}
	return op + " " + target
}

// maxStatusLen bounds a span's status description.
const maxStatusLen = 1024

// recordError records a failure on a span: an exception event, the Error status (its description cut to
// 1024 bytes) and error.type.
func recordError(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	msg := err.Error()
	if len(msg) > maxStatusLen {
		cut := maxStatusLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	span.SetStatus(codes.Error, msg)
	span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
}

// errorType names an error for error.type: the taskqueue sentinel it wraps, if any, else its Go type.
func errorType(err error) string {
	for _, s := range []error{
		taskqueue.ErrSkipRetry, taskqueue.ErrTimeout, taskqueue.ErrLeaseLost, taskqueue.ErrLeaseExpired,
		taskqueue.ErrTaskIDConflict, taskqueue.ErrInvalidConfig, taskqueue.ErrInvalidTaskID,
		taskqueue.ErrNotSerializable, taskqueue.ErrEnvelopeTooLarge, taskqueue.ErrClosed,
		context.DeadlineExceeded, context.Canceled,
	} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return fmt.Sprintf("%T", err)
}
