//go:build cluster

package taskqueue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestSentinelFailover runs the lifecycle through a Sentinel failover client (a primary, a replica and three
// sentinels), then fails the primary over twice in the middle of a run: SENTINEL FAILOVER (coordinated: the old
// primary turns replica, which unblocks the pickups blocked on it), then SIGKILL of the new primary. The workers
// follow each new primary by themselves; every acknowledged enqueue runs apart from plain ones in the replication
// window; NOSCRIPT never reaches the caller.
func TestSentinelFailover(t *testing.T) {
	s := startSentinel(t, 1)
	rdb := s.client(&redis.FailoverOptions{DialTimeout: time.Second})
	ctx := context.Background()
	t.Run("Lifecycle", func(t *testing.T) { lifecycle(t, rdb, "sentinel-life") })

	run := startFailoverRun(t, rdb, "sentinel", 2)
	run.waitMore(200, 20*time.Second, "the run to start")

	// 1. Coordinated failover.
	first := s.primary
	replica := s.replicas[0]
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].addr})
	defer sc.Close()
	// SENTINEL FAILOVER promotes the replica without waiting for it to catch up (unlike CLUSTER FAILOVER), and the
	// old primary then resyncs from it: a plain enqueue acknowledged shortly before or during the switch may be
	// lost, the same asynchronous-replication window as a kill. (A CI run once lost one there.)
	forced := time.Now()
	require.NoError(t, sc.Failover(ctx, s.master).Err())
	waitFor(t, 20*time.Second, "the sentinels to promote the replica", func() bool { return s.currentPrimary(t) == replica.addr })
	promoted := time.Now()
	rc := redis.NewClient(&redis.Options{Addr: replica.addr})
	defer rc.Close()
	waitFor(t, 30*time.Second, "the former primary to follow the new one", func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master") && strings.Contains(info, "state=online")
	})
	run.waitMore(200, 30*time.Second, "the workers to resume after SENTINEL FAILOVER")

	// 2. The new primary dies without warning.
	replica.kill()
	killed := time.Now()
	waitFor(t, 30*time.Second, "the sentinels to promote the former primary", func() bool { return s.currentPrimary(t) == first.addr })
	elected := time.Since(killed)
	run.waitMore(200, 30*time.Second, "the workers to resume after SIGKILL of the primary")
	t.Logf("after the kill: replica promoted in %s, 200 more tasks ran after %s", elected.Round(time.Millisecond),
		time.Since(killed).Round(time.Millisecond))
	run.verifySpans([2]time.Time{forced.Add(-replicationWindow), promoted}, [2]time.Time{killed.Add(-replicationWindow), killed})
}

// When a failover turns the primary into a replica, Redis ends the pickups blocked on it with an UNBLOCKED error.
// The queue takes it as a wake-up, not a failure: the next pickup goes to the new primary (a failover client has
// switched by then).
func TestSentinelUnblockedPickupIsAWakeUp(t *testing.T) {
	dir := t.TempDir()
	primary := startProc(t, dir, loopbackPort(t), "--save", "", "--appendonly", "no")
	other := startProc(t, dir, loopbackPort(t), "--save", "", "--appendonly", "no")
	rdb := redis.NewClient(&redis.Options{Addr: primary.addr})
	t.Cleanup(func() { _ = rdb.Close() })
	q, _ := clQueue(t, rdb, "unblocked", nil)
	ctx := context.Background()
	type result struct {
		woke string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		woke, err := q.block(ctx, 10*time.Second, q.waitKeys("c1")...)
		done <- result{woke, err}
	}()
	waitBlocked(t, rdb, q.keys.key(keyWake))
	admin := redis.NewClient(&redis.Options{Addr: primary.addr})
	defer admin.Close()
	require.NoError(t, admin.ReplicaOf(ctx, "127.0.0.1", strings.TrimPrefix(other.addr, "127.0.0.1:")).Err())
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Empty(t, r.woke)
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked pickup was not ended by the role change")
	}
	require.False(t, isUnblocked(errors.New("UNBLOCKED but not a reply from Redis")))
}
