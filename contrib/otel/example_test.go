package tqotel_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/graflow-go/taskqueue"
	tqotel "github.com/graflow-go/taskqueue/contrib/otel"
)

// A producer whose trace continues, through a link, in the worker that runs the task.
func Example() {
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider() // with the exporter of your tracing backend
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver()) // with the worker's functions
	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, nil)
	if err != nil {
		log.Fatal(err)
	}

	// Producer: a "send etl" span, whose context the task carries in its metadata.
	p := tqotel.NewProducer(q, tqotel.WithQueue("etl"))
	if err := p.Enqueue(ctx, taskqueue.NewTaskSpec("extract-1", taskqueue.Ref("examples.tasks", "extract_data", nil))); err != nil {
		log.Fatal(err)
	}
	// Or, inside a span of your own, without a producer span:
	spec := taskqueue.NewTaskSpec("extract-2", taskqueue.Ref("examples.tasks", "extract_data", nil))
	tqotel.Inject(ctx, spec)
	if err := q.Enqueue(ctx, spec); err != nil {
		log.Fatal(err)
	}

	// Worker: each run in a "process examples.tasks.extract_data" consumer span linked to the producer's span.
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{
		Middleware: []taskqueue.Middleware{tqotel.Middleware(tqotel.WithQueue("etl"))},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(ctx, 20*time.Second); err != nil {
		log.Fatal(err)
	}
}
