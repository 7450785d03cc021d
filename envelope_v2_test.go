package taskqueue

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Version 2 leaves out what is stored elsewhere, and reads it back from there: task_id from the hash field,
// status pending, strategy from serialized_task. What it leaves out is written when it differs.
func TestEnvelopeV2LeavesOutWhatIsStoredElsewhere(t *testing.T) {
	t.Parallel()
	const compact = `{"v":2,"created_at":1719300000.5,"resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"m","name":"f"}},"group_id":"g"}`
	e, err := decodeStored("t-1", []byte(compact), envLimits())
	require.NoError(t, err)
	require.Equal(t, "t-1", e.TaskID)
	require.Equal(t, StatePending, e.Status)
	require.Equal(t, StrategyReference, e.Strategy)
	out, err := e.marshal()
	require.NoError(t, err)
	require.Equal(t, compact, string(out), "rewritten under its id, byte for byte")
	rec, err := e.record()
	require.NoError(t, err)
	require.Equal(t, `{"v":2,"task_id":"t-1","status":"pending","created_at":1719300000.5,"strategy":"reference","resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"m","name":"f"}},"group_id":"g"}`, string(rec))

	// What differs is written: a status other than pending, a strategy other than serialized_task's, a task_id
	// other than the field it is stored under (kept for an operator: the worker parks such a task).
	e.Status, e.Strategy, e.TaskID = StateRetry, "", "other"
	out, err = e.marshal()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), `{"v":2,"task_id":"other","status":"retry","created_at":1719300000.5,"strategy":"","resolver_id"`), "%s", out)
	again, err := decodeStored("t-1", out, envLimits())
	require.NoError(t, err)
	require.Equal(t, "other", again.TaskID)
	require.Empty(t, again.Strategy)

	// Present, task_id must still be a task id.
	_, err = decodeEnvelope([]byte(strings.Replace(compact, `{"v":2,`, `{"v":2,"task_id":"",`, 1)), envLimits())
	require.ErrorIs(t, err, ErrMalformedEnvelope)
	// Versions 0 and 1 still need every field they always needed.
	for _, v := range []string{`"v":1,`, `"v":0,`, ``} {
		_, err = decodeEnvelope([]byte(strings.Replace(compact, `"v":2,`, v, 1)), envLimits())
		require.ErrorIs(t, err, ErrMalformedEnvelope, v)
		require.ErrorContains(t, err, `missing field "task_id"`)
	}
}

// An envelope of version 1 (written before version 2) still decodes, and a rewrite keeps it version 1 with every
// field, so that its signature still verifies and an older worker can still read it.
func TestEnvelopeV1KeepsItsVersionWhenRewritten(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	q, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	old := &envelope{V: 1, TaskID: "old-1", Status: StatePending, CreatedAt: 1719300000.5, Strategy: StrategyReference,
		ResolverID: DefaultResolverID, SerializedTask: SerializedTask{Strategy: StrategyReference, Payload: []byte(`{"module":"m","name":"f"}`)}}
	q.signer.sign(old)
	raw, err := old.marshal()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(raw), `{"v":1,"task_id":"old-1","status":"pending","created_at":1719300000.5,"strategy":"reference",`), "%s", raw)

	e, err := decodeStored("old-1", raw, q.cfg.Limits)
	require.NoError(t, err)
	require.NoError(t, q.signer.verify(e))
	e.Status, e.Attempt, e.LastError = StateRetry, 1, "boom"
	out, err := e.marshal()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), `{"v":1,"task_id":"old-1","status":"retry",`), "%s", out)
	again, err := decodeStored("old-1", out, q.cfg.Limits)
	require.NoError(t, err)
	require.NoError(t, q.signer.verify(again), "the rewrite still verifies")
}

// A task stored by a build before version 2 (version 1, a 32-hex id) runs on this one.
func TestEnvelopeV1TaskRuns(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	id := strings.Repeat("0123456789abcdef", 2)
	s.writeRaw(t, id, `{"v":1,"task_id":"`+id+`","status":"pending","created_at":1719300000.5,"strategy":"reference","resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"test","name":"noop"}}}`)
	d := s.lease(t, 1)[0]
	require.Equal(t, id, d.Spec.TaskID)
	require.Equal(t, StatePending, d.Spec.Status)
	require.NoError(t, s.q.Ack(ctx, d))
}

// The envelope of the peer comparison's task (bench/: a generated id, 200 bytes of arguments) takes at most 378
// bytes, so that Redis keeps it in jemalloc's 384-byte size class (a value of n bytes takes n+6 with its header);
// version 1 took 440 bytes, the 448-byte class. BenchmarkMemoryPerTask measures what a pending task costs.
func TestEnvelopeOfBenchTaskFitsItsSizeClass(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	require.NoError(t, Register(s.ref, "bench", "noop", func(context.Context, harnessArgs) error { return nil }))
	for _, seq := range []int{0, 99999, 1 << 40} {
		pad := strings.Repeat("x", 200-len(`{"seq":,"data":""}`)-len(strconv.Itoa(seq)))
		spec := NewTaskSpec("", Ref("bench", "noop", harnessArgs{Seq: seq, Data: pad}))
		spec.CreatedAt = time.UnixMilli(1_796_526_604_657)
		prepare(spec)
		raw := rawOf(t, s.q, spec)
		require.LessOrEqual(t, len(raw), 378, "%s", raw)
		require.NotContains(t, string(raw), spec.TaskID)
	}
}
