package taskqueue

import (
	"context"
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Flow keys, fairness across them, and per-key concurrency and rate limits (docs/flow-control.md, lua/flow.lua).
//
// A task may carry a [TaskSpec.FlowKey]. Pickup takes turns over the keys that have ready tasks (FIFO within a
// key), so one key's backlog never delays another key's first task by more than one pickup batch. Limits live in
// Redis and change at run time: at most N tasks of one key leased at once (a slot is held by the delivery's lease,
// so a crashed worker's slots come back with its lease), and at most N starts per period of one key or of the
// whole queue, on the Redis server's clock. A queue that uses no key and no limit pays one more key in the EXISTS
// its pickup already makes.

// MaxFlowKeyLen is the longest [TaskSpec.FlowKey] accepted.
const MaxFlowKeyLen = 64

// MaxFlowLimits bounds the limits a queue holds: per-key concurrency and rate limits, the defaults and the
// queue's rate, each counting one. A limit for one more key is [ErrInvalidLimit].
const MaxFlowLimits = 10000

// MinRatePeriod and MaxRatePeriod bound the period of a rate limit ([Admin.SetRateLimit]).
const (
	MinRatePeriod = 10 * time.Millisecond
	MaxRatePeriod = 24 * time.Hour
)

// MaxRate bounds the starts per period of a rate limit.
const MaxRate = 1_000_000

// AllFlowKeys names the default limit of every flow key that has no limit of its own, in [Admin.SetConcurrencyLimit],
// [Admin.SetRateLimit] and [Admin.ClearLimits].
const AllFlowKeys = "*"

// flowKeyPattern: never a space (the separator in the ready set), '!' (the end of a key's range there), '*' (the
// default), braces or quotes.
var flowKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_.:/@+=-]+$`)

func validFlowKey(k string) bool {
	return len(k) <= MaxFlowKeyLen && flowKeyPattern.MatchString(k)
}

func (s *TaskSpec) validateFlowKey() error {
	if !validFlowKey(s.FlowKey) {
		return fmt.Errorf("%w: TaskSpec.FlowKey %s must be 1 to %d characters of [A-Za-z0-9_.:/@+=-]",
			ErrInvalidFlowKey, quote(truncate(s.FlowKey, 80)), MaxFlowKeyLen)
	}
	if s.Priority != PriorityDefault {
		return fmt.Errorf("%w: TaskSpec.FlowKey with TaskSpec.Priority %s: a keyed task is of the default level", ErrInvalidFlowKey, s.Priority)
	}
	return nil
}

func errFlowKeyWith() error {
	return fmt.Errorf("%w: TaskSpec.FlowKey cannot be combined with TaskSpec.Unique, a group or a workflow", ErrInvalidFlowKey)
}

// flowArg is the delay argument of one task for the enqueue scripts: levelArg's for a task without a key, else
// "<ms>/k:<flow key>" (enqueue_flow.lua).
func flowArg(s *TaskSpec, delayMS int64) any {
	if s.FlowKey == "" {
		return levelArg(s.Priority, delayMS)
	}
	return strconv.FormatInt(delayMS, 10) + "/k:" + s.FlowKey
}

func isFlowArg(s string) bool { return strings.Contains(s, "/k:") }

// FlowLimit is one limit of a queue, as [Admin.Limits] lists them.
type FlowLimit struct {
	// Key is a flow key, [AllFlowKeys] for the default of every key without its own, or "" for the queue's own
	// rate.
	Key string
	// Concurrency is the most tasks of the key leased at once; 0 for none.
	Concurrency int
	// Rate is the most starts of the key (or the queue) per Period; 0 for none.
	Rate int
	// Period is the period of Rate.
	Period time.Duration
}

// FlowState is what [Admin.FlowState] reports: the limits and how the keys stand now.
type FlowState struct {
	// Limits are the queue's limits, as [Admin.Limits] lists them.
	Limits []FlowLimit
	// Running counts the leased tasks (held slots) of each key that has any.
	Running map[string]int
	// Ready counts the keyed tasks ready to run (every key).
	Ready int64
	// AtLimit and OverRate name the keys with ready tasks held back by their concurrency or rate limit.
	AtLimit, OverRate []string
	// Truncated is true when a shard held more keys with ready or running tasks than [MaxFlowStateScan]: Running,
	// AtLimit and OverRate then cover the keys read, not all of them.
	Truncated bool
}

// MaxFlowStateScan bounds the keys [Admin.FlowState] reads per shard. It reads the per-key hashes with HSCAN in
// steps of flowStateStep, so that no single call holds Redis for long, however many tenants a queue serves.
const MaxFlowStateScan = 100_000

const flowStateStep = 1000

var (
	//go:embed lua/limits.lua
	limitsLua    string
	limitsSrc    = withPrelude(limitsLua)
	limitsScript = redis.NewScript(limitsSrc)
)

// limitsKeys are limits.lua's KEYS.
func (q *RedisTaskQueue) limitsKeys() []string {
	k := q.keys
	return []string{k.key(keyLimits), k.key(keyFlowState), k.key(keyFlowRot), k.key(keyFlowWait), k.key(keyWake)}
}

func limitKey(method, key string, queue bool) error {
	if key == AllFlowKeys || (queue && key == "") || validFlowKey(key) {
		return nil
	}
	return fmt.Errorf("%w: %s key %s must be %q, a flow key of 1 to %d characters of [A-Za-z0-9_.:/@+=-]%s",
		ErrInvalidFlowKey, method, quote(truncate(key, 80)), AllFlowKeys, MaxFlowKeyLen, map[bool]string{true: `, or "" for the queue`}[queue])
}

// SetConcurrencyLimit lets at most n tasks of the flow key key (or of each key without a limit of its own, for
// [AllFlowKeys]) be leased at once, over every worker of the queue. It takes effect at the next pickup: raising
// it lets keys held at their limit run at once, lowering it lets the tasks running now finish (none is stopped
// or lost) and starts no more until the key is under it. n must be at least 1, key a valid flow key or
// [AllFlowKeys]: else [ErrInvalidLimit] or [ErrInvalidFlowKey], and nothing is stored. On a [ShardedQueue] each
// shard holds the limit for the tasks it holds.
func (a *Admin) SetConcurrencyLimit(ctx context.Context, key string, n int) error {
	if err := limitKey("SetConcurrencyLimit", key, false); err != nil {
		return err
	}
	if n < 1 || n > MaxRate {
		return fmt.Errorf("%w: SetConcurrencyLimit n %d must be 1 to %d", ErrInvalidLimit, n, MaxRate)
	}
	return a.setLimit(ctx, "set", "c:"+key, strconv.Itoa(n))
}

// SetRateLimit lets at most n tasks of the flow key key (of each key without a limit of its own, for
// [AllFlowKeys]; of the whole queue, for "") start per period, on the Redis server's clock. The limiter is a token
// bucket of n tokens refilled at n per period (GCRA): over any interval of length t, at most n + n·t/period
// starts (a full bucket's burst, then the rate), so over a long run the rate holds to within one burst. n must
// be 1 to [MaxRate], period [MinRatePeriod] to [MaxRatePeriod]: else [ErrInvalidLimit] and nothing is stored.
func (a *Admin) SetRateLimit(ctx context.Context, key string, n int, period time.Duration) error {
	if err := limitKey("SetRateLimit", key, true); err != nil {
		return err
	}
	switch {
	case n < 1 || n > MaxRate:
		return fmt.Errorf("%w: SetRateLimit n %d must be 1 to %d", ErrInvalidLimit, n, MaxRate)
	case period < MinRatePeriod || period > MaxRatePeriod:
		return fmt.Errorf("%w: SetRateLimit period %s must be %s to %s", ErrInvalidLimit, period, MinRatePeriod, MaxRatePeriod)
	}
	field := "r:" + key
	if key == "" {
		field = "q"
	}
	return a.setLimit(ctx, "set", field, strconv.Itoa(n)+"/"+strconv.FormatInt(period.Milliseconds(), 10))
}

// ClearLimits removes the concurrency and rate limits of key (a flow key, [AllFlowKeys] for the defaults, or ""
// for the queue's rate). Keys it held back run again at the next pickup.
func (a *Admin) ClearLimits(ctx context.Context, key string) error {
	if err := limitKey("ClearLimits", key, true); err != nil {
		return err
	}
	if key == "" {
		return a.setLimit(ctx, "clear", "q", "")
	}
	return a.setLimit(ctx, "clear", "c:"+key, "r:"+key)
}

func (a *Admin) setLimit(ctx context.Context, op, f1, f2 string) error {
	return a.everyShard(func(q *RedisTaskQueue) error {
		n, err := limitsScript.Run(ctx, q.rdb, q.limitsKeys(), op, MaxFlowLimits, f1, f2).Int()
		if err != nil {
			return fmt.Errorf("taskqueue: limits: %w", classify(err))
		}
		if n < 0 {
			return fmt.Errorf("%w: a queue holds at most %d limits (MaxFlowLimits)", ErrInvalidLimit, MaxFlowLimits)
		}
		return nil
	})
}

// Limits lists the queue's limits (of its first shard, for a [ShardedQueue]: every shard holds the same), sorted
// by key.
func (a *Admin) Limits(ctx context.Context) ([]FlowLimit, error) {
	raw, err := a.shards[0].rdb.HGetAll(ctx, a.shards[0].keys.key(keyLimits)).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: limits: %w", classify(err))
	}
	return parseLimits(raw), nil
}

func parseLimits(raw map[string]string) []FlowLimit {
	by := map[string]*FlowLimit{}
	get := func(k string) *FlowLimit {
		if by[k] == nil {
			by[k] = &FlowLimit{Key: k}
		}
		return by[k]
	}
	for f, v := range raw {
		switch {
		case strings.HasPrefix(f, "c:"):
			get(f[2:]).Concurrency, _ = strconv.Atoi(v)
		case strings.HasPrefix(f, "r:"), f == "q":
			k := ""
			if f != "q" {
				k = f[2:]
			}
			n, p, _ := strings.Cut(v, "/")
			l := get(k)
			l.Rate, _ = strconv.Atoi(n)
			ms, _ := strconv.ParseInt(p, 10, 64)
			l.Period = time.Duration(ms) * time.Millisecond
		}
	}
	out := make([]FlowLimit, 0, len(by))
	for _, l := range by {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(x, y FlowLimit) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// FlowState reports the limits, the slots held per key and the keys held back, summed over the shards of a
// [ShardedQueue].
func (a *Admin) FlowState(ctx context.Context) (FlowState, error) {
	return a.flowState(ctx, MaxFlowStateScan)
}

// flowState is FlowState reading at most limit keys of each of a shard's per-key hashes.
func (a *Admin) flowState(ctx context.Context, limit int) (FlowState, error) {
	st := FlowState{Running: map[string]int{}}
	lim, err := a.Limits(ctx)
	if err != nil {
		return st, err
	}
	st.Limits = lim
	err = a.everyShard(func(q *RedisTaskQueue) error {
		var ready *redis.IntCmd
		scans, err := scanHashes(ctx, q.rdb, limit, func(p redis.Pipeliner) {
			ready = p.ZCard(ctx, q.keys.key(keyFlowReady))
		}, q.keys.key(keyFlowRun), q.keys.key(keyFlowState))
		if err != nil {
			return err
		}
		run, state := scans[0].fields, scans[1].fields
		for k, v := range run {
			n, _ := strconv.Atoi(v)
			st.Running[k] += n
		}
		for k, v := range state {
			switch v {
			case "f":
				st.AtLimit = append(st.AtLimit, k)
			case "w":
				st.OverRate = append(st.OverRate, k)
			}
		}
		st.Ready += ready.Val()
		st.Truncated = st.Truncated || scans[0].cut || scans[1].cut
		return nil
	})
	slices.Sort(st.AtLimit)
	st.AtLimit = slices.Compact(st.AtLimit)
	slices.Sort(st.OverRate)
	st.OverRate = slices.Compact(st.OverRate)
	return st, err
}

// hashScan is one hash that scanHashes reads: the fields read so far and where its HSCAN goes on.
type hashScan struct {
	key       string
	cursor    uint64
	fields    map[string]string
	done, cut bool
}

// scanHashes reads the hashes keys with HSCAN in steps of flowStateStep, one pipeline per step for every hash not
// read to its end (the first pipeline also runs first), at most limit fields of each (cut when it stopped there).
// Small hashes take one round trip in all. A field that HSCAN returns twice (a rehash between steps) is kept once.
func scanHashes(ctx context.Context, rdb redis.UniversalClient, limit int, first func(redis.Pipeliner), keys ...string) ([]*hashScan, error) {
	scans := make([]*hashScan, len(keys))
	for i, k := range keys {
		scans[i] = &hashScan{key: k, fields: map[string]string{}}
	}
	for step := 0; ; step++ {
		cmds := make([]*redis.ScanCmd, len(scans))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if step == 0 && first != nil {
				first(p)
			}
			for i, sc := range scans {
				if !sc.done {
					cmds[i] = p.HScan(ctx, sc.key, sc.cursor, "", flowStateStep)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("taskqueue: flow state: %w", classify(err))
		}
		more := false
		for i, sc := range scans {
			if cmds[i] == nil {
				continue
			}
			kv, next := cmds[i].Val()
			for j := 0; j+1 < len(kv); j += 2 {
				sc.fields[kv[j]] = kv[j+1]
			}
			sc.cursor = next
			switch {
			case next == 0:
				sc.done = true
			case len(sc.fields) >= limit:
				sc.done, sc.cut = true, true
			default:
				more = true
			}
		}
		if !more {
			return scans, nil
		}
	}
}

// flowBase is the base token by which ack.lua names a pickup batch: negated for a batch that leased keyed tasks,
// whose slots the ack gives back (the call then passes keySet.ackFlow).
func flowBase(base int64, keyed bool) int64 {
	if keyed {
		return -base
	}
	return base
}

// batchKeyed reports whether one of the deliveries ds[i], i in idx, carries a flow key.
func batchKeyed(ds []*Delivery, idx []int) bool {
	return slices.ContainsFunc(idx, func(i int) bool { return ds[i].Spec.FlowKey != "" })
}

// runDequeue runs the pickup script: dequeue.lua, or dequeue_flow.lua once the queue was seen to use flow keys or
// limits. dequeue.lua answers {0, -2, 0}, having written nothing, when it finds that the queue does: the call is
// then made again with dequeue_flow.lua, and every later pickup of this queue makes it at once (dequeue_flow.lua
// serves every queue, and a queue whose limits are cleared keeps it).
func (q *RedisTaskQueue) runDequeue(ctx context.Context, n int) ([]any, error) {
	args := []any{n, q.cfg.Lease.Milliseconds(), q.cfg.PromoteBatch}
	if q.flowPickup.Load() {
		return dequeueFlowScript.Run(ctx, q.rdb, q.keys.all, args...).Slice()
	}
	res, err := dequeueScript.Run(ctx, q.rdb, q.keys.all, args...).Slice()
	if err != nil || len(res) != 3 {
		return res, err
	}
	if v, _ := res[1].(int64); v != -2 {
		return res, nil
	}
	q.flowPickup.Store(true)
	return dequeueFlowScript.Run(ctx, q.rdb, q.keys.all, args...).Slice()
}

// rangeKeyed appends to out the ids of the ready keyed tasks from start to stop (0-based, inclusive; negative
// start counts as 0), in key order then FIFO within a key: what Admin.List shows after the ready lists.
func (q *RedisTaskQueue) rangeKeyed(ctx context.Context, out []string, start, stop int64) ([]string, error) {
	start = max(start, 0)
	if stop < start {
		return out, nil
	}
	ms, err := q.rdb.ZRange(ctx, q.keys.key(keyFlowReady), start, stop).Result()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if _, rest, ok := strings.Cut(m, " "); ok && len(rest) > 15 {
			out = append(out, rest[15:])
		}
	}
	return out, nil
}
