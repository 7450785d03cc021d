//go:build cluster

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// failoverRun is two producers and workers running against one queue while a test fails its primary over. One
// producer enqueues durably (DurableReplicas 1): what it had acknowledged must all run, whatever happens; the other
// enqueues plainly, and what it had acknowledged shortly before a primary was killed may be lost (Redis
// replicates asynchronously).
type failoverRun struct {
	t              *testing.T
	plain, durable *RedisTaskQueue
	rec            *clRecorder
	mu             sync.Mutex
	acked          map[string]time.Time // plain enqueues acknowledged, and when
	durableAcked   map[string]bool
	notReplicated  int // durable enqueues that returned ErrNotReplicated
	failed         int // enqueues that returned another error (not acknowledged)
	noscript       atomic.Int64
	queueErrors    atomic.Int64
	stop           chan struct{}
	producing      sync.WaitGroup
}

// startFailoverRun starts workers workers and two producers (plain and durable) of a batch of 5 tasks every 10ms
// each on prefix.
func startFailoverRun(t *testing.T, rdb redis.UniversalClient, prefix string, workers int) *failoverRun {
	t.Helper()
	reg, _, rec := clRegistry(t)
	cfg := &RedisConfig{Lease: 2 * time.Second}
	plain, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	cfg.DurableReplicas, cfg.DurableTimeout = 1, 500*time.Millisecond
	durable, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	r := &failoverRun{t: t, plain: plain, durable: durable, rec: rec, acked: map[string]time.Time{},
		durableAcked: map[string]bool{}, stop: make(chan struct{})}
	for i := range workers {
		startClWorker(t, plain, &WorkerConfig{Concurrency: 8, BlockTimeout: time.Second, Name: fmt.Sprintf("fo-%d", i),
			OnEvent: func(e Event) {
				if e.Kind == EventQueueError {
					r.queueErrors.Add(1)
					if strings.Contains(e.Err.Error(), "NOSCRIPT") {
						r.noscript.Add(1)
					}
				}
			}})
	}
	r.producing.Go(func() { r.produce(false) })
	r.producing.Go(func() { r.produce(true) })
	t.Cleanup(r.stopProducer)
	return r
}

func (r *failoverRun) produce(durable bool) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		q := r.plain
		if durable {
			q = r.durable
		}
		var specs []*TaskSpec
		for j := range 5 {
			specs = append(specs, clTask("ok", fmt.Sprintf("p%t%d-%d", durable, i, j)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := q.EnqueueBatch(ctx, specs)
		cancel()
		r.record(specs, durable, err)
	}
}

func (r *failoverRun) record(specs []*TaskSpec, durable bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		r.noscript.Add(1)
	}
	switch {
	case errors.Is(err, ErrNotReplicated):
		r.notReplicated++
	case err != nil:
		r.failed++
	default:
		for _, s := range specs {
			if durable {
				r.durableAcked[s.TaskID] = true
			} else {
				r.acked[s.TaskID] = time.Now()
			}
		}
	}
}

func (r *failoverRun) stopProducer() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.producing.Wait()
}

// processed returns how many tasks have run at least once.
func (r *failoverRun) processed() int {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	return len(r.rec.runs)
}

// waitMore waits until n more tasks than now have run: the run is making progress.
func (r *failoverRun) waitMore(n int, timeout time.Duration, what string) {
	r.t.Helper()
	base := r.processed()
	waitFor(r.t, timeout, what, func() bool { return r.processed() >= base+n })
}

// verify stops the producer and waits until every acknowledged task has run, except plain enqueues acknowledged
// within window before one of kills (the asynchronous-replication window), and reports the figures.
func (r *failoverRun) verify(window time.Duration, kills ...time.Time) {
	r.t.Helper()
	spans := make([][2]time.Time, 0, len(kills))
	for _, k := range kills {
		spans = append(spans, [2]time.Time{k.Add(-window), k})
	}
	r.verifySpans(spans...)
}

// verifySpans is verify with the loss windows given as [from, to] spans: a plain enqueue acknowledged inside one
// may be lost.
func (r *failoverRun) verifySpans(spans ...[2]time.Time) {
	r.t.Helper()
	r.stopProducer()
	inWindow := func(at time.Time) bool {
		for _, sp := range spans {
			if !at.Before(sp[0]) && !at.After(sp[1]) {
				return true
			}
		}
		return false
	}
	var must, maybe []string
	r.mu.Lock()
	for id, at := range r.acked {
		if inWindow(at) {
			maybe = append(maybe, id)
		} else {
			must = append(must, id)
		}
	}
	for id := range r.durableAcked {
		must = append(must, id)
	}
	notRepl, failed := r.notReplicated, r.failed
	r.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		done, _ := r.rec.count(must...)
		if done == len(must) {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after 60s waiting for every acknowledged task to run: %d of %d ran; where the others are:\n%s",
				done, len(must), r.whereAre(must, 5))
		}
		time.Sleep(20 * time.Millisecond)
	}
	doneMaybe, _ := r.rec.count(maybe...)
	_, dups := r.rec.count(append(must, maybe...)...)
	r.t.Logf("acknowledged: %d plain + %d durable; all %d outside the window ran; in the window %d of %d ran (%d lost); "+
		"%d durable enqueues not confirmed in time, %d enqueues failed (not acknowledged); %d tasks ran twice; %d queue errors in workers",
		len(r.acked), len(r.durableAcked), len(must), doneMaybe, len(maybe), len(maybe)-doneMaybe, notRepl, failed, dups, r.queueErrors.Load())
	require.Zero(r.t, r.noscript.Load(), "NOSCRIPT reached the caller")
}

// whereAre tells, for up to n ids that have not run, where the queue holds them: what a failed wait needs to tell a
// lost task from a stuck one.
func (r *failoverRun) whereAre(ids []string, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := r.plain
	var b strings.Builder
	for _, id := range ids {
		if n == 0 {
			break
		}
		if done, _ := r.rec.count(id); done == 1 {
			continue
		}
		n--
		_, errTask := q.rdb.HGet(ctx, q.keys.key(keyTasks), id).Result()
		pos, errPos := q.rdb.LPos(ctx, q.keys.key(keyPending), id, redis.LPosArgs{}).Result()
		act, errAct := leaseDeadline(ctx, q, id)
		sch, errSch := q.rdb.ZScore(ctx, q.keys.key(keyScheduled), id).Result()
		_, errDead := q.rdb.ZScore(ctx, q.keys.key(keyDead), id).Result()
		reason, _ := q.rdb.HGet(ctx, q.keys.key(keyErrors), id).Result()
		fmt.Fprintf(&b, "  %s: envelope stored %t; pending %t (pos %d); active %t (deadline %.0f); scheduled %t (%.0f); dead %t %s\n",
			id, errTask == nil, errPos == nil, pos, errAct == nil, act, errSch == nil, sch, errDead == nil, truncate(reason, 200))
	}
	return b.String()
}
