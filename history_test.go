package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// historyTotals sums a history's points.
func historyTotals(ps []HistoryPoint) (t HistoryPoint) {
	for _, p := range ps {
		t.Enqueued += p.Enqueued
		t.Started += p.Started
		t.Succeeded += p.Succeeded
		t.Failed += p.Failed
		t.Dead += p.Dead
	}
	return t
}

// histogramCounts sums the pickup ("p") or run ("r") bucket fields of the minutes' hashes of q.
func histogramCounts(t *testing.T, q *RedisTaskQueue, rdb redis.Cmdable, kind byte) int64 {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, q.keys.tag+":history:*").Result()
	require.NoError(t, err)
	var n int64
	for _, k := range keys {
		m, err := rdb.HGetAll(ctx, k).Result()
		require.NoError(t, err)
		for f, v := range m {
			if f[0] == kind && len(f) <= 3 {
				c, err := strconv.ParseInt(v, 10, 64)
				require.NoError(t, err)
				n += c
			}
		}
	}
	return n
}

// registerHistoryWork registers h.ok (succeeds), h.flaky (fails its first run, then succeeds) and h.dead (refuses a
// retry).
func registerHistoryWork(t *testing.T, ref *ReferenceResolver) {
	t.Helper()
	var flaky atomic.Int64
	require.NoError(t, Register(ref, "h", "ok", func(context.Context, struct{}) error { return nil }))
	require.NoError(t, Register(ref, "h", "flaky", func(context.Context, struct{}) error {
		if flaky.Add(1) == 1 {
			return errors.New("first run fails")
		}
		return nil
	}))
	require.NoError(t, Register(ref, "h", "dead", func(context.Context, struct{}) error {
		return fmt.Errorf("%w: no", ErrSkipRetry)
	}))
}

// A known workload, counted in memory only (the interval is an hour, so no periodic flush happens), is all in the
// history once the worker has stopped gracefully: Stop flushes what was counted, enqueues included.
func TestHistoryCountsAfterWorkloadFlushedAtStop(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{HistoryInterval: time.Hour}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerHistoryWork(t, s.ref)
		specs := []*TaskSpec{NewTaskSpec("f", Ref("h", "flaky", struct{}{})), NewTaskSpec("d", Ref("h", "dead", struct{}{}))}
		for i := range 5 {
			specs = append(specs, NewTaskSpec(fmt.Sprintf("ok-%d", i), Ref("h", "ok", struct{}{})))
		}
		require.NoError(t, s.q.EnqueueBatch(ctx, specs))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("ok-0", Ref("h", "ok", struct{}{})))) // a duplicate: not counted

		rec := &recorder{}
		w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 4}, rec))
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		waitFor(t, 10*time.Second, "every task settled", func() bool {
			return rec.count(EventSucceeded) == 6 && rec.count(EventDead) == 1
		})
		ps, err := s.adm.History(ctx, 10*time.Minute)
		require.NoError(t, err)
		require.Equal(t, HistoryPoint{}, historyTotals(ps), "nothing flushed before Stop")

		require.NoError(t, stopWorker(t, w, 10*time.Second))
		ps, err = s.adm.History(ctx, 10*time.Minute)
		require.NoError(t, err)
		require.Len(t, ps, 10)
		require.Equal(t, HistoryPoint{Enqueued: 7, Started: 8, Succeeded: 6, Failed: 1, Dead: 1}, historyTotals(ps))
		// First runs of ready tasks have a pickup latency (the flaky task's second run does not); every run a run time.
		require.EqualValues(t, 7, histogramCounts(t, s.q, s.rdb, 'p'))
		require.EqualValues(t, 8, histogramCounts(t, s.q, s.rdb, 'r'))
		var withRun int
		for _, p := range ps {
			if p.Started > 0 {
				withRun++
				require.LessOrEqual(t, p.RunP50, p.RunP99)
				require.LessOrEqual(t, p.PickupP50, p.PickupP99)
			}
		}
		require.Positive(t, withRun)
		ttl, err := s.rdb.TTL(ctx, s.q.keys.history(ps[len(ps)-1].At.Unix()/60)).Result()
		if err == nil && ttl > 0 { // the last minute's hash, when the flush landed in it
			require.LessOrEqual(t, ttl, historyTTL)
			require.Greater(t, ttl, MaxHistoryWindow)
		}
	})
}

// Quantiles come from the fixed bucket histogram: linear inside the bucket that holds the rank.
func TestHistoryQuantilesFromHistogram(t *testing.T) {
	t.Parallel()
	var empty [historyBuckets]int64
	require.Zero(t, histogramQuantile(&empty, 0.5))

	var one [historyBuckets]int64
	one[historyBucket(7*time.Millisecond)] = 100 // the bucket (5ms, 10ms]
	require.Equal(t, 7500*time.Microsecond, histogramQuantile(&one, 0.5))
	require.Equal(t, 9950*time.Microsecond, histogramQuantile(&one, 0.99))

	var two [historyBuckets]int64
	two[3] = 90  // (500µs, 1ms]
	two[12] = 10 // (500ms, 1s]
	require.InDelta(t, float64(500*time.Microsecond+500*time.Microsecond*50/90), float64(histogramQuantile(&two, 0.5)), 1)
	require.Equal(t, 950*time.Millisecond, histogramQuantile(&two, 0.99))

	var over [historyBuckets]int64
	over[historyBuckets-1] = 3
	require.Equal(t, time.Hour, histogramQuantile(&over, 0.5))

	require.Equal(t, 0, historyBucket(0))
	require.Equal(t, 3, historyBucket(time.Millisecond))
	require.Equal(t, 4, historyBucket(time.Millisecond+1))
	require.Equal(t, historyBuckets-2, historyBucket(time.Hour))
	require.Equal(t, historyBuckets-1, historyBucket(time.Hour+1))
}

// The window's bounds, every minute present and minute-aligned on the server's clock, zeros where nothing was
// counted, and quantiles read from a stored histogram.
func TestHistoryWindowAndEmptyMinutes(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 10, 30, 42, 0, time.UTC)
	s.mr.SetTime(now)

	for _, w := range []time.Duration{0, -time.Minute, MaxHistoryWindow + time.Nanosecond} {
		_, err := s.adm.History(ctx, w)
		require.ErrorIs(t, err, ErrInvalidWindow, "window %s", w)
	}

	minute := now.Unix()/60 - 3
	key := s.q.keys.history(minute)
	require.NoError(t, s.rdb.HSet(ctx, key, histStarted, 100, histSucceeded, 99, histDead, 1,
		"p3", 90, "p12", 10, "r6", 100, "junk", "x", "p99", 5).Err())

	ps, err := s.adm.History(ctx, 5*time.Minute)
	require.NoError(t, err)
	require.Len(t, ps, 5)
	for i, p := range ps {
		require.Equal(t, time.Date(2026, 12, 6, 10, 26+i, 0, 0, time.UTC), p.At.UTC())
		if i != 1 {
			require.Equal(t, HistoryPoint{At: p.At}, p, "minute %d is empty", i)
		}
	}
	p := ps[1]
	require.Equal(t, HistoryPoint{At: p.At, Started: 100, Succeeded: 99, Dead: 1,
		PickupP50: p.PickupP50, PickupP99: 950 * time.Millisecond, RunP50: 7500 * time.Microsecond, RunP99: 9950 * time.Microsecond}, p)
	require.InDelta(t, float64(777778*time.Nanosecond), float64(p.PickupP50), 1000)

	ps, err = s.adm.History(ctx, 90*time.Second) // rounded up to whole minutes
	require.NoError(t, err)
	require.Len(t, ps, 2)
	ps, err = s.adm.History(ctx, MaxHistoryWindow)
	require.NoError(t, err)
	require.Len(t, ps, 1440)
	require.Equal(t, now.Truncate(time.Minute), ps[1439].At.UTC())
	require.Equal(t, int64(100), historyTotals(ps).Started)
}

// A sharded queue's history adds up the shards' counts and merges their histograms before the quantiles; its
// workers' runs and each shard's enqueues are counted.
func TestHistoryShardedMerge(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	registerHistoryWork(t, ref)
	q, err := NewShardedQueue(rdb, "hs", 3, reg, quiet(&RedisConfig{HistoryInterval: time.Hour}))
	require.NoError(t, err)
	adm := mustAdmin(q)
	ctx := context.Background()
	now := time.Now().Truncate(time.Minute).Add(30 * time.Second) // mid-minute: the flushes land in this minute
	mr.SetTime(now)

	// Stored histograms: shard 0 holds 90 fast pickups, shard 2 10 slow ones; the merge has both.
	minute := now.Unix()/60 - 1
	shards := q.Shards()
	require.NoError(t, rdb.HSet(ctx, shards[0].keys.history(minute), histStarted, 90, "p3", 90).Err())
	require.NoError(t, rdb.HSet(ctx, shards[2].keys.history(minute), histStarted, 10, "p12", 10).Err())
	ps, err := adm.History(ctx, 2*time.Minute)
	require.NoError(t, err)
	require.Len(t, ps, 2)
	require.EqualValues(t, 100, ps[0].Started)
	require.Equal(t, 950*time.Millisecond, ps[0].PickupP99)
	require.Less(t, ps[0].PickupP50, time.Millisecond)

	var specs []*TaskSpec
	for k := range 3 {
		for i := range 2 {
			specs = append(specs, NewTaskSpec(idOnShard(t, q, k, fmt.Sprintf("s%d-%d", k, i)), Ref("h", "ok", struct{}{})))
		}
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	rec := &recorder{}
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Concurrency: 2}, rec))
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	waitFor(t, 10*time.Second, "every task ran", func() bool { return rec.count(EventSucceeded) == 6 })
	require.NoError(t, stopWorker(t, w, 10*time.Second))
	for k, s := range shards {
		n, err := rdb.HGet(ctx, s.keys.history(now.Unix()/60), histEnqueued).Int64()
		require.NoError(t, err, "shard %d", k)
		require.EqualValues(t, 2, n, "shard %d counts its own enqueues", k)
	}
	ps, err = adm.History(ctx, 2*time.Minute)
	require.NoError(t, err)
	require.Equal(t, HistoryPoint{Enqueued: 6, Started: 106, Succeeded: 6}, historyTotals(ps))
}

// A flush that fails keeps its counts for the next one; a producer that runs no worker flushes its enqueue counts
// from an enqueue once the interval is over, and FlushHistory sends them at once.
func TestHistoryFlushFailureAndProducer(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{HistoryInterval: time.Hour})
	ctx := context.Background()
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("a", Ref("test", "noop", struct{}{}))))
	s.mr.Close()
	require.Error(t, s.q.FlushHistory(ctx))
	require.NoError(t, s.mr.Restart())
	require.NoError(t, s.q.FlushHistory(ctx))
	ps, err := s.adm.History(ctx, 2*time.Minute)
	require.NoError(t, err)
	require.EqualValues(t, 1, historyTotals(ps).Enqueued)

	p := newMini(t, &RedisConfig{HistoryInterval: 100 * time.Millisecond})
	i := 0
	waitFor(t, 10*time.Second, "an enqueue flushed", func() bool {
		i++
		require.NoError(t, p.q.Enqueue(ctx, NewTaskSpec(fmt.Sprintf("p-%d", i), Ref("test", "noop", struct{}{}))))
		ps, err := p.adm.History(ctx, 2*time.Minute)
		require.NoError(t, err)
		return historyTotals(ps).Enqueued > 0
	})
}

// HistoryInterval -1 keeps no history; out of range it is refused.
func TestHistoryOffAndConfig(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{HistoryInterval: -1})
	ctx := context.Background()
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("a", Ref("test", "noop", struct{}{}))))
	rec := &recorder{}
	w := startWorker(t, s.q, quietWorker(WorkerConfig{}, rec))
	waitFor(t, 10*time.Second, "the task ran", func() bool { return rec.count(EventSucceeded) == 1 })
	require.NoError(t, stopWorker(t, w, 10*time.Second))
	require.NoError(t, s.q.FlushHistory(ctx))
	for _, k := range s.mr.Keys() {
		require.NotContains(t, k, ":history:")
	}
	ps, err := s.adm.History(ctx, time.Minute)
	require.NoError(t, err)
	require.Equal(t, HistoryPoint{At: ps[0].At}, ps[0])

	for _, iv := range []time.Duration{-2, 99 * time.Millisecond} {
		_, err := NewRedisTaskQueue(s.rdb, "x", s.reg, &RedisConfig{HistoryInterval: iv})
		require.ErrorIs(t, err, ErrInvalidConfig)
	}
}

// BenchmarkHistoryObserve measures the hot path's cost of the history: what a run's started and succeeded events
// add, run from several goroutines at once as a worker's task pool does.
func BenchmarkHistoryObserve(b *testing.B) {
	h := newHistoryRecorder(nil, time.Hour)
	spec := &TaskSpec{Status: StatePending, CreatedAt: time.Now()}
	b.RunParallel(func(pb *testing.PB) {
		start := Event{Kind: EventStarted, Spec: spec, Deliveries: 1}
		done := Event{Kind: EventSucceeded, Spec: spec, Deliveries: 1, Duration: 3 * time.Millisecond}
		for pb.Next() {
			h.observe(&start)
			h.observe(&done)
		}
	})
}

// BenchmarkHistoryObserveSerial is BenchmarkHistoryObserve from one goroutine: no cache line moves between cores.
func BenchmarkHistoryObserveSerial(b *testing.B) {
	h := newHistoryRecorder(nil, time.Hour)
	spec := &TaskSpec{Status: StatePending, CreatedAt: time.Now()}
	start := Event{Kind: EventStarted, Spec: spec, Deliveries: 1}
	done := Event{Kind: EventSucceeded, Spec: spec, Deliveries: 1, Duration: 3 * time.Millisecond}
	for b.Loop() {
		h.observe(&start)
		h.observe(&done)
	}
}
