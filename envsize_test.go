package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type padArgs struct {
	Pad string `json:"pad"`
}

// largestSpec returns a spec whose stored envelope (signed when the queue signs) is exactly the largest that q
// accepts on enqueue, Limits.MaxEnvelopeBytes.
func largestSpec(t *testing.T, q *RedisTaskQueue, id string) *TaskSpec {
	t.Helper()
	return sizedSpec(t, q, id, "", q.cfg.Limits.MaxEnvelopeBytes)
}

// sizedSpec returns a spec (MaxRetries 2) whose envelope, as q stores it, takes exactly size bytes.
func sizedSpec(t *testing.T, q *RedisTaskQueue, id, groupID string, size int) *TaskSpec {
	t.Helper()
	mk := func(pad int) *TaskSpec {
		s := NewTaskSpec(id, Ref("m", "big", padArgs{Pad: strings.Repeat("p", pad)}))
		s.CreatedAt, s.MaxRetries, s.GroupID = time.Unix(1_700_000_000, 0), 2, groupID
		return s
	}
	spec := mk(size - len(rawOf(t, q, mk(0))))
	require.Len(t, rawOf(t, q, spec), size)
	return spec
}

// rawOf returns the envelope that q stores for spec.
func rawOf(t *testing.T, q *RedisTaskQueue, spec *TaskSpec) []byte {
	t.Helper()
	env, _, err := q.encode(spec)
	require.NoError(t, err)
	if q.signer != nil {
		q.signer.sign(env)
	}
	raw, err := env.marshal()
	require.NoError(t, err)
	return raw
}

// A task enqueued at the largest accepted size gets every one of its retries, whatever its handler's error, is
// dead-lettered for having exhausted them, and runs once an operator requeues it. Signed or not.
func TestLargestAcceptedTaskKeepsItsRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  *RedisConfig
	}{
		{"unsigned", &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 32 << 10}}},
		{"signed", &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 32 << 10}, Signing: signing("k1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			backends(t, tc.cfg, func(t *testing.T, s *setup) {
				ctx := context.Background()
				// Errors as long as a last_error gets (4096 bytes) and longer, plain and escape-heavy: control
				// characters take 6 bytes each in JSON.
				causes := []error{
					errors.New(strings.Repeat("x", 6000)),
					errors.New("boom " + strings.Repeat("\x01\"é\\", 3000)),
					errors.New(strings.Repeat("\x02", 5000)),
				}
				var runs atomic.Int32
				require.NoError(t, Register(s.ref, "m", "big", func(_ context.Context, a padArgs) error {
					if n := runs.Add(1); int(n) <= len(causes) {
						return causes[n-1]
					}
					return nil
				}))
				spec := largestSpec(t, s.q, "big")
				tooBig := largestSpec(t, s.q, "too-big")
				tooBig.Executable = Ref("m", "big", padArgs{Pad: tooBig.Executable.(*Reference).Args.(padArgs).Pad + "p"})
				require.ErrorIs(t, s.q.Enqueue(ctx, tooBig), ErrEnvelopeTooLarge, "one byte more is refused")
				require.NoError(t, s.q.Enqueue(ctx, spec))

				rec := &recorder{}
				startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1}, rec))
				waitFor(t, 20*time.Second, "the dead letter", func() bool { return s.counts(t).Dead == 1 })
				require.EqualValues(t, 3, runs.Load(), "the first run and both retries")
				require.Equal(t, 2, rec.count(EventRetried))
				dl, err := deadLetterOf(ctx, s.q, "big")
				require.NoError(t, err)
				require.Contains(t, dl.Reason, ErrRetriesExhausted.Error())
				env, err := decodeEnvelope([]byte(dl.Envelope), s.q.cfg.Limits)
				require.NoError(t, err, "the dead letter reads back")
				require.Equal(t, StateDead, env.Status)
				require.Equal(t, 3, env.Attempt, "3 failed runs")
				require.NotEmpty(t, env.LastError)

				n, err := s.adm.RequeueDead(ctx, "big")
				require.NoError(t, err)
				require.Equal(t, 1, n)
				waitFor(t, 20*time.Second, "the requeued task to succeed", func() bool { return rec.count(EventSucceeded) == 1 })
				waitFor(t, 5*time.Second, "its ack", func() bool { return s.counts(t) == Counts{} })
				require.EqualValues(t, 4, runs.Load())
				require.Equal(t, 1, rec.count(EventDead), "parked once: when its retries ran out")
			})
		})
	}
}

// What Retry and DeadLetter write into an envelope accepted at enqueue always reads back: a last_error that would
// not fit is cut shorter, escapes counted, and 4096 bytes of plain text always fit whole.
func TestRewriteCutsLastErrorToFit(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 16 << 10}}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "big", func(context.Context, padArgs) error { return nil }))
		readLimit := s.q.cfg.Limits.MaxEnvelopeBytes + EnvelopeHeadroom
		for i, tc := range []struct {
			cause string
			whole bool // kept whole in last_error
		}{
			{strings.Repeat("x", 4096), true},
			{strings.Repeat("\x01", 4096), false},            // 6 bytes each in JSON
			{strings.Repeat("\x01é\u2028\"\\", 1000), false}, // escapes and multi-byte runes, cut between runes
		} {
			id := fmt.Sprint("t", i)
			require.NoError(t, s.q.Enqueue(ctx, largestSpec(t, s.q, id)))
			check := func(status State) {
				t.Helper()
				raw, err := envelopeOf(ctx, s.q, id)
				require.NoError(t, err)
				require.LessOrEqual(t, len(raw), readLimit)
				env, err := decodeEnvelope([]byte(raw), s.q.cfg.Limits)
				require.NoError(t, err)
				require.Equal(t, status, env.Status)
				want := truncate(tc.cause, 4096)
				if tc.whole {
					require.Equal(t, want, env.LastError)
					return
				}
				require.True(t, strings.HasSuffix(env.LastError, "…"), "cut: %.40q", env.LastError)
				kept := strings.TrimSuffix(env.LastError, "…")
				require.True(t, strings.HasPrefix(want, kept))
				require.Greater(t, len(kept), 1000, "cut only as far as needed")
			}
			d := s.lease(t, 1)[0]
			require.NoError(t, s.q.Retry(ctx, d, 0, errors.New(tc.cause)))
			check(StateRetry)
			d = s.lease(t, 1)[0] // picked up again, not parked
			require.Equal(t, 1, d.Spec.Attempt)
			require.NoError(t, s.q.Retry(ctx, d, 0, errors.New(tc.cause)))
			check(StateRetry)
			d = s.lease(t, 1)[0]
			require.Equal(t, 2, d.Spec.Attempt)
			require.NoError(t, s.q.DeadLetter(ctx, d, errors.New(tc.cause)))
			check(StateDead)
			dl, err := deadLetterOf(ctx, s.q, id)
			require.NoError(t, err)
			require.Equal(t, truncate(tc.cause, 4096), dl.Reason, "the reason is not cut to fit the envelope")
			n, err := s.adm.RequeueDead(ctx, id)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			d = s.lease(t, 1)[0]
			require.Equal(t, 0, d.Spec.Attempt)
			require.NoError(t, s.q.Ack(ctx, d))
		}
		require.Equal(t, Counts{}, s.counts(t))
	})
}

// Envelopes that enqueue never accepted, written by something else: past the read limit, one is parked at pickup
// with its bytes and stays parked when requeued; at the read limit, one that fails is dead-lettered as it is
// stored, since its retry would not read back. And a dead letter that an earlier version parked at its first
// retry (its envelope grew past MaxEnvelopeBytes) is requeued and runs.
func TestEnvelopesPastTheEnqueueLimit(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 16 << 10}}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "big", func(context.Context, padArgs) error { return nil }))
		readLimit := s.q.cfg.Limits.MaxEnvelopeBytes + EnvelopeHeadroom
		tooLarge := ErrEnvelopeTooLarge.Error()

		huge := string(rawOf(t, s.q, sizedSpec(t, s.q, "huge", "", readLimit+1)))
		s.writeRaw(t, "huge", huge)
		s.lease(t, 0)
		for range 2 {
			dl, err := deadLetterOf(ctx, s.q, "huge")
			require.NoError(t, err)
			require.Equal(t, huge, dl.Envelope, "parked with its bytes")
			require.Contains(t, dl.Reason, tooLarge)
			n, err := s.adm.RequeueDead(ctx, "huge")
			require.NoError(t, err)
			require.Equal(t, 1, n)
			s.lease(t, 0) // parked again at once: it was never accepted
			require.Equal(t, Counts{Dead: 1}, s.counts(t))
		}
		_, err := s.adm.DeleteDead(ctx, "huge")
		require.NoError(t, err)

		for _, settle := range []string{"retry", "dead"} {
			id := "edge-" + settle
			edge := string(rawOf(t, s.q, sizedSpec(t, s.q, id, "", readLimit)))
			s.writeRaw(t, id, edge)
			d := s.lease(t, 1)[0] // it reads
			cause := errors.New("handler failed")
			if settle == "retry" {
				require.NoError(t, s.q.Retry(ctx, d, 0, cause))
			} else {
				require.NoError(t, s.q.DeadLetter(ctx, d, cause))
			}
			require.Equal(t, Counts{Dead: 1}, s.counts(t))
			dl, err := deadLetterOf(ctx, s.q, id)
			require.NoError(t, err)
			require.Equal(t, edge, dl.Envelope, "kept as it was stored, still readable")
			require.Contains(t, dl.Reason, cause.Error())
			if settle == "retry" {
				require.Contains(t, dl.Reason, tooLarge)
			}
			_, err = s.adm.DeleteDead(ctx, id)
			require.NoError(t, err)
		}

		// What an earlier version left: a task accepted at the limit, rewritten by its first retry with a 4 KiB
		// last_error, then parked at pickup as too large.
		env, _, err := s.q.encode(largestSpec(t, s.q, "old"))
		require.NoError(t, err)
		env.Attempt, env.Status, env.LastError, env.FailedAt = 1, StateRetry, strings.Repeat("e", 4096), 1_700_000_001
		old, err := env.marshal()
		require.NoError(t, err)
		require.Greater(t, len(old), s.q.cfg.Limits.MaxEnvelopeBytes)
		k := s.q.keys
		require.NoError(t, s.rdb.HSet(ctx, k.key(keyTasks), "old", old).Err())
		require.NoError(t, s.rdb.ZAdd(ctx, k.key(keyDead), redis.Z{Score: 1, Member: "old"}).Err())
		require.NoError(t, s.rdb.HSet(ctx, k.key(keyErrors), "old", fmt.Sprintf("%s: %d bytes, limit %d", tooLarge, len(old), s.q.cfg.Limits.MaxEnvelopeBytes)).Err())
		n, err := s.adm.RequeueDead(ctx, "old")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		d := s.lease(t, 1)[0]
		require.Equal(t, 0, d.Spec.Attempt, "a fresh retry budget")
		require.NoError(t, s.q.Ack(ctx, d))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

// A group member enqueued at the largest accepted size gets its retries, and its dead letter completes its group.
func TestLargestGroupMemberKeepsItsRetries(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 16 << 10}}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "big", func(context.Context, padArgs) error { return nil }))
		gid := "g@" + strings.Repeat("0", idLen) // every run id has idLen characters: the size is that of any run
		spec := sizedSpec(t, s.q, gid+":0", gid, s.q.cfg.Limits.MaxEnvelopeBytes)
		spec.TaskID, spec.GroupID = "", ""
		run, err := s.q.DispatchGroup(ctx, "g", []*TaskSpec{spec}, nil)
		require.NoError(t, err)
		raw, err := envelopeOf(ctx, s.q, run.TaskIDs[0])
		require.NoError(t, err)
		require.Len(t, raw, s.q.cfg.Limits.MaxEnvelopeBytes)
		cause := errors.New(strings.Repeat("\x01", 5000))
		for attempt := range 2 {
			d := s.lease(t, 1)[0]
			require.Equal(t, attempt, d.Spec.Attempt)
			require.NoError(t, s.q.Retry(ctx, d, 0, cause))
		}
		d := s.lease(t, 1)[0]
		require.Equal(t, 2, d.Spec.Attempt)
		require.NoError(t, s.q.DeadLetter(ctx, d, cause))
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = run.Wait(wctx, nil)
		require.ErrorIs(t, err, ErrGroupFailed)
	})
}
