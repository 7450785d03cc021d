package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// TestDrainOrderAlternates checks that the plain and keyed drains take turns at running first, round by round,
// and that a library without flow keys runs the plain drain alone.
func TestDrainOrderAlternates(t *testing.T) {
	t.Parallel()
	metrics := func(o []flowScenario) []string {
		var out []string
		for _, sc := range o {
			out = append(out, sc.metric)
		}
		return out
	}
	require.Equal(t, []string{"", "drain_keys100", "drain_keys100_limit10", "drain_qrate"}, metrics(drainOrder(0, true)))
	require.Equal(t, []string{"drain_qrate", "drain_keys100_limit10", "drain_keys100", ""}, metrics(drainOrder(1, true)))
	require.Equal(t, metrics(drainOrder(0, true)), metrics(drainOrder(2, true)))
	require.Equal(t, []string{""}, metrics(drainOrder(1, false)))
	require.Equal(t, "keys100_limit10", flowSuffix(flowScenarios[1]))
}

// TestFlowRowsInTableAndJSON checks the keyed rows: ours' medians, the share of the plain drain as the median of
// the rounds' shares, a peer without the feature shown as n/a with its reason, and the new keys of latest.json.
func TestFlowRowsInTableAndJSON(t *testing.T) {
	t.Parallel()
	r := newResults()
	for _, v := range []float64{60000, 70000} {
		r.add(libOurs, "drain_tps", v)
	}
	for _, v := range []float64{48000, 56000} {
		r.add(libOurs, "drain_keys100_tps", v)
	}
	for _, v := range []float64{80, 80} {
		r.add(libOurs, "drain_keys100_pct", v)
	}
	r.add(libOurs, "redis_cpu_us_per_task_keys100", 21.5)
	r.add(libAsynq, "drain_tps", 10000)
	r.add(libBullMQ, "drain_tps", 20000)

	var buf bytes.Buffer
	r.writeTable(&buf)
	out := buf.String()
	require.Contains(t, out, "| drain a 100k backlog over 100 flow keys, no limits, concurrency 100 | tasks/s | 52,000 [48,000–56,000] | n/a (none) | n/a (Pro only) | – | – |")
	require.Contains(t, out, "|   as a share of the plain drain of the same round (goal >= 70%) | % | 80.0 [80.0–80.0] | n/a (none) | n/a (Pro only) | – | – |")
	require.Contains(t, out, "| Redis CPU per task lifecycle, batch enqueue, 100 flow keys | µs | 21.5 | n/a (none) | n/a (Pro only) | – | – |")
	require.NotContains(t, out, "limited to 10", "a keyed row without samples has no row")

	path := filepath.Join(t.TempDir(), "latest.json")
	require.NoError(t, r.writeJSON(path))
	sum := r.summary()
	require.InDelta(t, 52000, sum["ours_drain_keys100_tps"], 1e-9)
	require.InDelta(t, 80, sum["ours_drain_keys100_pct"], 1e-9)
	require.InDelta(t, 21.5, sum["ours_redis_cpu_us_per_task_keys100"], 1e-9)
	require.NotContains(t, sum, "bullmq_drain_keys100_tps")
}

// TestFillFlowSpreadsOverKeysWithLimit checks the keyed backlog: every task under one of 100 flow keys, the same
// count per key, and the limit of every key set.
func TestFillFlowSpreadsOverKeysWithLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startTestRedis(t)
	l, err := newLib(libOurs, srv.addr, 0)
	require.NoError(t, err)
	t.Cleanup(l.close)
	require.NoError(t, fillFlow(ctx, l, 1000, 300, flowScenarios[1]))

	members, err := srv.rdb.ZRange(ctx, "{bench}:flow:ready", 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, members, 1000)
	perKey := map[string]int{}
	for _, m := range members {
		k, _, ok := strings.Cut(m, " ")
		require.True(t, ok, m)
		perKey[k]++
	}
	require.Len(t, perKey, 100)
	for k, n := range perKey {
		require.Equal(t, 10, n, k)
	}
	adm, err := taskqueue.NewAdmin(l.(*ours).q)
	require.NoError(t, err)
	lim, err := adm.Limits(ctx)
	require.NoError(t, err)
	require.Equal(t, []taskqueue.FlowLimit{{Key: taskqueue.AllFlowKeys, Concurrency: 10}}, lim)

	asynq, err := newLib(libAsynq, srv.addr, 0)
	require.NoError(t, err)
	t.Cleanup(asynq.close)
	require.ErrorIs(t, fillFlow(ctx, asynq, 10, 10, flowScenarios[0]), errUnsupported)
}

// TestDrainRunWithFlowKeys runs the drain step of ours in an odd round (the drains with flow control first) with
// a tiny backlog, of asynq, which has none, and of the opt-in keyed variant of ours, which runs none.
func TestDrainRunWithFlowKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := startTestRedis(t)
	b := &bench{srv: srv, sz: sizes{drainN: 400, enqueueBatch: 100}, res: newResults(), log: &bytes.Buffer{}, round: 1}
	require.NoError(t, b.drainRun(ctx, libOurs))
	require.NoError(t, b.drainRun(ctx, libAsynq))
	require.NoError(t, b.drainRun(ctx, libOursKeys))
	sum := b.res.summary()
	for _, k := range []string{"ours_drain_tps", "ours_drain_keys100_tps", "ours_drain_keys100_limit10_tps",
		"ours_drain_keys100_pct", "ours_drain_keys100_limit10_pct", "ours_redis_cpu_us_per_task_keys100",
		"ours_redis_cpu_us_per_task_keys100_limit10", "ours_drain_qrate_tps", "ours_drain_qrate_pct",
		"ours_redis_cpu_us_per_task_qrate", "ours_drain_4x25_tps", "asynq_drain_tps"} {
		require.Greater(t, sum[k], 0.0, k)
	}
	_, ok := b.res.stat(libAsynq, "drain_keys100_tps")
	require.False(t, ok, "asynq has no flow keys")
	_, ok = b.res.stat(libOursKeys, "drain_keys100_tps")
	require.False(t, ok, "a keyed variant of ours runs its (keyed) drain alone")
	_, ok = b.res.stat(libOursKeys, "drain_tps")
	require.True(t, ok)
	s, ok := b.res.stat(libOurs, "drain_keys100_pct")
	require.True(t, ok)
	require.Equal(t, 1, s.n, "one share per round")
}

// TestFillFlowQueueRate checks the queue-rate scenario's backlog: no keys, the queue's rate limit set.
func TestFillFlowQueueRate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startTestRedis(t)
	l, err := newLib(libOurs, srv.addr, 0)
	require.NoError(t, err)
	t.Cleanup(l.close)
	require.NoError(t, fillFlow(ctx, l, 250, 100, flowScenarios[2]))
	n, err := srv.rdb.LLen(ctx, "{bench}:pending").Result()
	require.NoError(t, err)
	require.Equal(t, int64(250), n, "the tasks wait in the queue's list, without keys")
	adm, err := taskqueue.NewAdmin(l.(*ours).q)
	require.NoError(t, err)
	lim, err := adm.Limits(ctx)
	require.NoError(t, err)
	require.Equal(t, []taskqueue.FlowLimit{{Key: "", Rate: qrateLimit, Period: time.Second}}, lim)
}
