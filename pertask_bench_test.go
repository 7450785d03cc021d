package taskqueue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Go work one task costs outside Redis, on each side of the queue, with its allocations: what
// docs/benchmarks.md's "Where the time goes" profiles point at. No Redis call is made (miniredis only backs the
// queue's constructor).

// BenchmarkEncodeTask measures the producer's work per task in EnqueueBatch: generate the id, serialize the
// reference through the registry, check the payload, build and marshal the envelope (into an envelope that
// EnqueueBatch allocates once per batch).
func BenchmarkEncodeTask(b *testing.B) {
	s := newMini(b, nil)
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
	spec := NewTaskSpec("", Ref("bench", "noop", bench200))
	var env envelope
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.q.sealInto(spec, &env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRehydrate measures the worker's work per task at pickup: decode the envelope strictly and resolve it
// into a runnable spec with typed arguments.
func BenchmarkRehydrate(b *testing.B) {
	s := newMini(b, nil)
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
	env, _, err := s.q.encode(NewTaskSpec("b-1", Ref("bench", "noop", bench200)))
	require.NoError(b, err)
	raw, err := env.marshal()
	require.NoError(b, err)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		spec, _, err := s.q.rehydrate("b-1", string(raw))
		if err != nil || spec.Executable == nil {
			b.Fatal(err)
		}
	}
}
