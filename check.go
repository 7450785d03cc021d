package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// MinRedisVersion is the oldest Redis server the queue runs on: its scripts use LPOP with a count (Redis 6.2).
const MinRedisVersion = "6.2.0"

var minRedis = [3]int{6, 2, 0}

// CheckReport is what [Admin.Check] found out about the Redis server.
type CheckReport struct {
	// Version is the server's redis_version, "" when the server did not tell.
	Version string
	// EvictionPolicy is the server's maxmemory-policy, "" when the server did not tell.
	EvictionPolicy string
	// MaxMemory is the server's maxmemory in bytes; 0 means no limit (or unknown).
	MaxMemory int64
	// Warnings lists what can cost tasks or what could not be checked, in plain words. Each one was also logged.
	Warnings []string
	// Primaries lists the addresses of the primaries checked on a Cluster (every one, sorted); empty for a
	// single-node or Sentinel client, which is checked on the server it talks to.
	Primaries []string
}

// check reads the Redis server's version and eviction policy in one round trip (INFO server and INFO memory,
// which an ACL user needs only +info for; CONFIG is not used, since managed and least-privilege deployments refuse
// it). It returns a [*RedisVersionError] (wrapping [ErrRedisTooOld]) for a server older than [MinRedisVersion],
// and an error wrapping [ErrPermission] when the user may not run INFO. An eviction policy that can drop keys
// without a TTL (allkeys-lru, allkeys-lfu, allkeys-random) would silently lose tasks: it is reported in
// [CheckReport.Warnings] and logged, not refused. A server that does not answer INFO (some proxies and fakes) is
// a warning too, not an error. On a [redis.ClusterClient] every primary is checked (the queue may move to any of
// them after a failover or a resharding) and [CheckReport.Primaries] lists them. Workers check when they start
// ([WorkerMainConfig.Run]); operators call [Admin.Check].
func (q *RedisTaskQueue) check(ctx context.Context) (CheckReport, error) {
	var rep CheckReport
	var err error
	if cc, ok := q.rdb.(*redis.ClusterClient); ok {
		rep, err = checkCluster(ctx, cc)
	} else {
		rep, err = checkNode(ctx, q.rdb)
	}
	for _, w := range rep.Warnings {
		q.cfg.Logger.WarnContext(ctx, "taskqueue: "+w, slog.String("key_prefix", q.prefix))
	}
	return rep, err
}

// checkNode reads INFO server and INFO memory from one server in one round trip.
func checkNode(ctx context.Context, rdb redis.Cmdable) (CheckReport, error) {
	var server, memory *redis.StringCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		server = p.Info(ctx, "server")
		memory = p.Info(ctx, "memory")
		return nil
	})
	// A failed connection (refused credentials among others) may fail the pipeline without failing its commands;
	// an error reply to one command only fails that command.
	if err != nil && !isReplyError(err) {
		return CheckReport{}, fmt.Errorf("taskqueue: check: %w", classify(err))
	}
	return checkInfo(server.Val(), server.Err(), memory.Val(), memory.Err())
}

// checkCluster checks every primary of a Cluster, since a queue may live on any of them (and a sharded queue on
// all): the report holds the oldest version found, the first eviction policy that can drop tasks (else the
// policy of the primaries), each primary's warnings prefixed with its address, and the primaries checked. A
// primary too old fails the check.
func checkCluster(ctx context.Context, cc *redis.ClusterClient) (CheckReport, error) {
	var mu sync.Mutex
	var reps []CheckReport
	var errs []error
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		addr := node.Options().Addr
		rep, err := checkNode(ctx, node)
		for i, w := range rep.Warnings {
			rep.Warnings[i] = "primary " + addr + ": " + w
		}
		rep.Primaries = []string{addr}
		mu.Lock()
		defer mu.Unlock()
		reps = append(reps, rep)
		if err != nil {
			errs = append(errs, fmt.Errorf("primary %s: %w", addr, err))
		}
		return nil
	})
	if err != nil {
		return CheckReport{}, fmt.Errorf("taskqueue: check: %w", classify(err))
	}
	slices.SortFunc(reps, func(a, b CheckReport) int { return strings.Compare(a.Primaries[0], b.Primaries[0]) })
	var out CheckReport
	oldest := [3]int{1 << 30}
	for _, r := range reps {
		out.Primaries = append(out.Primaries, r.Primaries...)
		out.Warnings = append(out.Warnings, r.Warnings...)
		if v, ok := parseVersion(r.Version); ok && versionLess(v, oldest) {
			oldest, out.Version = v, r.Version
		}
		if out.EvictionPolicy == "" || (evictsAnyKey(r.EvictionPolicy) && !evictsAnyKey(out.EvictionPolicy)) {
			out.EvictionPolicy, out.MaxMemory = r.EvictionPolicy, r.MaxMemory
		}
	}
	return out, errors.Join(errs...)
}

// checkInfo builds the report from the text of INFO server and INFO memory and the errors their calls got (reply
// errors only: the server answered). It holds every decision of [Admin.Check], so tests feed it
// captured INFO text.
func checkInfo(server string, serverErr error, memory string, memoryErr error) (CheckReport, error) {
	var rep CheckReport
	if serverErr != nil {
		rep.Warnings = append(rep.Warnings, "could not read the Redis version (INFO server: "+truncate(serverErr.Error(), 200)+
			"); the queue needs "+MinRedisVersion+" or newer")
	} else {
		rep.Version = truncate(infoField(server, "redis_version"), 64)
		v, ok := parseVersion(rep.Version)
		switch {
		case !ok:
			rep.Warnings = append(rep.Warnings, "could not parse the Redis version "+quote(rep.Version)+
				"; the queue needs "+MinRedisVersion+" or newer")
		case versionLess(v, minRedis):
			return rep, &RedisVersionError{Found: rep.Version, Need: MinRedisVersion}
		}
	}
	if memoryErr != nil {
		rep.Warnings = append(rep.Warnings, "could not read the eviction policy (INFO memory: "+truncate(memoryErr.Error(), 200)+
			"); a policy of allkeys-* would drop tasks")
		return rep, nil
	}
	rep.EvictionPolicy = truncate(infoField(memory, "maxmemory_policy"), 64)
	rep.MaxMemory, _ = strconv.ParseInt(infoField(memory, "maxmemory"), 10, 64)
	switch {
	case rep.EvictionPolicy == "":
		rep.Warnings = append(rep.Warnings, "the Redis server did not report its eviction policy; a policy of allkeys-* would drop tasks")
	case evictsAnyKey(rep.EvictionPolicy):
		rep.Warnings = append(rep.Warnings, "eviction policy "+rep.EvictionPolicy+" can drop tasks when Redis reaches maxmemory; "+
			"use noeviction (or a volatile-* policy, which never evicts the queue's keys: they have no TTL)")
	}
	return rep, nil
}

// evictsAnyKey reports whether a maxmemory-policy may evict keys without a TTL, such as the queue's.
func evictsAnyKey(policy string) bool {
	return strings.HasPrefix(strings.ToLower(policy), "allkeys-")
}

// infoField returns the value of field in INFO text ("field:value" lines), or "".
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		if ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseVersion reads "major.minor[.patch]" with an optional suffix after the numbers ("7.2.4-rc1").
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return v, false
	}
	for i, p := range parts {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		n, err := strconv.Atoi(p[:end])
		if err != nil || (i < 2 && end != len(p)) {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

func versionLess(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
