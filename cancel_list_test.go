package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Stats counts the cancelled tasks, and List lists them by the time of the cancel with the envelope each had;
// deleting a cancelled record takes it out of both.
func TestCancelledCountedAndListed(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{
			NewTaskSpec("a", Ref("test", "noop", nil)),
			{TaskID: "b", Executable: Ref("test", "noop", nil), ProcessIn: time.Hour},
			NewTaskSpec("c", Ref("test", "noop", nil)),
		}))
		st, err := s.adm.Stats(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Cancelled)
		tasks, err := s.adm.List(ctx, StateCancelled, 0, 10)
		require.NoError(t, err)
		require.Empty(t, tasks)

		for _, id := range []string{"b", "a"} {
			_, err := s.adm.Cancel(ctx, id)
			require.NoError(t, err)
			s.advance(5 * time.Millisecond) // distinct cancel times, so that the order is theirs
		}
		st, err = s.adm.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 2, st.Cancelled)
		require.Equal(t, Counts{Pending: 1}, st.Counts, "a cancelled task is not in the queue")

		tasks, err = s.adm.List(ctx, StateCancelled, 0, 10)
		require.NoError(t, err)
		require.Len(t, tasks, 2)
		for i, id := range []string{"b", "a"} {
			require.Equal(t, id, tasks[i].TaskID)
			require.Equal(t, StateCancelled, tasks[i].State)
			require.False(t, tasks[i].Score.IsZero())
			require.Contains(t, tasks[i].Record, fmt.Sprintf(`"task_id":%q`, id))
			_, err := decodeStored(id, []byte(tasks[i].Envelope), s.q.cfg.Limits)
			require.NoError(t, err, "the envelope as it was, without the record's mark")
		}
		require.False(t, tasks[1].Score.Before(tasks[0].Score))
		page, err := s.adm.List(ctx, StateCancelled, 1, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"a"}, infoIDs(page))

		_, err = s.adm.Delete(ctx, "b")
		require.NoError(t, err)
		st, err = s.adm.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, st.Cancelled)
		tasks, err = s.adm.List(ctx, StateCancelled, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"a"}, infoIDs(tasks))
	})
}

// A sharded queue's cancelled tasks add up and list across the shards by the time of the cancel.
func TestCancelledShardedCountedAndListed(t *testing.T) {
	t.Parallel()
	q, mr, _ := newSharded(t, 3)
	adm := mustAdmin(q)
	ctx := context.Background()
	now := time.Now()
	var want []string
	for k := range 3 {
		id := idOnShard(t, q, k, fmt.Sprintf("x%d", k))
		require.NoError(t, q.Enqueue(ctx, shardTask(id, k)))
		want = append([]string{id}, want...) // cancelled below from the last shard to the first
	}
	for i, id := range want {
		mr.SetTime(now.Add(time.Duration(i) * time.Second))
		_, err := adm.Cancel(ctx, id)
		require.NoError(t, err)
	}
	st, err := adm.Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, st.Cancelled)
	tasks, err := adm.List(ctx, StateCancelled, 0, 10)
	require.NoError(t, err)
	require.Equal(t, want, infoIDs(tasks))
	tasks, err = adm.List(ctx, StateCancelled, 1, 2)
	require.NoError(t, err)
	require.Equal(t, want[1:], infoIDs(tasks))
}
