package taskqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// ExtractArgs are the typed arguments of the example task.
type ExtractArgs struct {
	Source string `json:"source"`
	Limit  int    `json:"limit"`
}

// A producer enqueues a reference to a registered function; a worker dequeues it, runs it with its typed
// arguments and acknowledges it. Both sides need only Redis and a resolver registry.
func ExampleNewRedisTaskQueue() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "examples.tasks", "extract_data", func(_ context.Context, args ExtractArgs) error {
		fmt.Printf("extracting %d rows from %s\n", args.Limit, args.Source)
		return nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, nil)
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	spec := taskqueue.NewTaskSpec("extract_data", taskqueue.Ref("examples.tasks", "extract_data",
		ExtractArgs{Source: "s3://bucket/<day>", Limit: 1000}))
	spec.GroupID = "etl_batch"
	if err := q.Enqueue(ctx, spec); err != nil {
		panic(err)
	}

	// The stored envelope uses the seed's field names. An Admin reads it; producers and workers need none.
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		panic(err)
	}
	info, err := admin.Inspect(ctx, "extract_data")
	if err != nil {
		panic(err)
	}
	raw := info.Envelope
	var stored struct {
		ResolverID     string          `json:"resolver_id"`
		SerializedTask json.RawMessage `json:"serialized_task"`
		GroupID        string          `json:"group_id"`
	}
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		panic(err)
	}
	fmt.Println(stored.ResolverID, stored.GroupID, string(stored.SerializedTask))

	ds, err := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 10, Wait: time.Second})
	if err != nil {
		panic(err)
	}
	for _, d := range ds {
		if err := d.Spec.Executable.Run(ctx); err != nil {
			panic(err)
		}
		if err := q.Ack(ctx, d); err != nil {
			panic(err)
		}
	}
	stats, err := admin.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", stats.Counts)
	// Output:
	// default etl_batch {"strategy":"reference","payload":{"module":"examples.tasks","name":"extract_data","args":{"source":"s3://bucket/<day>","limit":1000}}}
	// extracting 1000 rows from s3://bucket/<day>
	// {Pending:0 Active:0 Scheduled:0 Dead:0}
}

// Serialized turns a spec into the portable form it takes on its way to Redis. A producer needs no registered
// function: a Ref only names one.
func ExampleTaskSpec_Serialized() {
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver())

	spec := taskqueue.NewTaskSpec("report-2024", taskqueue.Ref("examples.tasks", "build_report", map[string]int{"year": 2024}))
	ser, err := spec.Serialized(reg)
	if err != nil {
		panic(err)
	}
	fmt.Println(ser.ResolverID, ser.Executable == nil)
	fmt.Println(ser.SerializedTask.Strategy, string(ser.SerializedTask.Payload))

	// A closure cannot travel: there is nothing a worker could look it up by.
	_, err = taskqueue.NewTaskSpec("closure", taskqueue.Func(func(context.Context) error { return nil })).Serialized(reg)
	fmt.Println(errors.Is(err, taskqueue.ErrNotSerializable))
	// Output:
	// default true
	// reference {"module":"examples.tasks","name":"build_report","args":{"year":2024}}
	// true
}

// A registry maps resolver ids to resolvers. It is a value that producers and workers inject, never a global.
func ExampleResolverRegistry() {
	reg := taskqueue.NewResolverRegistry()
	ref := taskqueue.NewReferenceResolver()
	fmt.Println(reg.Register(taskqueue.DefaultResolverID, ref))
	fmt.Println(errors.Is(reg.Register(taskqueue.DefaultResolverID, ref), taskqueue.ErrDuplicateResolver))
	fmt.Println(errors.Is(reg.Register("../etc", ref), taskqueue.ErrInvalidConfig))
	fmt.Println(reg.IDs())

	payload := json.RawMessage(`{"module":"examples.tasks","name":"extract_data"}`)
	_, err := reg.Resolve("billing", taskqueue.SerializedTask{Strategy: taskqueue.StrategyReference, Payload: payload})
	fmt.Println(err)
	_, err = reg.Resolve(taskqueue.DefaultResolverID, taskqueue.SerializedTask{Strategy: "pickle", Payload: payload})
	fmt.Println(errors.Is(err, taskqueue.ErrUnsafeStrategy))
	// Output:
	// <nil>
	// true
	// true
	// [default]
	// taskqueue: unknown resolver id: "billing" is not registered
	// true
}

// Register binds a Go function to a module and name; tasks that name it get their arguments decoded into its
// argument type, strictly.
func ExampleRegister() {
	type Resize struct {
		Image string `json:"image"`
		Width int    `json:"width"`
	}
	ref := taskqueue.NewReferenceResolver()
	err := taskqueue.Register(ref, "images", "resize", func(_ context.Context, r Resize) error {
		fmt.Printf("resizing %s to %dpx\n", r.Image, r.Width)
		return nil
	})
	fmt.Println(err)

	task := func(payload string) taskqueue.SerializedTask {
		return taskqueue.SerializedTask{Strategy: taskqueue.StrategyReference, Payload: json.RawMessage(payload)}
	}
	exe, err := ref.Resolve(task(`{"module":"images","name":"resize","args":{"image":"cat.png","width":640}}`))
	if err != nil {
		panic(err)
	}
	_ = exe.Run(context.Background())

	_, err = ref.Resolve(task(`{"module":"images","name":"resize","args":{"Image":"cat.png"}}`))
	fmt.Println(errors.Is(err, taskqueue.ErrInvalidArgs))
	_, err = ref.Resolve(task(`{"module":"images","name":"resize","args":{"width":1e400}}`))
	fmt.Println(errors.Is(err, taskqueue.ErrInvalidArgs))
	_, err = ref.Resolve(task(`{"module":"os/exec","name":"Command"}`))
	fmt.Println(errors.Is(err, taskqueue.ErrUnknownTask))
	// Output:
	// <nil>
	// resizing cat.png to 640px
	// true
	// true
	// true
}
