package taskqueue

import (
	"context"
	"log/slog"
	"time"
)

// reaper returns the expired leases of crashed workers to the queue every [WorkerConfig.ReapInterval], from Start
// until Stop. A worker whose ReapInterval is -1 starts none.
type reaper struct {
	w      *TaskWorker
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newReaper(w *TaskWorker) *reaper {
	ctx, cancel := context.WithCancel(w.baseCtx)
	return &reaper{w: w, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (r *reaper) start() {
	if r.w.cfg.ReapInterval <= 0 {
		close(r.done)
		return
	}
	go r.run()
}

// stop ends the reaper's loop, cancelling a reap on its way; wait waits for its goroutine.
func (r *reaper) stop() { r.cancel() }

func (r *reaper) wait() { <-r.done }

func (r *reaper) run() {
	defer close(r.done)
	w := r.w
	t := time.NewTicker(w.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		res, err := w.q.Reap(rctx)
		cancel()
		if err != nil {
			if r.ctx.Err() == nil {
				w.emit(Event{Kind: EventQueueError, Err: err})
			}
			continue
		}
		if res.Requeued > 0 || res.Dead > 0 {
			w.cfg.Logger.Info("taskqueue: reclaimed expired leases", slog.String("worker", w.cfg.Name), slog.Int("requeued", res.Requeued), slog.Int("dead", res.Dead))
		}
	}
}
