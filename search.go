package taskqueue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Search of tasks by id prefix and by envelope content, for operators and dashboards: a bounded HSCAN of the tasks
// hash in steps, so that no single call holds Redis for longer than one step of a few hundred entries, however
// many tasks the queue holds. The caller drives the steps (and can show progress), passing back the cursor.

// MaxSearchStep is the most entries of the tasks hash one [Admin.Search] step asks Redis for (its COUNT).
const MaxSearchStep = 1000

// MaxSearchTerm is the longest id prefix or substring [Admin.Search] takes, in bytes.
const MaxSearchTerm = 256

// SearchQuery selects the tasks of [Admin.Search]. Both terms must match; an empty term matches every task.
type SearchQuery struct {
	// IDPrefix keeps the tasks whose id starts with it (Redis matches it in the HSCAN, glob characters escaped).
	IDPrefix string
	// Contains keeps the tasks whose stored envelope holds it as a byte substring: the payload, the last error,
	// the metadata.
	Contains string
}

// SearchPage is one step of [Admin.Search].
type SearchPage struct {
	// Matches are the tasks found in this step, each with its state, envelope and record as [Admin.Inspect]
	// gives them (a task that moved between the scan and the look-up may show its new state).
	Matches []TaskInfo
	// Cursor continues the search; "" when every shard has been scanned.
	Cursor string
	// Scanned is how many entries of the tasks hash this step looked at.
	Scanned int
	// Total is the size of the tasks hashes (every shard) when the step ran: how many entries a whole search looks
	// at, about (finished tasks kept for the settled window are among them, and never match).
	Total int
}

// Search runs one step of a search for tasks by id prefix and envelope content: an HSCAN of the tasks hash with
// COUNT count (1 to [MaxSearchStep]) from cursor ("" to start), then one look-up of the states of the matches.
// Pass the returned [SearchPage.Cursor] to the next call until it is "". As every SCAN, a task present for the
// whole search is found at least once (it may be returned twice); tasks added or removed meanwhile may or may not
// be. A sharded queue's shards are scanned one after the other. Bad input is an error wrapping [ErrInvalidConfig].
func (a *Admin) Search(ctx context.Context, query SearchQuery, cursor string, count int) (SearchPage, error) {
	if count < 1 || count > MaxSearchStep {
		return SearchPage{}, fmt.Errorf("%w: search count must be between 1 and %d", ErrInvalidConfig, MaxSearchStep)
	}
	if len(query.IDPrefix) > MaxSearchTerm || len(query.Contains) > MaxSearchTerm {
		return SearchPage{}, fmt.Errorf("%w: search terms are at most %d bytes", ErrInvalidConfig, MaxSearchTerm)
	}
	k, pos, err := parseShardCursor(cursor, len(a.shards))
	if err != nil {
		return SearchPage{}, fmt.Errorf("%w: search cursor %s", ErrInvalidConfig, quote(cursor))
	}
	_, total, err := a.tasksSizes(ctx)
	if err != nil {
		return SearchPage{}, err
	}
	q := a.shards[k]
	kv, next, err := q.rdb.HScan(ctx, q.keys.key(keyTasks), pos, escapeGlob(query.IDPrefix)+"*", int64(count)).Result()
	if err != nil {
		return SearchPage{}, fmt.Errorf("taskqueue: search: %w", classify(err))
	}
	page := SearchPage{Scanned: len(kv) / 2, Total: total, Cursor: nextShardCursor(k, next, len(a.shards))}
	var ids, envs []string
	for i := 0; i+1 < len(kv); i += 2 {
		id, raw := kv[i], kv[i+1]
		if isTombstone(raw) || !strings.HasPrefix(id, query.IDPrefix) || !strings.Contains(raw, query.Contains) {
			continue
		}
		ids, envs = append(ids, id), append(envs, raw)
	}
	page.Matches, err = q.locate(ctx, ids, envs)
	return page, err
}

// tasksSizes returns the size of each shard's tasks hash, and their sum.
func (a *Admin) tasksSizes(ctx context.Context) ([]int, int, error) {
	each := make([]int, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) error {
		n, err := q.rdb.HLen(ctx, q.keys.key(keyTasks)).Result()
		each[k] = int(n)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("taskqueue: search: %w", classify(err))
	}
	total := 0
	for _, n := range each {
		total += n
	}
	return each, total, nil
}

// locate returns the tasks ids (with their envelopes envs) as TaskInfos, with their states: one pipeline of
// scores, and the leases in flight when a task is in no sorted set.
func (q *RedisTaskQueue) locate(ctx context.Context, ids, envs []string) ([]TaskInfo, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	states := [3]State{StateActive, StateScheduled, StateDead}
	scores := make([][3]*redis.FloatCmd, len(ids))
	var reasons *redis.SliceCmd
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			for j, s := range states {
				scores[i][j] = p.ZScore(ctx, q.keys.key(stateKey(s)), id)
			}
		}
		reasons = p.HMGet(ctx, q.keys.key(keyErrors), ids...)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return nil, fmt.Errorf("taskqueue: search: %w", classify(err))
	}
	out := make([]TaskInfo, len(ids))
	var leased map[string]float64 // read once, when a task is in no sorted set
	for i, id := range ids {
		out[i] = TaskInfo{TaskID: id, Envelope: envs[i], State: StatePending}
		for j, s := range states {
			if scores[i][j].Err() == nil {
				out[i].State, out[i].Score = s, time.UnixMilli(int64(scores[i][j].Val()))
				break
			}
		}
		if out[i].State == StatePending {
			if leased == nil {
				all, err := q.leasedTasks(ctx)
				if err != nil {
					return nil, fmt.Errorf("taskqueue: search: %w", classify(err))
				}
				leased = make(map[string]float64, len(all))
				for _, t := range all {
					leased[t.id] = t.deadline
				}
			}
			if d, ok := leased[id]; ok {
				out[i].State, out[i].Score = StateActive, time.UnixMilli(int64(d))
			}
		}
		if out[i].State == StateDead {
			out[i].Reason, _ = reasons.Val()[i].(string)
		}
		out[i].State = q.delayedState(out[i].State, out[i].Envelope)
		out[i].Record = q.record(id, out[i].Envelope)
	}
	return out, nil
}

// escapeGlob escapes the characters a Redis MATCH pattern reads as glob syntax.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\^`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// parseShardCursor reads a cursor "<shard>:<scan cursor>" of a scan over n shards ("" is the start).
func parseShardCursor(cursor string, n int) (int, uint64, error) {
	if cursor == "" {
		return 0, 0, nil
	}
	ks, ps, ok := strings.Cut(cursor, ":")
	k, err1 := strconv.Atoi(ks)
	pos, err2 := strconv.ParseUint(ps, 10, 64)
	if !ok || err1 != nil || err2 != nil || k < 0 || k >= n {
		return 0, 0, ErrInvalidConfig
	}
	return k, pos, nil
}

// nextShardCursor is the cursor after a scan step of shard k returned next: the next shard's start when shard k
// is done, "" after the last shard.
func nextShardCursor(k int, next uint64, n int) string {
	switch {
	case next != 0:
		return strconv.Itoa(k) + ":" + strconv.FormatUint(next, 10)
	case k+1 < n:
		return strconv.Itoa(k+1) + ":0"
	}
	return ""
}
