package taskqueue

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestMetadataRoundTrip(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		meta := map[string]string{"traceparent": testTraceparent, "tracestate": "rojo=1", "tenant": "acme"}
		spec := &TaskSpec{TaskID: "traced", Executable: Ref("m", "f", addArgs{A: 1}), Metadata: meta}
		require.NoError(t, s.q.Enqueue(ctx, spec))
		raw, err := envelopeOf(ctx, s.q, "traced")
		require.NoError(t, err)
		require.Contains(t, raw, `"meta":{"tenant":"acme","traceparent":"`+testTraceparent+`","tracestate":"rojo=1"}`)

		// The same id with other metadata is the same task: a no-op that keeps the first metadata.
		again := &TaskSpec{TaskID: "traced", Executable: Ref("m", "f", addArgs{A: 1}), Metadata: map[string]string{"traceparent": "00-other"}}
		require.NoError(t, s.q.Enqueue(ctx, again))

		d := s.lease(t, 1)[0]
		require.Equal(t, meta, d.Spec.Metadata)
		d.Spec.Metadata["tenant"] = "changed by a handler"
		require.NoError(t, s.q.Retry(ctx, d, 0, errors.New("boom")))

		// A retry rewrites the envelope with the metadata it was delivered with.
		d = s.lease(t, 1)[0]
		require.Equal(t, 1, d.Spec.Attempt)
		require.Equal(t, meta, d.Spec.Metadata)
		require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("give up")))
		n, err := s.adm.RequeueDead(ctx, "traced")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		d = s.lease(t, 1)[0]
		require.Equal(t, meta, d.Spec.Metadata, "requeued from the dead letters")
		require.NoError(t, s.q.Ack(ctx, d))

		// Without metadata, the envelope holds none and the spec gets nil.
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("plain", Ref("m", "f", nil))))
		raw, err = envelopeOf(ctx, s.q, "plain")
		require.NoError(t, err)
		require.NotContains(t, raw, `"meta"`)
		d = s.lease(t, 1)[0]
		require.Nil(t, d.Spec.Metadata)
		require.NoError(t, s.q.Ack(ctx, d))
	})
}

func TestMetadataRefusedOnEnqueue(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	for name, m := range map[string]map[string]string{
		"bad key":        {"trace parent": "x"},
		"value too long": {"k": strings.Repeat("v", MaxMetadataValueLen+1)},
		"case variants":  {"k": "1", "K": "2"},
	} {
		err := s.q.Enqueue(ctx, &TaskSpec{TaskID: "bad", Executable: Ref("m", "f", nil), Metadata: m})
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	err := s.q.EnqueueBatch(ctx, []*TaskSpec{
		{TaskID: "good", Executable: Ref("m", "f", nil), Metadata: map[string]string{"k": "v"}},
		{TaskID: "bad", Executable: Ref("m", "f", nil), Metadata: map[string]string{"": "v"}},
	})
	var ee *EnqueueError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.Index)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.Equal(t, Counts{Pending: 1}, s.counts(t))
}

// A worker hands the metadata to middleware and handlers, which is how tracing adapters read it.
func TestMetadataReachesMiddleware(t *testing.T) {
	t.Parallel()
	for name, q := range map[string]func(t *testing.T) (TaskQueue, func(*TaskSpec) error){
		"redis": func(t *testing.T) (TaskQueue, func(*TaskSpec) error) {
			s := newMini(t, nil)
			require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
			return s.q, func(spec *TaskSpec) error {
				spec.Executable = Ref("m", "f", nil)
				return s.q.Enqueue(context.Background(), spec)
			}
		},
		"memory": func(t *testing.T) (TaskQueue, func(*TaskSpec) error) {
			mq := NewMemoryQueue(0, 0)
			t.Cleanup(mq.Close)
			return mq, func(spec *TaskSpec) error {
				spec.Executable = Func(nop)
				return mq.Enqueue(context.Background(), spec)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			queue, enqueue := q(t)
			seen := make(chan map[string]string, 1)
			w, err := NewTaskWorker(queue, &WorkerConfig{Logger: slog.New(slog.DiscardHandler), Middleware: []Middleware{
				func(next Handler) Handler {
					return func(ctx context.Context, spec *TaskSpec) error {
						seen <- spec.Metadata
						return next(ctx, spec)
					}
				},
			}})
			require.NoError(t, err)
			require.NoError(t, enqueue(&TaskSpec{TaskID: "t", Metadata: map[string]string{"traceparent": testTraceparent}}))
			require.NoError(t, w.Start(context.Background()))
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				require.NoError(t, w.Stop(ctx))
			}()
			select {
			case m := <-seen:
				require.Equal(t, map[string]string{"traceparent": testTraceparent}, m)
			case <-time.After(5 * time.Second):
				t.Fatal("the task did not run")
			}
		})
	}
}
