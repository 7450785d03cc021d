package taskqueue_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// One consumer of two queues, weighted 3 to 1: while both have tasks, three pickup batches in four come from the
// first. A worker consumes a MultiQueue as it would one queue (taskqueue.NewTaskWorker(mq, cfg)), and its
// handlers read their queue with taskqueue.QueueOf(ctx).
func ExampleNewMultiQueue() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	ref := taskqueue.NewReferenceResolver()
	_ = taskqueue.Register(ref, "mail", "send", func(context.Context, struct{}) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	_ = reg.Register(taskqueue.DefaultResolverID, ref)
	critical, _ := taskqueue.NewRedisTaskQueue(rdb, "critical", reg, nil)
	bulk, _ := taskqueue.NewRedisTaskQueue(rdb, "bulk", reg, nil)

	ctx := context.Background()
	for i := range 8 {
		_ = critical.Enqueue(ctx, taskqueue.NewTaskSpec(fmt.Sprintf("c%d", i), taskqueue.Ref("mail", "send", nil)))
		_ = bulk.Enqueue(ctx, taskqueue.NewTaskSpec(fmt.Sprintf("b%d", i), taskqueue.Ref("mail", "send", nil)))
	}
	mq, err := taskqueue.NewMultiQueue([]taskqueue.QueueWeight{{Queue: critical, Weight: 3}, {Queue: bulk, Weight: 1}}, nil)
	if err != nil {
		panic(err)
	}
	for range 4 {
		ds, _ := mq.Dequeue(ctx, taskqueue.DequeueOptions{Max: 2})
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = d.Spec.TaskID
		}
		fmt.Println(strings.Join(ids, " "))
		_ = mq.Ack(ctx, ds...)
	}
	// Output:
	// c0 c1
	// c2 c3
	// b0 b1
	// c4 c5
}
