package taskqueue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// History: per-minute counts and latency histograms of a queue, kept in Redis by the processes that use it
// (history_recorder.go), for dashboards. Each minute is one hash, {prefix}:history:<unix minute>, that expires a
// day after its last write. See docs/observability.md.

// HistoryPoint is one bucket (one minute) of a queue's history ([Admin.History]).
type HistoryPoint struct {
	// At is the start of the minute, on the Redis server's clock.
	At time.Time
	// Counts in the minute: tasks stored by Enqueue/EnqueueBatch, handler runs started, runs that succeeded, runs
	// that failed and will be retried, and runs whose task was dead-lettered.
	Enqueued, Started, Succeeded, Failed, Dead int64
	// PickupP50 and PickupP99 are quantiles of the time from enqueue to handler start, of the first runs of tasks
	// enqueued ready (see docs/observability.md); 0 when the minute has none.
	PickupP50, PickupP99 time.Duration
	// RunP50 and RunP99 are quantiles of the handler run time of succeeded, retried and dead-lettered runs.
	RunP50, RunP99 time.Duration
}

// MaxHistoryWindow is the longest window [Admin.History] reads; the history keeps a little more (historyTTL).
const MaxHistoryWindow = 24 * time.Hour

// History returns the queue's history over the last window (rounded up to whole minutes, at most
// [MaxHistoryWindow]), one [HistoryPoint] per minute, oldest first, the current (partial) minute last: every
// minute of the window is present, with zeros where nothing was counted. Minutes are on the Redis server's clock
// (shard 0's). A window out of range is an error wrapping [ErrInvalidWindow], and nothing is read.
//
// The counts are what workers (and producers) flushed ([RedisConfig.HistoryInterval]): a count lands in the
// minute of the flush that carries it, at most one interval late, and what a process counted since its last
// flush is not there yet. For a sharded queue the shards' counts and histograms add up before the quantiles are
// taken. It reads with one pipeline of HGETALLs per shard.
func (a *Admin) History(ctx context.Context, window time.Duration) ([]HistoryPoint, error) {
	if window <= 0 || window > MaxHistoryWindow {
		return nil, fmt.Errorf("%w: window %s must be more than 0 and at most %s", ErrInvalidWindow, window, MaxHistoryWindow)
	}
	now, err := a.shards[0].serverTime(ctx)
	if err != nil {
		return nil, err
	}
	n := int((window + time.Minute - 1) / time.Minute)
	last := now.Unix() / 60
	first := last - int64(n) + 1
	sums := make([]historySum, n)
	perShard := make([][]historySum, len(a.shards))
	err = a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		perShard[k], err = q.readHistory(ctx, first, n)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, shard := range perShard {
		for i := range sums {
			sums[i].add(&shard[i])
		}
	}
	out := make([]HistoryPoint, n)
	for i := range out {
		out[i] = sums[i].point(time.Unix((first+int64(i))*60, 0))
	}
	return out, nil
}

// historySum is one minute's hash, read.
type historySum struct {
	enqueued, started, succeeded, failed, dead int64
	pickup, run                                [historyBuckets]int64
}

func (s *historySum) add(o *historySum) {
	s.enqueued += o.enqueued
	s.started += o.started
	s.succeeded += o.succeeded
	s.failed += o.failed
	s.dead += o.dead
	for i := range s.pickup {
		s.pickup[i] += o.pickup[i]
		s.run[i] += o.run[i]
	}
}

func (s *historySum) point(at time.Time) HistoryPoint {
	return HistoryPoint{
		At: at, Enqueued: s.enqueued, Started: s.started, Succeeded: s.succeeded, Failed: s.failed, Dead: s.dead,
		PickupP50: histogramQuantile(&s.pickup, 0.50), PickupP99: histogramQuantile(&s.pickup, 0.99),
		RunP50: histogramQuantile(&s.run, 0.50), RunP99: histogramQuantile(&s.run, 0.99),
	}
}

// set stores one field of a minute's hash; unknown fields and values that are not numbers are ignored.
func (s *historySum) set(field, value string) {
	v, err := strconv.ParseInt(value, 10, 64)
	if err != nil || field == "" {
		return
	}
	switch field {
	case histEnqueued:
		s.enqueued = v
	case histStarted:
		s.started = v
	case histSucceeded:
		s.succeeded = v
	case histFailed:
		s.failed = v
	case histDead:
		s.dead = v
	default:
		k, err := strconv.Atoi(field[1:])
		if err != nil || k < 0 || k >= historyBuckets {
			return
		}
		switch field[0] {
		case 'p':
			s.pickup[k] = v
		case 'r':
			s.run[k] = v
		}
	}
}

// histogramQuantile estimates the q-quantile of a histogram over historyBounds, interpolating linearly inside the
// bucket that holds it (from the previous bound, or 0); a quantile in the last bucket (past 1h) is reported as
// the last bound. An empty histogram gives 0.
func histogramQuantile(b *[historyBuckets]int64, q float64) time.Duration {
	var total int64
	for _, n := range b {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen int64
	for i, n := range b {
		if n == 0 || float64(seen+n) < rank {
			seen += n
			continue
		}
		if i == len(historyBounds) {
			return historyBounds[len(historyBounds)-1]
		}
		lo := time.Duration(0)
		if i > 0 {
			lo = historyBounds[i-1]
		}
		frac := (rank - float64(seen)) / float64(n)
		return lo + time.Duration(frac*float64(historyBounds[i]-lo))
	}
	return historyBounds[len(historyBounds)-1]
}

// readHistory reads n minutes' hashes from minute first on, in one pipeline.
func (q *RedisTaskQueue) readHistory(ctx context.Context, first int64, n int) ([]historySum, error) {
	cmds := make([]*redis.MapStringStringCmd, n)
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.HGetAll(ctx, q.keys.history(first+int64(i)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("taskqueue: history: %w", classify(err))
	}
	out := make([]historySum, n)
	for i, c := range cmds {
		for f, v := range c.Val() {
			out[i].set(f, v)
		}
	}
	return out, nil
}
