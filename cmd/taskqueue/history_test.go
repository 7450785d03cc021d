package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

func TestHistoryCommand(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, f.q.Enqueue(ctx, taskqueue.NewTaskSpec(fmt.Sprintf("h-%d", i), taskqueue.Ref("ops", "send", nil))))
	}
	require.NoError(t, f.q.FlushHistory(ctx))

	r := cliEnv(t, f.env, "history", "--minutes", "5")
	require.Equal(t, 0, r.code, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 6, r.stdout) // the header and 5 minutes
	require.Contains(t, lines[0], "ENQUEUED")

	r = cliEnv(t, f.env, "history", "--minutes", "3", "--json")
	require.Equal(t, 0, r.code, r)
	var ps []historyJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ps))
	require.Len(t, ps, 3)
	var enq int64
	for i, p := range ps {
		enq += p.Enqueued
		if i > 0 {
			require.Equal(t, time.Minute, p.At.Sub(ps[i-1].At))
		}
	}
	require.EqualValues(t, 3, enq)

	for _, bad := range [][]string{{"history", "--minutes", "0"}, {"history", "--minutes", "1441"}, {"history", "x"}} {
		r = cliEnv(t, f.env, bad...)
		require.Equal(t, 2, r.code, r)
	}
}

func TestLatencyFormat(t *testing.T) {
	t.Parallel()
	require.Equal(t, "-", latency(0))
	require.Equal(t, "778µs", latency(777777*time.Nanosecond))
	require.Equal(t, "7.5ms", latency(7500*time.Microsecond))
	require.Equal(t, "2s", latency(2*time.Second))
}
