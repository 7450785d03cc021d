// Workflow: the seed's ETL as a DAG that runs itself from Redis: extract, then three transforms in parallel (a
// group node), then load, then report. Each node reads its parents' results through its context
// (taskqueue.ParentResult); no coordinator runs: the script that acknowledges a node releases the nodes whose
// last parent it was.
//
// Without REDIS_URL it runs on an embedded miniredis, producer and worker in one process:
//
//	go run ./examples/workflow
//
// With a real Redis, run the workers and the producer as separate processes (as many workers as you like; kill
// one with Ctrl-C or kill -9 while the workflow runs: its node comes back after its lease):
//
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/workflow -role worker   # in two or more terminals
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/workflow -role submit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// Arguments and results of the ETL's functions. They travel as JSON and arrive typed.
type (
	// ExtractArgs name the source to read.
	ExtractArgs struct {
		Source string `json:"source"`
	}
	// Row is one extracted record.
	Row struct {
		Region string `json:"region"`
		Amount int    `json:"amount"`
	}
	// TransformArgs name the region a transform sums.
	TransformArgs struct {
		Region string `json:"region"`
	}
	// Total is a transform's result.
	Total struct {
		Region string `json:"region"`
		Sum    int    `json:"sum"`
	}
	// LoadArgs name the transforms to load.
	LoadArgs struct {
		Transforms []string `json:"transforms"`
	}
	// NoArgs is for a function without arguments.
	NoArgs struct{}
)

var regions = []string{"eu", "us", "apac"}

func main() {
	role := flag.String("role", "all", "all (producer and worker in one process), worker, or submit")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *role)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "workflow:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, role string) error {
	rdb, where, closeRedis, err := connect()
	if err != nil {
		return err
	}
	defer closeRedis()
	if role != "all" && where == "" {
		return errors.New("-role worker and -role submit need REDIS_URL: processes share a Redis")
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", registry(role == "worker"), &taskqueue.RedisConfig{Logger: quiet})
	if err != nil {
		return err
	}
	switch role {
	case "worker":
		fmt.Printf("worker %d on %s; Ctrl-C to stop\n", os.Getpid(), where)
		w, err := startWorker(ctx, q, quiet)
		if err != nil {
			return err
		}
		<-ctx.Done()
		return w.Stop(context.Background())
	case "submit":
		run, err := submit(ctx, q, "etl-"+time.Now().Format("20060102-150405"))
		if err != nil {
			return err
		}
		return wait(ctx, run)
	case "all":
		if where == "" {
			where = "an embedded miniredis (set REDIS_URL to use your Redis)"
		}
		fmt.Println("taskqueue workflow on", where)
		run, err := submit(ctx, q, "etl-demo")
		if err != nil {
			return err
		}
		w, err := startWorker(ctx, q, quiet)
		if err != nil {
			return err
		}
		defer func() { _ = w.Stop(context.Background()) }()
		return wait(ctx, run)
	}
	return fmt.Errorf("unknown -role %q", role)
}

// registry holds the ETL's functions; verbose ones print which process ran them.
func registry(verbose bool) *taskqueue.ResolverRegistry {
	say := func(format string, args ...any) {
		if verbose {
			fmt.Printf("  [pid %d] %s\n", os.Getpid(), fmt.Sprintf(format, args...))
		}
	}
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegisterResult(ref, "etl", "extract", func(_ context.Context, a ExtractArgs) ([]Row, error) {
		say("extract from %s", a.Source)
		var rows []Row
		for i := range 12 {
			rows = append(rows, Row{Region: regions[i%len(regions)], Amount: 10 * (i + 1)})
		}
		return rows, nil
	})
	taskqueue.MustRegisterResult(ref, "etl", "transform", func(ctx context.Context, a TransformArgs) (Total, error) {
		rows, err := taskqueue.ParentResult[[]Row](ctx, "extract")
		if err != nil {
			return Total{}, err
		}
		t := Total{Region: a.Region}
		for _, r := range rows {
			if r.Region == a.Region {
				t.Sum += r.Amount
			}
		}
		say("transform %s: %d", a.Region, t.Sum)
		return t, nil
	})
	taskqueue.MustRegisterResult(ref, "etl", "load", func(ctx context.Context, a LoadArgs) (int, error) {
		total := 0
		for _, node := range a.Transforms {
			t, err := taskqueue.ParentResult[Total](ctx, node)
			if err != nil {
				return 0, err
			}
			total += t.Sum
		}
		say("load %d transforms: %d", len(a.Transforms), total)
		return total, nil
	})
	taskqueue.MustRegisterResult(ref, "etl", "report", func(ctx context.Context, _ NoArgs) (string, error) {
		total, err := taskqueue.ParentResult[int](ctx, "load")
		if err != nil {
			return "", err
		}
		say("report")
		return fmt.Sprintf("loaded a total of %d", total), nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	return reg
}

func startWorker(ctx context.Context, q *taskqueue.RedisTaskQueue, log *slog.Logger) (*taskqueue.TaskWorker, error) {
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Concurrency: 4, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// etl is the DAG: extract -> transforms (one node per region, in parallel) -> load -> report.
func etl(id string) *taskqueue.Workflow {
	wf := taskqueue.NewWorkflow(id)
	wf.Add("extract", &taskqueue.TaskSpec{Executable: taskqueue.Ref("etl", "extract", ExtractArgs{Source: "sales.csv"})})
	var transforms []*taskqueue.TaskSpec
	var members []string
	for _, r := range regions {
		transforms = append(transforms, &taskqueue.TaskSpec{TaskID: r, Executable: taskqueue.Ref("etl", "transform", TransformArgs{Region: r})})
		members = append(members, "transforms."+r)
	}
	wf.AddGroup("transforms", transforms...).After("extract")
	wf.Add("load", &taskqueue.TaskSpec{Executable: taskqueue.Ref("etl", "load", LoadArgs{Transforms: members}), MaxRetries: 3}).After("transforms")
	wf.Add("report", &taskqueue.TaskSpec{Executable: taskqueue.Ref("etl", "report", NoArgs{})}).After("load")
	return wf
}

// submit stores the workflow and its roots in one call; a repeated submit of the same id is a no-op.
func submit(ctx context.Context, q *taskqueue.RedisTaskQueue, id string) (*taskqueue.WorkflowRun, error) {
	run, err := q.SubmitWorkflow(ctx, etl(id), nil)
	if err != nil {
		return nil, err
	}
	fmt.Printf("submitted workflow %s (6 nodes)\n", id)
	return run, nil
}

// wait blocks until the workflow ends and prints every node with its result.
func wait(ctx context.Context, run *taskqueue.WorkflowRun) error {
	info, err := run.Wait(ctx, &taskqueue.WorkflowWaitOptions{Timeout: 2 * time.Minute})
	if err != nil {
		return err
	}
	fmt.Printf("workflow %s %s:\n", run.ID, info.State)
	for i := range info.Nodes {
		n := &info.Nodes[i]
		indent := strings.Repeat("  ", depth(info, n.ID))
		fmt.Printf("  %s%s: %s %s\n", indent, n.ID, n.State, clip(string(n.Result)))
	}
	return nil
}

// depth is a node's distance from the roots along its first parent.
func depth(info *taskqueue.WorkflowInfo, id string) int {
	d := 0
	for range info.Total {
		n, _ := info.Node(id)
		if len(n.Parents) == 0 {
			return d
		}
		id = slices.Min(n.Parents)
		d++
	}
	return d
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// connect returns a client of $REDIS_URL (where is "the Redis at $REDIS_URL"), or of an embedded miniredis
// (where is "").
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
	return rdb, "", func() { _ = rdb.Close(); mr.Close() }, nil
}
