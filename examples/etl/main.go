// ETL: the seed's example pipeline, extract_data -> transform_data -> load_data, as tasks of the "examples.tasks"
// module in the group "etl_batch".
//
// Each step is a registered function whose typed arguments carry the data; when it succeeds it enqueues the next
// step with its output. Follow-up task ids are derived from the batch id, so a step that runs twice (at-least-once
// delivery) enqueues its successor only once. Without REDIS_URL it runs on an embedded miniredis:
//
//	go run ./examples/etl
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/etl
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// The seed's names: module, functions and group.
const (
	module    = "examples.tasks"
	extract   = "extract_data"
	transform = "transform_data"
	load      = "load_data"
	group     = "etl_batch"
)

// Order is one record of the pipeline. Amounts are whole cents: exact in JSON and in Go.
type Order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Cents    int64  `json:"cents"`
}

// ExtractArgs names the source to read.
type ExtractArgs struct {
	Batch  string `json:"batch"`
	Source string `json:"source"`
}

// TransformArgs carries the extracted records.
type TransformArgs struct {
	Batch  string  `json:"batch"`
	Orders []Order `json:"orders"`
}

// LoadArgs carries the transformed records and where they go.
type LoadArgs struct {
	Batch  string  `json:"batch"`
	Table  string  `json:"table"`
	Orders []Order `json:"orders"`
}

// source stands in for the file or API an extract step would read.
const source = `A-1,ada lovelace,1250
A-2,grace hopper,899
A-3,  alan turing ,4200`

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "etl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	rdb, where, closeRedis, err := connect()
	if err != nil {
		return err
	}
	defer closeRedis()
	fmt.Println("ETL pipeline on", where)

	ref := taskqueue.NewReferenceResolver()
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, &taskqueue.RedisConfig{Logger: quiet})
	if err != nil {
		return err
	}
	loaded := make(chan LoadArgs, 1)
	registerSteps(ref, q, loaded)

	// The producer starts the pipeline with its first step.
	batch := "batch-" + time.Now().Format("20060102-150405.000")
	first := &taskqueue.TaskSpec{
		TaskID:     taskID(batch, extract),
		Executable: taskqueue.Ref(module, extract, ExtractArgs{Batch: batch, Source: "orders.csv"}),
		GroupID:    group,
	}
	if err := q.Enqueue(ctx, first); err != nil {
		return err
	}
	if err := printEnvelope(ctx, q, first.TaskID); err != nil {
		return err
	}

	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Concurrency: 4, Logger: quiet})
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	var waitErr error
	select {
	case <-loaded:
	case <-time.After(10 * time.Second):
		waitErr = errors.New("timed out waiting for load_data")
	}
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil {
		return err
	}
	if waitErr != nil {
		return waitErr
	}
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		return err
	}
	st, err := admin.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("done: pending=%d active=%d scheduled=%d dead=%d\n", st.Pending, st.Active, st.Scheduled, st.Dead)
	return nil
}

// registerSteps registers the three steps. Each one enqueues the next on q when it succeeds; load_data reports
// on loaded.
func registerSteps(ref *taskqueue.ReferenceResolver, q taskqueue.TaskQueue, loaded chan<- LoadArgs) {
	next := func(ctx context.Context, batch, name string, args any) error {
		return q.Enqueue(ctx, &taskqueue.TaskSpec{
			TaskID:     taskID(batch, name),
			Executable: taskqueue.Ref(module, name, args),
			GroupID:    group,
		})
	}
	taskqueue.MustRegister(ref, module, extract, func(ctx context.Context, a ExtractArgs) error {
		var orders []Order
		for line := range strings.Lines(source) {
			var o Order
			f := strings.Split(strings.TrimSpace(line), ",")
			if len(f) != 3 {
				return fmt.Errorf("%w: bad line %q", taskqueue.ErrSkipRetry, line) // bad input: retrying cannot help
			}
			o.ID, o.Customer = f[0], f[1]
			if _, err := fmt.Sscan(f[2], &o.Cents); err != nil {
				return fmt.Errorf("%w: bad amount in %q", taskqueue.ErrSkipRetry, line)
			}
			orders = append(orders, o)
		}
		fmt.Printf("[%s] %s: read %d records from %s\n", group, extract, len(orders), a.Source)
		return next(ctx, a.Batch, transform, TransformArgs{Batch: a.Batch, Orders: orders})
	})
	taskqueue.MustRegister(ref, module, transform, func(ctx context.Context, a TransformArgs) error {
		var total int64
		for i, o := range a.Orders {
			a.Orders[i].Customer = titleCase(o.Customer)
			total += o.Cents
		}
		fmt.Printf("[%s] %s: cleaned %d records, total %d.%02d\n", group, transform, len(a.Orders), total/100, total%100)
		return next(ctx, a.Batch, load, LoadArgs{Batch: a.Batch, Table: "warehouse.orders", Orders: a.Orders})
	})
	taskqueue.MustRegister(ref, module, load, func(_ context.Context, a LoadArgs) error {
		names := make([]string, len(a.Orders))
		for i, o := range a.Orders {
			names[i] = o.Customer
		}
		fmt.Printf("[%s] %s: wrote %d rows to %s (%s)\n", group, load, len(a.Orders), a.Table, strings.Join(names, ", "))
		loaded <- a
		return nil
	})
}

func taskID(batch, step string) string { return batch + ":" + step }

// titleCase trims a name and capitalises each word ("  alan turing " -> "Alan Turing").
func titleCase(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		words[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	return strings.Join(words, " ")
}

// printEnvelope shows the task as Redis stores it: the seed's data format, plus a schema version.
func printEnvelope(ctx context.Context, q *taskqueue.RedisTaskQueue, id string) error {
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		return err
	}
	info, err := admin.Inspect(ctx, id)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(info.Envelope), "  ", "  "); err != nil {
		return err
	}
	fmt.Printf("stored task:\n  %s\n", out.String())
	return nil
}

// connect returns a client for REDIS_URL, or for an embedded miniredis when REDIS_URL is unset.
func connect() (rdb *redis.Client, where string, closeFn func(), err error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, "", nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opts)
		return rdb, "the Redis at $REDIS_URL", func() { _ = rdb.Close() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, "", nil, err
	}
	rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, "an embedded miniredis (set REDIS_URL to use your Redis)", func() { _ = rdb.Close(); mr.Close() }, nil
}
