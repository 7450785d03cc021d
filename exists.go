package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrQueueNotFound is returned by [Admin.RequireExists] (inside a [*QueueNotFoundError]) when none of the queue's
// keys exists: nothing was ever written under its key prefix in that database, or everything was removed. A
// wrong key prefix or database number usually looks like this; an empty queue that has been used does not
// (see [Admin.Exists]).
var ErrQueueNotFound = errors.New("taskqueue: queue not found")

// ErrNoResolvers is returned by [TaskWorker.Start] (wrapped with [ErrInvalidConfig]) for a worker of a
// [RedisTaskQueue] or [ShardedQueue] whose registry could resolve no task: it holds no resolver, or only
// [ReferenceResolver]s with no function registered. Such a worker would park every task it picks up.
var ErrNoResolvers = errors.New("taskqueue: no resolver registered")

// QueueNotFoundError is the error of [Admin.RequireExists] for a queue with no key. It wraps [ErrQueueNotFound].
type QueueNotFoundError struct {
	// Prefix is the key prefix of the queue looked for.
	Prefix string
	// Found holds key prefixes of other queues seen in the same database by a bounded scan ([Admin.FindQueues]),
	// sorted; it may be incomplete, and is empty when the scan was not allowed (ACL) or found none.
	Found []string
}

func (e *QueueNotFoundError) Error() string {
	msg := fmt.Sprintf("taskqueue: queue %s not found: none of its keys exists (wrong key prefix or database?)", quote(e.Prefix))
	if len(e.Found) > 0 {
		msg += "; queues found in this database: " + strings.Join(e.Found, ", ")
	}
	return msg
}

// Unwrap returns [ErrQueueNotFound].
func (e *QueueNotFoundError) Unwrap() error { return ErrQueueNotFound }

// Exists reports whether any of the queue's twenty keys exists (docs/redis-keys.md), in one EXISTS per shard
// (the keys share one slot); a sharded queue exists when any shard does. A queue exists from its first enqueue
// or pause on: a queue that has delivered a task keeps its seq and epoch keys for good, even once empty, and one
// whose tasks were enqueued and then purged before any pickup keeps its wake list until a worker takes the
// wake-up. A queue that no key shows is one nothing was ever written to, under this prefix in this database, or
// one whose keys were all deleted by hand.
func (a *Admin) Exists(ctx context.Context) (bool, error) {
	found := make([]bool, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) error {
		n, err := q.rdb.Exists(ctx, q.keys.all...).Result()
		found[k] = n > 0
		return classify(err)
	})
	if slices.Contains(found, true) {
		return true, nil
	}
	return false, err
}

// findQueuesSteps bounds the SCAN of FindQueues: at most this many calls of COUNT findQueuesCount per node.
const (
	findQueuesSteps = 10
	findQueuesCount = 1000
)

// FindQueues returns up to limit key prefixes of queues in the database that holds the queue (shard 0's; every
// primary of a Cluster), sorted, for a hint when [Admin.Exists] finds nothing. It is bounded, not complete: a few
// SCAN calls per node (MATCH "{*}:*", COUNT 1000, at most ten per node, never KEYS), and a key counts only when
// its name is one of a queue's twenty keys. SCAN is not restricted by ACL key patterns, so users limited to
// one queue are usually not allowed it: the error then wraps [ErrPermission].
func (a *Admin) FindQueues(ctx context.Context, limit int) ([]string, error) {
	if limit < 1 {
		return nil, nil
	}
	var (
		mu    sync.Mutex
		found = map[string]bool{}
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for range findQueuesSteps {
			keys, next, err := c.Scan(ctx, cursor, "{*}:*", findQueuesCount).Result()
			if err != nil {
				return classify(err)
			}
			mu.Lock()
			for _, key := range keys {
				if p, ok := queuePrefixOf(key); ok && len(found) < limit {
					found[p] = true
				}
			}
			full := len(found) >= limit
			mu.Unlock()
			if cursor = next; cursor == 0 || full {
				return nil
			}
		}
		return nil
	}
	var err error
	switch c := a.shards[0].rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	default:
		err = scan(ctx, c)
	}
	out := make([]string, 0, len(found))
	for p := range found {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, err
}

// queuePrefixOf returns the key prefix of a queue key "{prefix}:<one of keySuffixes>".
func queuePrefixOf(key string) (string, bool) {
	end := strings.Index(key, "}:")
	if !strings.HasPrefix(key, "{") || end < 2 || !slices.Contains(keySuffixes[:], key[end+2:]) {
		return "", false
	}
	p := key[1:end]
	return p, validateKeyPrefix(p) == nil
}

// RequireExists returns nil when the queue exists ([Admin.Exists]), and otherwise a [*QueueNotFoundError]
// (wrapping [ErrQueueNotFound]) that names the prefix and up to ten other queues found by [Admin.FindQueues]
// (none when the scan is not allowed). An error of the EXISTS call itself is returned as it is: one wrapping
// [ErrPermission] means the user may not run EXISTS, and says nothing about the queue.
func (a *Admin) RequireExists(ctx context.Context) error {
	ok, err := a.Exists(ctx)
	if err != nil || ok {
		return err
	}
	found, _ := a.FindQueues(ctx, 10) // only a hint: a refused or failed scan leaves it out
	return &QueueNotFoundError{Prefix: a.prefix, Found: found}
}

// registryOf returns the registry a worker of q resolves tasks with, or nil for a queue without one (a
// [MemoryQueue] holds executables, and other implementations are their own business).
func registryOf(q TaskQueue) *ResolverRegistry {
	switch q := q.(type) {
	case *RedisTaskQueue:
		if q != nil {
			return q.reg
		}
	case *ShardedQueue:
		if q != nil && len(q.shards) > 0 {
			return q.shards[0].reg
		}
	}
	return nil
}

// checkResolvers returns an error wrapping [ErrInvalidConfig] and [ErrNoResolvers] when reg can resolve no task:
// it is nil, holds no resolver, or holds only [ReferenceResolver]s with no function. A worker with such a
// registry would park every task; [TaskWorker.Start] and [RunWorkerMain] refuse it.
func checkResolvers(reg *ResolverRegistry) error {
	if reg == nil {
		return fmt.Errorf("%w: %w: nil registry", ErrInvalidConfig, ErrNoResolvers)
	}
	ids := reg.IDs()
	if len(ids) == 0 {
		return fmt.Errorf("%w: %w: the registry is empty: register the resolvers (and their functions) before starting the worker", ErrInvalidConfig, ErrNoResolvers)
	}
	for _, id := range ids {
		res, err := reg.Lookup(id)
		if err != nil {
			continue
		}
		if ref, ok := res.(*ReferenceResolver); !ok || ref.count() > 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: %w: no function is registered in the reference resolver (%s): register the worker's functions before starting it", ErrInvalidConfig, ErrNoResolvers, strings.Join(ids, ", "))
}

// count returns how many functions r holds.
func (r *ReferenceResolver) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.funcs)
}

// clientWhere describes where rdb connects, for a log line: "host:port db N" for a single node (Sentinel: the
// master name), the seed addresses of a Cluster.
func clientWhere(rdb redis.UniversalClient) string {
	switch c := rdb.(type) {
	case *redis.Client:
		o := c.Options()
		if o.Network == "unix" {
			return fmt.Sprintf("unix:%s db %d", o.Addr, o.DB)
		}
		return fmt.Sprintf("%s db %d", o.Addr, o.DB)
	case *redis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",") + " db 0"
	}
	return "Redis"
}

// existsProbeTimeout bounds the start-up check of a worker's queue.
const existsProbeTimeout = 10 * time.Second

// queueProbe is a worker's start-up look at its queue: a warning in the log when the queue has no key, which
// usually means a wrong key prefix or database. It never fails the worker (a fresh deployment starts workers
// before producers), and runs in the background, so that Start never waits for Redis.
type queueProbe struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startQueueProbe starts the probe of w's queue (of each queue of a [MultiQueue], one after another), or returns
// nil for a queue that is not in Redis.
func (w *TaskWorker) startQueueProbe() *queueProbe {
	var admins []*Admin
	queues := []TaskQueue{w.q}
	if m, ok := w.q.(*MultiQueue); ok {
		queues = m.Queues()
	}
	for _, q := range queues {
		target, ok := q.(AdminTarget)
		if !ok || registryOf(q) == nil {
			continue
		}
		if a, err := NewAdmin(target); err == nil {
			admins = append(admins, a)
		}
	}
	if len(admins) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), existsProbeTimeout)
	p := &queueProbe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer cancel()
		for _, a := range admins {
			w.probeQueue(ctx, a)
		}
	}()
	return p
}

// probeQueue checks that a's queue has keys, and logs a warning when it has none.
func (w *TaskWorker) probeQueue(ctx context.Context, a *Admin) {
	err := a.RequireExists(ctx)
	var nf *QueueNotFoundError
	switch {
	case errors.As(err, &nf):
		attrs := []any{slog.String("worker", w.cfg.Name), slog.String("key_prefix", a.prefix), slog.String("redis", clientWhere(a.shards[0].rdb))}
		if len(nf.Found) > 0 {
			attrs = append(attrs, slog.String("queues_found", strings.Join(nf.Found, ",")))
		}
		w.cfg.Logger.Warn(fmt.Sprintf("taskqueue: queue %s has no keys on %s: wrong prefix or DB? (fine if no producer has written to it yet)",
			quote(a.prefix), clientWhere(a.shards[0].rdb)), attrs...)
	case err == nil:
		w.cfg.Logger.Debug("taskqueue: queue has keys", slog.String("worker", w.cfg.Name), slog.String("key_prefix", a.prefix))
	case ctx.Err() == nil:
		w.cfg.Logger.Debug("taskqueue: queue existence check skipped", slog.String("worker", w.cfg.Name), slog.Any("error", err))
	}
}

// stop ends the probe and waits for it.
func (p *queueProbe) stop() {
	if p != nil {
		p.cancel()
		<-p.done
	}
}
