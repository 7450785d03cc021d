package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLimitsCommands(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	ctx := context.Background()

	r := cliEnv(t, f.env, "limits", "set", "tenant-42", "--concurrency", "3")
	require.Equal(t, 0, r.code, r)
	r = cliEnv(t, f.env, "limits", "set", "*", "--concurrency", "10", "--rate", "100/1s")
	require.Equal(t, 0, r.code, r)
	r = cliEnv(t, f.env, "limits", "set", "--queue", "--rate", "1000/1m")
	require.Equal(t, 0, r.code, r)
	lim, err := f.admin.Limits(ctx)
	require.NoError(t, err)
	require.Len(t, lim, 3)

	r = cliEnv(t, f.env, "limits", "list")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "tenant-42")
	require.Contains(t, r.stdout, "100/1s")
	require.Contains(t, r.stdout, "(queue)")
	r = cliEnv(t, f.env, "limits", "list", "--json")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, `"key":"tenant-42","concurrency":3`)

	for _, bad := range [][]string{
		{"limits", "set", "tenant-42", "--concurrency", "-1"},
		{"limits", "set", "tenant-42", "--rate", "10/1ms"},
		{"limits", "set", "a b", "--concurrency", "1"},
		{"limits", "set", "tenant-42"},
		{"limits", "set", "--queue", "--concurrency", "2"},
		{"limits", "bogus"},
	} {
		r = cliEnv(t, f.env, bad...)
		require.Equal(t, exitUsage, r.code, "%v: %v", bad, r)
	}
	r = cliEnv(t, f.env, "limits", "clear", "tenant-42")
	require.Equal(t, 0, r.code, r)
	r = cliEnv(t, f.env, "limits", "clear", "--queue")
	require.Equal(t, 0, r.code, r)
	lim, err = f.admin.Limits(ctx)
	require.NoError(t, err)
	require.Len(t, lim, 1)
}
