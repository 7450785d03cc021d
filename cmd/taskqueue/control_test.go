package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCancelCommand(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.enqueue(t, "a", "b")

	r := cliEnv(t, f.env, "cancel", "a")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, `task "a" cancelled (it was pending).`)
	r = cliEnv(t, f.env, "show", "a")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^state\s+cancelled$`, r.stdout)
	r = cliEnv(t, f.env, "cancel", "a")
	require.Equal(t, exitFinished, r.code, r)
	r = cliEnv(t, f.env, "cancel", "nope")
	require.Equal(t, exitNotFound, r.code, r)

	f.lease(t, 1) // b runs
	r = cliEnv(t, f.env, "delete-task", "b")
	require.Equal(t, exitRunning, r.code, r)
	r = cliEnv(t, f.env, "--json", "cancel", "b")
	require.Equal(t, exitOK, r.code, r)
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.Equal(t, "active", out["was"])

	r = cliEnv(t, f.env, "delete-task", "b")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "it was cancelled")

	r = cliEnv(t, f.env, "progress", "nope")
	require.Equal(t, exitNotFound, r.code, r)
	f.enqueue(t, "c")
	r = cliEnv(t, f.env, "--json", "progress", "c")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, `"percent":0`)
	r = cliEnv(t, f.env, "progress", "a")
	require.Equal(t, exitFinished, r.code, r)
}
