package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSpecMistakes enumerates the mistakes a spec can hold and the one error kind of each, on every enqueue path:
// RedisTaskQueue.Enqueue and EnqueueBatch, MemoryQueue.Enqueue and EnqueueBatch, TaskSpec.Serialized.
func TestSpecMistakes(t *testing.T) {
	t.Parallel()
	ref := func() Executable { return Ref("test", "noop", nil) }
	spec := func(edit func(*TaskSpec)) *TaskSpec {
		s := &TaskSpec{TaskID: "t1", Executable: ref()}
		edit(s)
		return s
	}
	manyMeta := map[string]string{}
	for i := range MaxMetadataEntries + 1 {
		manyMeta[fmt.Sprintf("k%d", i)] = "v"
	}
	// Checked before serialization, the same on both queues.
	common := []struct {
		name string
		spec *TaskSpec
		err  error
	}{
		{"nil spec", nil, ErrInvalidConfig},
		{"no task", &TaskSpec{TaskID: "t1"}, ErrInvalidConfig},
		{"task id with a space", spec(func(s *TaskSpec) { s.TaskID = "bad id" }), ErrInvalidTaskID},
		{"task id too long", spec(func(s *TaskSpec) { s.TaskID = strings.Repeat("x", MaxTaskIDLen+1) }), ErrInvalidTaskID},
		{"task id control character", spec(func(s *TaskSpec) { s.TaskID = "a\x00b" }), ErrInvalidTaskID},
		{"resolver id path-like", spec(func(s *TaskSpec) { s.ResolverID = "../default" }), ErrUnknownResolver},
		{"resolver id with braces", spec(func(s *TaskSpec) { s.ResolverID = "{x}" }), ErrUnknownResolver},
		{"MaxRetries below -1", spec(func(s *TaskSpec) { s.MaxRetries = -2 }), ErrInvalidConfig},
		{"negative Timeout", spec(func(s *TaskSpec) { s.Timeout = -time.Second }), ErrInvalidConfig},
		{"negative Attempt", spec(func(s *TaskSpec) { s.Attempt = -1 }), ErrInvalidConfig},
		{"metadata key invalid", spec(func(s *TaskSpec) { s.Metadata = map[string]string{"a b": "v"} }), ErrInvalidConfig},
		{"metadata too many entries", spec(func(s *TaskSpec) { s.Metadata = manyMeta }), ErrInvalidConfig},
		{"metadata value not UTF-8", spec(func(s *TaskSpec) { s.Metadata = map[string]string{"k": "\xff"} }), ErrInvalidConfig},
		{"metadata keys differ in case", spec(func(s *TaskSpec) { s.Metadata = map[string]string{"k": "1", "K": "2"} }), ErrInvalidConfig},
	}
	serialized := func(strategy, payload string) *TaskSpec {
		return &TaskSpec{TaskID: "t1", SerializedTask: &SerializedTask{Strategy: strategy, Payload: json.RawMessage(payload)}}
	}
	// Found by serialization: a Redis queue and Serialized only.
	redisOnly := []struct {
		name string
		spec *TaskSpec
		err  error
	}{
		{"resolver not registered", spec(func(s *TaskSpec) { s.ResolverID = "missing" }), ErrUnknownResolver},
		{"closure", spec(func(s *TaskSpec) { s.Executable = Func(func(context.Context) error { return nil }) }), ErrNotSerializable},
		{"unsafe strategy", serialized("pickle", `{}`), ErrUnsafeStrategy},
		{"empty strategy", serialized("", `{}`), ErrNotSerializable},
		{"payload not an object", serialized("reference", `[]`), ErrNotSerializable},
		{"payload invalid JSON", serialized("reference", `{"a":`), ErrNotSerializable},
	}
	ctx := context.Background()
	s := newMini(t, nil)
	mq := NewMemoryQueue(time.Second, 2)
	t.Cleanup(mq.Close)
	check := func(t *testing.T, q TaskQueue, spec *TaskSpec, want error) {
		t.Helper()
		err := q.Enqueue(ctx, spec)
		require.ErrorIs(t, err, want)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		for _, other := range []error{ErrInvalidConfig, ErrInvalidTaskID, ErrUnknownResolver, ErrNotSerializable, ErrUnsafeStrategy, ErrNotRunnable} {
			if !errors.Is(want, other) {
				require.NotErrorIs(t, err, other, "one kind per mistake")
			}
		}
		err = q.EnqueueBatch(ctx, []*TaskSpec{spec})
		require.ErrorIs(t, err, want)
		var ee *EnqueueError
		require.ErrorAs(t, err, &ee)
		require.Zero(t, ee.Index)
	}
	for _, tc := range common {
		t.Run("redis/"+tc.name, func(t *testing.T) { check(t, s.q, tc.spec, tc.err) })
		t.Run("memory/"+tc.name, func(t *testing.T) { check(t, mq, tc.spec, tc.err) })
	}
	for _, tc := range append(common, redisOnly...) {
		t.Run("serialized/"+tc.name, func(t *testing.T) {
			out, err := tc.spec.Serialized(s.reg)
			require.Nil(t, out)
			require.ErrorIs(t, err, tc.err)
		})
	}
	for _, tc := range redisOnly {
		t.Run("redis/"+tc.name, func(t *testing.T) { check(t, s.q, tc.spec, tc.err) })
	}
	// A memory queue runs executables only: a serialized spec is no mistake of the spec, but not runnable there.
	check(t, mq, serialized("reference", `{}`), ErrNotRunnable)

	// DispatchGroup: a nil member is the same mistake as a nil spec, and a member goes through the same checks.
	_, err := s.q.DispatchGroup(ctx, "g", []*TaskSpec{nil}, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = s.q.DispatchGroup(ctx, "g", []*TaskSpec{spec(func(s *TaskSpec) { s.MaxRetries = -2 })}, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = s.q.DispatchGroup(ctx, "g", []*TaskSpec{{TaskID: "m"}}, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)

	require.Equal(t, Counts{}, s.counts(t), "nothing was stored")
	st, err := mq.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Pending+st.Scheduled, "nothing was stored")
}
