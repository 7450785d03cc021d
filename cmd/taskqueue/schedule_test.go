package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// TestScheduleCommands: create, list (with last and next run), trigger, pause, resume, update and delete through
// the CLI; bad input exits 2 naming the field and stores nothing; an unreadable record is listed as such.
func TestScheduleCommands(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	ctx := context.Background()

	r := cliEnv(t, f.env, "schedule", "create", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--task", "ops.send", "--args", `{"to":"ops"}`)
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "schedule nightly: created")

	for _, bad := range []struct {
		args  []string
		field string
	}{
		{[]string{"--cron", "61 * * * *", "--task", "ops.send"}, "Cron"},
		{[]string{"--cron", "@daily", "--tz", "Nowhere/City", "--task", "ops.send"}, "TimeZone"},
		{[]string{"--every", "100ms", "--task", "ops.send"}, "Every"},
	} {
		r = cliEnv(t, f.env, append([]string{"schedule", "create", "other"}, bad.args...)...)
		require.Equal(t, exitUsage, r.code, r)
		require.Contains(t, r.stderr, bad.field, r)
	}
	r = cliEnv(t, f.env, "schedule", "create", "nightly", "--every", "1h", "--task", "ops.send")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.stderr, "already exists")

	r = cliEnv(t, f.env, "schedule", "list")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "nightly")
	require.Contains(t, r.stdout, "30 2 * * * (Europe/Berlin)")
	require.Contains(t, r.stdout, "ops.send")
	require.Contains(t, r.stdout, "never")
	require.NotContains(t, r.stdout, "other")

	r = cliEnv(t, f.env, "schedule", "trigger", "nightly")
	require.Equal(t, 0, r.code, r)
	id := strings.TrimSpace(r.stdout)
	require.True(t, strings.HasPrefix(id, "sched:nightly:manual-"), id)
	info, err := f.admin.Inspect(ctx, id)
	require.NoError(t, err)
	require.Equal(t, taskqueue.StatePending, info.State)
	require.Contains(t, info.Envelope, `"to":"ops"`)

	require.Equal(t, 0, cliEnv(t, f.env, "schedule", "pause", "nightly").code)
	r = cliEnv(t, f.env, "--json", "schedules")
	require.Equal(t, 0, r.code, r)
	var list struct {
		Schedules []scheduleJSON `json:"schedules"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	require.Len(t, list.Schedules, 1)
	s := list.Schedules[0]
	require.True(t, s.Paused)
	require.Nil(t, s.Next)
	require.NotNil(t, s.LastRun)
	require.Equal(t, id, s.LastTaskID)

	require.Equal(t, 0, cliEnv(t, f.env, "schedule", "resume", "nightly").code)
	r = cliEnv(t, f.env, "schedule", "update", "nightly", "--every", "90s", "--task", "ops.send")
	require.Equal(t, 0, r.code, r)
	r = cliEnv(t, f.env, "--json", "schedule", "show", "nightly")
	require.Equal(t, 0, r.code, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Equal(t, "1m30s", list.Schedules[0].Every)
	require.NotNil(t, list.Schedules[0].Next)
	require.Equal(t, 2, list.Schedules[0].Revision)

	// A record this version cannot read.
	require.NoError(t, f.rdb.HSet(ctx, "{ops}:schedules", "broken", `{"v":99}`).Err())
	r = cliEnv(t, f.env, "schedule", "list")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "UNREADABLE")

	require.Equal(t, 0, cliEnv(t, f.env, "schedule", "delete", "nightly").code)
	r = cliEnv(t, f.env, "schedule", "pause", "nightly")
	require.Equal(t, exitNotFound, r.code, r)
	r = cliEnv(t, f.env, "schedule", "explode", "x")
	require.Equal(t, exitUsage, r.code, r)
}
