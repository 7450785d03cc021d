package taskqueue

import (
	"context"
	"log/slog"
	"time"
)

// leaseKeeper renews the leases of running tasks every heartbeat, cancels those whose lease was lost, and cancels
// those whose lease could not be renewed before it would expire. Its goroutine runs from Start through Stop's grace
// period, until no task runs.
type leaseKeeper struct {
	w        *TaskWorker
	stopping chan struct{} // closed when no task runs any more
	done     chan struct{}
}

func newLeaseKeeper(w *TaskWorker) *leaseKeeper {
	return &leaseKeeper{w: w, stopping: make(chan struct{}), done: make(chan struct{})}
}

func (k *leaseKeeper) start() { go k.run() }

// stop returns once the lease keeper's goroutine has ended.
func (k *leaseKeeper) stop() {
	close(k.stopping)
	<-k.done
}

func (k *leaseKeeper) run() {
	defer close(k.done)
	t := time.NewTicker(k.w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-k.stopping:
			return
		case <-t.C:
		}
		k.heartbeat()
	}
}

// heartbeat renews the leases of the tasks the worker holds, then cancels those whose lease was lost and those
// whose lease the next heartbeat could not renew in time.
func (k *leaseKeeper) heartbeat() {
	w := k.w
	fl := w.held()
	if len(fl) == 0 {
		return
	}
	lost, err := k.renew(fl)
	for _, f := range fl {
		if !f.d.localEnds.IsZero() {
			f.setEnds(w, f.d.localEnds)
		}
	}
	if err != nil {
		w.emit(Event{Kind: EventQueueError, Err: err})
		w.cfg.Logger.Warn("taskqueue: lease renewal failed", slog.String("worker", w.cfg.Name), slog.Any("error", err))
	} else {
		w.health.heartbeatDone()
	}
	cancelLost(fl, lost)
	// Cancel what the next heartbeat could not save in time.
	limit := time.Now().Add(w.cfg.Heartbeat)
	for _, f := range fl {
		if f.d.localEnds.Before(limit) {
			f.cancel(ErrLeaseExpired)
		}
	}
}

// renew extends the leases of fl in one call and returns the deliveries whose lease was lost. A renewal gives up half
// a heartbeat before the soonest lease it renews ends (a quarter of a heartbeat at the least, so that a worker
// resuming from a stall still learns from Redis which leases it lost): without the bound, a renewal that hangs for a
// whole heartbeat would let heartbeat's check run only as the lease ends. It is resent on a transient error, within
// the same bound.
func (k *leaseKeeper) renew(fl []*inflight) ([]*Delivery, error) {
	h := k.w.cfg.Heartbeat
	now := time.Now()
	timeout := h
	ds := make([]*Delivery, 0, len(fl))
	for _, f := range fl {
		timeout = min(timeout, max(f.d.localEnds.Sub(now)-h/2, h/4))
		ds = append(ds, f.d)
	}
	var lost []*Delivery
	err := resend{until: now.Add(timeout), strict: true}.do(func(ctx context.Context) error {
		var err error
		lost, err = k.w.q.ExtendLeases(ctx, ds)
		return err
	})
	return lost, err
}

// cancelLost cancels, with [ErrLeaseLost], the runs of fl whose deliveries are in lost.
func cancelLost(fl []*inflight, lost []*Delivery) {
	if len(lost) == 0 {
		return
	}
	isLost := make(map[*Delivery]bool, len(lost))
	for _, d := range lost {
		isLost[d] = true
	}
	for _, f := range fl {
		if isLost[f.d] {
			f.cancel(ErrLeaseLost)
		}
	}
}
