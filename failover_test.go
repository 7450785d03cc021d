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

// replicationWindow is how far before a primary's death an acknowledged plain enqueue may be lost: the replica
// had not received it yet. The test allows a generous second; replication lag on loopback is far below.
const replicationWindow = time.Second

// TestClusterFailover fails the queue's primary over twice in the middle of a run: first with CLUSTER FAILOVER on
// its replica (coordinated, loses nothing), then by killing the new primary with SIGKILL. The workers resume by
// themselves, their blocked pickups come back, NOSCRIPT never reaches the caller, and every acknowledged enqueue
// runs apart from plain ones in the replication window; durable ones all run.
func TestClusterFailover(t *testing.T) {
	c := startCluster(t, 3, 1)
	cc := c.client(&redis.ClusterOptions{MaxRedirects: 8, DialTimeout: time.Second})
	ctx := context.Background()
	const prefix = "fo"
	key := "{" + prefix + "}:tasks"
	run := startFailoverRun(t, cc, prefix, 2)
	run.waitMore(200, 20*time.Second, "the run to start")

	// 1. Coordinated failover: the replica takes over once it has every write.
	old := c.primaryFor(t, cc, key)
	replica := c.replicaOf(t, old)
	rc := c.node(replica.addr)
	defer rc.Close()
	require.NoError(t, rc.Do(ctx, "cluster", "failover").Err())
	waitFor(t, 15*time.Second, "the replica to become primary", func() bool { return isPrimary(rc) })
	c.waitHealthy(20 * time.Second)
	run.waitMore(200, 30*time.Second, "the workers to resume after CLUSTER FAILOVER")
	require.Equal(t, replica.addr, c.primaryFor(t, cc, key).addr, "the slot moved to the former replica")

	// 2. The new primary dies without warning: its replica (the former primary) is elected.
	c.replicaOf(t, replica) // the former primary follows it now
	replica.kill()
	killed := time.Now()
	oc := c.node(old.addr)
	defer oc.Close()
	waitFor(t, 30*time.Second, "the former primary to be elected again", func() bool { return isPrimary(oc) })
	elected := time.Since(killed)
	run.waitMore(200, 30*time.Second, "the workers to resume after SIGKILL of the primary")
	t.Logf("after the kill: replica elected in %s, 200 more tasks ran after %s", elected.Round(time.Millisecond),
		time.Since(killed).Round(time.Millisecond))
	run.verify(replicationWindow, killed)
}

// isPrimary reports whether the node says it is a primary.
func isPrimary(nc *redis.Client) bool {
	info, err := nc.Info(context.Background(), "replication").Result()
	return err == nil && strings.Contains(info, "role:master")
}
