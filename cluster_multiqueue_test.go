//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// prefixesOnNodes returns n key prefixes whose queues live on n different primaries of cc.
func prefixesOnNodes(t *testing.T, cc *redis.ClusterClient, base string, n int) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for i := 0; i < 1000 && len(out) < n; i++ {
		p := fmt.Sprintf("%s-%d", base, i)
		node, err := cc.MasterForKey(context.Background(), "{"+p+"}:tasks")
		require.NoError(t, err)
		if addr := node.Options().Addr; !seen[addr] {
			seen[addr] = true
			out = append(out, p)
		}
	}
	require.Len(t, out, n, "prefixes on different primaries")
	return out
}

// TestClusterMultiQueue: a worker on two queues that live on two primaries (so in two slots: one BLPOP cannot
// cover both) and a sharded queue takes pickup batches by the weights, serves the backlogs, then blocks on every
// queue and shard at once, one connection each, and runs a task enqueued into any of them.
func TestClusterMultiQueue(t *testing.T) {
	c := startCluster(t, 2, 0)
	cc := c.client(nil)
	ctx := context.Background()
	reg, ref := testRegistry(t)
	ran := make(chan string, 512)
	require.NoError(t, Register(ref, "mq", "work", func(ctx context.Context, _ mqArgs) error { ran <- QueueOf(ctx); return nil }))
	ps := prefixesOnNodes(t, cc, "cmq", 2)
	var qs []*RedisTaskQueue
	for _, p := range ps {
		q, err := NewRedisTaskQueue(cc, p, reg, quiet(nil))
		require.NoError(t, err)
		qs = append(qs, q)
	}
	// Its two shards are in two slots (on one primary or two): a Cluster refuses a BLPOP over both either way.
	sharded, err := NewShardedQueue(cc, "cmqs", 2, reg, quiet(nil))
	require.NoError(t, err)
	fill(t, qs[0], "a", 150)
	fill(t, qs[1], "b", 50)
	m, err := NewMultiQueue(append(weighted(qs, 3, 1), QueueWeight{Queue: sharded, Weight: 1}), nil)
	require.NoError(t, err)
	require.False(t, m.single, "a Cluster client blocks on each queue")

	// Weights per pickup batch while the two queues have backlogs (the sharded one is empty: its turns go to
	// the others, in order after it): 3 of every 5 batches from the first, 1 from the second, and the sharded
	// queue's turn filled from the first.
	served := map[string]int{}
	var held []*Delivery
	for range 10 {
		ds, err := m.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Len(t, ds, 10)
		served[m.members[ds[0].member].prefix] += len(ds)
		held = append(held, ds...)
	}
	require.Equal(t, map[string]int{ps[0]: 80, ps[1]: 20}, served)
	for i := len(held) - 1; i >= 0; i-- { // the newest first: each goes back to the head of its queue
		require.NoError(t, m.Release(ctx, held[i]))
	}
	startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 8, BlockTimeout: time.Minute}, nil))

	served = map[string]int{}
	for range 200 {
		select {
		case p := <-ran:
			served[p]++
		case <-time.After(30 * time.Second):
			t.Fatalf("backlogs not served: %v", served)
		}
	}
	require.Equal(t, map[string]int{ps[0]: 150, ps[1]: 50}, served)

	for round, q := range []TaskQueue{qs[1], sharded, qs[0], sharded, qs[1]} {
		// Idle: one blocked pickup per queue and shard, over both primaries (the wait lasts a minute: only a
		// wake-up ends it).
		waitFor(t, 10*time.Second, "a blocked pickup on each queue and shard", func() bool {
			blocked := 0
			for _, p := range c.primaries {
				nc := c.node(p.addr)
				info, err := nc.Info(ctx, "clients").Result()
				_ = nc.Close()
				if err != nil {
					return false
				}
				n, _ := strconv.Atoi(infoField(info, "blocked_clients"))
				blocked += n
			}
			return blocked == len(m.units)
		})
		require.NoError(t, q.Enqueue(ctx, mqTask(fmt.Sprintf("r%d", round))))
		select {
		case p := <-ran:
			require.Equal(t, prefixOf(q), p, "round %d", round)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the task enqueued into %s did not run", round, prefixOf(q))
		}
	}
}
