//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// On a Cluster, a search walks the tasks hash of every shard on its own primary, and the listing of group runs
// scans the primary that holds the queue's slot (the dashboard's searches and group pages).
func TestClusterSearchAndGroups(t *testing.T) {
	c := startCluster(t, 3, 0)
	cc := c.client(nil)
	ctx := context.Background()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "m", "f", func(context.Context, addArgs) error { return nil }))

	sq, err := NewShardedQueue(cc, spreadShards(t, cc, "search", 3, 3), 3, reg, quiet(nil))
	require.NoError(t, err)
	var specs []*TaskSpec
	for i := range 60 {
		specs = append(specs, NewTaskSpec(fmt.Sprintf("task-%02d", i), Ref("m", "f", addArgs{A: int64(i)})))
	}
	require.NoError(t, sq.EnqueueBatch(ctx, specs))
	adm := mustAdmin(sq)
	var found []string
	cursor := ""
	for range 1000 {
		page, err := adm.Search(ctx, SearchQuery{IDPrefix: "task-", Contains: `"a":4`}, cursor, 7)
		require.NoError(t, err)
		for _, m := range page.Matches {
			found = append(found, m.TaskID)
		}
		if cursor = page.Cursor; cursor == "" {
			break
		}
	}
	require.ElementsMatch(t, []string{"task-04", "task-40", "task-41", "task-42", "task-43", "task-44", "task-45", "task-46", "task-47", "task-48", "task-49"}, found)

	// A plain queue whose slot is on some primary: its group runs are found there.
	for i := range 3 {
		q, err := NewRedisTaskQueue(cc, fmt.Sprintf("groups-%d", i), reg, quiet(nil))
		require.NoError(t, err)
		run, err := q.DispatchGroup(ctx, "batch", []*TaskSpec{{Executable: Ref("m", "f", addArgs{})}}, nil)
		require.NoError(t, err)
		page, err := mustAdmin(q).Groups(ctx, "", MaxSearchStep)
		require.NoError(t, err)
		var gids []string
		for _, g := range page.Groups {
			gids = append(gids, g.GroupID)
		}
		require.Equal(t, []string{run.GroupID()}, gids, "queue %d", i)
		res, err := mustAdmin(q).Group(ctx, run.GroupID())
		require.NoError(t, err)
		require.Equal(t, 1, res.Pending)
	}
}
