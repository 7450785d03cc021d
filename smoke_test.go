package taskqueue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSmoke(t *testing.T) {
	for name, mk := range map[string]func(testing.TB, *RedisConfig) *setup{"mini": newMini, "real": newReal} {
		t.Run(name, func(t *testing.T) {
			s := mk(t, nil)
			ctx := context.Background()
			got := make(chan int64, 1)
			require.NoError(t, Register(s.ref, "math", "add", func(_ context.Context, a addArgs) error { got <- a.A + a.B; return nil }))
			require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("math", "add", addArgs{A: 1, B: 2}))))
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10, Wait: time.Second})
			require.NoError(t, err)
			require.Len(t, ds, 1)
			require.NoError(t, ds[0].Spec.Executable.Run(ctx))
			require.Equal(t, int64(3), <-got)
			require.NoError(t, s.q.Ack(ctx, ds[0]))
			require.NoError(t, s.q.Ack(ctx, ds[0]))
			st, err := countsOf(ctx, s.q)
			require.NoError(t, err)
			require.Equal(t, Counts{}, st)
		})
	}
}
