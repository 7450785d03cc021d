package taskqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A pickup batch's lease record and its member of leases go as soon as no delivery of the batch is left leased,
// whatever outcome settled the last one (ack, retry, dead letter), not at the lease deadline; resends of every
// outcome are still answered as before. A batch with a released delivery keeps its record until the deadline
// (a resent release is told by its mark), and so does one with a dead letter kept as stored.
func TestBatchRecordGoesWhenItsLastDeliverySettles(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		recordCount := func() (int64, int64) {
			nb, err := s.rdb.HLen(ctx, s.q.keys.key(keyBatches)).Result()
			require.NoError(t, err)
			nl, err := s.rdb.ZCard(ctx, s.q.keys.key(keyLeases)).Result()
			require.NoError(t, err)
			return nb, nl
		}
		cause := errors.New("boom")
		for _, last := range []string{"ack", "retry", "dead"} {
			t.Run("last by "+last, func(t *testing.T) {
				require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("a-"+last, Ref("m", "f", nil)),
					NewTaskSpec("r-"+last, Ref("m", "f", nil)), NewTaskSpec("d-"+last, Ref("m", "f", nil))}))
				ds := s.lease(t, 3)
				outcome := map[string]func() error{
					"ack":   func() error { return s.q.Ack(ctx, ds[0]) },
					"retry": func() error { return s.q.Retry(ctx, ds[1], time.Hour, cause) },
					"dead":  func() error { return s.q.DeadLetter(ctx, ds[2], cause) },
				}
				for _, o := range []string{"ack", "retry", "dead"} {
					if o != last {
						require.NoError(t, outcome[o]())
						nb, nl := recordCount()
						require.Equal(t, []int64{2, 1}, []int64{nb, nl}, "a delivery is still leased: the record stays")
					}
				}
				require.NoError(t, outcome[last]())
				nb, nl := recordCount()
				require.Equal(t, []int64{0, 0}, []int64{nb, nl}, "no delivery left leased: record and lease gone")
				for o, f := range outcome {
					require.NoError(t, f(), "a resent %s", o)
				}
				require.Zero(t, s.counts(t).Active)
			})
		}
		t.Run("release keeps the record", func(t *testing.T) {
			require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("ra", Ref("m", "f", nil)),
				NewTaskSpec("rl", Ref("m", "f", nil))}))
			ds := s.lease(t, 2)
			require.NoError(t, s.q.Release(ctx, ds[1]))
			require.NoError(t, s.q.Ack(ctx, ds[0]))
			nb, nl := recordCount()
			require.Equal(t, []int64{2, 1}, []int64{nb, nl}, "kept for a resent release")
			require.NoError(t, s.q.Release(ctx, ds[1]), "a resent release")
			require.NoError(t, s.q.Ack(ctx, ds[0]), "a resent ack")
		})
	})
}
