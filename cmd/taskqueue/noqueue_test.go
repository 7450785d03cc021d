package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"
)

// TestMissingQueue: every command but pause, pointed at a prefix with no key, exits 5 naming the prefix, the
// server and the database, and the queues that do exist there; none claims success or prints an empty table.
func TestMissingQueue(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	f := newFixture(t, mr.Addr(), "ops")
	f.seed(t)
	typo := map[string]string{"REDIS_URL": "redis://" + mr.Addr() + "/0", "TASKQUEUE_KEY_PREFIX": "osp"}
	for _, args := range [][]string{
		{"stats", "--interval", "0"}, {"stats", "--json"}, {"list", "dead"}, {"list", "pending", "--json"}, {"show", "d1"},
		{"requeue", "d1"}, {"delete", "d1"}, {"requeue", "--all", "--yes"}, {"delete", "--all", "--dry-run"},
		{"requeue", "--reason-contains", "503", "--yes"}, {"purge", "dead", "--yes"}, {"watch", "--count", "1"}, {"resume"},
	} {
		r := cliEnv(t, typo, args...)
		require.Equal(t, exitNoQueue, r.code, "%v\n%s", args, r)
		require.Empty(t, r.stdout, "%v: no table, no success", args)
		require.Contains(t, r.stderr, fmt.Sprintf(`taskqueue: no queue "osp" on %s db 0: none of its keys exists (wrong --key-prefix or database?)`, mr.Addr()), args)
		require.Contains(t, r.stderr, "queues in db 0: ops\n", args)
	}
	require.Equal(t, int64(3), f.counts(t).Dead, "nothing changed in the real queue")

	// Another database: the message names it.
	r := cliEnv(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr() + "/3", "TASKQUEUE_KEY_PREFIX": "ops"}, "stats")
	require.Equal(t, exitNoQueue, r.code, r)
	require.Contains(t, r.stderr, fmt.Sprintf(`no queue "ops" on %s db 3`, mr.Addr()))

	// pause creates the queue's paused key: it goes ahead, says so, and the queue then exists.
	r = cliEnv(t, typo, "pause")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stderr, `taskqueue: note: no queue "osp" on `)
	require.Contains(t, r.stderr, "the pause is stored and holds for workers of that queue")
	require.Contains(t, r.stdout, "queue osp: pickup paused")
	r = cliEnv(t, typo, "stats", "--interval", "0")
	require.Equal(t, exitOK, r.code, r)
	r = cliEnv(t, typo, "resume")
	require.Equal(t, exitOK, r.code, r)

	// A queue that exists and is empty is not missing.
	r = cliEnv(t, f.env, "purge", "dead", "--yes")
	require.Equal(t, exitOK, r.code, r)
	r = cliEnv(t, f.env, "list", "dead")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "no dead tasks")

	r = cliEnv(t, nil, "--help")
	require.Contains(t, r.stdout, "  5  no such queue: ")
}

// TestMissingQueueOtherDatabases: on a real server the message lists the other databases that hold keys.
func TestMissingQueueOtherDatabases(t *testing.T) {
	t.Parallel()
	addr := realRedis(t)
	f := newFixture(t, addr, "dbhint")
	f.enqueue(t, "t1")
	r := cliEnv(t, map[string]string{"REDIS_URL": "redis://" + addr + "/7", "TASKQUEUE_KEY_PREFIX": "dbhint"}, "list", "pending")
	require.Equal(t, exitNoQueue, r.code, r)
	require.Contains(t, r.stderr, fmt.Sprintf(`no queue "dbhint" on %s db 7`, addr))
	require.Regexp(t, `other databases with keys: .*\b0\b`, r.stderr)
	require.NotContains(t, strings.SplitN(r.stderr, "other databases", 2)[1], " 7", "not its own")
	require.NoError(t, f.rdb.Ping(context.Background()).Err())
}
