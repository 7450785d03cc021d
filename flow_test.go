package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// keyedSpec is a task m.f of flow key k ("" for none).
func keyedSpec(id, k string) *TaskSpec {
	return &TaskSpec{TaskID: id, Executable: Ref("m", "f", nil), FlowKey: k}
}

func enqueueKeyed(t *testing.T, s *setup, specs ...*TaskSpec) {
	t.Helper()
	_ = Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil })
	require.NoError(t, s.q.EnqueueBatch(context.Background(), specs))
}

// keysOf returns the flow key of each delivery ("-" for none).
func keysOf(ds []*Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Spec.FlowKey
		if out[i] == "" {
			out[i] = "-"
		}
	}
	return out
}

// running returns the slots held per key.
func (s *setup) running(t *testing.T) map[string]string {
	t.Helper()
	return s.rdb.HGetAll(context.Background(), s.q.keys.key(keyFlowRun)).Val()
}

func TestFlowKeyFairnessAndFIFO(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		var specs []*TaskSpec
		for i := range 50 {
			specs = append(specs, keyedSpec(fmt.Sprintf("a%02d", i), "A"))
		}
		specs = append(specs, keyedSpec("b0", "B"), keyedSpec("b1", "B"), keyedSpec("c0", "C"), keyedSpec("u0", ""))
		enqueueKeyed(t, s, specs...)
		require.Equal(t, Counts{Pending: 54}, s.counts(t))

		ds := s.lease(t, 40)
		// One batch of 40 over 4 members (the unkeyed list, A, B, C): 10 each as far as they have them, then A.
		want := []string{"u0"}
		for i := range 10 {
			want = append(want, fmt.Sprintf("a%02d", i))
		}
		want = append(want, "b0", "b1", "c0")
		for i := 10; i < 36; i++ {
			want = append(want, fmt.Sprintf("a%02d", i))
		}
		require.Equal(t, want, ids(ds))
		require.Equal(t, "A", ds[1].Spec.FlowKey)
		require.Equal(t, map[string]string{"A": "36", "B": "2", "C": "1"}, s.running(t))
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Empty(t, s.running(t), "acks give every slot back")

		ds = s.lease(t, 10)
		for i, d := range ds {
			require.Equal(t, fmt.Sprintf("a%02d", i+36), d.Spec.TaskID, "FIFO within a key")
		}
		require.NoError(t, s.q.Ack(ctx, ds...))
		// B's first task comes within the next batch, whatever A's backlog.
		enqueueKeyed(t, s, keyedSpec("b2", "B"))
		ds = s.lease(t, 4)
		require.Equal(t, []string{"a46", "a47", "a48", "a49"}, ids(ds), "a share is at least 8: A first, as it was ahead")
		require.NoError(t, s.q.Ack(ctx, ds...))
		ds = s.lease(t, 1)
		require.Equal(t, []string{"b2"}, ids(ds), "B's first task comes in the next batch")
		require.NoError(t, s.q.Ack(ctx, ds...))
	})
}

func TestFlowKeyKeptOnReleaseRetryReclaimAndDead(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		if s.mr != nil {
			s.mr.SetTime(time.Now())
		}
		enqueueKeyed(t, s, keyedSpec("a1", "A"), keyedSpec("a2", "A"), keyedSpec("a3", "A"))

		d := s.lease(t, 1)[0]
		require.Equal(t, "a1", d.Spec.TaskID)
		require.NoError(t, s.q.Release(ctx, d))
		d = s.lease(t, 1)[0]
		require.Equal(t, "a1", d.Spec.TaskID, "a release goes back to the head of its key")
		require.NoError(t, s.q.Retry(ctx, d, 0, errors.New("again")))
		require.Empty(t, s.running(t))
		ds := s.lease(t, 3)
		require.Equal(t, []string{"a2", "a3", "a1"}, ids(ds), "an immediate retry goes to the tail of its key")
		require.Equal(t, []string{"A", "A", "A"}, keysOf(ds))
		require.NoError(t, s.q.Retry(ctx, ds[2], 300*time.Millisecond, errors.New("later")))
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("dead")))
		require.Equal(t, map[string]string{"A": "1"}, s.running(t))
		require.ElementsMatch(t, []string{"*", "#", "a1", "a3"}, s.rdb.HKeys(ctx, s.q.keys.key(keyFlow)).Val(),
			"a delayed retry and a dead letter keep their key")
		// a2 loses its worker: reclaimed, with its slot.
		s.advance(400 * time.Millisecond)
		_, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Empty(t, s.running(t), "a reclaimed lease gives its slot back")
		// a2, a suspect now, is leased alone (dequeue.lua)
		ds = append(s.lease(t, 1), s.lease(t, 1)...)
		require.Equal(t, []string{"a2", "a1"}, ids(ds), "reclaimed to the head of its key, the due retry to its tail")
		require.Equal(t, []string{"A", "A"}, keysOf(ds))
		require.NoError(t, s.q.Ack(ctx, ds...))
		n, err := s.adm.RequeueDead(ctx, "a3")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		d = s.lease(t, 1)[0]
		require.Equal(t, "A", d.Spec.FlowKey, "a requeued dead letter keeps its key")
		require.NoError(t, s.q.Ack(ctx, d))
		require.Empty(t, s.running(t))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestFlowConcurrencyLimit(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.adm.SetConcurrencyLimit(ctx, "A", 2))
		require.NoError(t, s.adm.SetConcurrencyLimit(ctx, AllFlowKeys, 3))
		var specs []*TaskSpec
		for i := range 6 {
			specs = append(specs, keyedSpec(fmt.Sprintf("a%d", i), "A"), keyedSpec(fmt.Sprintf("b%d", i), "B"))
		}
		specs = append(specs, keyedSpec("u0", ""), keyedSpec("u1", ""))
		enqueueKeyed(t, s, specs...)

		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 20})
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"u0", "u1", "a0", "a1", "b0", "b1", "b2"}, ids(ds), "A at 2, B at the default 3")
		require.Equal(t, map[string]string{"A": "2", "B": "3"}, s.running(t))
		st, err := s.adm.FlowState(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"A", "B"}, st.AtLimit, "both keys left the rotation")
		require.Equal(t, int64(7), st.Ready)
		none, err := s.q.Dequeue(ctx, DequeueOptions{Max: 20})
		require.NoError(t, err)
		require.Empty(t, none, "no key under its limit: nothing leased, no task of another key blocked")

		// Acking one A frees one slot: exactly one more A.
		var a0 *Delivery
		for _, d := range ds {
			if d.Spec.TaskID == "a0" {
				a0 = d
			}
		}
		require.NoError(t, s.q.Ack(ctx, a0))
		more := s.lease(t, 1)
		require.Equal(t, "a2", more[0].Spec.TaskID)
		none, err = s.q.Dequeue(ctx, DequeueOptions{Max: 20})
		require.NoError(t, err)
		require.Empty(t, none)

		// Raising B's limit (its own, over the default) lets B run at once; the running tasks are untouched.
		require.NoError(t, s.adm.SetConcurrencyLimit(ctx, "B", 5))
		more = s.lease(t, 2)
		require.Equal(t, []string{"b3", "b4"}, ids(more))
		require.Equal(t, map[string]string{"A": "2", "B": "5"}, s.running(t))
		lim, err := s.adm.Limits(ctx)
		require.NoError(t, err)
		require.Equal(t, []FlowLimit{{Key: AllFlowKeys, Concurrency: 3}, {Key: "A", Concurrency: 2}, {Key: "B", Concurrency: 5}}, lim)
		require.NoError(t, s.adm.ClearLimits(ctx, "A"))
		require.NoError(t, s.adm.ClearLimits(ctx, AllFlowKeys))
		rest, err := s.q.Dequeue(ctx, DequeueOptions{Max: 20})
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"a3", "a4", "a5"}, ids(rest))
	})
}

func TestFlowBadInput(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	_ = Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil })
	for _, k := range []string{"a b", "a!", "*", strings.Repeat("k", MaxFlowKeyLen+1), `a"b`} {
		err := s.q.Enqueue(ctx, keyedSpec("x", k))
		require.ErrorIs(t, err, ErrInvalidFlowKey, k)
		require.ErrorContains(t, err, "TaskSpec.FlowKey")
	}
	err := s.q.Enqueue(ctx, &TaskSpec{TaskID: "x", Executable: Ref("m", "f", nil), FlowKey: "A", Priority: PriorityHigh})
	require.ErrorIs(t, err, ErrInvalidFlowKey)
	err = s.q.Enqueue(ctx, &TaskSpec{TaskID: "x", Executable: Ref("m", "f", nil), FlowKey: "A", Unique: &Unique{TTL: time.Minute}})
	require.ErrorIs(t, err, ErrInvalidFlowKey)

	require.ErrorIs(t, s.adm.SetConcurrencyLimit(ctx, "A", 0), ErrInvalidLimit)
	require.ErrorIs(t, s.adm.SetConcurrencyLimit(ctx, "A", -1), ErrInvalidLimit)
	require.ErrorIs(t, s.adm.SetConcurrencyLimit(ctx, "", 1), ErrInvalidFlowKey)
	require.ErrorIs(t, s.adm.SetConcurrencyLimit(ctx, "a b", 1), ErrInvalidFlowKey)
	require.ErrorIs(t, s.adm.SetRateLimit(ctx, "A", 0, time.Second), ErrInvalidLimit)
	err = s.adm.SetRateLimit(ctx, "A", 10, MinRatePeriod-time.Millisecond)
	require.ErrorIs(t, err, ErrInvalidLimit)
	require.ErrorContains(t, err, "period")
	require.ErrorIs(t, s.adm.SetRateLimit(ctx, "A", 10, MaxRatePeriod+time.Second), ErrInvalidLimit)
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyLimits), s.q.keys.key(keyFlow), s.q.keys.key(keyTasks)).Val(), "nothing stored")

	// More distinct limits than the bound: refused, nothing stored.
	p := s.rdb.Pipeline()
	for i := range MaxFlowLimits {
		p.HSet(ctx, s.q.keys.key(keyLimits), fmt.Sprintf("c:k%d", i), "1")
	}
	_, err = p.Exec(ctx)
	require.NoError(t, err)
	err = s.adm.SetConcurrencyLimit(ctx, "one-more", 1)
	require.ErrorIs(t, err, ErrInvalidLimit)
	require.ErrorContains(t, err, "MaxFlowLimits")
	require.False(t, s.rdb.HExists(ctx, s.q.keys.key(keyLimits), "c:one-more").Val())
	require.NoError(t, s.adm.SetConcurrencyLimit(ctx, "k1", 5), "changing a limit that exists is no new one")
}

func TestFlowKeyOfScheduleAndCancel(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	_ = Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil })
	sc, err := NewSchedules(s.q)
	require.NoError(t, err)
	task := &TaskSpec{Executable: Ref("m", "f", nil), FlowKey: "T"}
	require.NoError(t, sc.Create(ctx, &Schedule{Name: "tick", Cron: "@daily", Task: task}))
	id, err := sc.Trigger(ctx, "tick")
	require.NoError(t, err)
	enqueueKeyed(t, s, keyedSpec("t2", "T"), keyedSpec("t3", "T"))

	// A waiting keyed task cancelled leaves its key's FIFO; a running one gives its slot back.
	_, err = s.adm.Cancel(ctx, "t2")
	require.NoError(t, err)
	require.Equal(t, int64(2), s.rdb.ZCard(ctx, s.q.keys.key(keyFlowReady)).Val())
	d := s.lease(t, 1)[0]
	require.Equal(t, id, d.Spec.TaskID)
	require.Equal(t, "T", d.Spec.FlowKey, "a tick's task carries the schedule's key")
	require.Equal(t, map[string]string{"T": "1"}, s.running(t))
	_, err = s.adm.Cancel(ctx, id)
	require.NoError(t, err)
	require.Empty(t, s.running(t), "a cancelled running task gives its slot back")
	d = s.lease(t, 1)[0]
	require.Equal(t, "t3", d.Spec.TaskID)
	require.NoError(t, s.q.Ack(ctx, d))
	require.Equal(t, Counts{}, s.counts(t))
}

func TestFlowKeyListAndPurge(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	enqueueKeyed(t, s, keyedSpec("u0", ""), keyedSpec("b0", "B"), keyedSpec("a0", "A"), keyedSpec("a1", "A"),
		&TaskSpec{TaskID: "later", Executable: Ref("m", "f", nil), FlowKey: "A", ProcessIn: time.Hour})
	page, err := s.adm.List(ctx, StatePending, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"u0", "a0", "a1", "b0"}, infoIDs(page), "the lists, then keyed tasks by key")
	page, err = s.adm.List(ctx, StatePending, 2, 2)
	require.NoError(t, err)
	require.Equal(t, []string{"a1", "b0"}, infoIDs(page))
	n, err := s.adm.Purge(ctx, StatePending)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	n, err = s.adm.Purge(ctx, StateScheduled)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, Counts{}, s.counts(t))
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyFlowReady), s.q.keys.key(keyFlowRot), s.q.keys.key(keyFlowState)).Val())
	require.Equal(t, []string{"#", "*"}, hashFields(s.rdb.HGetAll(ctx, s.q.keys.key(keyFlow)).Val()), "only the marker and counter")
}

func hashFields(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFlowStateBoundedScan: FlowState reads the per-key hashes in HSCAN steps (no HGETALL of a hash that grows with
// the tenants), sums every key when they fit, and says Truncated when a shard holds more keys than it reads.
func TestFlowStateBoundedScan(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.adm.SetConcurrencyLimit(ctx, AllFlowKeys, 1))
		const keys = 2500 // more than one HSCAN step of a hash past its listpack encoding
		specs := make([]*TaskSpec, 0, 2*keys)
		for i := range keys {
			k := fmt.Sprintf("t%04d", i)
			specs = append(specs, keyedSpec(k+"-1", k), keyedSpec(k+"-2", k))
		}
		for lo := 0; lo < len(specs); lo += 500 {
			enqueueKeyed(t, s, specs[lo:lo+500]...)
		}
		leased := 0
		for leased < keys {
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 500})
			require.NoError(t, err)
			require.NotEmpty(t, ds, "every key has one task under its limit")
			leased += len(ds)
		}
		// Pickups that visit keys again find them at their limit and take them out of the rotation.
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 500})
		require.NoError(t, err)
		require.Empty(t, ds, "no key under its limit")
		st, err := s.adm.FlowState(ctx)
		require.NoError(t, err)
		require.False(t, st.Truncated)
		require.Len(t, st.Running, keys, "every key holds its one slot")
		require.NotEmpty(t, st.AtLimit)
		require.Equal(t, slices.Compact(slices.Clone(st.AtLimit)), st.AtLimit, "sorted, each key once")
		require.EqualValues(t, keys, st.Ready)

		cut, err := s.adm.flowState(ctx, 1000)
		require.NoError(t, err)
		if s.mr != nil { // miniredis answers an HSCAN whole, in one step: nothing to cut
			require.False(t, cut.Truncated)
			return
		}
		require.True(t, cut.Truncated)
		require.GreaterOrEqual(t, len(cut.Running), 1000)
		require.Less(t, len(cut.Running), keys)
	})
}
