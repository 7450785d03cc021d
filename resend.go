package taskqueue

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// The worker's one policy for the calls that record what became of a delivery: ack batches, Retry, DeadLetter
// and lease renewals. A call that fails with a transient error ([ErrTransient]: a lost reply, a Cluster slot on the
// move, a failover) is sent again after a short backoff, until shortly before the lease of its deliveries ends;
// then the worker gives up and the task comes back after its lease, as before. Resending is safe because every
// outcome script is idempotent by token and outcome (ack.lua, settle.lua; extend.lua renews again), so the worker
// reports an outcome, with one event, only once it is known.
const (
	resendFirstBackoff  = 10 * time.Millisecond  // the first wait before a resend; it doubles
	resendMaxBackoff    = 200 * time.Millisecond // the longest wait between two attempts
	outcomeAttemptFloor = time.Second            // the least time an ack, retry or dead letter attempt gets
	outcomeAttemptMax   = 10 * time.Second       // the most, on a client that obeys context deadlines
	// outcomeResendFloor is the least time an outcome call is resent for, whatever remains of its lease: with a short
	// lease, a reply held up by a short stall of Redis (a DEBUG SLEEP, a CLIENT PAUSE, a fork) is still learned
	// rather than reported as an error. (Before the policy, an ack was tried three times over ~0.6 s of backoff.)
	outcomeResendFloor = time.Second
)

// resend bounds the resends of one call.
type resend struct {
	until  time.Time // no attempt starts after it
	strict bool      // attempts end at until too (a lease renewal, which must end before the lease does)
}

// do calls call until it succeeds, fails with an error that is not transient, or no time is left for another
// attempt, and returns its last error. An attempt cut by its own deadline is transient too: its reply was lost.
func (r resend) do(call func(ctx context.Context) error) error {
	backoff := resendFirstBackoff
	for {
		timeout := time.Until(r.until)
		if !r.strict {
			timeout = min(max(timeout, outcomeAttemptFloor), outcomeAttemptMax)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := call(ctx)
		cut := err != nil && ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded)
		cancel()
		if err == nil || !(errors.Is(err, ErrTransient) || cut) {
			return err
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jittered, so that workers refused together do not come back together
		if time.Until(r.until) <= wait {
			return err
		}
		time.Sleep(wait)
		backoff = min(2*backoff, resendMaxBackoff)
	}
}

// outcomeResend is the bound of an outcome call for deliveries fs: half a heartbeat before the last of their leases
// ends (as far as this worker knows), as a lease renewal gives up, but outcomeResendFloor from now at the least. Past
// the lease, the task may go to another worker and run again whatever the answer; the fencing token keeps a late
// resend harmless, and the settled window lets it learn what happened.
func (w *TaskWorker) outcomeResend(fs ...*inflight) resend {
	var ends time.Time
	for _, f := range fs {
		if e := f.leaseEnds(w); e.After(ends) {
			ends = e
		}
	}
	return resend{until: later(ends.Add(-w.cfg.Heartbeat/2), time.Now().Add(outcomeResendFloor))}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
