package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

func TestWorkflowShowsTree(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	ctx := context.Background()
	wf := taskqueue.NewWorkflow("etl")
	spec := func() *taskqueue.TaskSpec { return &taskqueue.TaskSpec{Executable: taskqueue.Ref("ops", "send", nil)} }
	wf.Add("extract", spec())
	wf.Add("t1", spec()).After("extract")
	wf.Add("t2", spec()).After("extract")
	wf.Add("load", spec()).After("t1", "t2")
	_, err := f.q.SubmitWorkflow(ctx, wf, nil)
	require.NoError(t, err)
	d := f.lease(t, 1)[0]
	require.NoError(t, f.q.DeadLetter(ctx, d, errors.New("source down")))

	r := cliEnv(t, f.env, "workflow", "etl")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "workflow etl: failed, 4 of 4 nodes done")
	require.Regexp(t, `(?m)^extract\s+failed\s+source down`, r.stdout)
	require.Regexp(t, `(?m)^└─ t1\s+skipped\s+extract$`, r.stdout)
	require.Regexp(t, `(?m)^  └─ load\s+skipped\s+t2\s+t[12]$`, r.stdout)

	r = cliEnv(t, f.env, "workflow", "etl", "--json")
	require.Equal(t, exitOK, r.code, r)
	var out struct {
		State string `json:"state"`
		Nodes []struct {
			ID      string   `json:"id"`
			State   string   `json:"state"`
			Parents []string `json:"parents"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.Equal(t, "failed", out.State)
	require.Equal(t, []string{"t1", "t2"}, out.Nodes[3].Parents)
	require.Equal(t, "skipped", out.Nodes[3].State)

	r = cliEnv(t, f.env, "workflow", "nope")
	require.Equal(t, exitNotFound, r.code, r)
}
