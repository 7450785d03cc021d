// Fanout: the seed's ETL pipeline run bulk-synchronously with parallel groups, as Graflow runs a workflow:
// extract_data, then N transform_data members in parallel (one group run), then load_data. The producer waits at
// each group's barrier and reads the members' results; the workers are separate worker instances, each with its
// own Redis connection, registry and queue, as separate processes would be.
//
// Without REDIS_URL it runs on an embedded miniredis, producer and three workers in this process:
//
//	go run ./examples/fanout
//
// On your Redis, run workers in as many processes as you like, then the producer:
//
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/fanout -role worker   # in several terminals
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/fanout -role producer
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// The seed's module and function names.
const (
	module    = "examples.tasks"
	extract   = "extract_data"
	transform = "transform_data"
	load      = "load_data"
	prefix    = "fanout"
)

// Order is one record. Amounts are whole cents: exact in JSON and in Go.
type Order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Cents    int64  `json:"cents"`
}

// ExtractArgs names the source; the extract step returns the orders it read.
type ExtractArgs struct {
	Source string `json:"source"`
}

// TransformArgs carries one shard of the orders; the transform step returns them cleaned.
type TransformArgs struct {
	Shard  int     `json:"shard"`
	Orders []Order `json:"orders"`
}

// LoadArgs carries every cleaned order; the load step returns the rows written.
type LoadArgs struct {
	Table  string  `json:"table"`
	Orders []Order `json:"orders"`
}

// Done is what a step returns besides its data: which worker ran it.
type Done[T any] struct {
	Worker string `json:"worker"`
	Data   T      `json:"data"`
}

var customers = []string{"ada lovelace", "  grace hopper", "alan turing ", "barbara liskov", "edsger dijkstra", "donald knuth"}

func main() {
	role := flag.String("role", "all", `"all" (producer and 3 workers), "producer" or "worker"`)
	shards := flag.Int("shards", 4, "transform_data members run in parallel")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, *role, *shards)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, role string, shards int) error {
	url := os.Getenv("REDIS_URL")
	if url == "" && role != "all" {
		return errors.New("-role producer and -role worker need REDIS_URL (the embedded Redis lives in one process)")
	}
	var opts *redis.Options
	if url != "" {
		o, err := redis.ParseURL(url)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		opts = o
		fmt.Println("fanout on the Redis at $REDIS_URL")
	} else {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		opts = &redis.Options{Addr: mr.Addr()}
		fmt.Println("fanout on an embedded miniredis (set REDIS_URL to use your Redis)")
	}
	if role == "worker" {
		return worker(ctx, opts, fmt.Sprintf("worker-%d", os.Getpid()), true)
	}
	if role == "all" {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, 3)
		for i := range 3 {
			go func() { errs <- worker(wctx, opts, fmt.Sprintf("worker-%d", i+1), false) }()
		}
		defer func() {
			cancel()
			for range 3 {
				if err := <-errs; err != nil {
					fmt.Fprintln(os.Stderr, "fanout: worker:", err)
				}
			}
		}()
	}
	return produce(ctx, opts, shards)
}

// newQueue returns a queue on a client of its own, with the steps registered for the named worker.
func newQueue(opts *redis.Options, name string) (*taskqueue.RedisTaskQueue, *redis.Client, error) {
	rdb := redis.NewClient(opts)
	ref := taskqueue.NewReferenceResolver()
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	registerSteps(ref, name)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, reg, &taskqueue.RedisConfig{Logger: quiet})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return q, rdb, nil
}

// worker runs one worker until ctx ends.
func worker(ctx context.Context, opts *redis.Options, name string, verbose bool) error {
	q, rdb, err := newQueue(opts, name)
	if err != nil {
		return err
	}
	defer rdb.Close()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Name: name, Concurrency: 2, Logger: quiet})
	if err != nil {
		return err
	}
	if verbose {
		fmt.Println(name, "waiting for tasks; Ctrl-C to stop")
	}
	return w.Run(ctx, 5*time.Second)
}

// registerSteps registers the three steps; each returns its output as its result.
func registerSteps(ref *taskqueue.ReferenceResolver, name string) {
	taskqueue.MustRegisterResult(ref, module, extract, func(_ context.Context, a ExtractArgs) (Done[[]Order], error) {
		orders := make([]Order, 12)
		for i := range orders {
			orders[i] = Order{ID: fmt.Sprintf("A-%02d", i+1), Customer: customers[i%len(customers)], Cents: int64(100 + 37*i)}
		}
		return Done[[]Order]{Worker: name, Data: orders}, nil
	})
	taskqueue.MustRegisterResult(ref, module, transform, func(_ context.Context, a TransformArgs) (Done[[]Order], error) {
		for i, o := range a.Orders {
			a.Orders[i].Customer = titleCase(o.Customer)
		}
		time.Sleep(50 * time.Millisecond) // stands in for real work, so that the members overlap
		return Done[[]Order]{Worker: name, Data: a.Orders}, nil
	})
	taskqueue.MustRegisterResult(ref, module, load, func(_ context.Context, a LoadArgs) (Done[int], error) {
		return Done[int]{Worker: name, Data: len(a.Orders)}, nil
	})
}

// produce runs the pipeline: each step is a group run, waited for at its barrier.
func produce(ctx context.Context, opts *redis.Options, shards int) error {
	q, rdb, err := newQueue(opts, "producer")
	if err != nil {
		return err
	}
	defer rdb.Close()
	start := time.Now()
	step := func(name string, specs ...*taskqueue.TaskSpec) (*taskqueue.GroupResult, error) {
		run, err := q.DispatchGroup(ctx, name, specs, nil)
		if err != nil {
			return nil, err
		}
		fmt.Printf("dispatched %s (%d members)\n", run.GroupID(), len(specs))
		return run.Wait(ctx, &taskqueue.WaitOptions{Timeout: 30 * time.Second}) // strict: any failure fails the step
	}

	res, err := step("etl_extract", &taskqueue.TaskSpec{TaskID: "extract", Executable: taskqueue.Ref(module, extract, ExtractArgs{Source: "orders.csv"})})
	if err != nil {
		return err
	}
	var extracted Done[[]Order]
	if err := res.Members[0].Decode(&extracted); err != nil {
		return err
	}
	fmt.Printf("  %s: %d records (%s)\n", extract, len(extracted.Data), extracted.Worker)

	specs := make([]*taskqueue.TaskSpec, shards)
	for i := range specs {
		var part []Order
		for j := i; j < len(extracted.Data); j += shards {
			part = append(part, extracted.Data[j])
		}
		specs[i] = &taskqueue.TaskSpec{TaskID: fmt.Sprintf("shard-%d", i), Executable: taskqueue.Ref(module, transform, TransformArgs{Shard: i, Orders: part})}
	}
	res, err = step("etl_transform", specs...)
	if err != nil {
		return err
	}
	var cleaned []Order
	for _, m := range res.Members {
		var d Done[[]Order]
		if err := m.Decode(&d); err != nil {
			return err
		}
		fmt.Printf("  %s %s: %d records (%s)\n", transform, m.ID, len(d.Data), d.Worker)
		cleaned = append(cleaned, d.Data...)
	}

	res, err = step("etl_load", &taskqueue.TaskSpec{TaskID: "load", Executable: taskqueue.Ref(module, load, LoadArgs{Table: "warehouse.orders", Orders: cleaned})})
	if err != nil {
		return err
	}
	var loaded Done[int]
	if err := res.Members[0].Decode(&loaded); err != nil {
		return err
	}
	fmt.Printf("  %s: wrote %d rows to warehouse.orders (%s)\n", load, loaded.Data, loaded.Worker)
	fmt.Printf("done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// titleCase trims a name and capitalises each word ("  alan turing " -> "Alan Turing").
func titleCase(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		words[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	return strings.Join(words, " ")
}
