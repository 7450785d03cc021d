//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// The cluster tier (make test-cluster, docs/scaling.md): Redis Clusters and Sentinel groups made of redis-server
// processes that the tests start themselves on free loopback ports, and stop by pid. Nothing here touches a Redis
// the tests did not start; every wait is bounded in time.

// go-redis logs every failed dial while a node is down, hundreds of lines per failover test: the tests report
// what matters themselves.
func init() { redis.SetLogger(discardRedisLog{}) }

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

// redisProc is one redis-server process owned by a test.
type redisProc struct {
	*redistest.Server
	addr string
	port int
	bus  int // the Cluster bus port, 0 outside a Cluster
}

// kill ends the process with SIGKILL and waits until it is gone. Killing twice does no harm.
func (p *redisProc) kill() { p.Kill() }

// loopbackPort returns a free loopback port other than 6379, which may hold someone else's data.
func loopbackPort(t testing.TB) int {
	t.Helper()
	port, err := redistest.FreePort()
	require.NoError(t, err)
	return port
}

// startProc starts redis-server with args (plus port, bind, dir and log file; a first argument that is not a flag
// is a configuration file), waits until it answers PING and registers its kill with t.Cleanup.
func startProc(t testing.TB, dir string, port int, args ...string) *redisProc {
	t.Helper()
	o := redistest.Options{Dir: dir, Port: port}
	if len(args) > 0 && !strings.HasPrefix(args[0], "--") {
		o.Config, args = args[0], args[1:]
	}
	o.Args = append(append([]string{}, args...), "--loglevel", "notice")
	srv := redistest.Run(t, o)
	return &redisProc{Server: srv, addr: srv.Addr, port: srv.Port}
}

// testCluster is a Redis Cluster of primaries, each with its replicas, on loopback.
type testCluster struct {
	t         testing.TB
	dir       string
	primaries []*redisProc
	replicas  []*redisProc // replica i*perPrimary+j follows primary i
}

// startCluster starts a Cluster of n primaries with replicas replicas each: the 16384 slots split evenly between
// the primaries, every node meets every other, each replica follows its primary, and it returns once every node
// reports cluster_state:ok and every replica's link to its primary is up.
func startCluster(t testing.TB, n, replicas int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir()}
	start := func() *redisProc {
		port, bus := loopbackPort(t), loopbackPort(t)
		p := startProc(t, c.dir, port, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(c.dir, fmt.Sprintf("nodes-%d.conf", port)),
			"--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no")
		p.bus = bus
		return p
	}
	for range n {
		c.primaries = append(c.primaries, start())
	}
	for range n * replicas {
		c.replicas = append(c.replicas, start())
	}
	ctx := context.Background()
	all := c.nodes()
	first := c.node(all[0].addr)
	defer first.Close()
	for i, p := range c.primaries {
		lo, hi := i*16384/n, (i+1)*16384/n-1
		nc := c.node(p.addr)
		require.NoError(t, nc.ClusterAddSlotsRange(ctx, lo, hi).Err())
		_ = nc.Close()
	}
	for _, p := range all[1:] {
		require.NoError(t, first.Do(ctx, "cluster", "meet", "127.0.0.1", p.port, p.bus).Err())
	}
	c.waitKnown(len(all))
	for i, r := range c.replicas {
		pc := c.node(c.primaries[i/replicas].addr)
		id, err := pc.ClusterMyID(ctx).Result()
		_ = pc.Close()
		require.NoError(t, err)
		rc := c.node(r.addr)
		require.NoError(t, rc.Do(ctx, "cluster", "replicate", id).Err())
		_ = rc.Close()
	}
	c.waitHealthy(30 * time.Second)
	return c
}

func (c *testCluster) nodes() []*redisProc {
	return append(append([]*redisProc{}, c.primaries...), c.replicas...)
}

// node returns a client of one node (not Cluster-aware), which the caller closes.
func (c *testCluster) node(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
}

// client returns a Cluster client, closed when the test ends.
func (c *testCluster) client(opts *redis.ClusterOptions) *redis.ClusterClient {
	o := redis.ClusterOptions{}
	if opts != nil {
		o = *opts
	}
	for _, p := range c.primaries {
		o.Addrs = append(o.Addrs, p.addr)
	}
	cc := redis.NewClusterClient(&o)
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// waitKnown waits until every node knows n nodes.
func (c *testCluster) waitKnown(n int) {
	c.t.Helper()
	for _, p := range c.nodes() {
		nc := c.node(p.addr)
		waitFor(c.t, 20*time.Second, "node "+p.addr+" to know every node", func() bool {
			s, err := nc.ClusterNodes(context.Background()).Result()
			return err == nil && strings.Count(strings.TrimSpace(s), "\n")+1 == n && !strings.Contains(s, "handshake")
		})
		_ = nc.Close()
	}
}

// waitHealthy waits until every live node reports cluster_state:ok and agrees on who serves the slots, and every
// live replica has its link to its primary up.
func (c *testCluster) waitHealthy(timeout time.Duration) {
	c.t.Helper()
	for _, p := range c.nodes() {
		if isClosed(p.Exited()) {
			continue
		}
		nc := c.node(p.addr)
		waitFor(c.t, timeout, "cluster_state:ok on "+p.addr, func() bool {
			info, err := nc.ClusterInfo(context.Background()).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			repl, err := nc.Info(context.Background(), "replication").Result()
			return err == nil && (strings.Contains(repl, "role:master") || strings.Contains(repl, "master_link_status:up"))
		})
		_ = nc.Close()
	}
}

// primaryFor returns the process of the primary that serves key now (as that node sees it).
func (c *testCluster) primaryFor(t testing.TB, cc *redis.ClusterClient, key string) *redisProc {
	t.Helper()
	node, err := cc.MasterForKey(context.Background(), key)
	require.NoError(t, err)
	for _, p := range c.nodes() {
		if p.addr == node.Options().Addr {
			return p
		}
	}
	t.Fatalf("no node at %s", node.Options().Addr)
	return nil
}

// replicaOf returns a live replica of the primary at addr, as the primary reports it.
func (c *testCluster) replicaOf(t testing.TB, primary *redisProc) *redisProc {
	t.Helper()
	nc := c.node(primary.addr)
	defer nc.Close()
	info, err := nc.Info(context.Background(), "replication").Result()
	require.NoError(t, err)
	for _, p := range c.nodes() {
		if p != primary && !isClosed(p.Exited()) && strings.Contains(info, "port="+strconv.Itoa(p.port)+",") {
			return p
		}
	}
	t.Fatalf("no live replica of %s", primary.addr)
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// testSentinel is a primary, its replicas and three sentinels watching them, on loopback.
type testSentinel struct {
	t         testing.TB
	dir       string
	master    string // the name the sentinels monitor
	primary   *redisProc
	replicas  []*redisProc
	sentinels []*redisProc
}

// startSentinel starts one primary, replicas replicas and three sentinels (quorum 2, down after 1s), and returns
// once every sentinel sees the replicas and the other sentinels.
func startSentinel(t testing.TB, replicas int) *testSentinel {
	t.Helper()
	s := &testSentinel{t: t, dir: t.TempDir(), master: "tq"}
	s.primary = startProc(t, s.dir, loopbackPort(t), "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
	for range replicas {
		s.replicas = append(s.replicas, startProc(t, s.dir, loopbackPort(t), "--save", "", "--appendonly", "no",
			"--replicaof", "127.0.0.1", strconv.Itoa(s.primary.port)))
	}
	for range 3 {
		port := loopbackPort(t)
		conf := filepath.Join(s.dir, fmt.Sprintf("sentinel-%d.conf", port))
		body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 1000\n"+
			"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n", s.master, s.primary.port, s.master, s.master, s.master)
		require.NoError(t, os.WriteFile(conf, []byte(body), 0o600))
		s.sentinels = append(s.sentinels, startProc(t, s.dir, port, conf, "--sentinel"))
	}
	// A replica that the sentinels see may not hold the data yet: its first full sync waits for the primary's
	// diskless-sync delay (5 s by default in 7.0) and a failover in that window promotes an empty replica (found
	// 2026-12-06: TestSentinelFailoverUniqueAndSchedules promoted one in wait_bgsave and lost every key). So the
	// set-up returns only once every replica's link to the primary is up.
	for _, r := range s.replicas {
		rc := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
		waitFor(t, 30*time.Second, "replica "+r.addr+" in sync with the primary", func() bool {
			info, err := rc.Info(context.Background(), "replication").Result()
			return err == nil && strings.Contains(info, "master_link_status:up")
		})
		_ = rc.Close()
	}
	for _, sp := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: sp.addr, MaxRetries: -1})
		waitFor(t, 30*time.Second, "sentinel "+sp.addr+" to see the group", func() bool {
			m, err := sc.Master(context.Background(), s.master).Result()
			return err == nil && m["num-slaves"] == strconv.Itoa(replicas) && m["num-other-sentinels"] == "2"
		})
		_ = sc.Close()
	}
	return s
}

func (s *testSentinel) sentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.addr
	}
	return out
}

// client returns a Sentinel-managed failover client, closed when the test ends.
func (s *testSentinel) client(opts *redis.FailoverOptions) *redis.Client {
	o := redis.FailoverOptions{}
	if opts != nil {
		o = *opts
	}
	o.MasterName, o.SentinelAddrs = s.master, s.sentinelAddrs()
	rdb := redis.NewFailoverClient(&o)
	s.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// currentPrimary asks a sentinel for the address of the primary.
func (s *testSentinel) currentPrimary(t testing.TB) string {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].addr, MaxRetries: -1})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(context.Background(), s.master).Result()
	require.NoError(t, err)
	return addr[0] + ":" + addr[1]
}

// slotMove is what one migrateSlot did, for the test's report.
type slotMove struct {
	start   time.Time     // the first SETSLOT (IMPORTING on the target)
	took    time.Duration // from the first SETSLOT until every node had SETSLOT NODE
	keys    int           // keys moved
	batches int           // MIGRATE calls
}

// migrateSlot moves slot from the primary from to the primary to while clients keep using it, with the protocol of
// the Redis Cluster specification (what redis-cli --cluster reshard does): CLUSTER SETSLOT IMPORTING on the target,
// MIGRATING on the source, then CLUSTER GETKEYSINSLOT and MIGRATE ... KEYS in batches of batch keys until the slot
// is empty on the source, then CLUSTER SETSLOT NODE on the target, the source and every other primary. Bounded: at
// most 100000 batches and 60 s.
func (c *testCluster) migrateSlot(t testing.TB, slot int, from, to *redisProc, batch int) slotMove {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, dst := c.node(from.addr), c.node(to.addr)
	defer src.Close()
	defer dst.Close()
	srcID, err := src.ClusterMyID(ctx).Result()
	require.NoError(t, err)
	dstID, err := dst.ClusterMyID(ctx).Result()
	require.NoError(t, err)
	m := slotMove{start: time.Now()}
	require.NoError(t, dst.Do(ctx, "cluster", "setslot", slot, "importing", srcID).Err())
	require.NoError(t, src.Do(ctx, "cluster", "setslot", slot, "migrating", dstID).Err())
	for m.batches = 0; ; m.batches++ {
		require.Less(t, m.batches, 100000, "slot %d never emptied on %s", slot, from.addr)
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, batch).Result()
		require.NoError(t, err)
		if len(keys) == 0 {
			break
		}
		args := []any{"migrate", "127.0.0.1", to.port, "", 0, 5000, "keys"}
		for _, k := range keys {
			args = append(args, k)
		}
		// NOKEY: the keys were deleted (a task settled) between GETKEYSINSLOT and MIGRATE.
		if err := src.Do(ctx, args...).Err(); err != nil && !strings.Contains(err.Error(), "NOKEY") {
			require.NoError(t, err, "MIGRATE of slot %d", slot)
		}
		m.keys += len(keys)
	}
	// The target first, so that the slot never has no owner; then the source, which from now on answers MOVED;
	// then the others (gossip would tell them too, later).
	require.NoError(t, dst.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err())
	require.NoError(t, src.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err())
	for _, p := range c.primaries {
		if p != from && p != to && !isClosed(p.Exited()) {
			nc := c.node(p.addr)
			require.NoError(t, nc.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err())
			_ = nc.Close()
		}
	}
	m.took = time.Since(m.start)
	return m
}
