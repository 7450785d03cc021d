// Package taskqueuetest helps the unit suites of code that uses [taskqueue]: assert what a producer enqueued,
// list a queue's tasks, run them synchronously with their results and errors, and move the clock for delayed
// tasks, on a miniredis of the test's own or on a real Redis.
//
// Every helper takes the test's [testing.TB] first and reports failures through it (t.Helper, t.Errorf,
// t.Fatalf), so it works beside any assertion library. Tasks are read through [taskqueue.Admin] and decoded from
// their stored envelope (docs/data-format.md): tests need no mirror of it.
//
// # A producer's suite in a few lines
//
//	func TestQueueInvoice(t *testing.T) {
//		k := taskqueuetest.New(t) // a miniredis, a registry, a quiet logger, a queue
//		taskqueue.MustRegisterResult(k.Resolver, "billing", "send_invoice", SendInvoice)
//
//		if err := QueueInvoice(t.Context(), k.Queue, 42, "ada@example.com", 0); err != nil {
//			t.Fatal(err)
//		}
//		taskqueuetest.RequireEnqueued(t, k.Queue, "billing", "send_invoice",
//			InvoiceArgs{OrderID: 42, Email: "ada@example.com"})
//
//		runs := taskqueuetest.RunEnqueued(t.Context(), t, k.Queue)
//		if got := taskqueuetest.RequireResult[string](t, runs[0]); got != "invoice 42 sent to ada@example.com" {
//			t.Errorf("result %q", got)
//		}
//	}
//
// # Pieces
//
//   - [New] returns a [Kit]: a miniredis ([miniredis.RunT]), or a real Redis with [WithAddr] (a redis-server of
//     the test's own from [RedisServer]); a client; a registry with a reference resolver ([Kit.Resolver]) where the
//     test registers the functions to run, or the code under test's registry ([WithRegistry]); a logger that
//     discards everything, so queue and worker logs stay out of test output ([WithLogger] to see them); and the
//     queue ([Kit.Queue]).
//   - [RequireEnqueued] asserts that exactly one task calls a function (module, name) with arguments equal, once
//     decoded into their Go type, to the ones given; [MatchOption]s add the task id, group, delay, state, retry
//     limit or metadata. A failure lists what the queue holds and why each candidate did not match.
//     [RequireNotEnqueued], [RequireNoneEnqueued] and [FindEnqueued] are its companions, [Enqueued] lists every
//     task.
//   - [RunEnqueued] runs the ready tasks one at a time through the queue's registry and returns a [RunResult]
//     per run: the handler's error, the result it stored, the state it left the task in, and tasks parked at
//     pickup (an unregistered function, arguments that do not decode). The helpers take any queue in Redis, the
//     kit's or the test's own (*taskqueue.RedisTaskQueue or *taskqueue.ShardedQueue).
//   - [Clock] and [Kit.Advance] move the miniredis clock so that delayed tasks and retries fall due.
//
// # Time on miniredis
//
// The queue's scripts time due times and leases by the Redis server's clock, the TIME command. miniredis answers
// TIME from SetTime (the machine's clock until it is set), and its FastForward only shortens key TTLs: after a
// FastForward a delayed task is still not due. A kit on miniredis therefore freezes the server's clock when it
// starts ([NewClock]), and [Kit.Advance] moves it with SetTime (and the TTLs with FastForward). Due times are then
// exact, and retries wait until the test advances the clock by their backoff. A real Redis's clock cannot be
// moved: tests of delayed tasks on a real Redis use short delays.
//
// # How tasks run
//
// [RunEnqueued] runs a [taskqueue.TaskWorker] with one slot for the length of the call and stops it before
// returning, so that middleware, [taskqueue.SetResult], timeouts, panics and retries behave as in production and
// no goroutine outlives the call. The test's goroutine waits meanwhile: handlers never run alongside the test,
// but on the worker's goroutine, so they report failures by returning errors, not with t.Fatal.
package taskqueuetest
