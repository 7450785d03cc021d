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

// An operator's view of a queue: counts, the tasks of a state, one task, and what to do with dead letters.
// Producers and workers never need an Admin.
func ExampleAdmin() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "billing", "charge", func(context.Context, int) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "billing", reg, nil)
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	for i, id := range []string{"charge-1", "charge-2", "charge-3"} {
		if err := q.Enqueue(ctx, taskqueue.NewTaskSpec(id, taskqueue.Ref("billing", "charge", 100*(i+1)))); err != nil {
			panic(err)
		}
	}
	later := &taskqueue.TaskSpec{TaskID: "invoice", Executable: taskqueue.Ref("billing", "charge", 5), ProcessIn: time.Hour}
	if err := q.Enqueue(ctx, later); err != nil {
		panic(err)
	}
	// A worker gives up on charge-1 and retries charge-2 in a minute.
	ds, err := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 2})
	if err != nil {
		panic(err)
	}
	if err := q.DeadLetter(ctx, ds[0], errors.New("card declined")); err != nil {
		panic(err)
	}
	if err := q.Retry(ctx, ds[1], time.Minute, errors.New("gateway timeout")); err != nil {
		panic(err)
	}

	admin, err := taskqueue.NewAdmin(q) // a *ShardedQueue works the same
	if err != nil {
		panic(err)
	}
	st, err := admin.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v paused=%v\n", st.Counts, st.Paused)

	scheduled, err := admin.List(ctx, taskqueue.StateScheduled, 0, 10)
	if err != nil {
		panic(err)
	}
	for _, t := range scheduled {
		fmt.Println("scheduled:", t.TaskID, t.State)
	}
	dead, err := admin.Inspect(ctx, "charge-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(dead.TaskID, dead.State, dead.Reason)

	n, err := admin.RequeueDead(ctx, "charge-1")
	if err != nil {
		panic(err)
	}
	fmt.Println("requeued", n)
	n, err = admin.Purge(ctx, taskqueue.StateScheduled)
	if err != nil {
		panic(err)
	}
	fmt.Println("purged", n)
	if err := admin.Pause(ctx); err != nil {
		panic(err)
	}
	st, err = admin.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v paused=%v\n", st.Counts, st.Paused)
	// Output:
	// {Pending:1 Active:0 Scheduled:2 Dead:1} paused=false
	// scheduled: charge-2 retry
	// scheduled: invoice scheduled
	// charge-1 dead card declined
	// requeued 1
	// purged 2
	// {Pending:2 Active:0 Scheduled:0 Dead:0} paused=true
}
