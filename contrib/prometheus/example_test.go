package tqprom_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
	tqprom "github.com/graflow-go/taskqueue/contrib/prometheus"
)

// A worker that exports its queue's metrics on :9090/metrics.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver()) // with the worker's functions
	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, nil)
	if err != nil {
		log.Fatal(err)
	}

	admin, err := taskqueue.NewAdmin(q) // the depth gauges read its Stats
	if err != nil {
		log.Fatal(err)
	}
	c, err := tqprom.New(admin, &tqprom.Config{StatsTTL: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	prometheus.MustRegister(c)
	go func() { log.Println(http.ListenAndServe(":9090", promhttp.Handler())) }()

	cfg := &taskqueue.WorkerConfig{Concurrency: 8}
	c.Instrument(cfg) // counters and histograms through cfg.OnEvent
	w, err := taskqueue.NewTaskWorker(q, cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(ctx, 20*time.Second); err != nil {
		log.Fatal(err)
	}

	// Producers count what they enqueue through a Producer.
	p := c.Producer(q)
	_ = p.Enqueue(ctx, taskqueue.NewTaskSpec("extract-1", taskqueue.Ref("examples.tasks", "extract_data", nil)))
}
