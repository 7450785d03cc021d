package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// Cancel one task by id, from any process: a waiting task leaves the queue at once and stays visible as
// cancelled; a running one has its handler's context cancelled with the cause ErrCancelled. Cancelling it again,
// or an unknown id, is a typed error.
func ExampleAdmin_Cancel() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "reports", "build", func(ctx context.Context, month string) error {
		// A long handler reports its progress and watches its context.
		for step := 1; step <= 4; step++ {
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx) // ErrCancelled after Admin.Cancel
			}
			_ = taskqueue.ReportProgress(ctx, float64(step)*25, "section "+fmt.Sprint(step))
		}
		return nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "reports", reg, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	later := &taskqueue.TaskSpec{TaskID: "report-2026-11", Executable: taskqueue.Ref("reports", "build", "2026-11"), ProcessIn: time.Hour}
	if err := q.Enqueue(ctx, later); err != nil {
		panic(err)
	}

	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		panic(err)
	}
	was, err := admin.Cancel(ctx, "report-2026-11")
	fmt.Println("cancelled; it was", was, err)
	info, _ := admin.Inspect(ctx, "report-2026-11")
	fmt.Println("now", info.State)
	_, err = admin.Cancel(ctx, "report-2026-11")
	fmt.Println(errors.Is(err, taskqueue.ErrAlreadyFinished), err)
	_, err = admin.Cancel(ctx, "report-1999-01")
	fmt.Println(errors.Is(err, taskqueue.ErrNotFound))
	// Output:
	// cancelled; it was scheduled <nil>
	// now cancelled
	// true taskqueue: cancel "report-2026-11": taskqueue: task already finished (cancelled)
	// true
}
