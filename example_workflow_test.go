package taskqueue_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// A diamond: split runs first, left and right run in parallel on its result, join adds theirs. Each node reads
// its parents' results through its context; the script that acknowledges a node releases its children.
func ExampleRedisTaskQueue_SubmitWorkflow() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	type Num struct {
		N int `json:"n"`
	}
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegisterResult(ref, "calc", "const", func(_ context.Context, a Num) (int, error) { return a.N, nil })
	taskqueue.MustRegisterResult(ref, "calc", "times", func(ctx context.Context, a Num) (int, error) {
		v, err := taskqueue.ParentResult[int](ctx, "split")
		return v * a.N, err
	})
	taskqueue.MustRegisterResult(ref, "calc", "sum", func(ctx context.Context, _ struct{}) (int, error) {
		l, err := taskqueue.ParentResult[int](ctx, "left")
		if err != nil {
			return 0, err
		}
		r, err := taskqueue.ParentResult[int](ctx, "right")
		return l + r, err
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "calc", reg, nil)
	if err != nil {
		panic(err)
	}

	wf := taskqueue.NewWorkflow("diamond")
	wf.Add("split", &taskqueue.TaskSpec{Executable: taskqueue.Ref("calc", "const", Num{N: 7})})
	wf.Add("left", &taskqueue.TaskSpec{Executable: taskqueue.Ref("calc", "times", Num{N: 2})}).After("split")
	wf.Add("right", &taskqueue.TaskSpec{Executable: taskqueue.Ref("calc", "times", Num{N: 3})}).After("split")
	wf.Add("join", &taskqueue.TaskSpec{Executable: taskqueue.Ref("calc", "sum", struct{}{})}).After("left", "right")

	ctx := context.Background()
	run, err := q.SubmitWorkflow(ctx, wf, nil)
	if err != nil {
		panic(err)
	}
	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Concurrency: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = w.Stop(ctx) }()

	info, err := run.Wait(ctx, &taskqueue.WorkflowWaitOptions{Timeout: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	fmt.Println("workflow", info.State)
	for i := range info.Nodes {
		n := &info.Nodes[i]
		var v int
		_ = n.Decode(&v)
		fmt.Printf("%-5s after [%s]: %s, %d\n", n.ID, strings.Join(n.Parents, " "), n.State, v)
	}
	// Output:
	// workflow succeeded
	// split after []: succeeded, 7
	// left  after [split]: succeeded, 14
	// right after [split]: succeeded, 21
	// join  after [left right]: succeeded, 35
}
