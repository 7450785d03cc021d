// Producer of the distributed example: it enqueues tasks that name the worker's functions and exits. It shares
// only Redis details (REDIS_URL or --redis-url, TASKQUEUE_KEY_PREFIX or --key-prefix) and package tasks with the
// worker; it registers no function.
//
//	go run ./examples/distributed/producer --redis-url redis://localhost:6379/0 --images 10
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/examples/distributed/tasks"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	redisURL := fs.String("redis-url", envOr("REDIS_URL", "redis://localhost:6379/0"), "Redis URL ($REDIS_URL)")
	prefix := fs.String("key-prefix", envOr("TASKQUEUE_KEY_PREFIX", taskqueue.DefaultKeyPrefix), "key prefix of the queue ($TASKQUEUE_KEY_PREFIX)")
	images := fs.Int("images", 5, "how many resize tasks to enqueue")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()

	// A producer's registry needs the resolver, not the functions: a reference resolver serializes any
	// taskqueue.Ref, and only the worker's registry can run it.
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver())
	q, err := taskqueue.NewRedisTaskQueue(rdb, *prefix, reg, nil)
	if err != nil {
		return err
	}

	batch := time.Now().Format("20060102-150405")
	var specs []*taskqueue.TaskSpec
	for i := 1; i <= *images; i++ {
		img := fmt.Sprintf("photo-%03d.jpg", i)
		specs = append(specs, taskqueue.NewTaskSpec(batch+":resize:"+img, tasks.Resize(tasks.ResizeArgs{Image: img, Width: 640})))
	}
	specs = append(specs,
		&taskqueue.TaskSpec{TaskID: batch + ":email:done", Executable: tasks.Email(tasks.EmailArgs{To: "ops@example.com", Subject: "resize batch " + batch}), ProcessIn: 2 * time.Second},
		taskqueue.NewTaskSpec(batch+":email:bad", tasks.Email(tasks.EmailArgs{To: "nobody", Subject: "lands in the dead letters"})),
	)
	if err := q.EnqueueBatch(ctx, specs); err != nil {
		return err
	}
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		return err
	}
	st, err := admin.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("enqueued %d tasks under key prefix %q\n", len(specs), *prefix)
	fmt.Printf("queue now: pending=%d active=%d scheduled=%d dead=%d\n", st.Pending, st.Active, st.Scheduled, st.Dead)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
