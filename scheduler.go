package taskqueue

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SchedulerConfig configures a [Scheduler]. The zero value of each field takes its default; the config is
// copied.
type SchedulerConfig struct {
	// Recheck is the longest a scheduler sleeps between two passes. It does not poll: it sleeps until the
	// earliest due tick it knows of (with no schedule, until woken), and every change to the queue's schedules
	// ([Schedules.Create], Update, Resume, Trigger, Pause, Delete, from any process) wakes it through a Redis
	// pub/sub message, as does its own (re)subscription after a reconnect. Recheck is only a safety net for a
	// message lost all the same (a subscriber that could not subscribe, for one). Default 1m; 100ms to 24h.
	Recheck time.Duration
	// Claim is how long a scheduler holds the schedules it is firing, so that the others skip them meanwhile. It
	// only saves work (correctness never depends on it): a scheduler that dies holding a claim delays the
	// schedule's tick by at most Claim. Default 5s; 100ms to 1m.
	Claim time.Duration
	// Batch is the most schedules one pass claims. Default 100; 1 to 1000.
	Batch int
	// Logger receives the scheduler's logs. Default the queue's logger.
	Logger *slog.Logger
	// OnEvent, if set, is called for every [ScheduleEvent], synchronously: keep it fast.
	OnEvent func(ScheduleEvent)
	// Clock is the local clock. Default time.Now. The scheduler reads it only to stamp the tasks it enqueues
	// (their created_at, as every producer does, and which is not part of a task's identity): which ticks are
	// due comes from the Redis server's TIME, so schedulers on hosts whose clocks disagree fire the same ticks.
	// Tests set it to simulate a skewed host.
	Clock func() time.Time
}

func (c *SchedulerConfig) withDefaults(q *RedisTaskQueue) SchedulerConfig {
	out := SchedulerConfig{}
	if c != nil {
		out = *c
	}
	if out.Recheck == 0 {
		out.Recheck = time.Minute
	}
	if out.Claim == 0 {
		out.Claim = 5 * time.Second
	}
	if out.Batch == 0 {
		out.Batch = 100
	}
	if out.Logger == nil {
		out.Logger = q.cfg.Logger
	}
	if out.Clock == nil {
		out.Clock = time.Now
	}
	return out
}

func (c *SchedulerConfig) validate() error {
	switch {
	case c.Recheck < 100*time.Millisecond || c.Recheck > 24*time.Hour:
		return fmt.Errorf("%w: Recheck must be between 100ms and 24h", ErrInvalidConfig)
	case c.Claim < 100*time.Millisecond || c.Claim > time.Minute:
		return fmt.Errorf("%w: Claim must be between 100ms and 1m", ErrInvalidConfig)
	case c.Batch < 1 || c.Batch > 1000:
		return fmt.Errorf("%w: Batch must be between 1 and 1000", ErrInvalidConfig)
	}
	return nil
}

// ScheduleEventKind names what a [Scheduler] did with a schedule.
type ScheduleEventKind string

// Events a scheduler reports through [SchedulerConfig.OnEvent].
const (
	// ScheduleFired: a tick's task was enqueued; ScheduleEvent.Outcome says whether this scheduler stored it or
	// found it there ([Duplicate], [AlreadyCompleted]: another scheduler fired the tick first).
	ScheduleFired ScheduleEventKind = "fired"
	// ScheduleSkipped: ticks later than the schedule's misfire grace, or beyond its catch-up bound, were
	// skipped; Tick is the first skipped, Next the tick the schedule continues with.
	ScheduleSkipped ScheduleEventKind = "skipped"
	// ScheduleUndecodable: the stored schedule cannot be read by this build (Err wraps
	// [ErrScheduleUndecodable]); it is skipped, and reported once per stored version by each scheduler.
	ScheduleUndecodable ScheduleEventKind = "undecodable"
	// ScheduleFailed: a pass failed (Redis unreachable, an enqueue refused); the ticks are fired again later.
	ScheduleFailed ScheduleEventKind = "failed"
)

// ScheduleEvent describes one step of a [Scheduler].
type ScheduleEvent struct {
	Kind     ScheduleEventKind
	Schedule string         // the schedule's name; empty for a failed pass
	Tick     time.Time      // the tick fired, or the first skipped
	Next     time.Time      // skipped: the tick the schedule continues with
	TaskID   string         // fired: the tick's task id
	Outcome  EnqueueOutcome // fired: what the enqueue did
	Err      error
}

// Scheduler fires the ticks of a queue's schedules ([Schedules.Create]). Any number of schedulers
// may run against one queue, in any processes (every worker binary runs one): each tick enqueues a task whose id
// is derived from the schedule and the tick's instant ([ScheduleTaskID]) through the idempotent enqueue, so a
// tick makes one task however many schedulers fire it, through restarts, crashes and clock skew between hosts.
// Time comes from the Redis server's clock. See docs/periodic.md.
type Scheduler struct {
	q   *RedisTaskQueue
	cfg SchedulerConfig

	mu       sync.Mutex
	reported map[string][32]byte // undecodable schedules already reported: name -> hash of the stored record
}

// NewScheduler returns a scheduler of q's schedules. The config is copied; nil takes every default.
func NewScheduler(q *RedisTaskQueue, cfg *SchedulerConfig) (*Scheduler, error) {
	if q == nil {
		return nil, fmt.Errorf("%w: nil queue", ErrInvalidConfig)
	}
	c := cfg.withDefaults(q)
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &Scheduler{q: q, cfg: c, reported: map[string][32]byte{}}, nil
}

// schedulerRetry is how soon a scheduler tries again after a failed pass (at most Recheck).
const schedulerRetry = time.Second

// Run fires due ticks until ctx is done, then returns nil. Between passes it sleeps until the earliest due tick,
// or until a change to the schedules wakes it (see [SchedulerConfig.Recheck]). A failed pass (Redis unreachable)
// is logged, reported as [ScheduleFailed] and tried again a second later.
func (s *Scheduler) Run(ctx context.Context) error {
	wake, closeWake := s.subscribe(ctx)
	defer closeWake()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
			drain(wake) // one pass answers every change announced so far
		}
		wait, err := s.pass(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.cfg.Logger.Warn("taskqueue: scheduler pass failed", slog.Any("error", err))
			s.emit(ScheduleEvent{Kind: ScheduleFailed, Err: err})
			wait = min(schedulerRetry, s.cfg.Recheck)
		}
		t.Reset(wait)
	}
}

// subscribe subscribes to the queue's schedule wake-up channel, which the schedule scripts publish to on every
// change, and returns a channel that receives on each message and on each (re)subscription: a pass after a
// reconnect catches what was published while the connection was down. A subscription that fails (a user whose
// ACL has no +subscribe or channel pattern) is logged; the scheduler then relies on Recheck. The health-check
// ping of go-redis runs every Recheck, so that an idle scheduler costs Redis nothing measurable.
func (s *Scheduler) subscribe(ctx context.Context) (<-chan any, func()) {
	ps := s.q.rdb.Subscribe(ctx, s.q.keys.scheduleWake())
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := ps.Receive(rctx) // the subscription's confirmation: the first pass starts after it
	cancel()
	if err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("taskqueue: scheduler cannot subscribe to schedule changes; it notices them within Recheck",
			slog.String("channel", s.q.keys.scheduleWake()), slog.Duration("recheck", s.cfg.Recheck), slog.Any("error", classify(err)))
	}
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(16), redis.WithChannelHealthCheckInterval(s.cfg.Recheck))
	return ch, func() { _ = ps.Close() }
}

// drain empties ch without blocking.
func drain(ch <-chan any) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// maxTicksPerPass bounds the ticks one schedule fires in one pass; the rest follow in the next passes.
const maxTicksPerPass = 1000

// pass claims the due schedules, fires their ticks and returns how long to wait before the next pass.
func (s *Scheduler) pass(ctx context.Context) (time.Duration, error) {
	res, err := scheduleDueScript.Run(ctx, s.q.rdb, s.q.keys.schedules(), s.cfg.Batch, s.cfg.Claim.Milliseconds()).Slice()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: scheduler: %w", classify(err))
	}
	if len(res) < 2 || (len(res)-2)%3 != 0 {
		return 0, errors.New("taskqueue: scheduler: unexpected reply")
	}
	now, _ := res[0].(int64)
	earliest, _ := res[1].(int64)
	claimed := (len(res) - 2) / 3
	for i := 2; i < len(res); i += 3 {
		name, _ := res[i].(string)
		def, _ := res[i+1].(string)
		st, _ := res[i+2].(string)
		next, err := s.fire(ctx, time.UnixMilli(now).UTC(), name, def, st)
		if !next.IsZero() && (earliest < 0 || next.UnixMilli() < earliest) {
			earliest = next.UnixMilli() // the due index held this one's claim: wake for its next tick instead
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, err
			}
			s.cfg.Logger.Warn("taskqueue: schedule not fired; trying again", slog.String("schedule", name), slog.Any("error", err))
			s.emit(ScheduleEvent{Kind: ScheduleFailed, Schedule: name, Err: err})
		}
	}
	if claimed == s.cfg.Batch {
		return 0, nil // more may be due
	}
	wait := s.cfg.Recheck // no schedule due: until woken by a change
	if earliest >= 0 {
		// Server time to the earliest entry, slept on the local clock: a duration, so skew does not matter.
		wait = min(wait, time.Duration(max(earliest-now+1, 0))*time.Millisecond)
	}
	return wait, nil
}

// fire fires the due ticks of one claimed schedule and moves it to its next tick, which it returns (zero when it
// did not move it).
func (s *Scheduler) fire(ctx context.Context, now time.Time, name, rawDef, rawState string) (time.Time, error) {
	d, err := decodeScheduleDef(name, rawDef)
	if err != nil {
		// Left claimed: the others skip it too until the claim ends, and it is looked at again then.
		s.reportUndecodable(name, rawDef, err)
		return time.Time{}, nil
	}
	s.forget(name)
	st := decodeScheduleState(rawState)
	expected := "-"
	var first time.Time
	if st.Next != nil {
		first = time.UnixMilli(int64(*st.Next)).UTC()
		expected = strconv.FormatInt(int64(*st.Next), 10)
	} else {
		first = d.next(now) // a lost state: start again from the next tick
	}
	ticks, skippedFrom := d.dueTicks(first, now)
	next := d.next(now)
	if len(ticks) == maxTicksPerPass {
		next = d.next(ticks[len(ticks)-1])
	}
	if !skippedFrom.IsZero() {
		resume := next
		if len(ticks) > 0 {
			resume = ticks[0]
		}
		s.cfg.Logger.Warn("taskqueue: schedule skipped missed ticks", slog.String("schedule", name),
			slog.Time("first_skipped", skippedFrom), slog.Time("continues_at", resume), slog.String("misfire", d.Misfire))
		s.emit(ScheduleEvent{Kind: ScheduleSkipped, Schedule: name, Tick: skippedFrom, Next: resume})
	}
	var lastTick time.Time
	var lastID string
	if len(ticks) > 0 {
		specs := make([]*TaskSpec, len(ticks))
		created := s.cfg.Clock()
		for i, t := range ticks {
			specs[i] = d.Task.spec(name, t, "")
			specs[i].CreatedAt = created
		}
		failed := -1
		var failure error
		if err := s.q.EnqueueBatch(ctx, specs); err != nil {
			failed, failure = firstEnqueueFailure(specs, err)
		}
		for i, sp := range specs {
			if i == failed {
				break
			}
			lastTick, lastID = ticks[i], sp.TaskID
			s.cfg.Logger.Debug("taskqueue: schedule fired", slog.String("schedule", name), slog.String("task_id", sp.TaskID),
				slog.String("outcome", sp.Enqueued.String()))
			s.emit(ScheduleEvent{Kind: ScheduleFired, Schedule: name, Tick: ticks[i], TaskID: sp.TaskID, Outcome: sp.Enqueued})
		}
		if failed >= 0 {
			if failed == 0 {
				return time.Time{}, failure // nothing fired: the claim ends and a pass tries again
			}
			next = ticks[failed] // the next pass starts from the tick that failed
			s.cfg.Logger.Warn("taskqueue: schedule fired in part; trying again", slog.String("schedule", name), slog.Any("error", failure))
			s.emit(ScheduleEvent{Kind: ScheduleFailed, Schedule: name, Tick: ticks[failed], Err: failure})
		}
	}
	lastMS := int64(0)
	if !lastTick.IsZero() {
		lastMS = lastTick.UnixMilli()
	}
	// A stop that arrives after the enqueue still lets the pass record the ticks it fired, so that a graceful stop
	// leaves the schedule's last tick true; a crash here is covered by the next pass (same task ids).
	actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer acancel()
	moved, err := scheduleAdvanceScript.Run(actx, s.q.rdb, s.q.keys.schedules(), name, expected, next.UnixMilli(), lastMS, lastID).Int()
	if err != nil {
		return time.Time{}, fmt.Errorf("taskqueue: schedule %s: advance: %w", quote(name), classify(err))
	}
	if moved == 0 {
		s.cfg.Logger.Debug("taskqueue: schedule moved on by another scheduler or changed meanwhile", slog.String("schedule", name))
		return time.Time{}, nil
	}
	return next, nil
}

// firstEnqueueFailure returns the index of the first spec whose enqueue failed for a reason other than a task
// id taken by other content (a tick fired before the schedule's template changed: it did fire), with its error;
// -1 when none did.
func firstEnqueueFailure(specs []*TaskSpec, err error) (int, error) {
	byIndex := map[int]error{}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var ee *EnqueueError
		if errors.As(e, &ee) {
			byIndex[ee.Index] = e
		}
	}
	for i, sp := range specs {
		if sp.Enqueued != NotEnqueued {
			continue
		}
		e, ok := byIndex[i]
		if !ok {
			return i, err // the batch failed as a whole
		}
		if !errors.Is(e, ErrTaskIDConflict) {
			return i, e
		}
		sp.Enqueued = Duplicate
	}
	return -1, nil
}

// dueTicks returns the ticks to fire now, oldest first, for a schedule whose next tick is first, and the first
// tick it skips (zero when none is skipped), by the schedule's misfire policy.
func (d *scheduleDef) dueTicks(first, now time.Time) (ticks []time.Time, skippedFrom time.Time) {
	if first.After(now) {
		return nil, time.Time{}
	}
	from, limit := first, maxTicksPerPass
	if d.Misfire == MisfireCatchUp.String() {
		limit = d.MaxCatchUp
		ticks = d.latestTicks(first, now, limit)
	} else {
		if grace := time.Duration(d.GraceMS) * time.Millisecond; now.Sub(first) > grace {
			from = d.next(now.Add(-grace - time.Millisecond))
		}
		for t := from; !t.IsZero() && !t.After(now) && len(ticks) < limit; t = d.next(t) {
			ticks = append(ticks, t)
		}
	}
	if len(ticks) == 0 || ticks[0].After(first) {
		skippedFrom = first
	}
	return ticks, skippedFrom
}

// latestTicks returns the latest limit ticks in [first, now], oldest first. It searches a window back from now
// that it widens until it holds limit ticks or reaches first, so that a long outage of a frequent schedule costs
// no more than limit ticks' work.
func (d *scheduleDef) latestTicks(first, now time.Time, limit int) []time.Time {
	window := time.Duration(limit) * 2 * max(d.next(first).Sub(first), time.Second)
	for {
		from := first
		if now.Sub(first) > window {
			from = d.next(now.Add(-window - time.Millisecond))
		}
		var ring []time.Time
		for t := from; !t.IsZero() && !t.After(now); t = d.next(t) {
			ring = append(ring, t)
			if len(ring) > limit {
				ring = ring[1:]
			}
		}
		if len(ring) >= limit || !from.After(first) {
			return ring
		}
		window *= 4
	}
}

// reportUndecodable logs and reports a schedule that cannot be read, once per stored version of it.
func (s *Scheduler) reportUndecodable(name, raw string, err error) {
	h := sha256.Sum256([]byte(raw))
	s.mu.Lock()
	seen := s.reported[name] == h
	s.reported[name] = h
	s.mu.Unlock()
	if seen {
		return
	}
	s.cfg.Logger.Error("taskqueue: stored schedule cannot be decoded; skipped", slog.String("schedule", truncate(name, 64)),
		slog.String("error", truncate(err.Error(), 512)))
	s.emit(ScheduleEvent{Kind: ScheduleUndecodable, Schedule: name, Err: err})
}

func (s *Scheduler) forget(name string) {
	s.mu.Lock()
	delete(s.reported, name)
	s.mu.Unlock()
}

func (s *Scheduler) emit(e ScheduleEvent) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

// startScheduler starts the scheduler of a worker binary when c.Scheduler asks for one; the returned channel is
// closed once it has stopped (at once without one). It stops when ctx is done.
func (c *WorkerMainConfig) startScheduler(ctx context.Context, q *RedisTaskQueue, logger *slog.Logger) (<-chan struct{}, error) {
	done := make(chan struct{})
	if !c.Scheduler {
		close(done)
		return done, nil
	}
	cfg := SchedulerConfig{}
	if c.SchedulerConfig != nil {
		cfg = *c.SchedulerConfig
	}
	if cfg.Logger == nil {
		cfg.Logger = logger
	}
	s, err := NewScheduler(q, &cfg)
	if err != nil {
		close(done)
		return done, err
	}
	logger.Info("taskqueue: scheduler running", slog.Duration("recheck", s.cfg.Recheck))
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	return done, nil
}
