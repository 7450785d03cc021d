package taskqueue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Listing of group and workflow runs for operators and dashboards: a bounded SCAN, in steps, for the runs' hashes
// of a queue ({prefix}:group:<name>@<run id>), and one run's member outcomes. On a Cluster the scan runs on the
// primary that holds the queue's slot.

// GroupSummary is one group run or workflow run, as [Admin.Groups] lists it.
type GroupSummary struct {
	// GroupID is the run's id, "<name>@<run id>"; Name the group's name or the workflow's id.
	GroupID, Name string
	// Workflow is true for a workflow's run (see [Admin.Workflow]), false for a group dispatched with
	// [RedisTaskQueue.DispatchGroup] (see [Admin.Group]).
	Workflow bool
	// Total members (nodes), and how many have completed.
	Total, Done int
	// Cancelled is true when the workflow was cancelled.
	Cancelled bool
	// Created and Ended (zero while it runs, and for groups) on the Redis server's clock.
	Created, Ended time.Time
}

// GroupPage is one step of [Admin.Groups].
type GroupPage struct {
	// Groups are the runs found in this step.
	Groups []GroupSummary
	// Cursor continues the listing; "" when every shard has been scanned.
	Cursor string
}

// Groups runs one step of a listing of the queue's group and workflow runs: a SCAN with COUNT count (1 to
// [MaxSearchStep]) from cursor ("" to start) for the runs' hashes, then one read of their counters. Pass the
// returned [GroupPage.Cursor] to the next call until it is "". SCAN walks the whole database, so a step may find
// no run; each step is bounded by count. Bad input is an error wrapping [ErrInvalidConfig].
func (a *Admin) Groups(ctx context.Context, cursor string, count int) (GroupPage, error) {
	if count < 1 || count > MaxSearchStep {
		return GroupPage{}, fmt.Errorf("%w: groups count must be between 1 and %d", ErrInvalidConfig, MaxSearchStep)
	}
	k, pos, err := parseShardCursor(cursor, len(a.shards))
	if err != nil {
		return GroupPage{}, fmt.Errorf("%w: groups cursor %s", ErrInvalidConfig, quote(cursor))
	}
	q := a.shards[k]
	node, err := q.primaryOfQueue(ctx, false)
	if err != nil {
		return GroupPage{}, fmt.Errorf("taskqueue: groups: %w", classify(err))
	}
	base := q.keys.group("")
	keys, next, err := node.ScanType(ctx, pos, escapeGlob(base)+"*", int64(count), "hash").Result()
	if err != nil {
		return GroupPage{}, fmt.Errorf("taskqueue: groups: %w", classify(err))
	}
	page := GroupPage{Cursor: nextShardCursor(k, next, len(a.shards))}
	for _, key := range keys {
		gid := strings.TrimPrefix(key, base)
		if strings.Contains(gid, ":") { // not a run's hash
			continue
		}
		vals, err := node.HMGet(ctx, key, "wf", "total", "done", "state", "created", "ended").Result()
		if err != nil {
			return page, fmt.Errorf("taskqueue: groups: %w", classify(err))
		}
		str := func(i int) string { s, _ := vals[i].(string); return s }
		g := GroupSummary{GroupID: gid, Workflow: str(0) == "1", Cancelled: str(3) == "cancelled",
			Created: serverMillis(str(4)), Ended: serverMillis(str(5))}
		g.Name, _, _ = strings.Cut(gid, "@")
		g.Total, _ = strconv.Atoi(str(1))
		g.Done, _ = strconv.Atoi(str(2))
		page.Groups = append(page.Groups, g)
	}
	return page, nil
}

// Group returns the member outcomes of a group run so far, by its id ("<name>@<run id>"), without waiting and
// without removing anything; [ErrGroupNotFound] when no shard holds it (it completed and was collected, its TTL
// passed, or it never was).
func (a *Admin) Group(ctx context.Context, groupID string) (*GroupResult, error) {
	name, runID, ok := strings.Cut(groupID, "@")
	if !ok || name == "" || runID == "" || len(groupID) > 256 {
		return nil, fmt.Errorf("%w: %s", ErrGroupNotFound, quote(groupID))
	}
	for _, q := range a.shards {
		h, err := q.rdb.HGetAll(ctx, q.keys.group(groupID)).Result()
		if err != nil {
			return nil, fmt.Errorf("taskqueue: group %s: %w", quote(groupID), classify(err))
		}
		if len(h) > 0 {
			return newGroupResult(&GroupRun{Name: name, RunID: runID, q: q}, h), nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrGroupNotFound, quote(groupID))
}
