package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

func TestHelp(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_URL": "redis://" + closedPort(t)}
	for _, args := range [][]string{nil, {"--help"}, {"-h"}, {"help"}} {
		r := cliEnv(t, env, args...)
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "Usage:\n  taskqueue [global flags] COMMAND")
		require.Contains(t, r.stdout, "Exit codes:")
		require.Contains(t, r.stdout, "Examples:")
		for _, cmd := range commands {
			require.Contains(t, r.stdout, "\n  "+cmd.name, "every command is listed")
		}
		require.Empty(t, r.stderr)
	}
	for _, cmd := range commands {
		if cmd.name == "help" {
			continue
		}
		for _, args := range [][]string{{cmd.name, "--help"}, {"help", cmd.name}, {"--json", cmd.name, "-h"}} {
			r := cliEnv(t, env, args...)
			require.Equal(t, exitOK, r.code, r)
			require.True(t, strings.HasPrefix(r.stdout, "Usage: taskqueue "+cmd.name), r.stdout)
			require.Contains(t, r.stdout, "Examples:\n  taskqueue "+cmd.name, "each command's help teaches by example")
			require.Contains(t, r.stdout, "--redis-url URL")
		}
	}
	r := cliEnv(t, env, "help", "nope")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, `unknown command "nope"`)
}

func TestUsageErrorsTouchNoRedis(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a command that tried to connect would exit 1, not 2.
	env := map[string]string{"REDIS_URL": "redis://" + closedPort(t)}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--nope", "stats"}, "flag provided but not defined: -nope"},
		{[]string{"stats", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"stats", "extra"}, "stats takes no arguments"},
		{[]string{"stats", "--interval", "2m"}, "--interval must be between 0 and 1m"},
		{[]string{"stats", "--interval", "soon"}, "invalid value"},
		{[]string{"list"}, "list takes one state"},
		{[]string{"list", "done"}, `unknown state "done"`},
		{[]string{"list", "retry"}, "listed with the scheduled ones: taskqueue list scheduled"},
		{[]string{"list", "dead", "pending"}, "list takes one state"},
		{[]string{"list", "dead", "--limit", "0"}, "--limit between 1 and 1000"},
		{[]string{"list", "dead", "--limit", "1001"}, "--limit between 1 and 1000"},
		{[]string{"list", "--offset", "-1", "dead"}, "--offset must be 0 or more"},
		{[]string{"show"}, "show takes one task id"},
		{[]string{"show", "a", "b"}, "show takes one task id"},
		{[]string{"requeue"}, "name the dead letters to requeue"},
		{[]string{"delete", "x", "--all"}, "not both"},
		{[]string{"delete", "--all", "--reason-contains", "x"}, "--all takes no filter"},
		{[]string{"requeue", "--older-than", "-1h"}, "--older-than must be positive"},
		{[]string{"purge"}, "purge takes one state"},
		{[]string{"purge", "active"}, "active tasks cannot be purged"},
		{[]string{"purge", "everything"}, `unknown state "everything"`},
		{[]string{"purge", "retry"}, "purged with the scheduled ones: taskqueue purge scheduled"},
		{[]string{"pause", "now"}, "pause takes no arguments"},
		{[]string{"resume", "now"}, "resume takes no arguments"},
		{[]string{"watch", "--interval", "10ms"}, "--interval must be at least 100ms"},
		{[]string{"watch", "--count", "-1"}, "--count 0 or more"},
		{[]string{"--key-prefix", "{bad}", "stats"}, "invalid key prefix"},
		{[]string{"--redis-url", "http://localhost", "stats"}, "invalid --redis-url"},
	} {
		r := cliEnv(t, env, tc.args...)
		require.Equal(t, exitUsage, r.code, "%v\n%s", tc.args, r)
		require.Contains(t, r.stderr, tc.want, tc.args)
		require.Contains(t, r.stderr, "--help' for usage.", tc.args)
		require.Empty(t, r.stdout, tc.args)
	}
}

func TestRedisURLPasswordIsNeverShown(t *testing.T) {
	t.Parallel()
	r := cliEnv(t, map[string]string{"REDIS_URL": "redis://ops:s3cret@127.0.0.1:notaport/0"}, "stats")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.stderr, "invalid --redis-url")
	require.NotContains(t, r.stderr, "s3cret")

	addr := closedPort(t)
	r = cliEnv(t, map[string]string{"REDIS_URL": "redis://ops:s3cret@" + addr + "/0"}, "stats", "--interval", "0")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "cannot reach Redis at "+addr+" db 0")
	require.Contains(t, r.stderr, taskqueue.ErrUnavailable.Error(), "the error is classified")
	require.NotContains(t, r.stderr, "s3cret")
}

func TestGlobalFlagPrecedence(t *testing.T) {
	t.Parallel()
	parse := func(env map[string]string, args ...string) globals {
		c := &cli{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return env[k] }}
		c.g = globals{redisURL: cmp.Or(env["REDIS_URL"], defaultRedisURL), keyPrefix: cmp.Or(env["TASKQUEUE_KEY_PREFIX"], taskqueue.DefaultKeyPrefix)}
		_, _, _, err := c.parse(args)
		require.NoError(t, err)
		return c.g
	}
	require.Equal(t, globals{redisURL: defaultRedisURL, keyPrefix: "taskqueue"}, parse(nil, "stats"))
	env := map[string]string{"REDIS_URL": "redis://env:1/0", "TASKQUEUE_KEY_PREFIX": "envq"}
	require.Equal(t, globals{redisURL: "redis://env:1/0", keyPrefix: "envq"}, parse(env, "stats"))
	require.Equal(t, globals{redisURL: "redis://flag:1/0", keyPrefix: "before", json: true},
		parse(env, "--redis-url", "redis://flag:1/0", "--key-prefix", "before", "stats", "--json"))
	require.Equal(t, globals{redisURL: "redis://env:1/0", keyPrefix: "after"},
		parse(env, "--key-prefix", "before", "stats", "--key-prefix=after"), "a flag after the command wins")
}

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	limit := fs.Int("limit", 0, "")
	all := fs.Bool("all", false, "")
	pos, err := parseInterleaved(fs, []string{"a", "--limit", "5", "b", "--all", "--", "--limit", "-x"})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "--limit", "-x"}, pos)
	require.Equal(t, 5, *limit)
	require.True(t, *all)
	pos, err = parseInterleaved(fs, nil)
	require.NoError(t, err)
	require.Empty(t, pos)
}

func TestHuman(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                                 "0s",
		250 * time.Millisecond:            "250ms",
		4*time.Minute + 12*time.Second:    "4m12s",
		2 * time.Minute:                   "2m",
		3*time.Hour + 2*time.Minute + 5e9: "3h2m",
		50 * time.Hour:                    "2d2h",
		-90 * time.Second:                 "1m30s",
	} {
		require.Equal(t, want, human(d), d)
	}
	now := time.Unix(1000, 0)
	require.Equal(t, "in 5s", relative(now.Add(5*time.Second), now))
	require.Equal(t, "1m ago", relative(now.Add(-time.Minute), now))
}

func TestSummarizeAndClip(t *testing.T) {
	t.Parallel()
	s := summarize(`{"v":1,"task_id":"x","created_at":1719300000.5,"attempt":2,"strategy":"reference",` +
		`"serialized_task":{"strategy":"reference","payload":{"module":"etl.tasks","name":"load","args":{}}}}`)
	require.Equal(t, summary{function: "etl.tasks.load", attempt: "2", created: time.UnixMilli(1719300000500)}, s)
	require.Equal(t, "custom", summarize(`{"serialized_task":{"strategy":"custom","payload":"opaque"}}`).function)
	require.Equal(t, "(unreadable)", summarize("not json").function)
	require.Equal(t, "(gone)", summarize("").function)

	require.Equal(t, `evil\x1b[2Jid`, clip("evil\x1b[2Jid", 64), "control characters are shown, not obeyed")
	require.Equal(t, "abc…", clip("abcdef", 3))
	require.Equal(t, "é…", clip("éé", 3), "cut at a rune boundary")
	require.Equal(t, `"\u009b"`, escapeC1("\"\u009b\""))
}

// seed fills a queue: pending p1..p3, scheduled s1, active a1, dead d1 and d2 ("upstream 503") and d3 ("bad input").
func (f *fixture) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	f.enqueue(t, "a1")
	f.lease(t, 1)
	f.kill(t, "upstream 503", "d1", "d2")
	f.kill(t, "bad input", "d3")
	f.enqueue(t, "p1", "p2", "p3")
	require.NoError(t, f.q.Enqueue(ctx, &taskqueue.TaskSpec{TaskID: "s1", Executable: taskqueue.Ref("ops", "send", nil), ProcessIn: time.Hour}))
}

func TestStatsOutput(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.seed(t)
	r := cliEnv(t, f.env, "stats", "--interval", "0")
	require.Equal(t, exitOK, r.code, r)
	for _, line := range []string{"queue      ops (127.0.0.1:", "pickup     running\n", "pending    3 (oldest ", "active     1\n",
		"scheduled  1\n", "dead       3\n"} {
		require.Contains(t, r.stdout, line)
	}
	require.NotContains(t, r.stdout, "pickups/s", "no interval, no rate")

	r = cliEnv(t, f.env, "stats", "--interval", "100ms", "--json")
	require.Equal(t, exitOK, r.code, r)
	var s statsJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &s))
	require.Equal(t, statsJSON{Queue: "ops", Pending: 3, Active: 1, Scheduled: 1, Dead: 3, Delivered: 4}, zeroTimes(s))
	require.NotNil(t, s.PickupsPerSecond)
	require.GreaterOrEqual(t, s.IntervalSeconds, 0.1, "measured over at least --interval (server clock)")
}

// zeroTimes clears the fields of a stats reading that vary from run to run.
func zeroTimes(s statsJSON) statsJSON {
	s.ServerTime, s.PausedAt, s.OldestPendingAge, s.PickupsPerSecond, s.IntervalSeconds = time.Time{}, nil, 0, nil, 0
	return s
}

func TestListAndShowOutput(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.seed(t)
	r := cliEnv(t, f.env, "list", "dead", "--limit", "2")
	require.Equal(t, exitOK, r.code, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Equal(t, "dead tasks 1-2 of 3, oldest first", lines[0])
	require.Regexp(t, `^ID\s+DIED\s+FUNCTION\s+ATTEMPT\s+REASON$`, lines[1])
	// ATTEMPT is the envelope's count of failed runs: DeadLetter counts the one it records.
	require.Regexp(t, `^d1\s+\S+ ago\s+ops\.send\s+1\s+upstream 503$`, lines[2])
	require.Equal(t, "next page: taskqueue list dead --offset 2 --limit 2", lines[len(lines)-1])

	r = cliEnv(t, f.env, "list", "scheduled")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^s1\s+in (59m\d*s?|1h)\s+ops\.send\s+0$`, r.stdout, "no reason column, no trailing blanks")
	r = cliEnv(t, f.env, "list", "active", "--offset", "5")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "no active tasks from offset 5 (1 in all)\n", r.stdout)

	r = cliEnv(t, f.env, "list", "pending", "--json")
	require.Equal(t, exitOK, r.code, r)
	var l listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &l))
	require.Equal(t, int64(3), l.Total)
	require.Len(t, l.Tasks, 3)
	require.Equal(t, "p1", l.Tasks[0].TaskID)
	require.Nil(t, l.Tasks[0].DueAt)
	r = cliEnv(t, f.env, "list", "ready", "--json")
	require.Equal(t, exitOK, r.code, r)
	var ready listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ready))
	require.Equal(t, taskqueue.StatePending, ready.State, "the seed's ready is pending")
	require.Equal(t, l.Tasks, ready.Tasks)

	// A task waiting to be retried is listed with the scheduled ones, as retry, and shown as retry.
	require.NoError(t, f.q.Retry(context.Background(), f.lease(t, 1)[0], time.Hour, errors.New("flaky")))
	r = cliEnv(t, f.env, "list", "scheduled", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &l))
	require.Equal(t, []taskqueue.State{taskqueue.StateScheduled, taskqueue.StateRetry}, []taskqueue.State{l.Tasks[0].State, l.Tasks[1].State})
	require.NotNil(t, l.Tasks[1].DueAt)
	r = cliEnv(t, f.env, "show", l.Tasks[1].TaskID)
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^state\s+retry$`, r.stdout)
	require.Regexp(t, `(?m)^due\s+`, r.stdout)

	r = cliEnv(t, f.env, "show", "d3")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^state\s+dead$`, r.stdout)
	require.Regexp(t, `(?m)^reason\s+bad input$`, r.stdout)
	require.Contains(t, r.stdout, "envelope:\n{\n  \"v\": 2,\n  \"task_id\": \"d3\",\n  \"status\": \"dead\",")

	// A task of a priority level other than the default shows its level; one of the default level shows none.
	require.NoError(t, f.q.Enqueue(context.Background(), &taskqueue.TaskSpec{TaskID: "hi", Executable: taskqueue.Ref("ops", "send", nil), Priority: taskqueue.PriorityHigh}))
	r = cliEnv(t, f.env, "show", "hi")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^priority\s+high$`, r.stdout)
	r = cliEnv(t, f.env, "list", "pending", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &l))
	require.Equal(t, "hi", l.Tasks[0].TaskID, "pending tasks are listed in pickup order, the high level first")
	r = cliEnv(t, f.env, "show", "d3")
	require.NotContains(t, r.stdout, "priority")

	r = cliEnv(t, f.env, "show", "nope")
	require.Equal(t, exitNotFound, r.code, r)
	require.Contains(t, r.stderr, `no task "nope" in queue ops`)
}

func TestBulkActionsConfirm(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.seed(t)

	r := cliStdin(t, f.env, "", false, "delete", "--all")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.stderr, "refusing to delete all 3 dead letters of queue ops without confirmation: standard input is not a terminal; pass --yes")

	r = cliStdin(t, f.env, "n\n", true, "delete", "--all")
	require.Equal(t, exitDeclined, r.code, r)
	require.Contains(t, r.stderr, "Delete all 3 dead letters of queue ops? [y/N] ")
	r = cliStdin(t, f.env, "", true, "purge", "pending")
	require.Equal(t, exitDeclined, r.code, "end of input is a no")
	require.Equal(t, int64(3), f.counts(t).Dead, "nothing changed")
	require.Equal(t, int64(3), f.counts(t).Pending, "nothing changed")

	r = cliStdin(t, f.env, "yes\n", true, "requeue", "--reason-contains", "UPSTREAM")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stderr, `Requeue every dead letter whose reason contains "UPSTREAM" (3 dead letters in queue ops)? [y/N] `)
	require.Contains(t, r.stderr, "requeue: 3/3 looked at, 2 requeued\n")
	require.Equal(t, "requeued 2 dead letters (3 looked at) in queue ops\n", r.stdout)

	r = cliStdin(t, f.env, "y\n", true, "purge", "pending")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stderr, "Purge (delete for good) 5 pending tasks of queue ops? [y/N] ")
	require.Equal(t, "purged 5 pending tasks of queue ops\n", r.stdout)
	require.Equal(t, taskqueue.Counts{Active: 1, Scheduled: 1, Dead: 1}, f.counts(t))
}

func TestWatchBounded(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.seed(t)
	r := cliEnv(t, f.env, "watch", "--count", "3", "--interval", "100ms", "--json")
	require.Equal(t, exitOK, r.code, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3)
	for i, line := range lines {
		var s statsJSON
		require.NoError(t, json.Unmarshal([]byte(line), &s))
		require.Equal(t, int64(3), s.Pending)
		require.Equal(t, i > 0, s.PickupsPerSecond != nil, "a rate from the second refresh on")
	}
	r = cliEnv(t, f.env, "watch", "--count", "2", "--interval", "100ms")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, 2, strings.Count(r.stdout, "every 100ms, Ctrl-C to quit"))
	require.NotContains(t, r.stdout, "\x1b[", "no screen control unless standard output is a terminal")
}
