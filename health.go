package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// WorkerHealth is a snapshot of a [TaskWorker]'s contact with Redis, for a liveness or readiness probe: see
// [TaskWorker.Health]. Times are the worker's local clock; the zero time means "never".
type WorkerHealth struct {
	// Running reports whether the worker has started and is not stopping or stopped.
	Running bool
	// InFlight counts the deliveries the worker holds: running, or finished and waiting for their ack.
	InFlight int
	// LastPickup is when a pickup (a Dequeue call, empty or not) last completed without error.
	LastPickup time.Time
	// PickupWaitingSince is when the pickup loop began waiting for Redis without a successful answer since: the
	// start of the pending pickup call (a healthy one blocks up to BlockTimeout), or of the first of a run of
	// failed ones. Zero while the loop waits for a free slot (all slots busy is not stuck) and between pickups.
	PickupWaitingSince time.Time
	// LastPickupError is the error of the last failed pickup, nil once a pickup succeeded again.
	LastPickupError error
	// LastAck is when an ack round trip last succeeded.
	LastAck time.Time
	// LastHeartbeat is when a lease renewal round trip last succeeded.
	LastHeartbeat time.Time
	// StuckAfter is how long the pickup loop may go without a successful round trip before Err reports
	// [ErrWorkerStuck]: twice [WorkerConfig.BlockTimeout] plus one second. A healthy pickup returns within one
	// BlockTimeout (plus its round trips), even when no task comes.
	StuckAfter time.Duration
	// Err is nil for a healthy worker. It wraps [ErrWorkerStuck] when the pickup loop has had no successful round
	// trip for longer than StuckAfter, and [ErrClosed] when the worker is not running.
	Err error
}

// workerHealth holds the timestamps that [TaskWorker.Health] reports; the worker's loops write them, a probe
// reads them, without a lock.
type workerHealth struct {
	pickupOK      atomic.Int64 // unix ns of the last successful pickup
	pickupSince   atomic.Int64 // unix ns when the current unsuccessful stretch of pickups began; 0 when none
	ackOK         atomic.Int64
	heartbeatOK   atomic.Int64
	lastPickupErr atomic.Pointer[error]
}

// pickupBegin records that the pickup loop is about to call Redis. A stretch of failures keeps its start.
func (h *workerHealth) pickupBegin() {
	h.pickupSince.CompareAndSwap(0, time.Now().UnixNano())
}

// pickupEnd records the outcome of a pickup.
func (h *workerHealth) pickupEnd(err error) {
	if err != nil {
		h.lastPickupErr.Store(&err)
		return
	}
	h.pickupOK.Store(time.Now().UnixNano())
	h.pickupSince.Store(0)
	h.lastPickupErr.Store(nil)
}

// ackDone records a successful ack round trip.
func (h *workerHealth) ackDone() { h.ackOK.Store(time.Now().UnixNano()) }

// heartbeatDone records a successful lease renewal round trip.
func (h *workerHealth) heartbeatDone() { h.heartbeatOK.Store(time.Now().UnixNano()) }

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// stuckAfter is the bound of [WorkerHealth.StuckAfter].
func (w *TaskWorker) stuckAfter() time.Duration { return 2*w.cfg.BlockTimeout + time.Second }

// Health reports the worker's contact with Redis: when pickups, acks and lease renewals last succeeded, how many
// deliveries it holds, and in Err whether it is stuck ([ErrWorkerStuck]) or not running ([ErrClosed]). It is cheap
// (no Redis call) and safe to call from any goroutine, e.g. a health endpoint.
func (w *TaskWorker) Health() WorkerHealth {
	w.mu.Lock()
	running := w.state == stateRunning
	inFlight := w.inflightCount()
	w.mu.Unlock()
	h := WorkerHealth{
		Running:            running,
		InFlight:           inFlight,
		LastPickup:         unixTime(w.health.pickupOK.Load()),
		PickupWaitingSince: unixTime(w.health.pickupSince.Load()),
		LastAck:            unixTime(w.health.ackOK.Load()),
		LastHeartbeat:      unixTime(w.health.heartbeatOK.Load()),
		StuckAfter:         w.stuckAfter(),
	}
	if p := w.health.lastPickupErr.Load(); p != nil {
		h.LastPickupError = *p
	}
	switch {
	case !running:
		h.Err = fmt.Errorf("%w: worker %s is not running", ErrClosed, w.cfg.Name)
	case !h.PickupWaitingSince.IsZero() && time.Since(h.PickupWaitingSince) > h.StuckAfter:
		h.Err = fmt.Errorf("%w: worker %s has had no successful pickup for %s (bound %s); last error: %v",
			ErrWorkerStuck, w.cfg.Name, time.Since(h.PickupWaitingSince).Round(time.Millisecond), h.StuckAfter, h.LastPickupError)
	}
	return h
}

// watchHealth logs, until ctx is done, when the worker becomes stuck (an error) and when it recovers (info),
// checking every quarter of the stuck bound. The worker binary runs it, so that a stuck consumer shows in its log.
func (w *TaskWorker) watchHealth(ctx context.Context, logger *slog.Logger) {
	t := time.NewTicker(max(w.stuckAfter()/4, 10*time.Millisecond))
	defer t.Stop()
	stuck := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := w.Health()
		switch isStuck := h.Running && h.Err != nil; {
		case isStuck && !stuck:
			logger.Error("taskqueue: worker stuck", slog.String("worker", w.cfg.Name),
				slog.Time("waiting_since", h.PickupWaitingSince), slog.Int("in_flight", h.InFlight), slog.Any("error", h.Err))
		case !isStuck && stuck && h.Running:
			logger.Info("taskqueue: worker recovered", slog.String("worker", w.cfg.Name), slog.Time("last_pickup", h.LastPickup))
		}
		stuck = h.Running && h.Err != nil
	}
}

// warnSlowRenewal logs a warning when the worker's Redis client cannot give up on a lease renewal within a
// heartbeat: go-redis ignores context deadlines on the socket unless ContextTimeoutEnabled is set, so on a silent
// connection a renewal waits out the client's read or write timeout, and a running task would be cancelled only
// after its lease expired (docs/reliability.md, scenario 5).
func warnSlowRenewal(q TaskQueue, c *WorkerConfig) {
	if m, ok := q.(*MultiQueue); ok { // multiqueue.go: its queues share one client
		q = m.units[0]
	}
	rq, ok := q.(*RedisTaskQueue)
	if !ok {
		return
	}
	client, ok := rq.rdb.(*redis.Client)
	if !ok {
		return
	}
	o := client.Options()
	if o.ContextTimeoutEnabled {
		return
	}
	wait := max(o.ReadTimeout, o.WriteTimeout)
	if o.ReadTimeout > 0 && o.WriteTimeout > 0 && wait <= c.Heartbeat {
		return
	}
	c.Logger.Warn("taskqueue: the Redis client ignores context deadlines and may wait longer than a heartbeat on a silent "+
		"connection, so a running task could be cancelled only after its lease expired: set ContextTimeoutEnabled on the "+
		"client, or read and write timeouts below the heartbeat", slog.String("worker", c.Name),
		slog.Duration("heartbeat", c.Heartbeat), slog.Duration("read_timeout", o.ReadTimeout), slog.Duration("write_timeout", o.WriteTimeout))
}
