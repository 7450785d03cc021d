// Worker of the distributed example: it registers the functions named in package tasks and hands everything
// else (flags, environment, Redis, signals, graceful stop) to taskqueue.RunWorkerMain.
//
//	go run ./examples/distributed/worker --redis-url redis://localhost:6379/0 --concurrency 4
//	go run ./examples/distributed/worker --help
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/examples/distributed/tasks"
)

func main() {
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, tasks.Module, tasks.ResizeImage, resizeImage)
	taskqueue.MustRegister(ref, tasks.Module, tasks.SendEmail, sendEmail)
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)

	if err := taskqueue.RunWorkerMain(context.Background(), reg, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// resizeImage pretends to work for a while. It honours ctx, which is cancelled when the task times out, its lease
// is lost, or the worker's shutdown grace runs out: the task then goes back to the queue for another worker.
func resizeImage(ctx context.Context, a tasks.ResizeArgs) error {
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	fmt.Printf("resized %s to %dpx\n", a.Image, a.Width)
	return nil
}

// sendEmail refuses an address without '@' for good (ErrSkipRetry dead-letters the task at once, since retrying
// cannot help); other failures would be retried with backoff.
func sendEmail(_ context.Context, a tasks.EmailArgs) error {
	if !strings.Contains(a.To, "@") {
		return fmt.Errorf("%w: invalid address %q", taskqueue.ErrSkipRetry, a.To)
	}
	fmt.Printf("sent %q to %s\n", a.Subject, a.To)
	return nil
}
