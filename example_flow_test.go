package taskqueue_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// Tenant A has 6 tasks waiting and is limited to 2 at once; tenant B enqueues one task after them. The pickup
// takes turns over the tenants, so B's task is not behind A's backlog, and takes no more of A than its limit.
func ExampleAdmin_SetConcurrencyLimit() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	ref := taskqueue.NewReferenceResolver()
	_ = taskqueue.Register(ref, "report", "build", func(context.Context, struct{}) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	_ = reg.Register(taskqueue.DefaultResolverID, ref)
	q, _ := taskqueue.NewRedisTaskQueue(rdb, "example", reg, nil)
	admin, _ := taskqueue.NewAdmin(q)

	ctx := context.Background()
	_ = admin.SetConcurrencyLimit(ctx, "tenant-a", 2)
	for i := range 6 {
		_ = q.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: fmt.Sprint("a", i), Executable: taskqueue.Ref("report", "build", nil), FlowKey: "tenant-a"})
	}
	_ = q.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: "b0", Executable: taskqueue.Ref("report", "build", nil), FlowKey: "tenant-b"})

	ds, _ := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 10})
	for _, d := range ds {
		fmt.Println(d.Spec.TaskID, d.Spec.FlowKey)
	}
	st, _ := admin.FlowState(ctx)
	fmt.Println("running:", st.Running["tenant-a"], st.Running["tenant-b"], "at limit:", st.AtLimit)
	_ = q.Ack(ctx, ds...)
	// Output:
	// a0 tenant-a
	// a1 tenant-a
	// b0 tenant-b
	// running: 2 1 at limit: [tenant-a]
}
