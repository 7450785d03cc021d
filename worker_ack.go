package taskqueue

import (
	"context"
	"errors"
	"time"
)

// ackLinger is how long the ack loop waits for more acks while other tasks of this worker still run: one ack
// call for many tasks costs Redis far less than many calls for a few.
const ackLinger = 200 * time.Microsecond

// acker records the outcome of succeeded tasks: it acknowledges them in batches, and then ends each one's hold on
// the suspect gate. Its goroutine runs from Start until Stop, after the last task has finished.
type acker struct {
	w        *TaskWorker
	waiting  chan *inflight // succeeded tasks waiting for their ack
	stopping chan struct{}  // closed when no more acks can come; the loop acks what is waiting and ends
	done     chan struct{}
}

func newAcker(w *TaskWorker) *acker {
	return &acker{
		w:        w,
		waiting:  make(chan *inflight, w.cfg.Concurrency*2),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (a *acker) start() { go a.run() }

// stop acks what is waiting and returns once the acker's goroutine has ended.
func (a *acker) stop() {
	close(a.stopping)
	<-a.done
}

// add hands a succeeded task to the acker. It reports false once the acker has stopped: only a handler that
// outlived Stop gets there, and its delivery was handed back.
func (a *acker) add(f *inflight) bool {
	select {
	case a.waiting <- f:
		return true
	case <-a.stopping:
		return false
	}
}

// run acks batches until stop: it sends whatever is waiting in one call, so under load one round trip acks many
// tasks and at rest an ack goes out at once.
func (a *acker) run() {
	defer close(a.done)
	batch := make([]*inflight, 0, 256)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		f, ok := a.next()
		if !ok {
			return
		}
		a.flush(a.gather(append(batch[:0], f), linger))
	}
}

// next waits for a task to ack. It reports false once the acker is stopping and no task waits.
func (a *acker) next() (*inflight, bool) {
	select {
	case f := <-a.waiting:
		return f, true
	case <-a.stopping:
		select {
		case f := <-a.waiting:
			return f, true
		default:
			return nil, false
		}
	}
}

// gather adds what is waiting to batch, up to its capacity. While other tasks still run, it lingers up to
// ackLinger for their acks.
func (a *acker) gather(batch []*inflight, linger *time.Timer) []*inflight {
	lingering := false
	for len(batch) < cap(batch) {
		select {
		case f := <-a.waiting:
			batch = append(batch, f)
			continue
		default:
		}
		if !lingering {
			if a.w.inflightCount() <= len(batch) { // no other task runs: nothing more to wait for
				break
			}
			linger.Reset(ackLinger)
			lingering = true
		}
		select {
		case f := <-a.waiting:
			batch = append(batch, f)
		case <-linger.C:
			return batch
		}
	}
	if lingering {
		linger.Stop()
	}
	return batch
}

// flush acknowledges a batch, resending it on a transient error until shortly before the last of its leases
// ends (resend.go).
func (a *acker) flush(batch []*inflight) {
	w := a.w
	ds := make([]*Delivery, len(batch))
	for i, f := range batch {
		ds[i] = f.d
	}
	err := w.outcomeResend(batch...).do(func(ctx context.Context) error { return w.q.Ack(ctx, ds...) })
	if err == nil || errors.Is(err, ErrLeaseLost) {
		w.health.ackDone()
	}
	if err == nil || !errors.Is(err, ErrLeaseLost) {
		w.forgetAll(batch)
		for _, f := range batch {
			if err != nil {
				w.reportForgotten(f, err)
			}
			w.unlockGate(f)
		}
		return
	}
	// Some were lost: ack each on its own to tell which (rare; acks are idempotent).
	for _, f := range batch {
		w.forget(f, w.outcomeResend(f).do(func(ctx context.Context) error { return w.q.Ack(ctx, f.d) }))
		w.unlockGate(f)
	}
}
