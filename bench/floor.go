package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// floor is the same data movement as a task queue with none of its guarantees: a task is a field of one hash
// (id → payload) and its id in one list. Enqueue pipelines HSET and RPUSH (a batch: one HSET of every pair and one
// RPUSH of every id, in one round trip); the worker loops over LPOP of a batch of ids (pipelined with the HDEL of
// the batch before), HMGET of their payloads, and the handlers. No lease, no retry, no fencing, no delayed tasks,
// no scripts: what this Redis can do for that traffic, the floor every library is read against.
type floor struct {
	rdb *redis.Client
}

const (
	floorTasks   = "{floor}:tasks"   // hash: id → payload
	floorPending = "{floor}:pending" // list of ids, FIFO
	// floorFetchers is how many fetch loops a floor worker runs, so that one loop's round trip overlaps another's.
	floorFetchers = 2
)

func newFloor(addr string) *floor { return &floor{rdb: redis.NewClient(&redis.Options{Addr: addr})} }

func (f *floor) name() string { return libFloor }

func (f *floor) batches() bool { return true }

// floorID is a random 32-character hex id, the size of ours.
func floorID() string {
	const hex = "0123456789abcdef"
	var b [32]byte
	x, y := rand.Uint64(), rand.Uint64()
	for i := range 16 {
		b[i], b[16+i] = hex[x>>(4*i)&15], hex[y>>(4*i)&15]
	}
	return string(b[:])
}

func (f *floor) enqueue(ctx context.Context, seq int, delay time.Duration) error {
	if delay > 0 {
		return errUnsupported
	}
	return f.enqueueBatch(ctx, seq, 1)
}

func (f *floor) enqueueBatch(ctx context.Context, seq0, n int) error {
	pairs := make([]any, 0, 2*n)
	ids := make([]any, 0, n)
	for i := range n {
		id := floorID()
		pairs = append(pairs, id, payload(seq0+i))
		ids = append(ids, id)
	}
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, floorTasks, pairs...)
		p.RPush(ctx, floorPending, ids...)
		return nil
	})
	return err
}

// startWorker runs floorFetchers loops, each fetching batches of up to conc/floorFetchers ids.
func (f *floor) startWorker(ctx context.Context, conc int, onStart func(seq int)) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	loops := min(floorFetchers, conc)
	var wg sync.WaitGroup
	for i := range loops {
		batch := conc / loops
		if i < conc%loops {
			batch++
		}
		wg.Go(func() { f.fetchLoop(ctx, min(batch, 128), onStart) })
	}
	return func() { cancel(); wg.Wait() }, nil
}

func (f *floor) fetchLoop(ctx context.Context, batch int, onStart func(seq int)) {
	var done []string // ids handled, deleted with the next fetch
	for ctx.Err() == nil {
		var pop *redis.StringSliceCmd
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if len(done) > 0 {
				p.HDel(ctx, floorTasks, done...)
			}
			pop = p.LPopCount(ctx, floorPending, batch)
			return nil
		})
		done = done[:0]
		ids, _ := pop.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		if len(ids) == 0 {
			// An empty list: block for the next id (with a short timeout, so that stop is prompt).
			// BLPOP takes a fractional timeout since Redis 6; go-redis's BLPop would round it up to 1 s.
			got, err := f.rdb.Do(ctx, "BLPOP", floorPending, "0.1").StringSlice()
			if err != nil || len(got) != 2 {
				continue
			}
			ids = got[1:]
		}
		vals, err := f.rdb.HMGet(ctx, floorTasks, ids...).Result()
		if err != nil {
			continue
		}
		for i, v := range vals {
			if s, ok := v.(string); ok && onStart != nil {
				onStart(seqOf([]byte(s)))
			}
			done = append(done, ids[i])
		}
	}
	if len(done) > 0 {
		_ = f.rdb.HDel(context.WithoutCancel(ctx), floorTasks, done...).Err()
	}
}

func (f *floor) close() { _ = f.rdb.Close() }
