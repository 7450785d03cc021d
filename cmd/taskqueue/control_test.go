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

func TestListCancelledCommand(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.enqueue(t, "a", "b")
	r := cliEnv(t, f.env, "list", "cancelled")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "no cancelled tasks")

	r = cliEnv(t, f.env, "cancel", "a")
	require.Equal(t, exitOK, r.code, r)
	r = cliEnv(t, f.env, "list", "cancelled")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "cancelled tasks 1-1 of 1")
	require.Regexp(t, `(?m)^a\s+\S+ ago\s+ops\.send`, r.stdout)

	r = cliEnv(t, f.env, "--json", "list", "cancelled")
	require.Equal(t, exitOK, r.code, r)
	var out listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.EqualValues(t, 1, out.Total)
	require.Len(t, out.Tasks, 1)
	require.Equal(t, "a", out.Tasks[0].TaskID)
	require.NotNil(t, out.Tasks[0].CancelledAt)

	r = cliEnv(t, f.env, "stats", "--interval", "0")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^cancelled\s+1 `, r.stdout)
	r = cliEnv(t, f.env, "stats", "--interval", "0", "--json")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, `"cancelled":1`)
}
