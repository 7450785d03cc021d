package taskqueue_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// A task of PriorityHigh is picked up before the tasks of the default level enqueued before it, and one of
// PriorityLow after them.
func ExampleTaskSpec_priority() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	ref := taskqueue.NewReferenceResolver()
	_ = taskqueue.Register(ref, "mail", "send", func(context.Context, struct{}) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	_ = reg.Register(taskqueue.DefaultResolverID, ref)
	q, _ := taskqueue.NewRedisTaskQueue(rdb, "example", reg, nil)

	ctx := context.Background()
	for _, t := range []struct {
		id string
		p  taskqueue.Priority
	}{{"digest", taskqueue.PriorityLow}, {"newsletter", taskqueue.PriorityDefault}, {"password-reset", taskqueue.PriorityHigh}} {
		_ = q.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: t.id, Executable: taskqueue.Ref("mail", "send", nil), Priority: t.p})
	}
	ds, _ := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 3})
	for _, d := range ds {
		fmt.Println(d.Spec.TaskID, d.Spec.Priority)
	}
	_ = q.Ack(ctx, ds...)
	// Output:
	// password-reset high
	// newsletter default
	// digest low
}
