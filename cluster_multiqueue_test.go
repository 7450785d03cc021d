//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"strings"
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
// cover both) serves both with their backlogs, then blocks on both at once, one connection each, and runs a task
// enqueued into either.
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
	fill(t, qs[0], "a", 150)
	fill(t, qs[1], "b", 50)
	m, err := NewMultiQueue(weighted(qs, 3, 1), nil)
	require.NoError(t, err)
	require.False(t, m.single, "a Cluster client blocks on each queue")
	startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 8, BlockTimeout: time.Minute}, nil))

	served := map[string]int{}
	for range 200 {
		select {
		case p := <-ran:
			served[p]++
		case <-time.After(30 * time.Second):
			t.Fatalf("backlogs not served: %v", served)
		}
	}
	require.Equal(t, map[string]int{ps[0]: 150, ps[1]: 50}, served)

	for round, q := range []*RedisTaskQueue{qs[1], qs[0], qs[1]} {
		// Idle: each primary holds one blocked pickup (the wait lasts a minute: only a wake-up ends it).
		waitFor(t, 10*time.Second, "a blocked pickup on each primary", func() bool {
			for _, p := range c.primaries {
				nc := c.node(p.addr)
				info, err := nc.Info(ctx, "clients").Result()
				_ = nc.Close()
				if err != nil || !strings.Contains(info, "blocked_clients:1\r") {
					return false
				}
			}
			return true
		})
		require.NoError(t, q.Enqueue(ctx, mqTask(fmt.Sprintf("r%d", round))))
		select {
		case p := <-ran:
			require.Equal(t, q.prefix, p, "round %d", round)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the task enqueued into %s did not run", round, q.prefix)
		}
	}
}
