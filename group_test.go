package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type sqArgs struct {
	N    int  `json:"n"`
	Fail bool `json:"fail,omitempty"`
}

// registerSquare registers grp.square: it returns n*n as its result, or fails (skipping retries) when asked.
func registerSquare(t testing.TB, s *setup) *atomic.Int64 {
	t.Helper()
	var runs atomic.Int64
	require.NoError(t, RegisterResult(s.ref, "grp", "square", func(_ context.Context, a sqArgs) (int, error) {
		runs.Add(1)
		if a.Fail {
			return 0, fmt.Errorf("member %d refused: %w", a.N, ErrSkipRetry)
		}
		return a.N * a.N, nil
	}))
	return &runs
}

func squares(n int, fail ...int) []*TaskSpec {
	specs := make([]*TaskSpec, n)
	for i := range specs {
		a := sqArgs{N: i}
		for _, f := range fail {
			a.Fail = a.Fail || f == i
		}
		specs[i] = &TaskSpec{Executable: Ref("grp", "square", a)}
	}
	return specs
}

// groupKeysExist counts the run's keys that exist.
func groupKeysExist(t *testing.T, s *setup, gid string) int64 {
	t.Helper()
	n, err := s.rdb.Exists(context.Background(), s.q.keys.group(gid), s.q.keys.groupDone(gid)).Result()
	require.NoError(t, err)
	return n
}

func TestGroupDispatchAndWait(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		run, err := s.q.DispatchGroup(ctx, "transforms", squares(5), nil)
		require.NoError(t, err)
		require.Len(t, run.RunID, idLen)
		require.Equal(t, []string{"0", "1", "2", "3", "4"}, run.MemberIDs)
		require.Equal(t, run.GroupID()+":3", run.TaskIDs[3])
		raw, err := envelopeOf(ctx, s.q, run.TaskIDs[0])
		require.NoError(t, err)
		require.Contains(t, raw, `"group_id":"transforms@`+run.RunID+`"`)

		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		res, err := run.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second})
		require.NoError(t, err)
		require.Equal(t, 5, res.Total)
		require.Equal(t, 5, res.Succeeded)
		for i, m := range res.Members {
			require.Equal(t, fmt.Sprint(i), m.ID)
			require.Equal(t, MemberSucceeded, m.State)
			var v int
			require.NoError(t, m.Decode(&v))
			require.Equal(t, i*i, v)
		}
		require.Zero(t, groupKeysExist(t, s, run.GroupID()), "a completed wait removes the run's keys")
		_, err = run.Wait(ctx, nil)
		require.ErrorIs(t, err, ErrGroupNotFound)
	})
}

// The race Graflow hit: members so fast that they all complete before (or while) the producer starts waiting.
// Every wait must return, at once, with every member counted.
func TestGroupBarrierWithVeryFastWorkers(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		var runs atomic.Int64
		require.NoError(t, Register(s.ref, "grp", "noop", func(context.Context, struct{}) error {
			runs.Add(1)
			return nil
		}))
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 32}, nil))
		const groups, members = 40, 8
		var wg sync.WaitGroup
		errs := make(chan error, groups)
		for g := range groups {
			specs := make([]*TaskSpec, members)
			for i := range specs {
				specs[i] = &TaskSpec{Executable: Ref("grp", "noop", struct{}{})}
			}
			run, err := s.q.DispatchGroup(ctx, "fast", specs, nil)
			require.NoError(t, err)
			if g%2 == 0 { // half wait only once their members are done: the barrier is already released
				waitFor(t, 10*time.Second, "members done", func() bool {
					_, done, err := s.q.groupProgress(ctx, run.GroupID())
					return err == nil && done == members
				})
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := run.Wait(ctx, &WaitOptions{Timeout: 20 * time.Second})
				if err == nil && res.Succeeded != members {
					err = fmt.Errorf("%d succeeded", res.Succeeded)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, int64(groups*members), runs.Load())
	})
}

// A member that completes twice (the same ack repeated, or a redelivery completing after the first delivery
// did) counts once, and its first outcome stays.
func TestGroupDuplicateCompletionCountsOnce(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		run, err := s.q.DispatchGroup(ctx, "dup", squares(3), nil)
		require.NoError(t, err)
		gid := run.GroupID()
		ds := s.lease(t, 3)
		// Member 0: acked twice (a repeated ack after a lost reply).
		ds[0].result = []byte("100")
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		_, done, err := s.q.groupProgress(ctx, gid)
		require.NoError(t, err)
		require.Equal(t, 1, done)
		// Member 1: dead-lettered, requeued by an operator, run again and acked: the group keeps "failed".
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("first outcome")))
		n, err := s.adm.RequeueDead(ctx, ds[1].Spec.TaskID)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		again := s.lease(t, 1)
		require.NoError(t, s.q.Ack(ctx, again[0]))
		_, done, err = s.q.groupProgress(ctx, gid)
		require.NoError(t, err)
		require.Equal(t, 2, done)
		// Member 2: its lease expires, the reaper redelivers it, the new delivery acks; the stale one cannot.
		s.advance(300 * time.Millisecond)
		rr, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, rr.Requeued)
		redo := s.lease(t, 1)
		require.NoError(t, s.q.Ack(ctx, redo[0]))
		require.ErrorIs(t, s.q.Ack(ctx, ds[2]), ErrLeaseLost)

		res, err := run.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second, Policy: BestEffortPolicy()})
		require.NoError(t, err)
		require.Equal(t, 3, res.Total)
		require.Equal(t, 2, res.Succeeded)
		require.Equal(t, 1, res.Failed)
		m1, _ := res.Member("1")
		require.Equal(t, MemberFailed, m1.State)
		require.Equal(t, "first outcome", m1.Error)
		m0, _ := res.Member("0")
		require.JSONEq(t, "100", string(m0.Result))
	})
}

// Every path that finishes a member completes its group: ack, retries exhausted, ErrSkipRetry, a task that keeps
// losing its worker (the reaper), a task parked at pickup. A retry that will run again does not.
func TestGroupEveryFinishCompletesTheMember(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond, MaxDeliveries: 1}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		specs := squares(6)
		specs[5].TaskID = "unresolvable"
		run, err := s.q.DispatchGroup(ctx, "paths", specs, nil)
		require.NoError(t, err)
		gid := run.GroupID()
		progress := func() int {
			_, done, err := s.q.groupProgress(ctx, gid)
			require.NoError(t, err)
			return done
		}
		// Member 4 has a newer envelope version and member 5 names an unknown resolver: both are parked at pickup.
		raw4, err := envelopeOf(ctx, s.q, run.TaskIDs[4])
		require.NoError(t, err)
		require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyTasks), run.TaskIDs[4], `{"v":99,"group_id":"`+gid+`","x":`+raw4+`}`).Err())
		raw5, err := envelopeOf(ctx, s.q, run.TaskIDs[5])
		require.NoError(t, err)
		var env map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw5), &env))
		env["resolver_id"] = "nobody"
		b, _ := json.Marshal(env)
		require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyTasks), run.TaskIDs[5], string(b)).Err())

		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 6}) // members 0-3; 4 and 5 are parked by this pickup
		require.NoError(t, err)
		require.Len(t, ds, 4)
		require.Equal(t, 2, progress(), "both parked members completed the group")
		require.NoError(t, s.q.Retry(ctx, ds[0], 0, errors.New("again")))
		require.Equal(t, 2, progress(), "a retry does not complete a member")
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], fmt.Errorf("%w after 3 attempts: boom", ErrRetriesExhausted)))
		require.NoError(t, s.q.DeadLetter(ctx, ds[2], fmt.Errorf("bad input: %w", ErrSkipRetry)))
		require.Equal(t, 4, progress())
		// Member 3's worker is lost: with MaxDeliveries 1 the reaper dead-letters it and completes the group.
		s.advance(300 * time.Millisecond)
		rr, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, rr.Dead)
		require.Equal(t, 5, progress())
		redo := s.lease(t, 1) // member 0, retried
		require.Equal(t, run.TaskIDs[0], redo[0].Spec.TaskID)
		require.NoError(t, s.q.Ack(ctx, redo[0]))

		res, err := run.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second})
		require.ErrorIs(t, err, ErrGroupFailed, "strict: members failed")
		require.Equal(t, []string{"1", "2", "3", "4", "unresolvable"}, res.FailedIDs())
		reasons := map[string]string{}
		for _, m := range res.Members {
			reasons[m.ID] = m.Error
		}
		require.Contains(t, reasons["1"], "retries exhausted")
		require.Contains(t, reasons["2"], "skip retry")
		require.Contains(t, reasons["3"], ErrMaxDeliveries.Error())
		require.Contains(t, reasons["4"], "unsupported envelope version")
		require.Contains(t, reasons["unresolvable"], "unknown resolver")
		st := s.counts(t)
		require.Equal(t, int64(5), st.Dead)
	})
}

func TestGroupReapMixesGroupAndPlainTasks(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond, MaxDeliveries: 1}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		a, err := s.q.DispatchGroup(ctx, "a", squares(2), nil)
		require.NoError(t, err)
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "plain", Executable: Ref("grp", "square", sqArgs{N: 1})}))
		b, err := s.q.DispatchGroup(ctx, "b", squares(1), nil)
		require.NoError(t, err)
		// A plain task whose payload looks like a member's envelope to reap.lua's quick check: held, then buried.
		type lookalike struct {
			GroupID string `json:"group_id"`
		}
		require.NoError(t, Register(s.ref, "grp", "lookalike", func(context.Context, lookalike) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "lookalike", Executable: Ref("grp", "lookalike", lookalike{GroupID: "x@y"})}))
		s.lease(t, 5)
		s.advance(300 * time.Millisecond)
		rr, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, ReapResult{Dead: 5}, rr)
		require.Equal(t, Counts{Dead: 5}, s.counts(t))
		for _, run := range []*GroupRun{a, b} {
			res, err := run.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second, Policy: BestEffortPolicy()})
			require.NoError(t, err)
			require.Equal(t, res.Total, res.Failed)
		}
	})
}

func TestGroupPolicies(t *testing.T) {
	t.Parallel()
	mk := func(states ...MemberState) *GroupResult {
		r := &GroupResult{GroupID: "g@x"}
		for i, st := range states {
			r.Members = append(r.Members, MemberOutcome{ID: fmt.Sprint("m", i), State: st})
			switch st {
			case MemberSucceeded:
				r.Succeeded++
			case MemberFailed:
				r.Failed++
			}
		}
		r.Total = len(states)
		return r
	}
	ok, bad := MemberSucceeded, MemberFailed
	for _, c := range []struct {
		name   string
		policy GroupPolicy
		res    *GroupResult
		pass   bool
	}{
		{"strict all ok", StrictPolicy(), mk(ok, ok, ok), true},
		{"strict one failed", StrictPolicy(), mk(ok, bad, ok), false},
		{"best effort all failed", BestEffortPolicy(), mk(bad, bad), true},
		{"at least 2 of 3", AtLeastPolicy(2), mk(ok, bad, ok), true},
		{"at least 3 of 3", AtLeastPolicy(3), mk(ok, bad, ok), false},
		{"critical ok, other failed", CriticalPolicy("m0", "m2"), mk(ok, bad, ok), true},
		{"critical failed", CriticalPolicy("m1"), mk(ok, bad, ok), false},
		{"critical unknown id", CriticalPolicy("m9"), mk(ok, ok), false},
		{"custom", GroupPolicyFunc(func(r *GroupResult) error {
			if r.Members[0].State != MemberSucceeded {
				return errors.New("the first must succeed")
			}
			return nil
		}), mk(bad, ok), false},
	} {
		err := c.policy.Evaluate(c.res)
		if c.pass {
			require.NoError(t, err, c.name)
		} else {
			require.Error(t, err, c.name)
		}
	}
}

// The policies end to end: one run with a failed member, waited for under each policy (Keep, so that it can be
// waited for again), and a custom policy's error wrapped in ErrGroupFailed.
func TestGroupPoliciesOnWait(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		run, err := s.q.DispatchGroup(ctx, "policies", squares(4, 2), nil)
		require.NoError(t, err)
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		wait := func(p GroupPolicy) (*GroupResult, error) {
			return run.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second, Policy: p, Keep: true})
		}
		res, err := wait(nil)
		require.ErrorIs(t, err, ErrGroupFailed)
		require.Equal(t, 3, res.Succeeded)
		require.Equal(t, 1, res.Failed)
		_, err = wait(BestEffortPolicy())
		require.NoError(t, err)
		_, err = wait(AtLeastPolicy(3))
		require.NoError(t, err)
		_, err = wait(AtLeastPolicy(4))
		require.ErrorIs(t, err, ErrGroupFailed)
		_, err = wait(CriticalPolicy("0", "3"))
		require.NoError(t, err)
		_, err = wait(CriticalPolicy("2"))
		require.ErrorIs(t, err, ErrGroupFailed)
		mine := errors.New("mine")
		_, err = wait(GroupPolicyFunc(func(*GroupResult) error { return mine }))
		require.ErrorIs(t, err, ErrGroupFailed)
		require.ErrorIs(t, err, mine)
		n, err := s.rdb.Exists(ctx, s.q.keys.group(run.GroupID())).Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "Keep leaves the run's hash")
	})
}

func TestGroupWaitTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		run, err := s.q.DispatchGroup(ctx, "slow", squares(2), nil)
		require.NoError(t, err)
		ds := s.lease(t, 2)
		require.NoError(t, s.q.Ack(ctx, ds[0]))

		res, err := run.Wait(ctx, &WaitOptions{Timeout: 150 * time.Millisecond})
		require.ErrorIs(t, err, ErrGroupIncomplete)
		require.ErrorIs(t, err, ErrGroupTimeout)
		require.Equal(t, 1, res.Succeeded)
		require.Equal(t, 1, res.Pending)

		dctx, dcancel := context.WithTimeout(ctx, 150*time.Millisecond)
		_, err = run.Wait(dctx, nil)
		dcancel()
		require.ErrorIs(t, err, ErrGroupIncomplete)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		// Cancellation ends a blocked wait at once, not after the fallback interval.
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := run.Wait(cctx, nil)
			done <- err
		}()
		// The queue counts the blocking waits that ended by their timeout (the fallback, groupFallback): none may
		// end that way once the context is cancelled. (100ms gives the wait time to block; it passes either way.)
		var timeoutsAtCancel atomic.Int64
		time.AfterFunc(100*time.Millisecond, func() { timeoutsAtCancel.Store(s.q.blockTimeouts.Load()); cancel() })
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a cancelled wait did not return")
		}
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, timeoutsAtCancel.Load(), s.q.blockTimeouts.Load(), "the wait is interrupted, not polled")

		require.Equal(t, int64(1), groupKeysExist(t, s, run.GroupID()), "an incomplete wait keeps the run")
		require.NoError(t, s.q.Ack(ctx, ds[1]))
		res, err = run.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second})
		require.NoError(t, err)
		require.Equal(t, 2, res.Succeeded)
	})
}

// Two runs of the same group name at once never see each other's members.
func TestGroupConcurrentRunsOfOneName(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		a, err := s.q.DispatchGroup(ctx, "etl", squares(3, 1), nil)
		require.NoError(t, err)
		b, err := s.q.DispatchGroup(ctx, "etl", squares(5), nil)
		require.NoError(t, err)
		require.NotEqual(t, a.RunID, b.RunID)
		require.Equal(t, a.TaskIDs[0][len(a.GroupID()):], b.TaskIDs[0][len(b.GroupID()):], "same member ids")
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 8}, nil))
		var wg sync.WaitGroup
		var ra, rb *GroupResult
		var ea, eb error
		wg.Add(2)
		go func() { defer wg.Done(); ra, ea = a.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second}) }()
		go func() { defer wg.Done(); rb, eb = b.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second}) }()
		wg.Wait()
		require.ErrorIs(t, ea, ErrGroupFailed)
		require.Equal(t, GroupResult{GroupID: a.GroupID(), Name: "etl", RunID: a.RunID, Total: 3, Succeeded: 2, Failed: 1}, *withoutMembers(ra))
		require.NoError(t, eb)
		require.Equal(t, 5, rb.Total)
		require.Equal(t, 5, rb.Succeeded)
	})
}

func withoutMembers(r *GroupResult) *GroupResult {
	c := *r
	c.Members = nil
	return &c
}

// Members of an older group are picked up before those of a newer one (and tasks enqueued between them in
// between).
func TestGroupFIFOAcrossGroups(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		older, err := s.q.DispatchGroup(ctx, "older", squares(3), nil)
		require.NoError(t, err)
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "between", Executable: Ref("grp", "square", sqArgs{})}))
		newer, err := s.q.DispatchGroup(ctx, "newer", squares(3), nil)
		require.NoError(t, err)
		want := append(append(append([]string{}, older.TaskIDs...), "between"), newer.TaskIDs...)
		var got []string
		for range want {
			d := s.lease(t, 1)[0]
			got = append(got, d.Spec.TaskID)
			require.NoError(t, s.q.Ack(ctx, d))
		}
		require.Equal(t, want, got)
	})
}

// Every group key has a TTL, refreshed by completions; the wait removes them; a late completion after clean-up
// creates no key.
func TestGroupKeyTTLsAndCleanUp(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		const ttl = time.Hour
		run, err := s.q.DispatchGroup(ctx, "ttl", squares(2), &GroupOptions{TTL: ttl})
		require.NoError(t, err)
		gid := run.GroupID()
		pttl := func(key string) time.Duration {
			d, err := s.rdb.PTTL(ctx, key).Result()
			require.NoError(t, err)
			return d
		}
		require.InDelta(t, ttl.Seconds(), pttl(s.q.keys.group(gid)).Seconds(), 5)
		ds := s.lease(t, 2)
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("lost")))
		require.InDelta(t, ttl.Seconds(), pttl(s.q.keys.group(gid)).Seconds(), 5)
		require.InDelta(t, ttl.Seconds(), pttl(s.q.keys.groupDone(gid)).Seconds(), 5, "the done list has a TTL")
		_, err = run.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second, Policy: BestEffortPolicy()})
		require.NoError(t, err)
		require.Zero(t, groupKeysExist(t, s, gid))
		// A late completion: the dead member is requeued and completes after the clean-up.
		_, err = s.adm.RequeueDead(ctx, ds[1].Spec.TaskID)
		require.NoError(t, err)
		late := s.lease(t, 1)
		require.NoError(t, s.q.Ack(ctx, late[0]))
		keys, err := s.rdb.Keys(ctx, s.q.keys.tag+":group:*").Result()
		require.NoError(t, err)
		require.Empty(t, keys, "a late completion re-creates no group key")
		// An incomplete run's keys expire by themselves: no key without a TTL.
		run2, err := s.q.DispatchGroup(ctx, "ttl", squares(1), &GroupOptions{TTL: 2 * time.Second})
		require.NoError(t, err)
		d := pttl(s.q.keys.group(run2.GroupID()))
		require.Greater(t, d, time.Duration(0))
		require.LessOrEqual(t, d, 2*time.Second)
	})
}

func TestGroupDispatchValidation(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	registerSquare(t, s)
	_, err := s.q.DispatchGroup(ctx, "bad name", squares(1), nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = s.q.DispatchGroup(ctx, "g", nil, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = s.q.DispatchGroup(ctx, "g", squares(1), &GroupOptions{TTL: time.Millisecond})
	require.ErrorIs(t, err, ErrInvalidConfig)
	dup := squares(2)
	dup[0].TaskID, dup[1].TaskID = "x", "x"
	_, err = s.q.DispatchGroup(ctx, "g", dup, nil)
	require.ErrorIs(t, err, ErrInvalidTaskID)
	other := squares(1)
	other[0].GroupID = "other"
	_, err = s.q.DispatchGroup(ctx, "g", other, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = s.q.OpenGroup("g")
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.Equal(t, Counts{}, s.counts(t), "nothing was enqueued")
	// Another process waits for a run by its group id.
	run, err := s.q.DispatchGroup(ctx, "g", squares(3), nil)
	require.NoError(t, err)
	opened, err := s.q.OpenGroup(run.GroupID())
	require.NoError(t, err)
	for _, d := range s.lease(t, 3) {
		require.NoError(t, s.q.Ack(ctx, d))
	}
	res, err := opened.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{"0", "1", "2"}, []string{res.Members[0].ID, res.Members[1].ID, res.Members[2].ID})
}

// One batched ack carrying members of two runs, a plain task and a task with a result: each run's keys are
// passed once, and each completion lands in its own run.
func TestGroupAckBatchAcrossRuns(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		a, err := s.q.DispatchGroup(ctx, "a", squares(2), nil)
		require.NoError(t, err)
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "plain", Executable: Ref("grp", "square", sqArgs{})}))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "with-result", Executable: Ref("grp", "square", sqArgs{})}))
		b, err := s.q.DispatchGroup(ctx, "b", squares(2), nil)
		require.NoError(t, err)
		ds := s.lease(t, 6)
		for i, d := range ds {
			d.result = []byte(fmt.Sprint(i))
		}
		ds[2].result = nil
		keys, args, _ := s.q.ackArgs(ds)
		require.Len(t, keys, len(s.q.keys.ack)+5, "two runs' keys once each, and one result key")
		require.Len(t, args, 4+2+5*6, "one pickup batch: its base, a count, then five values per delivery")
		require.NoError(t, s.q.Ack(ctx, ds...))
		ra, err := a.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second})
		require.NoError(t, err)
		rb, err := b.Wait(ctx, &WaitOptions{Timeout: 5 * time.Second})
		require.NoError(t, err)
		require.Equal(t, json.RawMessage("1"), ra.Members[1].Result)
		require.Equal(t, json.RawMessage("5"), rb.Members[1].Result)
		raw, err := s.q.Result(ctx, "with-result")
		require.NoError(t, err)
		require.Equal(t, "3", string(raw))
		_, err = s.q.Result(ctx, "plain")
		require.ErrorIs(t, err, ErrNoResult)
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestGroupDispatchLargest(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		_, err := s.q.DispatchGroup(ctx, "big", squares(MaxGroupMembers+1), nil)
		require.ErrorIs(t, err, ErrInvalidConfig)
		run, err := s.q.DispatchGroup(ctx, "big", squares(MaxGroupMembers), nil)
		require.NoError(t, err)
		require.Equal(t, int64(MaxGroupMembers), s.counts(t).Pending)
		total, done, err := s.q.groupProgress(ctx, run.GroupID())
		require.NoError(t, err)
		require.Equal(t, [2]int{MaxGroupMembers, 0}, [2]int{total, done})
	})
}
