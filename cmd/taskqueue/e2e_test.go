package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// decode parses the --json output of a run.
func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r)
	return v
}

// TestEndToEnd drives every command against a real redis-server that this test binary started, on a queue the
// library filled: stats, list, show, requeue, delete, purge, pause, resume and watch, in text and JSON.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t, realRedis(t), "e2e")
	ctx := context.Background()
	f.seed(t)
	// A task the workers cannot run: parked at pickup with the resolver's reason.
	require.NoError(t, f.q.Enqueue(ctx, taskqueue.NewTaskSpec("d4", taskqueue.Ref("ops", "missing", nil))))
	f.rdb.LMove(ctx, "{e2e}:pending", "{e2e}:pending", "RIGHT", "LEFT") // d4 to the head
	ds, err := f.q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Empty(t, ds, "d4 was parked")

	// stats
	s := decode[statsJSON](t, cliEnv(t, f.env, "stats", "--json", "--interval", "0"))
	require.Equal(t, statsJSON{Queue: "e2e", Pending: 3, Active: 1, Scheduled: 1, Dead: 4, Delivered: 5}, zeroTimes(s))
	require.Greater(t, s.OldestPendingAge, 0.0)
	r := cliEnv(t, f.env, "stats", "--interval", "200ms")
	require.Equal(t, exitOK, r.code, r)
	m := regexp.MustCompile(`(?m)^pickups/s\s+0\.0 \(over (\S+)\)$`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, r.stdout)
	over, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	require.GreaterOrEqual(t, over, 200*time.Millisecond, "measured over at least --interval (server clock)")

	// list
	l := decode[listJSON](t, cliEnv(t, f.env, "list", "dead", "--json"))
	require.Equal(t, int64(4), l.Total)
	require.Equal(t, []string{"d1", "d2", "d3", "d4"}, taskIDs(l.Tasks))
	require.Equal(t, "upstream 503", l.Tasks[0].Reason)
	require.Contains(t, l.Tasks[3].Reason, "unknown task reference")
	require.NotNil(t, l.Tasks[0].DiedAt)
	var env map[string]any
	require.NoError(t, json.Unmarshal(l.Tasks[0].Envelope, &env))
	require.Equal(t, "d1", env["task_id"])
	r = cliEnv(t, f.env, "list", "pending")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^p1\s+\d+(ms|s)\s+ops\.send\s+0$`, r.stdout)

	// show
	r = cliEnv(t, f.env, "show", "d4")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, `"module": "ops",`)
	require.Contains(t, r.stdout, `"name": "missing"`)
	sh := decode[taskJSON](t, cliEnv(t, f.env, "--json", "show", "a1"))
	require.Equal(t, taskqueue.StateActive, sh.State)
	require.NotNil(t, sh.LeaseDeadline)
	require.Equal(t, exitNotFound, cliEnv(t, f.env, "show", "nope").code)

	// requeue by id: the dead one moves, the others are reported and make the exit code 3
	r = cliEnv(t, f.env, "requeue", "d3", "p1", "nope", "--json")
	require.Equal(t, exitNotFound, r.code, r)
	require.Equal(t, deadResult{Queue: "e2e", Action: "requeue", Matched: 1, Done: 1, Scanned: 3, NotFound: []string{"p1", "nope"}}, decode[deadResult](t, r))
	require.Contains(t, r.stderr, "p1: not a dead letter (it is pending)")
	require.Contains(t, r.stderr, "nope: no such task")

	// requeue by filter: a dry run, a refusal without a terminal, then for real
	dry := decode[deadResult](t, cliEnv(t, f.env, "requeue", "--reason-contains", "503", "--dry-run", "--json"))
	require.Equal(t, deadResult{Queue: "e2e", Action: "requeue", DryRun: true, Matched: 2, Scanned: 3, Sample: []string{"d1", "d2"}}, dry)
	r = cliStdin(t, f.env, "", false, "requeue", "--reason-contains", "503")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.stderr, "pass --yes")
	r = cliEnv(t, f.env, "requeue", "--reason-contains", "503", "--older-than", "1h", "--yes", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, 0, decode[deadResult](t, r).Done, "none died an hour ago")
	r = cliEnv(t, f.env, "requeue", "--reason-contains", "503", "--yes", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, deadResult{Queue: "e2e", Action: "requeue", Matched: 2, Done: 2, Scanned: 3}, decode[deadResult](t, r))
	require.Contains(t, r.stderr, "requeue: 3/3 looked at, 2 requeued")
	require.Equal(t, taskqueue.Counts{Pending: 6, Active: 1, Scheduled: 1, Dead: 1}, f.counts(t))

	// delete
	r = cliEnv(t, f.env, "delete", "--all", "--yes")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "deleted 1 dead letters (1 looked at) in queue e2e\n", r.stdout)
	_, err = f.admin.Inspect(ctx, "d4")
	require.ErrorIs(t, err, taskqueue.ErrNotFound)
	r = cliEnv(t, f.env, "delete", "--all", "--yes")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "no dead letters in queue e2e\n", r.stdout)

	// pause and resume: a paused queue hands out nothing; a resumed one does at once
	r = cliEnv(t, f.env, "pause")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "pickup paused")
	ds, err = f.q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Empty(t, ds)
	r = cliEnv(t, f.env, "stats", "--interval", "0")
	require.Regexp(t, `(?m)^pickup\s+PAUSED since \S+ \(\S+ ago\)`, r.stdout)
	require.True(t, decode[statsJSON](t, cliEnv(t, f.env, "stats", "--interval", "0", "--json")).Paused)
	require.JSONEq(t, `{"queue":"e2e","paused":false}`, cliEnv(t, f.env, "resume", "--json").stdout)
	f.lease(t, 1)

	// purge
	r = cliEnv(t, f.env, "purge", "scheduled", "--yes", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.JSONEq(t, `{"queue":"e2e","action":"purge","state":"scheduled","purged":1}`, r.stdout)
	require.Equal(t, exitUsage, cliEnv(t, f.env, "purge", "active", "--yes").code)
	require.Equal(t, taskqueue.Counts{Pending: 5, Active: 2}, f.counts(t))

	// watch
	r = cliEnv(t, f.env, "watch", "--count", "2", "--interval", "100ms", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 2)
}

func taskIDs(ts []taskJSON) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.TaskID
	}
	return out
}

// The ACL rules of docs/operations.md, for the queue "acl". Keep them in step with the documentation.
const (
	aclConnection = "+ping +hello +auth"
	aclReadOnly   = aclConnection + " +exists +llen +zcard +get +lindex +time +lrange +zrange +hmget +hget +zscore"
	aclAdmin      = aclReadOnly + " +evalsha +eval +set +del +lpush +ltrim +lpop +rpush +zrem +hdel +hset"
)

// TestACLAllowlists checks the documented allowlists on a real server: the read-only user can run the read-only
// commands and no other; the admin user can run them all.
func TestACLAllowlists(t *testing.T) {
	t.Parallel()
	addr := realRedis(t)
	f := newFixture(t, addr, "acl")
	f.seed(t)
	ctx := context.Background()
	for user, rules := range map[string]string{"tq-ro": aclReadOnly, "tq-admin": aclAdmin} {
		args := []any{"acl", "setuser", user, "reset", "on", ">pw-" + user, "~{acl}:*", "resetchannels"}
		for _, r := range strings.Fields(rules) {
			args = append(args, r)
		}
		require.NoError(t, f.rdb.Do(ctx, args...).Err())
	}
	// An empty script cache: each script's first call takes the EVAL fallback, so EVALSHA and EVAL both run.
	require.NoError(t, f.rdb.ScriptFlush(ctx).Err())
	ro := map[string]string{"REDIS_URL": fmt.Sprintf("redis://tq-ro:pw-tq-ro@%s/0", addr), "TASKQUEUE_KEY_PREFIX": "acl"}
	admin := map[string]string{"REDIS_URL": fmt.Sprintf("redis://tq-admin:pw-tq-admin@%s/0", addr), "TASKQUEUE_KEY_PREFIX": "acl"}

	for _, args := range [][]string{
		{"stats", "--interval", "100ms"}, {"list", "pending"}, {"list", "scheduled"}, {"list", "active"}, {"list", "dead"},
		{"show", "d1"}, {"requeue", "--all", "--dry-run"}, {"watch", "--count", "1"},
	} {
		r := cliEnv(t, ro, args...)
		require.Equal(t, exitOK, r.code, "read-only %v\n%s", args, r)
	}
	for _, args := range [][]string{{"pause"}, {"requeue", "d1"}, {"purge", "pending", "--yes"}} {
		r := cliEnv(t, ro, args...)
		require.Equal(t, exitError, r.code, "read-only user must not %v\n%s", args, r)
		require.Contains(t, r.stderr, "NOPERM", args)
	}
	require.Equal(t, taskqueue.Counts{Pending: 3, Active: 1, Scheduled: 1, Dead: 3}, f.counts(t), "the refused commands changed nothing")

	for _, args := range [][]string{
		{"pause"}, {"resume"}, {"requeue", "d1"}, {"delete", "d2"}, {"requeue", "--all", "--yes"},
		{"purge", "pending", "--yes"}, {"purge", "scheduled", "--yes"}, {"stats", "--interval", "0"},
	} {
		r := cliEnv(t, admin, args...)
		require.Equal(t, exitOK, r.code, "admin %v\n%s", args, r)
	}
	require.Equal(t, taskqueue.Counts{Active: 1}, f.counts(t))
	// The user cannot reach another queue's keys.
	other := map[string]string{"REDIS_URL": admin["REDIS_URL"], "TASKQUEUE_KEY_PREFIX": "e2e"}
	r := cliEnv(t, other, "stats", "--interval", "0")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "NOPERM")
}

// TestStatsMeasuresPickupRate runs a consumer during stats --interval and expects a positive rate.
func TestStatsMeasuresPickupRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, realRedis(t), "rate")
	specs := make([]*taskqueue.TaskSpec, 200)
	for i := range specs {
		specs[i] = taskqueue.NewTaskSpec(fmt.Sprint("t", i), taskqueue.Ref("ops", "send", nil))
	}
	require.NoError(t, f.q.EnqueueBatch(context.Background(), specs))
	// The consumer picks up one task every 10ms or so until the command has returned, however long the command
	// takes to start and to measure on a busy machine; it enqueues more if the 200 run out.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ds, err := f.q.Dequeue(context.Background(), taskqueue.DequeueOptions{Max: 1})
			if err != nil {
				return
			}
			if len(ds) == 0 {
				_ = f.q.Enqueue(context.Background(), taskqueue.NewTaskSpec(fmt.Sprint("more", i), taskqueue.Ref("ops", "send", nil)))
				continue
			}
			_ = f.q.Ack(context.Background(), ds...)
			time.Sleep(10 * time.Millisecond) // pacing, not a wait
		}
	}()
	r := cliEnv(t, f.env, "stats", "--interval", "300ms", "--json")
	close(stop)
	<-done
	require.Equal(t, exitOK, r.code, r)
	s := decode[statsJSON](t, r)
	require.NotNil(t, s.PickupsPerSecond)
	require.Greater(t, *s.PickupsPerSecond, 0.0)
}
