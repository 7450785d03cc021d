package taskqueue

import (
	"context"
	"encoding/json"
)

// Result returns the stored result of a task that is not a group member, read from the task's shard, as
// [RedisTaskQueue.Result] does: for the CLI and dashboards, which hold an [Admin]. [ErrNoResult] when there is none.
func (a *Admin) Result(ctx context.Context, taskID string) (json.RawMessage, error) {
	return a.shard(taskID).Result(ctx, taskID)
}
