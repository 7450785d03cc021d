//go:build cluster

package taskqueue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestSentinelFailoverUniqueAndSchedules: unique tasks hold their keys and two schedulers fire a 1-second
// schedule through a Sentinel client while the primary is failed over (SENTINEL FAILOVER). After it: every key's
// lock is either held by a task that exists on the new primary or free (none stranded), every key is free once
// its tasks ran, and no tick was stored twice (the schedules replicated; their ticks go on from the new primary).
// The queue enqueues durably (DurableReplicas 1), which is what makes "stored once" hold through a failover.
func TestSentinelFailoverUniqueAndSchedules(t *testing.T) {
	s := startSentinel(t, 1)
	rdb := s.client(&redis.FailoverOptions{DialTimeout: time.Second})
	ctx := context.Background()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "test", "tick", func(context.Context, map[string]int) error { return nil }))
	// DurableReplicas: a tick counts as fired only once a replica has it. Without it, a tick fired into the old
	// primary after the replica's promotion (it keeps taking writes until the sentinels demote it: about a second
	// here) is acknowledged, lost with the old primary's writes, and fired again from the new one (docs/periodic.md).
	q, err := NewRedisTaskQueue(rdb, "sentinel-unique", reg, quiet(&RedisConfig{DurableReplicas: 1, DurableTimeout: 500 * time.Millisecond}))
	require.NoError(t, err)
	adm := mustAdmin(q)
	keys := []string{"k0", "k1", "k2", "k3"}
	for _, k := range keys {
		require.NoError(t, q.Enqueue(ctx, uniqueSpec(k, Unique{})))
	}
	require.NoError(t, mustSchedules(q).Create(ctx, &Schedule{Name: "every", Every: time.Second, Task: tickTask()}))
	log := &firedLog{stored: map[string]int{}}
	runSchedulers(t, q, 2, log)
	waitFor(t, 30*time.Second, "two ticks before the failover", func() bool { return len(log.snapshot()) >= 2 })

	sc := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].addr})
	defer sc.Close()
	replica := s.replicas[0]
	require.NoError(t, sc.Failover(ctx, s.master).Err())
	waitFor(t, 30*time.Second, "the sentinels to promote the replica", func() bool { return s.currentPrimary(t) == replica.addr })
	rc := redis.NewClient(&redis.Options{Addr: replica.addr})
	defer rc.Close()
	waitFor(t, 30*time.Second, "the former primary to follow the new one", func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master") && strings.Contains(info, "state=online")
	})

	// No lock stranded: held only by a task that exists.
	for _, k := range keys {
		var l *LockInfo
		waitFor(t, 30*time.Second, "the lock of "+k+" readable", func() bool { l, err = adm.Lock(ctx, k); return err == nil })
		if l != nil && l.Held {
			_, err := adm.Inspect(ctx, l.TaskID)
			require.NoError(t, err, "key %s held by a task that exists", k)
		}
	}
	// Run every task; then every key is free.
	waitFor(t, 30*time.Second, "every unique task run", func() bool {
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 100})
		if err != nil {
			return false
		}
		if len(ds) > 0 {
			require.NoError(t, q.Ack(ctx, ds...))
		}
		st, err := adm.Stats(ctx)
		return err == nil && st.Pending == 0 && st.Active == 0
	})
	for _, k := range keys {
		spec := uniqueSpec(k, Unique{})
		require.NoError(t, q.Enqueue(ctx, spec))
		require.Equal(t, Stored, spec.Enqueued, "key %s free", k)
	}
	before := len(log.snapshot())
	waitFor(t, 30*time.Second, "two ticks after the failover", func() bool { return len(log.snapshot()) >= before+2 })
	for id, n := range log.snapshot() {
		require.Equal(t, 1, n, "tick %s stored %d times", id, n)
	}
	log.mu.Lock()
	t.Logf("%d ticks stored once each; %d passes refused as not replicated (fired into the demoted primary, fired again from the new one)",
		len(log.stored), log.notReplicated)
	log.mu.Unlock()
}
