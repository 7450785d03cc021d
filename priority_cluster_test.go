//go:build cluster

package taskqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterPriorities runs priority levels on a Cluster, on queues served by different primaries: strict order,
// and a release, a delayed retry and a reclaim that keep their levels (every key of the levels shares the queue's
// hash tag: TestCluster/KeySlots checks the whole key set).
func TestClusterPriorities(t *testing.T) {
	c := startCluster(t, 3, 0)
	cc := c.client(nil)
	ctx := context.Background()
	for _, p := range spreadPrefixes(t, cc, "prio", 2) {
		t.Run(p, func(t *testing.T) {
			q, _ := clQueue(t, cc, p, &RedisConfig{Lease: 300 * time.Millisecond})
			spec := func(id string, pr Priority) *TaskSpec {
				return &TaskSpec{TaskID: id, Executable: Ref("cl", "ok", clArgs{ID: id}), Priority: pr}
			}
			require.NoError(t, q.EnqueueBatch(ctx, []*TaskSpec{spec("l", PriorityLow), spec("d", PriorityDefault), spec("h", PriorityHigh)}))
			ds, err := q.Dequeue(ctx, DequeueOptions{Max: 3})
			require.NoError(t, err)
			require.Equal(t, []string{"h", "d", "l"}, ids(ds))
			require.NoError(t, q.Release(ctx, ds[0]))
			require.NoError(t, q.Retry(ctx, ds[2], 50*time.Millisecond, errors.New("later")))
			require.NoError(t, q.Enqueue(ctx, spec("d2", PriorityDefault)))
			var got []*Delivery
			waitFor(t, 10*time.Second, "h, d2 and l leased in level order", func() bool {
				more, err := q.Dequeue(ctx, DequeueOptions{Max: 3})
				require.NoError(t, err)
				got = append(got, more...)
				return len(got) >= 3
			})
			require.Equal(t, []string{"h", "d2", "l"}, ids(got))
			require.NoError(t, q.Ack(ctx, got...))
			// d was never acked: its lease expires and the reaper puts it back at the head of its level.
			waitFor(t, 10*time.Second, "d reclaimed", func() bool {
				res, err := q.Reap(ctx)
				require.NoError(t, err)
				return res.Requeued > 0
			})
			ds, err = q.Dequeue(ctx, DequeueOptions{Max: 10})
			require.NoError(t, err)
			require.Equal(t, []string{"d"}, ids(ds))
			require.NoError(t, q.Ack(ctx, ds...))
		})
	}
}
