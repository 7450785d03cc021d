package taskqueue

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"
)

const (
	firstPickupBackoff = 50 * time.Millisecond // the wait after the first of a run of failed pickups; it doubles
	// maxPickupBackoff bounds the wait between failed pickups; a pickup refused by ACL waits this long at once.
	maxPickupBackoff = 5 * time.Second
)

// picker makes the worker's pickups: a blocking pickup of as many tasks as there are free slots (up to a batch),
// none while a suspect is admitted to the gate. A pickup's envelopes are decoded and its tasks launched on a
// goroutine of its own, while the next pickup is on its way: decoding is Go CPU and the pickup's round trip is
// waiting, so the two overlap.
//
// While the queue has tasks, a second lane makes pickups too, so that two are on their way at once: slots that
// free while one pickup waits for its reply are filled by the other, rather than sitting idle for a round trip
// (what bounds a worker of low concurrency whose tasks are short). The second lane never blocks: it leases what is
// ready, and after a pickup that found fewer tasks than it asked for it waits until a pickup of the first lane
// finds some. A pickup that arrives while a suspect is admitted (the other lane's) is handed back at once, not
// counted as a delivery, so that no task is leased while a suspect may crash the worker. The goroutines run from
// Start until Stop.
type picker struct {
	w      *TaskWorker
	ctx    context.Context // ends the pickups at Stop
	cancel context.CancelFunc
	done   chan struct{} // closed once the goroutines have ended
	found  chan struct{} // a first-lane pickup found tasks: the second lane may pick up (capacity 1)
}

// decodeJob is a pickup for the decoding goroutine; launched, when not nil, is closed once its deliveries started.
type decodeJob struct {
	l        leased
	launched chan struct{}
}

func newPicker(w *TaskWorker) *picker {
	ctx, cancel := context.WithCancel(w.baseCtx)
	return &picker{w: w, ctx: ctx, cancel: cancel, done: make(chan struct{}), found: make(chan struct{}, 1)}
}

func (p *picker) start() { go p.run() }

// stop ends the pickups: it cancels them, interrupts a blocked one, waits until both goroutines have ended (every
// task picked up is launched or handed back by then), then clears what the interrupt left.
func (p *picker) stop(ctx context.Context) {
	p.cancel()
	ictx, icancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = p.w.q.Interrupt(ictx, p.w.cfg.Name)
	icancel()
	<-p.done
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = p.w.q.clearInterrupt(cctx, p.w.cfg.Name)
	ccancel()
}

func (p *picker) run() {
	defer close(p.done)
	w := p.w
	jobs := make(chan decodeJob, 1)
	decoded := make(chan struct{})
	go p.decode(jobs, decoded)
	second := make(chan struct{})
	go p.secondLane(jobs, second)
	defer func() { <-second; close(jobs); <-decoded }()
	var failing pickupFailures
	for {
		if !w.gate.waitClear(p.ctx) {
			return
		}
		select {
		case <-p.ctx.Done():
			return
		case <-w.slots:
		}
		if err := p.pickup(p.gatherSlots(1), jobs); err != nil {
			if p.ctx.Err() != nil {
				return
			}
			w.emit(Event{Kind: EventQueueError, Err: err})
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(failing.failed(w, err)):
			}
			continue
		}
		failing.recovered(w)
		if p.ctx.Err() != nil {
			return
		}
	}
}

// pickup leases up to n tasks, n free slots taken, and hands them to the decoding goroutine, which launches them
// (waiting until a pickup that holds a suspect has launched it, so that the next pickup waits for the suspect, as
// it would without that goroutine). The slots of the tasks not leased are freed.
func (p *picker) pickup(n int, jobs chan<- decodeJob) error {
	w := p.w
	w.health.pickupBegin()
	l, err := w.q.dequeueRaw(p.ctx, DequeueOptions{Max: n, Wait: w.cfg.BlockTimeout, Consumer: w.cfg.Name})
	if len(l.ds) > 0 {
		p.hand(l, jobs)
	}
	w.health.pickupEnd(err)
	w.freeSlots(n - len(l.ds))
	if len(l.ds) > 0 {
		select {
		case p.found <- struct{}{}:
		default:
		}
	}
	return err
}

// secondLane makes the second lane's pickups (see [picker]) until Stop.
func (p *picker) secondLane(jobs chan<- decodeJob, done chan<- struct{}) {
	defer close(done)
	w := p.w
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.found:
		}
		for full := true; full; {
			if !w.gate.waitClear(p.ctx) {
				return
			}
			select {
			case <-p.ctx.Done():
				return
			case <-w.slots:
			}
			n := p.gatherSlots(1)
			l, err := w.q.dequeueRaw(p.ctx, DequeueOptions{Max: n, Consumer: w.cfg.Name}) // no Wait: it never blocks
			if len(l.ds) > 0 {
				p.hand(l, jobs)
			}
			w.freeSlots(n - len(l.ds))
			if err != nil {
				// The first lane's pickups meet the same failure and report it.
				w.cfg.Logger.Debug("taskqueue: second-lane pickup failed", slog.String("worker", w.cfg.Name), slog.Any("error", err))
			}
			full = err == nil && len(l.ds) == n
		}
	}
}

// hand gives a pickup to the decoding goroutine, and waits until it is launched when it holds a suspect.
func (p *picker) hand(l leased, jobs chan<- decodeJob) {
	j := decodeJob{l: l}
	if slices.ContainsFunc(l.ds, isSuspect) {
		j.launched = make(chan struct{})
	}
	jobs <- j
	if j.launched != nil {
		<-j.launched
	}
}

// decode decodes and resolves each pickup's envelopes (the queue parks those that cannot run, whose slots it
// frees) and launches the deliveries, until jobs is closed.
func (p *picker) decode(jobs <-chan decodeJob, done chan<- struct{}) {
	defer close(done)
	w := p.w
	for j := range jobs {
		ds := w.q.rehydrateLeased(context.WithoutCancel(p.ctx), j.l)
		w.freeSlots(len(j.l.ds) - len(ds))
		if w.gate.suspects.Load() > 0 {
			// The other lane's suspect was admitted while this pickup was on its way: hand it back.
			w.releaseNew(ds)
		} else {
			w.launch(ds)
		}
		if j.launched != nil {
			close(j.launched)
		}
	}
}

// gatherSlots takes more free slots, up to a batch. While tasks are running and fewer than half a batch of slots
// is free, it lingers up to a millisecond for the running tasks to free more: one pickup of many tasks costs Redis
// far less than many pickups of a few. An idle worker never lingers, so pickup latency is unaffected.
func (p *picker) gatherSlots(n int) int {
	w := p.w
	for n < w.cfg.BatchSize {
		select {
		case <-w.slots:
			n++
			continue
		default:
		}
		break
	}
	if n >= w.cfg.BatchSize/2 || n == w.cfg.Concurrency || w.inflightCount() == 0 {
		return n
	}
	linger := time.NewTimer(time.Millisecond)
	defer linger.Stop()
	for n < w.cfg.BatchSize/2 {
		select {
		case <-w.slots:
			n++
		case <-linger.C:
			return n
		}
	}
	return n
}

// pickupFailures is the pickup loop's run of failed pickups, and the backoff between them. A transient failure (a
// Cluster slot on the move, a failover, a lost connection: [ErrTransient]) is logged as a warning once, when the
// run starts, and at debug level for each attempt, with its reason rather than the Redis error's text; a pickup
// refused by ACL is an error each time; any other failure is a warning each time. The end of a run is logged once.
type pickupFailures struct {
	n       int
	since   time.Time
	backoff time.Duration // the wait after the next failure
}

// failed logs a failed pickup and returns how long to wait before the next one.
func (p *pickupFailures) failed(w *TaskWorker, err error) time.Duration {
	if p.n == 0 {
		p.since = time.Now()
		p.backoff = firstPickupBackoff
	}
	p.n++
	backoff := p.backoff
	var te *TransientError
	switch {
	case errors.Is(err, ErrPermission):
		// Retrying soon cannot help: wait the longest, and say so loudly.
		backoff = maxPickupBackoff
		w.cfg.Logger.Error("taskqueue: pickup refused by Redis ACL; check the user's allowlist (docs/operations.md)", slog.String("worker", w.cfg.Name), slog.Any("error", err))
	case !errors.As(err, &te):
		w.cfg.Logger.Warn("taskqueue: pickup failed; retrying", slog.String("worker", w.cfg.Name), slog.Any("error", err), slog.Duration("backoff", backoff))
	default:
		if p.n == 1 {
			w.cfg.Logger.Warn("taskqueue: pickup failing on a transient Redis error; retrying with backoff", slog.String("worker", w.cfg.Name),
				slog.String("reason", te.Reason))
		}
		w.cfg.Logger.Debug("taskqueue: pickup failed; retrying", slog.String("worker", w.cfg.Name), slog.String("reason", te.Reason),
			slog.Duration("backoff", backoff), slog.Any("error", err)) // the Redis reply (ASK <slot> <addr>, ...) at debug level only
	}
	p.backoff = min(backoff*2, maxPickupBackoff)
	return backoff
}

func (p *pickupFailures) recovered(w *TaskWorker) {
	if p.n == 0 {
		return
	}
	w.cfg.Logger.Info("taskqueue: pickup recovered", slog.String("worker", w.cfg.Name), slog.Int("failed_pickups", p.n),
		slog.Duration("after", time.Since(p.since).Round(time.Millisecond)))
	p.n = 0
}
