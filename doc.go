// Package taskqueue is a Redis-backed task queue: the decoupled RedisTaskQueue of Graflow's "Redis Task Queue
// Decoupling Plan", in Go.
//
// A queue needs three things: a Redis client, a key prefix and a [ResolverRegistry]. It holds no execution
// context, no session and no workflow graph, so a worker process attaches to a queue with nothing but connection
// details and the registry of the functions it can run. Tasks travel through Redis as JSON envelopes that name a
// registered function and carry its arguments; no code ever comes out of a payload.
//
// # Pieces
//
//   - [SerializedTask] is the portable form of a task, the seed's envelope: a strategy and a JSON payload. The
//     envelope stored in Redis wraps it with the seed's fields (task_id, status, created_at, strategy,
//     resolver_id, serialized_task, group_id), a schema version "v" and delivery fields; it leaves out task_id,
//     a pending status and strategy, which Redis holds already, and [TaskInfo.Record] writes them back
//     (docs/data-format.md).
//   - [TaskSpec] describes one task: an [Executable] for a local queue, or a [SerializedTask] and the
//     ResolverID that can rehydrate it for Redis. [TaskSpec.Serialized] makes the serialized-only form ahead of
//     time.
//   - [TaskResolver] serializes executables and resolves envelopes back into them. The built-in
//     [ReferenceResolver] handles the "reference" strategy: workers [Register] Go functions under a module and a
//     name; producers enqueue a [Ref] to them with typed arguments. Custom strategies are custom resolvers;
//     "pickle" and "source" are refused by design ([ErrUnsafeStrategy]).
//   - [ResolverRegistry] maps resolver ids to resolvers. It is a value that you build and inject; there is no
//     package-level registry.
//   - [TaskQueue] is what a worker consumes from. [RedisTaskQueue] keeps tasks in Redis
//     ([NewRedisTaskQueue], [RedisConfig]); every state change is one Lua script (docs/redis-keys.md). With a
//     [SigningConfig], producers sign envelopes (HMAC-SHA256, keys rotated by id) and workers park any task whose
//     signature does not verify, before resolving it (docs/security.md).
//     [MemoryQueue] keeps executables in process, unserialized, with the same delivery rules, for single-process
//     use and tests.
//   - [Admin] administers and inspects a queue in Redis, plain or sharded ([NewAdmin]): counts, the tasks of a
//     state, one task, dead letters, purges, pausing pickup, the server check. The queues' own methods are what
//     producers and workers call.
//   - [TaskWorker] runs tasks: blocking pickup in batches, bounded concurrency, lease renewal, a timeout per run,
//     panics recovered into failures, retries with backoff ([WorkerConfig.Backoff]), dead letters, [Middleware]
//     and an event hook ([WorkerConfig.OnEvent]), and a graceful stop. Tasks reach it already resolved, so a
//     worker needs only its queue. [RunWorkerMain] is a whole worker main around it: flags, environment
//     variables, the Redis connection and signals (docs/worker-cli.md).
//
// # Lifecycle
//
// A task's [State] is one of pending, scheduled, retry, active and dead: the same words in the envelope's status,
// in [Admin] and in the CLI (the seed's "ready" reads as pending). Enqueue stores the envelope and makes the task
// pending, or scheduled when it is delayed. Dequeue moves pending tasks to active, each under a lease and a new
// fencing token, and rehydrates them through the registry. The worker then settles each delivery: Ack removes the
// task, Retry makes it retry (due again after a backoff), DeadLetter parks it for an operator (dead), Release hands
// it back to the head of the queue. A delivery whose lease expires is returned to pending by the reaper, or
// dead-lettered after too many such losses. A task that cannot be decoded or resolved is dead-lettered at pickup
// with its stored bytes untouched and the reason. Dead letters stay until [Admin.RequeueDead] or
// [Admin.DeleteDead]. docs/lifecycle.md draws the states and names the script behind each transition.
//
// # Versioning and compatibility
//
// Releases follow semantic versioning; until 1.0.0 a minor version may change the Go API. The stored envelope
// and the Redis layout are promised more strongly, since producers and workers of different versions share a
// queue during a rolling deploy: every release reads every earlier envelope version ([EnvelopeVersion]) and parks
// a newer one untouched with [ErrUnsupportedVersion]; the keys under a queue's prefix change only in a minor
// release whose CHANGELOG says how queues written before keep working across the upgrade. README.md has the
// details.
//
// # Delivery guarantees
//
//   - At least once. A task leaves the queue only when one of its deliveries is acknowledged or it is
//     dead-lettered; a delivery whose worker dies comes back once its lease expires. A handler can therefore run
//     more than once for one task and should be idempotent.
//   - Leases and due times are timed by the Redis server clock (TIME inside the scripts), never by the clocks of
//     producers and workers. [TaskSpec.ProcessAt] is the one exception: it is turned into a delay on the
//     producer's clock.
//   - Fencing tokens. Each delivery gets a new token; Ack, Retry, DeadLetter, Release and lease renewal are refused
//     with [ErrLeaseLost] unless the token still owns the task, so a stalled worker never settles a task that
//     another worker now runs.
//   - Idempotent enqueue by task id. The same id with the same content is a no-op, the same id with other content
//     is [ErrTaskIDConflict] while the task exists, and an id acked recently ([RedisConfig.SettledWindow]: its
//     envelope is replaced by a short tombstone) is taken as a replay. Ack and settle calls repeated after a lost reply succeed the same way, and a worker
//     resends them (and lease renewals) on a transient Redis error ([ErrTransient]: a lost reply, a Cluster slot
//     on the move, a failover) until shortly before the lease ends, reporting the outcome once it is known.
//   - Blocking pickup. Idle workers block on a wake-up list that carries no task data; an enqueue into an empty
//     queue pushes a wake-up, so a task starts within milliseconds without any polling.
//   - Crash loops end. A task whose lease expires [RedisConfig.MaxDeliveries] deliveries in a row (it keeps
//     killing its worker) is dead-lettered with [ErrMaxDeliveries] instead of being redelivered forever.
//
// Ready tasks are leased in the order they became ready (FIFO), except that a reclaimed or released delivery goes
// back to the head of the queue. Errors wrap the sentinels of this package (test them with [errors.Is]);
// [*EnvelopeError] and [*ResolveError] carry the detail. A Redis that cannot be reached matches [ErrUnavailable]
// (and [ErrTransient]). Enqueue writes a generated task id and its outcome ([TaskSpec.Enqueued]: [Stored],
// [Duplicate], [AlreadyCompleted]) back into the spec.
//
// # Parallel groups and results
//
// [RedisTaskQueue.DispatchGroup] enqueues the members of a parallel group (Graflow's group_id) as one new run, in
// one script call; [GroupRun.Wait] blocks until every member has completed (acknowledged or dead-lettered; a
// crashed worker's member is redelivered and completes it) and applies a [GroupPolicy]: [StrictPolicy] by
// default, [BestEffortPolicy], [AtLeastPolicy], [CriticalPolicy] or one of your own. A handler hands back a
// JSON result with [SetResult] (or [RegisterResult]); members' results come back in the [GroupResult], other
// tasks' through [RedisTaskQueue.Result], [ShardedQueue.Result] or [MemoryQueue.Result]. See docs/groups.md.
//
// # Workflows
//
// A [Workflow] is a DAG of tasks (chains, diamonds, groups as nodes) that [RedisTaskQueue.SubmitWorkflow] stores
// in one script call, idempotent by its id. No coordinator runs: the script that acknowledges or dead-letters a
// node releases the nodes whose last parent it was. A node reads its parents' results with [ParentResult]; a
// [FailurePolicy] per node or edge decides what a failure does downstream; [WorkflowRun.Wait], [WorkflowRun.Inspect]
// and [WorkflowRun.Cancel] act on a submitted one. See docs/workflows.md.
//
// # Example
//
// A producer needs a reference resolver under the resolver id it uses, but none of the workers' functions:
//
//	reg := taskqueue.NewResolverRegistry()
//	reg.MustRegister(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver())
//	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, nil)
//	if err != nil {
//		return err
//	}
//	spec := taskqueue.NewTaskSpec("extract-2024-06-25",
//		taskqueue.Ref("examples.tasks", "extract_data", ExtractArgs{Source: "s3://in/2024-06-25.csv"}))
//	spec.GroupID = "etl_batch"
//	return q.Enqueue(ctx, spec)
//
// A worker registers the function under the same module and name, and runs until ctx is done:
//
//	ref := taskqueue.NewReferenceResolver()
//	taskqueue.MustRegister(ref, "examples.tasks", "extract_data",
//		func(ctx context.Context, args ExtractArgs) error {
//			log.Printf("extracting %s", args.Source)
//			return nil
//		})
//	reg := taskqueue.NewResolverRegistry()
//	reg.MustRegister(taskqueue.DefaultResolverID, ref)
//	q, err := taskqueue.NewRedisTaskQueue(rdb, "etl", reg, nil)
//	if err != nil {
//		return err
//	}
//	w, err := taskqueue.NewTaskWorker(q, &taskqueue.WorkerConfig{Concurrency: 20})
//	if err != nil {
//		return err
//	}
//	return w.Run(ctx, 30*time.Second) // then stop, handing unfinished tasks back within 30s
//
// Here rdb is any [github.com/redis/go-redis/v9.UniversalClient] (single node, Sentinel or Cluster), owned and
// closed by the caller, and ExtractArgs is a JSON-encodable struct shared by both sides.
//
// The design, the Redis layout, the envelope and the migration from Graflow's context-bound queue are described
// in docs/architecture.md, docs/redis-keys.md, docs/data-format.md, docs/lifecycle.md and docs/migration.md;
// worker binaries in docs/worker-cli.md.
package taskqueue
