package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A task that fails 3 times with MaxRetries 2 is dead with "attempt":3 in its envelope: the number of failed runs,
// which is also the run number its dead event logs (Event.Attempt+1, the failures before that run plus it) and
// the count in its ErrRetriesExhausted reason.
func TestDeadEnvelopeCountsEveryFailedRun(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "fail", func(context.Context, addArgs) error { return errors.New("always") }))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "fail", Executable: Ref("m", "fail", nil), MaxRetries: 2}))
		rec, logs := &recorder{}, &syncBuffer{}
		cfg := quietWorker(WorkerConfig{}, nil)
		cfg.OnEvent = logEvents(slog.New(slog.NewTextHandler(logs, nil)), rec.on)
		startWorker(t, s.q, cfg)
		// The dead event is emitted once DeadLetter has returned, after Redis counts the task as dead.
		waitFor(t, 10*time.Second, "a dead letter", func() bool { return s.counts(t).Dead == 1 && rec.count(EventDead) == 1 })

		dl, err := deadLetterOf(ctx, s.q, "fail")
		require.NoError(t, err)
		env, err := decodeEnvelope([]byte(dl.Envelope), s.q.cfg.Limits)
		require.NoError(t, err)
		require.Equal(t, 3, env.Attempt, "3 failed runs")
		require.Equal(t, StateDead, env.Status)
		require.Contains(t, dl.Envelope, `"attempt":3`)
		require.Contains(t, dl.Reason, "retries exhausted after 3 attempts: always")

		dead := rec.last(EventDead)
		require.Equal(t, 2, dead.Attempt, "Event.Attempt: the failures before the run")
		require.Equal(t, env.Attempt, dead.Attempt+1, "the run's number is the envelope's count once it failed")
		var msg string
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "task dead") {
				msg = line
			}
		}
		require.Contains(t, msg, "attempt=3", "the log line counts as the envelope does")
		require.Contains(t, msg, "after 3 attempts")
	})
}

// DeadLetter counts the failed run it records, as Retry does, on a RedisTaskQueue and on a MemoryQueue.
func TestDeadLetterCountsTheRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rs := newMini(t, nil)
	mq := NewMemoryQueue(0, 0)
	require.NoError(t, Register(rs.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	for _, q := range []TaskQueue{rs.q, mq} {
		require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "s", Executable: Ref("m", "f", nil), MaxRetries: 5}))
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.NoError(t, q.Retry(ctx, ds[0], 0, errors.New("first")))
		ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.Equal(t, 1, ds[0].Spec.Attempt)
		require.NoError(t, q.DeadLetter(ctx, ds[0], fmt.Errorf("no: %w", ErrSkipRetry)))
		require.NoError(t, q.DeadLetter(ctx, ds[0], fmt.Errorf("no: %w", ErrSkipRetry)), "a resend is recognised")
	}
	raw, err := envelopeOf(ctx, rs.q, "s")
	require.NoError(t, err)
	require.Contains(t, raw, `"attempt":2`)
	require.Contains(t, raw, `"status":"dead"`)
	mq.mu.Lock()
	defer mq.mu.Unlock()
	require.Equal(t, 2, mq.tasks["s"].spec.Attempt)
}

// A task parked at pickup whose envelope decodes (here: an unknown function) is stored with status dead, and a
// signed one still verifies; one that does not decode keeps its bytes, status and all.
func TestParkedEnvelopeSaysDead(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	q, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "gone", Executable: Ref("m", "nowhere", nil)}))
	undecodable := `{"v":1,"task_id":"bad","status":"pending","status":"x"}`
	s.writeRaw(t, "bad", undecodable)
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Empty(t, ds)

	dl, err := deadLetterOf(ctx, q, "gone")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, ErrUnknownTask.Error())
	require.Contains(t, dl.Envelope, `"status":"dead"`)
	env, err := decodeStored("gone", []byte(dl.Envelope), q.cfg.Limits)
	require.NoError(t, err)
	require.Equal(t, StateDead, env.Status)
	require.NoError(t, q.signer.verify(env), "status is not signed: the rewritten envelope still verifies")

	dl, err = deadLetterOf(ctx, q, "bad")
	require.NoError(t, err)
	require.Equal(t, undecodable, dl.Envelope, "an undecodable envelope is parked byte-exact")
	require.Contains(t, dl.Reason, ErrMalformedEnvelope.Error())
}
