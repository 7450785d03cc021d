package taskqueue

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// searchAll runs every step of a search and returns the ids found, sorted, and the steps taken.
func searchAll(t *testing.T, adm *Admin, query SearchQuery, step int) ([]string, int) {
	t.Helper()
	var found []string
	cursor, steps := "", 0
	for range 10000 {
		page, err := adm.Search(context.Background(), query, cursor, step)
		require.NoError(t, err)
		for _, m := range page.Matches {
			found = append(found, m.TaskID+"="+string(m.State))
		}
		steps++
		if cursor = page.Cursor; cursor == "" {
			break
		}
	}
	slices.Sort(found)
	return slices.Compact(found), steps
}

// Search finds tasks by id prefix and by envelope content, in every state, in bounded steps.
func TestAdminSearch(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.kill(t, func(string) string { return "boom ACME" }, "dead-1")
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("order-1", Ref("m", "f", map[string]string{"customer": "ACME corp"}))))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("order-2", Ref("m", "f", map[string]string{"customer": "globex"}))))
		for i := range 40 {
			s.enqueue(t, "filler-"+string(rune('a'+i%26))+string(rune('a'+i/26)))
		}
		found, _ := searchAll(t, s.adm, SearchQuery{IDPrefix: "order-"}, 10)
		require.Equal(t, []string{"order-1=pending", "order-2=pending"}, found)
		found, _ = searchAll(t, s.adm, SearchQuery{Contains: "ACME"}, 10)
		require.Equal(t, []string{"dead-1=dead", "order-1=pending"}, found, "payload and last error")
		found, _ = searchAll(t, s.adm, SearchQuery{IDPrefix: "order-", Contains: "globex"}, 1000)
		require.Equal(t, []string{"order-2=pending"}, found)
		found, _ = searchAll(t, s.adm, SearchQuery{IDPrefix: "ord*"}, 1000)
		require.Empty(t, found, "glob characters are literal")

		page, err := s.adm.Search(ctx, SearchQuery{}, "", 5)
		require.NoError(t, err)
		require.Equal(t, 43, page.Total)
		require.Positive(t, page.Scanned)

		for _, bad := range []func() error{
			func() error { _, err := s.adm.Search(ctx, SearchQuery{}, "", 0); return err },
			func() error { _, err := s.adm.Search(ctx, SearchQuery{}, "", MaxSearchStep+1); return err },
			func() error { _, err := s.adm.Search(ctx, SearchQuery{}, "7:0", 10); return err },
			func() error { _, err := s.adm.Search(ctx, SearchQuery{}, "x", 10); return err },
			func() error {
				_, err := s.adm.Search(ctx, SearchQuery{Contains: string(make([]byte, MaxSearchTerm+1))}, "", 10)
				return err
			},
		} {
			require.ErrorIs(t, bad(), ErrInvalidConfig)
		}
	})
}

// A sharded queue's search walks every shard.
func TestAdminSearchSharded(t *testing.T) {
	t.Parallel()
	sq, _, _ := newSharded(t, 3)
	ctx := context.Background()
	var specs []*TaskSpec
	for i := range 30 {
		specs = append(specs, NewTaskSpec("s-"+string(rune('a'+i%26))+string(rune('a'+i/26)), Ref("s", "work", shardArgs{})))
	}
	require.NoError(t, sq.EnqueueBatch(ctx, specs))
	found, steps := searchAll(t, mustAdmin(sq), SearchQuery{IDPrefix: "s-"}, 4)
	require.Len(t, found, 30)
	require.GreaterOrEqual(t, steps, 3, "a step per shard at least")
}

// Groups lists group and workflow runs in steps; Group reads a run's members.
func TestAdminGroups(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		run, err := s.q.DispatchGroup(ctx, "batch", []*TaskSpec{
			{Executable: Ref("m", "f", nil)}, {Executable: Ref("m", "f", nil)},
		}, nil)
		require.NoError(t, err)
		var groups []GroupSummary
		cursor := ""
		for range 10000 {
			page, err := s.adm.Groups(ctx, cursor, 50)
			require.NoError(t, err)
			groups = append(groups, page.Groups...)
			if cursor = page.Cursor; cursor == "" {
				break
			}
		}
		require.Len(t, groups, 1)
		require.Equal(t, run.GroupID(), groups[0].GroupID)
		require.Equal(t, "batch", groups[0].Name)
		require.False(t, groups[0].Workflow)
		require.Equal(t, 2, groups[0].Total)

		res, err := s.adm.Group(ctx, run.GroupID())
		require.NoError(t, err)
		require.Equal(t, 2, res.Total)
		require.Equal(t, 2, res.Pending)
		_, err = s.adm.Group(ctx, "nope@x")
		require.ErrorIs(t, err, ErrGroupNotFound)
		_, err = s.adm.Groups(ctx, "", 0)
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}
