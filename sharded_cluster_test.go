//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// spreadShards returns a prefix (base-0, base-1, …) whose first n shards live on n different primaries, or on as
// many as there are.
func spreadShards(t testing.TB, cc *redis.ClusterClient, base string, n, primaries int) string {
	t.Helper()
	for i := range 1000 {
		p := fmt.Sprintf("%s-%d", base, i)
		seen := map[string]bool{}
		for k := range n {
			node, err := cc.MasterForKey(context.Background(), fmt.Sprintf("{%s.%d}:tasks", p, k))
			require.NoError(t, err)
			seen[node.Options().Addr] = true
		}
		if len(seen) == min(n, primaries) {
			return p
		}
	}
	t.Fatal("no prefix spreads its shards")
	return ""
}

// drainSharded enqueues n no-op tasks into a sharded queue of shards shards on cc from 4 producers (batches of
// 100) while 4 workers run them, and returns how long it took from the first enqueue until every task ran, and
// the CPU time (user + system) that the busiest primary of c spent meanwhile.
func drainSharded(t testing.TB, c *testCluster, cc *redis.ClusterClient, prefix string, shards, n int) (took, busiest time.Duration) {
	t.Helper()
	cpu0 := c.primaryCPU(t)
	ctx := context.Background()
	reg, ref := testRegistry(t)
	var ran atomic.Int64
	require.NoError(t, Register(ref, "b", "noop", func(context.Context, clArgs) error { ran.Add(1); return nil }))
	q, err := NewShardedQueue(cc, prefix, shards, reg, quiet(nil))
	require.NoError(t, err)
	var workers []*TaskWorker
	for i := range 4 {
		w, err := NewTaskWorker(q, &WorkerConfig{Concurrency: 64, BatchSize: 64, Logger: quiet(nil).Logger, Name: fmt.Sprintf("%s-w%d", prefix, i)})
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		workers = append(workers, w)
	}
	defer func() {
		for _, w := range workers {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = w.Stop(sctx)
			cancel()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for lo := p * n / 4; lo < (p+1)*n/4; lo += 100 {
				var specs []*TaskSpec
				for i := lo; i < min(lo+100, (p+1)*n/4); i++ {
					specs = append(specs, NewTaskSpec(fmt.Sprintf("t%d", i), Ref("b", "noop", clArgs{})))
				}
				if err := q.EnqueueBatch(ctx, specs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, 2*time.Minute, "every task to run", func() bool { return ran.Load() >= int64(n) })
	took = time.Since(start)
	waitFor(t, 10*time.Second, "every ack", func() bool {
		st, err := countsOf(ctx, q)
		return err == nil && st == Counts{}
	})
	for i, c1 := range c.primaryCPU(t) {
		busiest = max(busiest, c1-cpu0[i])
	}
	return took, busiest
}

// primaryCPU returns the CPU time (used_cpu_user + used_cpu_sys) of each primary so far.
func (c *testCluster) primaryCPU(t testing.TB) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(c.primaries))
	for i, p := range c.primaries {
		nc := c.node(p.addr)
		info, err := nc.Info(context.Background(), "cpu").Result()
		_ = nc.Close()
		require.NoError(t, err)
		for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
			v, err := strconv.ParseFloat(infoField(info, f), 64)
			require.NoError(t, err)
			out[i] += time.Duration(v * float64(time.Second))
		}
	}
	return out
}

// TestClusterShardedQueue drains one logical queue spread over three shards on three primaries, and the same
// load on one shard of a one-primary Cluster, and logs both rates. Under -race on a small machine the figures say
// little about Redis (the Go side is the bottleneck): docs/scaling.md has the benchmark's figures.
func TestClusterShardedQueue(t *testing.T) {
	one := startCluster(t, 1, 0)
	three := startCluster(t, 3, 0)
	const n = 6000
	took1, cpu1 := drainSharded(t, one, one.client(nil), "tp1", 1, n)
	cc := three.client(nil)
	took3, cpu3 := drainSharded(t, three, cc, spreadShards(t, cc, "tp3", 3, 3), 3, n)
	t.Logf("%d tasks, 4 producers, 4 workers (-race): 1 primary, 1 shard: %.0f tasks/s, busiest primary %.1f µs CPU/task; "+
		"3 primaries, 3 shards: %.0f tasks/s, busiest primary %.1f µs CPU/task",
		n, n/took1.Seconds(), float64(cpu1.Microseconds())/n, n/took3.Seconds(), float64(cpu3.Microseconds())/n)
	require.Less(t, cpu3, cpu1, "three primaries share the Redis work of one logical queue")
}

// BenchmarkClusterSharded measures the whole lifecycle (enqueue in batches of 100 by 4 producers, pickup, run,
// ack by 4 workers of 64) of one logical queue: one shard on a one-primary Cluster, against three shards on three
// primaries (and one shard on three primaries, which is the one-primary case). Run it without -race:
//
//	go test -tags cluster -run '^$' -bench ClusterSharded -benchtime 60000x -count 5 .
func BenchmarkClusterSharded(b *testing.B) {
	one := startCluster(b, 1, 0)
	three := startCluster(b, 3, 0)
	cc1, cc3 := one.client(&redis.ClusterOptions{PoolSize: 64}), three.client(&redis.ClusterOptions{PoolSize: 64})
	run := 0
	for _, c := range []struct {
		name   string
		c      *testCluster
		cc     *redis.ClusterClient
		prefix string
		shards int
	}{
		{"primaries=1/shards=1", one, cc1, "bench1", 1},
		{"primaries=3/shards=1", three, cc3, "bench31", 1},
		{"primaries=3/shards=3", three, cc3, "bench33", 3},
	} {
		b.Run(c.name, func(b *testing.B) {
			run++
			prefix := fmt.Sprintf("%s-r%d", c.prefix, run)
			if c.shards > 1 {
				prefix = spreadShards(b, c.cc, prefix, c.shards, 3)
			}
			took, busiest := drainSharded(b, c.c, c.cc, prefix, c.shards, b.N)
			b.ReportMetric(float64(b.N)/took.Seconds(), "tasks/s")
			// The busiest primary's Redis CPU per task: its inverse is the topology's ceiling once every primary
			// has a core of its own, which this 2-core machine cannot show in tasks/s.
			b.ReportMetric(float64(busiest.Nanoseconds())/1e3/float64(b.N), "busiest-µs/task")
			b.ReportMetric(float64(b.N)/busiest.Seconds(), "ceiling-tasks/s")
		})
	}
}
