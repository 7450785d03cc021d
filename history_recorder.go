package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The writing side of the history (history.go): on the hot path a task costs a few in-memory atomic increments
// (historyRecorder.observe); every RedisConfig.HistoryInterval a worker sends what was counted in ONE pipelined
// round trip (TIME, HINCRBY on the fields of the current minute's hash, EXPIRE), and at Stop it sends the rest.

// historyTTL is how long a minute's hash lives after its last write: a day of minutes, and a margin for clocks.
const historyTTL = MaxHistoryWindow + time.Hour

// historyBounds are the upper bounds of the latency histogram's buckets (1-2-5 steps from 100µs to 1h); the last
// bucket, past them, holds everything longer. Fixed, so that histograms of workers, minutes and shards add up.
var historyBounds = [...]time.Duration{
	100 * time.Microsecond, 200 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 20 * time.Second, 50 * time.Second,
	100 * time.Second, 200 * time.Second, 500 * time.Second,
	1000 * time.Second, 2000 * time.Second, time.Hour,
}

const historyBuckets = len(historyBounds) + 1

// historyBucket returns the bucket of d: the first whose upper bound is d or more.
func historyBucket(d time.Duration) int {
	lo, hi := 0, len(historyBounds)
	for lo < hi {
		mid := (lo + hi) / 2
		if historyBounds[mid] < d {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// The fields of a minute's hash. Latency buckets are "p<i>" (pickup) and "r<i>" (run).
const (
	histEnqueued  = "enqueued"
	histStarted   = "started"
	histSucceeded = "succeeded"
	histFailed    = "failed"
	histDead      = "dead"
)

var histPickupFields, histRunFields = bucketFields("p"), bucketFields("r")

func bucketFields(prefix string) [historyBuckets]string {
	var out [historyBuckets]string
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// historyCounts is what a recorder counted since its last flush.
type historyCounts struct {
	enqueued, started, succeeded, failed, dead atomic.Int64
	pickup, run                                [historyBuckets]atomic.Int64
}

// historyRecorder counts one queue's (one shard's) history in memory and flushes it to Redis. Every worker and
// producer of the same queue value shares it; flushes are serialized. A nil recorder (history off) counts nothing.
type historyRecorder struct {
	q        *RedisTaskQueue
	interval time.Duration

	c historyCounts

	flushMu   sync.Mutex
	offset    atomic.Int64 // the server's clock minus the local one (ns), from the last flush's TIME
	hasOffset atomic.Bool
	lastFlush atomic.Int64 // local UnixNano of the last flush (the producer's flush-on-enqueue looks at it)
}

func newHistoryRecorder(q *RedisTaskQueue, interval time.Duration) *historyRecorder {
	if interval < 0 {
		return nil
	}
	h := &historyRecorder{q: q, interval: interval}
	h.lastFlush.Store(time.Now().UnixNano())
	return h
}

// observe counts one worker event: the hot path's only cost.
func (h *historyRecorder) observe(e *Event) {
	if h == nil {
		return
	}
	switch e.Kind {
	case EventStarted:
		h.c.started.Add(1)
		if s := e.Spec; s != nil && s.Attempt == 0 && e.Deliveries <= 1 && s.Status == StatePending && !s.CreatedAt.IsZero() {
			h.c.pickup[historyBucket(max(time.Since(s.CreatedAt), 0))].Add(1)
		}
		return
	case EventSucceeded:
		h.c.succeeded.Add(1)
	case EventRetried:
		h.c.failed.Add(1)
	case EventDead:
		h.c.dead.Add(1)
	default:
		return
	}
	h.c.run[historyBucket(e.Duration)].Add(1)
}

// noteEnqueued counts the tasks of specs that an enqueue stored and, in a process that runs no worker of the queue
// (nothing flushed for an interval), flushes in the caller's goroutine: one round trip per interval at most.
func (h *historyRecorder) noteEnqueued(ctx context.Context, specs []*TaskSpec) {
	if h == nil {
		return
	}
	var n int64
	for _, s := range specs {
		if s != nil && s.Enqueued == Stored {
			n++
		}
	}
	if n == 0 {
		return
	}
	h.c.enqueued.Add(n)
	if time.Now().UnixNano()-h.lastFlush.Load() >= int64(h.interval) && h.flushMu.TryLock() {
		defer h.flushMu.Unlock()
		_ = h.flushLocked(ctx)
	}
}

// flush sends what was counted since the last flush.
func (h *historyRecorder) flush(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	return h.flushLocked(ctx)
}

// flushLocked takes the counts and sends them in one pipeline: TIME, then an HINCRBY per non-zero field of the
// current minute's hash (by the server's clock as the last flush's TIME told it), then EXPIRE. When the pipeline
// fails, the counts go back, to be sent by the next flush. The first flush asks TIME once before.
func (h *historyRecorder) flushLocked(ctx context.Context) error {
	h.lastFlush.Store(time.Now().UnixNano())
	var fields []string
	var values []int64
	take := func(field string, c *atomic.Int64) {
		if n := c.Swap(0); n != 0 {
			fields, values = append(fields, field), append(values, n)
		}
	}
	take(histEnqueued, &h.c.enqueued)
	take(histStarted, &h.c.started)
	take(histSucceeded, &h.c.succeeded)
	take(histFailed, &h.c.failed)
	take(histDead, &h.c.dead)
	for i := range historyBuckets {
		take(histPickupFields[i], &h.c.pickup[i])
		take(histRunFields[i], &h.c.run[i])
	}
	if len(fields) == 0 {
		return nil
	}
	if err := h.send(ctx, fields, values); err != nil {
		h.putBack(fields, values)
		return fmt.Errorf("taskqueue: history flush: %w", classify(err))
	}
	return nil
}

func (h *historyRecorder) send(ctx context.Context, fields []string, values []int64) error {
	if !h.hasOffset.Load() {
		if err := h.syncClock(ctx); err != nil {
			return err
		}
	}
	now := time.Now()
	key := h.q.keys.history(now.Add(time.Duration(h.offset.Load())).Unix() / 60)
	var tm *redis.TimeCmd
	cmds, err := h.q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		for i, f := range fields {
			p.HIncrBy(ctx, key, f, values[i])
		}
		p.Expire(ctx, key, historyTTL)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return err
	}
	h.setOffset(tm.Val(), now)
	return nil
}

// syncClock asks the server's clock.
func (h *historyRecorder) syncClock(ctx context.Context) error {
	sent := time.Now()
	t, err := h.q.rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	h.setOffset(t, sent)
	return nil
}

func (h *historyRecorder) setOffset(server, local time.Time) {
	h.offset.Store(int64(server.Sub(local)))
	h.hasOffset.Store(true)
}

// putBack returns counts that could not be sent.
func (h *historyRecorder) putBack(fields []string, values []int64) {
	for i, f := range fields {
		switch f {
		case histEnqueued:
			h.c.enqueued.Add(values[i])
		case histStarted:
			h.c.started.Add(values[i])
		case histSucceeded:
			h.c.succeeded.Add(values[i])
		case histFailed:
			h.c.failed.Add(values[i])
		case histDead:
			h.c.dead.Add(values[i])
		default:
			k, _ := strconv.Atoi(f[1:])
			if f[0] == 'p' {
				h.c.pickup[k].Add(values[i])
			} else {
				h.c.run[k].Add(values[i])
			}
		}
	}
}

// FlushHistory sends the history counts this queue value holds (enqueues it made, runs of its workers) to Redis
// now, rather than at the next [RedisConfig.HistoryInterval]. Workers flush at Stop; a producer-only process
// calls it before it exits so that its last enqueues are counted. It does nothing when history is off.
func (q *RedisTaskQueue) FlushHistory(ctx context.Context) error { return q.history.flush(ctx) }

// FlushHistory is [RedisTaskQueue.FlushHistory] for every shard.
func (s *ShardedQueue) FlushHistory(ctx context.Context) error {
	errs := make([]error, len(s.shards))
	for k, q := range s.shards {
		errs[k] = q.FlushHistory(ctx)
	}
	return errors.Join(errs...)
}

// historyTargets returns the recorder a worker of q counts its runs in (for a sharded queue, shard 0's: the
// history is summed over the shards when read) and every recorder the worker flushes.
func historyTargets(q TaskQueue) (counts []*historyRecorder, flush []*historyRecorder) {
	switch q := q.(type) {
	case *RedisTaskQueue:
		if q.history == nil {
			return []*historyRecorder{nil}, nil
		}
		return []*historyRecorder{q.history}, []*historyRecorder{q.history}
	case *ShardedQueue:
		for _, s := range q.shards {
			if s.history != nil {
				flush = append(flush, s.history)
			}
		}
		return []*historyRecorder{q.shards[0].history}, flush
	case *MultiQueue:
		// Each member's runs are counted in that member's history, as a worker of the member alone would.
		for _, m := range q.members {
			c, f := historyTargets(m.q)
			counts = append(counts, c...)
			flush = append(flush, f...)
		}
		return counts, flush
	}
	return []*historyRecorder{nil}, nil
}

// queuePrefixes returns the key prefix of each member of q ([Event.Queue]): one entry unless q is a MultiQueue.
func queuePrefixes(q TaskQueue) []string {
	if m, ok := q.(*MultiQueue); ok {
		out := make([]string, len(m.members))
		for i, mm := range m.members {
			out[i] = mm.prefix
		}
		return out
	}
	if p, ok := q.(interface{ KeyPrefix() string }); ok {
		return []string{p.KeyPrefix()}
	}
	return []string{""}
}

// historyFlusher is a worker's part that flushes its queue's history every interval, and once more at stop.
type historyFlusher struct {
	w       *TaskWorker
	targets []*historyRecorder
	stopped chan struct{}
	done    chan struct{}
}

func newHistoryFlusher(w *TaskWorker, targets []*historyRecorder) *historyFlusher {
	if len(targets) == 0 {
		return nil
	}
	return &historyFlusher{w: w, targets: targets, stopped: make(chan struct{}), done: make(chan struct{})}
}

func (f *historyFlusher) start() {
	if f == nil {
		return
	}
	go f.run()
}

func (f *historyFlusher) run() {
	defer close(f.done)
	t := time.NewTicker(f.targets[0].interval)
	defer t.Stop()
	for {
		select {
		case <-f.stopped:
			return
		case <-t.C:
			f.flushAll()
		}
	}
}

// flushAll flushes every target, each in its own round trip, reporting failures as queue errors.
func (f *historyFlusher) flushAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, h := range f.targets {
		if err := h.flush(ctx); err != nil {
			f.w.emit(Event{Kind: EventQueueError, Err: err})
		}
	}
}

// stop ends the loop and sends what is left: called once no task runs any more and the last acks are sent.
func (f *historyFlusher) stop() {
	if f == nil {
		return
	}
	close(f.stopped)
	<-f.done
	f.flushAll()
}
