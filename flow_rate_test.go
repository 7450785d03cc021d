package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// leaseAt sets miniredis's clock to at and leases up to n tasks, returning them and the pickup's next due wait.
func leaseAt(t *testing.T, s *setup, at time.Time, n int) ([]string, time.Duration) {
	t.Helper()
	s.mr.SetTime(at)
	l, next, err := s.q.dequeueOnce(context.Background(), n)
	require.NoError(t, err)
	ids := append([]string(nil), l.ids...)
	ds := l.ds
	for i, d := range ds {
		d.Spec = &TaskSpec{TaskID: ids[i], FlowKey: "R"}
	}
	require.NoError(t, s.q.Ack(context.Background(), ds...))
	return ids, next
}

// TestFlowRateLimitWindowEdges checks the token bucket (GCRA) of a key's rate on the server's clock, to the
// millisecond: 10 per second is a burst of 10, then one every 100 ms; over any interval of length t at most
// 10 + 10·t/1s starts.
func TestFlowRateLimitWindowEdges(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	t0 := time.UnixMilli(1_800_000_000_000)
	s.mr.SetTime(t0)
	require.NoError(t, s.adm.SetRateLimit(ctx, "R", 10, time.Second))
	var specs []*TaskSpec
	for i := range 40 {
		specs = append(specs, keyedSpec(fmt.Sprintf("r%02d", i), "R"))
	}
	specs = append(specs, keyedSpec("s0", "S"), keyedSpec("s1", "S"))
	enqueueKeyed(t, s, specs...)

	got, next := leaseAt(t, s, t0, 100)
	require.Len(t, got, 12, "a full bucket: 10 of R, and S is not held back by R")
	require.Equal(t, 100*time.Millisecond, next, "R may start again in one interval")
	st, err := s.adm.FlowState(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"R"}, st.OverRate)

	got, _ = leaseAt(t, s, t0.Add(99*time.Millisecond), 100)
	require.Empty(t, got, "1 ms before the edge: none")
	got, next = leaseAt(t, s, t0.Add(100*time.Millisecond), 100)
	require.Len(t, got, 1, "at the edge: one")
	require.Equal(t, 100*time.Millisecond, next)
	got, _ = leaseAt(t, s, t0.Add(199*time.Millisecond), 100)
	require.Empty(t, got)
	got, _ = leaseAt(t, s, t0.Add(1000*time.Millisecond), 100)
	require.Len(t, got, 9, "by t0+1s: 20 in all over [t0, t0+1s], the bound 10 + 10")
	got, _ = leaseAt(t, s, t0.Add(3000*time.Millisecond), 100)
	require.Len(t, got, 10, "an idle key refills to a burst of 10, never more")

	// Raising the rate lets the key run at once at the new rate.
	got, _ = leaseAt(t, s, t0.Add(3001*time.Millisecond), 100)
	require.Empty(t, got)
	require.NoError(t, s.adm.SetRateLimit(ctx, "R", 1000, time.Second))
	got, _ = leaseAt(t, s, t0.Add(3001*time.Millisecond), 100)
	require.Len(t, got, 1, "the new interval (1 ms) counts from the old debt")
	got, _ = leaseAt(t, s, t0.Add(3100*time.Millisecond), 100)
	require.Len(t, got, 9, "the rest of R")
	require.Equal(t, Counts{}, s.counts(t))
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyFlowWait), s.q.keys.key(keyFlowState), s.q.keys.key(keyFlowReady)).Val())
}

// TestFlowQueueRateLimit checks the queue's own rate: it caps every pickup, keyed or not, and reports when the
// next start is allowed as a due time, so that a consumer sleeps until then.
func TestFlowQueueRateLimit(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	t0 := time.UnixMilli(1_800_000_000_000)
	s.mr.SetTime(t0)
	require.NoError(t, s.adm.SetRateLimit(ctx, "", 5, time.Second))
	s.enqueue(t, "u0", "u1", "u2", "u3", "u4", "u5", "u6")
	got, next := leaseAt(t, s, t0, 100)
	require.Len(t, got, 5)
	require.Equal(t, []string{"u0", "u1", "u2", "u3", "u4"}, got)
	require.Equal(t, 200*time.Millisecond, next, "the queue's next token")
	got, next = leaseAt(t, s, t0.Add(time.Millisecond), 100)
	require.Empty(t, got)
	require.Equal(t, 199*time.Millisecond, next, "the next token in 200 ms from t0")
	got, _ = leaseAt(t, s, t0.Add(200*time.Millisecond), 100)
	require.Equal(t, []string{"u5"}, got)
	require.NoError(t, s.adm.ClearLimits(ctx, ""))
	got, _ = leaseAt(t, s, t0.Add(201*time.Millisecond), 100)
	require.Equal(t, []string{"u6"}, got, "cleared: no cap")
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyLimits)).Val(), "no limit left: the queue is plain again")
}
