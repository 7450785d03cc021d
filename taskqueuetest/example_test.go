package taskqueuetest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/taskqueuetest"
)

// InvoiceArgs are the arguments of the billing.send_invoice task.
type InvoiceArgs struct {
	OrderID int64  `json:"order_id"`
	Email   string `json:"email"`
}

// QueueInvoice is the producer under test: it enqueues the invoice of an order, once per order.
func QueueInvoice(ctx context.Context, q taskqueue.TaskQueue, orderID int64, email string, delay time.Duration) error {
	spec := taskqueue.NewTaskSpec(fmt.Sprintf("invoice-%d", orderID),
		taskqueue.Ref("billing", "send_invoice", InvoiceArgs{OrderID: orderID, Email: email}))
	spec.ProcessIn = delay
	return q.Enqueue(ctx, spec)
}

// SendInvoice is the worker's function for billing.send_invoice.
func SendInvoice(_ context.Context, a InvoiceArgs) (string, error) {
	return fmt.Sprintf("invoice %d sent to %s", a.OrderID, a.Email), nil
}

// A producer's unit suite: enqueue through the code under test, assert the task and its typed arguments, run
// it and check its result, on a miniredis of the test's own.
func Example_producerSuite() {
	t := &fakeT{} // in a test, the *testing.T
	defer t.finish()
	ctx := context.Background()

	k := taskqueuetest.New(t)
	taskqueue.MustRegisterResult(k.Resolver, "billing", "send_invoice", SendInvoice)

	if err := QueueInvoice(ctx, k.Queue, 42, "ada@example.com", 0); err != nil {
		t.Fatalf("QueueInvoice: %v", err)
	}
	taskqueuetest.RequireEnqueued(t, k.Queue, "billing", "send_invoice", InvoiceArgs{OrderID: 42, Email: "ada@example.com"})

	runs := taskqueuetest.RunEnqueued(ctx, t, k.Queue)
	fmt.Println(taskqueuetest.RequireResult[string](t, runs[0]))
	fmt.Println("failed:", t.Failed())
	// Output:
	// invoice 42 sent to ada@example.com
	// failed: false
}

// A delayed task runs once the test moves the miniredis clock past its due time: the queue's scripts read the
// server's TIME, which FastForward leaves alone.
func ExampleKit_Advance() {
	t := &fakeT{} // in a test, the *testing.T
	defer t.finish()
	ctx := context.Background()

	k := taskqueuetest.New(t)
	taskqueue.MustRegisterResult(k.Resolver, "billing", "send_invoice", SendInvoice)
	if err := QueueInvoice(ctx, k.Queue, 7, "bob@example.com", time.Hour); err != nil {
		t.Fatalf("QueueInvoice: %v", err)
	}
	task := taskqueuetest.RequireEnqueued(t, k.Queue, "billing", "send_invoice",
		InvoiceArgs{OrderID: 7, Email: "bob@example.com"}, taskqueuetest.WithDelay(time.Hour))
	fmt.Println(task.State, task.Due.Sub(k.Clock.Now()))

	fmt.Println("runs now:", len(taskqueuetest.RunEnqueued(ctx, t, k.Queue)))
	k.Advance(t, time.Hour)
	runs := taskqueuetest.RunEnqueued(ctx, t, k.Queue)
	fmt.Println("runs after an hour:", len(runs), runs[0].TaskID, runs[0].Err)
	// Output:
	// scheduled 1h0m0s
	// runs now: 0
	// runs after an hour: 1 invoice-7 <nil>
}

// A failed assertion lists what the queue holds and why each task of the function did not match.
func ExampleRequireEnqueued_failure() {
	t := &fakeT{} // in a test, the *testing.T
	defer t.finish()
	k := taskqueuetest.New(t)
	if err := QueueInvoice(context.Background(), k.Queue, 42, "ada@example.com", 0); err != nil {
		t.Fatalf("QueueInvoice: %v", err)
	}

	f, _ := record(func(t testing.TB) {
		taskqueuetest.RequireEnqueued(t, k.Queue, "billing", "send_invoice", InvoiceArgs{OrderID: 42, Email: "bob@example.com"})
	})
	fmt.Println(f.messages())
	// Output:
	// taskqueuetest: no task billing.send_invoice with args {OrderID:42 Email:bob@example.com} enqueued; the queue holds 1:
	// 	invoice-42 billing.send_invoice args={"order_id":42,"email":"ada@example.com"} state=pending
	// 		not a match: args {OrderID:42 Email:ada@example.com}
}

// Enqueued lists every task a queue holds, decoded from its stored envelope.
func ExampleEnqueued() {
	t := &fakeT{} // in a test, the *testing.T
	defer t.finish()
	k := taskqueuetest.New(t)
	for i, delay := range []time.Duration{0, time.Minute} {
		if err := QueueInvoice(context.Background(), k.Queue, int64(i), "ada@example.com", delay); err != nil {
			t.Fatalf("QueueInvoice: %v", err)
		}
	}
	tasks := taskqueuetest.Enqueued(t, k.Queue)
	for i := range tasks {
		task := &tasks[i]
		var args InvoiceArgs
		if err := task.DecodeArgs(&args); err != nil {
			t.Fatalf("args: %v", err)
		}
		fmt.Println(task.TaskID, task.State, task.Module+"."+task.Name, args.OrderID)
	}
	// Output:
	// invoice-0 pending billing.send_invoice 0
	// invoice-1 scheduled billing.send_invoice 1
}
