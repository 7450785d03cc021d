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

// A unique task: one report per customer at a time. The second enqueue is refused with the holder's id (or
// dropped, by option); once the first task succeeds, the key is free again.
func ExampleUnique() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "reports", "build", func(context.Context, string) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "reports", reg, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	report := func(id string, drop bool) *taskqueue.TaskSpec {
		return &taskqueue.TaskSpec{
			TaskID:     id,
			Executable: taskqueue.Ref("reports", "build", "acme"),
			Unique:     &taskqueue.Unique{Key: "report:acme", TTL: time.Hour, DropDuplicate: drop},
		}
	}

	first := report("report-1", false)
	if err := q.Enqueue(ctx, first); err != nil {
		panic(err)
	}
	fmt.Println("first:", first.Enqueued)

	err = q.Enqueue(ctx, report("report-2", false))
	var dup *taskqueue.DuplicateError
	if errors.As(err, &dup) {
		fmt.Println("second refused:", errors.Is(err, taskqueue.ErrUniqueKeyHeld), "held by", dup.TaskID)
	}
	third := report("report-3", true)
	if err := q.Enqueue(ctx, third); err != nil {
		panic(err)
	}
	fmt.Println("third:", third.Enqueued)

	// A worker runs the first task; its success frees the key.
	ds, err := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 1})
	if err != nil {
		panic(err)
	}
	if err := q.Ack(ctx, ds...); err != nil {
		panic(err)
	}
	fourth := report("report-4", false)
	if err := q.Enqueue(ctx, fourth); err != nil {
		panic(err)
	}
	fmt.Println("after success:", fourth.Enqueued)
	// Output:
	// first: stored
	// second refused: true held by report-1
	// third: dropped
	// after success: stored
}
