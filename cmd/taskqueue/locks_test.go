package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

func TestLocksCommands(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	ctx := context.Background()
	spec := taskqueue.NewTaskSpec("", taskqueue.Ref("ops", "send", nil))
	spec.Unique = &taskqueue.Unique{Key: "report:42", TTL: time.Hour}
	require.NoError(t, f.q.Enqueue(ctx, spec))

	r := cliEnv(t, f.env, "locks", "list")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "report:42")
	require.Contains(t, r.stdout, spec.TaskID)
	require.Contains(t, r.stdout, "held")

	r = cliEnv(t, f.env, "locks", "task", spec.TaskID, "--json")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, `"key":"report:42"`)
	require.Contains(t, r.stdout, `"lifetime":"until-done"`)

	r = cliEnv(t, f.env, "locks", "show", "nope")
	require.Equal(t, exitNotFound, r.code, r)

	r = cliEnv(t, f.env, "locks", "release", "report:42")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "released")
	r = cliEnv(t, f.env, "locks", "show", "report:42")
	require.Equal(t, exitNotFound, r.code, r)

	r = cliEnv(t, f.env, "locks", "sweep")
	require.Equal(t, 0, r.code, r)
	r = cliEnv(t, f.env, "locks", "bogus")
	require.Equal(t, 2, r.code, r)
}
