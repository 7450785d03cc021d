package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// BenchmarkRedisCPUAttribution tells where the Redis CPU of a task's lifecycle goes (docs/benchmarks.md, "Where
// the Redis CPU goes"). On a redis-server of its own it runs lifecycles of attrTasks tasks through the queue's
// calls at fixed batch sizes (EnqueueBatch of 100, one call each; Dequeue of 100; Ack of 25 positions of
// one pickup, about what the worker's acks carry; one ExtendLeases per pickup, counted apart), each after a
// warm-up that fills the settled window, as in a long drain. Every figure is Redis's own accounting, not wall
// clock, and the median over ATTR_REPS repetitions (default 5):
//
//   - lifecycle: INFO cpu (user + sys) over enqueue + dequeue + ack, per task; of it, the scripts' time
//     (commandstats of EVALSHA) and the rest, outside the scripts (reading, parsing, answering the calls);
//     "worker" is the same lifecycle drained by a TaskWorker (concurrency 100) instead;
//   - per script: its time per task (commandstats read around each call), and of it the part inside its
//     redis.calls (the commands a script calls are counted in commandstats too), the rest being Lua glue;
//   - per variant: the real scripts with one part taken out (a textual edit of lua/*.lua, checked to apply).
//     Within one lifecycle the calls of an edited script alternate between the real script and the variant, so
//     that the machine's load weighs on both alike; the difference is what that part costs per task.
//
// Run: go test -run '^$' -bench RedisCPUAttribution -benchtime 1x . (ATTR_VARIANTS=no-promote,no-epoch picks
// some).
func BenchmarkRedisCPUAttribution(b *testing.B) {
	if v, err := strconv.Atoi(os.Getenv("ATTR_TASKS")); err == nil && v >= 1000 {
		attrTasks = v / 1000 * 1000
	}
	reps := 5
	if v, err := strconv.Atoi(os.Getenv("ATTR_REPS")); err == nil && v > 0 {
		reps = v
	}
	variants := attrVariants
	if pick := os.Getenv("ATTR_VARIANTS"); pick != "" {
		variants = nil
		for _, v := range attrVariants {
			if slices.Contains(strings.Split(pick, ","), v.name) {
				variants = append(variants, v)
			}
		}
	}
	srv := redistest.Run(b, redistest.Options{Args: redistest.NoPersistence})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	var whole, worker []attrWhole
	results := map[string][]attrSplit{}
	for b.Loop() {
		for r := range reps {
			order := slices.Clone(variants)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			whole = append(whole, runWhole(b, rdb, false))
			worker = append(worker, runWhole(b, rdb, true))
			for _, v := range order {
				results[v.name] = append(results[v.name], runSplit(b, rdb, v))
			}
		}
	}
	var out strings.Builder
	med := func(n int, f func(i int) float64) float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return median(v)
	}
	for _, w := range []struct {
		name string
		ss   []attrWhole
	}{{"direct calls", whole}, {"worker", worker}} {
		ss := w.ss
		fmt.Fprintf(&out, "\nlifecycle (%s), µs of Redis CPU per task, medians of %d: cpu %.2f, scripts %.2f, outside %.2f, script calls %.3f;",
			w.name, len(ss), med(len(ss), func(i int) float64 { return ss[i].cpu }),
			med(len(ss), func(i int) float64 { return ss[i].scripts }),
			med(len(ss), func(i int) float64 { return ss[i].cpu - ss[i].scripts }),
			med(len(ss), func(i int) float64 { return ss[i].calls }))
		fmt.Fprintf(&out, " other commands:")
		for _, c := range sortedKeys(ss[0].other) {
			fmt.Fprintf(&out, " %s %.2f", c, med(len(ss), func(i int) float64 { return ss[i].other[c] }))
		}
		b.ReportMetric(med(len(ss), func(i int) float64 { return ss[i].cpu }), strings.ReplaceAll(w.name, " ", "-")+"-µs/task")
	}
	if ss := results["base"]; len(ss) > 0 {
		fmt.Fprintf(&out, "\nper script, µs per task: script time (inside redis.calls; glue)")
		for _, sc := range []string{"enqueue", "dequeue", "ack", "extend"} {
			t := med(len(ss), func(i int) float64 { return ss[i].base[sc] })
			c := med(len(ss), func(i int) float64 { return ss[i].inner[sc] })
			fmt.Fprintf(&out, "\n  %-8s %5.2f (%5.2f; %5.2f):", sc, t, c, t-c)
			for _, k := range sortedKeys(ss[0].byCmd) {
				if cmd, ok := strings.CutPrefix(k, sc+"/"); ok && ss[0].byCmd[k] > 0 {
					fmt.Fprintf(&out, " %s %.2f", cmd, med(len(ss), func(i int) float64 { return ss[i].byCmd[k] }))
				}
			}
		}
	}
	fmt.Fprintf(&out, "\nvariants: script, µs per task real -> variant, Δ (median of the per-repetition differences)")
	for _, v := range variants {
		if v.name == "base" {
			continue
		}
		ss := results[v.name]
		fmt.Fprintf(&out, "\n  %-16s", v.name)
		for _, sc := range v.scripts() {
			if v.whole && len(results["base"]) == len(ss) { // against the real script's pass of the same repetition
				bs := results["base"]
				ss = slices.Clone(ss)
				for i := range ss {
					ss[i].base = bs[i].base
				}
			}
			bt := med(len(ss), func(i int) float64 { return ss[i].base[sc] })
			vt := med(len(ss), func(i int) float64 { return ss[i].variant[sc] })
			d := med(len(ss), func(i int) float64 { return ss[i].variant[sc] - ss[i].base[sc] })
			fmt.Fprintf(&out, " %s %.2f -> %.2f (%+.2f)", sc, bt, vt, d)
			b.ReportMetric(d, v.name+"-"+sc+"-Δµs/task")
		}
	}
	// Printed, not logged: go test cuts a benchmark's log after ten lines.
	fmt.Println(out.String())
}

// attrTasks is the lifecycle each run measures (after a warm-up of as many tasks); ATTR_TASKS sets another
// multiple of 1000.
var attrTasks = 10_000

// attrWhole is one lifecycle measured whole: µs per task.
type attrWhole struct {
	cpu, scripts, calls float64
	other               map[string]float64 // top-level commands other than scripts, by command
}

// attrSplit is one lifecycle measured call by call: µs per task, by script.
type attrSplit struct {
	base, variant map[string]float64 // the real script's calls, the variant's
	inner         map[string]float64 // of base, inside redis.calls
	byCmd         map[string]float64 // of inner, by "script/command"
}

// attrVariant is the real scripts with edits: in script, old is replaced by new (exactly once each).
type attrVariant struct {
	name  string
	edits []attrEdit
	whole bool // every call runs the variant (one whose state would not mix with the real script's)
}

type attrEdit struct{ script, old, new string }

// scripts returns the scripts the variant edits, in the lifecycle's order.
func (v attrVariant) scripts() []string {
	var out []string
	for _, sc := range []string{"enqueue", "dequeue", "ack", "extend"} {
		for _, e := range v.edits {
			if e.script == sc && !slices.Contains(out, sc) {
				out = append(out, sc)
			}
		}
	}
	return out
}

var attrVariants = []attrVariant{
	{name: "base"},
	{name: "no-promote", edits: []attrEdit{{"dequeue", "promote_due(scheduled, pending, now, promote)\n", ""}}},
	{name: "no-paused-check", edits: []attrEdit{{"dequeue", "redis.call('EXISTS', paused) == 1", "false"}}},
	{name: "no-lost-check", edits: []attrEdit{{"dequeue", "redis.call('EXISTS', deliveries) == 1", "false"}}},
	{name: "no-epoch", edits: []attrEdit{{"dequeue", "redis.call('GET', epoch)", "'0'"}}},
	{name: "no-wake", edits: []attrEdit{{"dequeue", "if full and redis.call('LLEN', pending) > 0 then", "if false then"}}},
	{name: "no-next-due", edits: []attrEdit{{"dequeue", "local head = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')\nif head[2] then", "if false then"}}},
	{name: "no-ids-record", edits: []attrEdit{{"dequeue", ", b .. ':ids', cjson.encode(live)", ""}}},
	{name: "ids-concat", edits: []attrEdit{{"dequeue", "cjson.encode(live)", "table.concat(live, ' ')"}}},
	{name: "no-inflight", edits: []attrEdit{
		{"dequeue", "redis.call('INCRBY', inflight, #live)", ""},
		{"ack", "redis.call('INCRBY', inflight, -#done)", ""},
	}},
	{name: "no-lease-zadd", edits: []attrEdit{{"dequeue", "redis.call('ZADD', leases, now + lease_ms, b)", ""}}},
	{name: "no-window", edits: []attrEdit{{"ack", "entomb(tasks, recent, window, done, tombs)", "redis.call('HDEL', tasks, unpack(done))"}}},
	{name: "no-trim-check", edits: []attrEdit{{"ack", "entomb(tasks, recent, window, done, tombs)",
		"redis.call('HSET', tasks, unpack(tombs)) redis.call('RPUSH', recent, unpack(done)) redis.call('LPOP', recent, #done)"}}},
	{name: "trim-256", whole: true, edits: []attrEdit{{"ack", "entomb(tasks, recent, window, done, tombs)", `
redis.call('HSET', tasks, unpack(tombs))
local over = redis.call('RPUSH', recent, unpack(done)) - window
if over >= 256 then
  local old = redis.call('LPOP', recent, math.min(over, 1000))
  local vals = redis.call('HMGET', tasks, unpack(old))
  local gone = {}
  for i = 1, #old do
    if vals[i] and string.byte(vals[i], 1) == 126 then gone[#gone + 1] = old[i] end
  end
  if #gone > 0 then redis.call('HDEL', tasks, unpack(gone)) end
end`}}},
	{name: "record-inline", edits: []attrEdit{{"ack", "if marks then settled_batch(batches, leases, b, string.char(unpack(marks))) end", `if marks then
    local m = string.char(unpack(marks))
    if not string.find(m, '[^a]') then
      redis.call('HDEL', batches, b, b .. ':ids')
      redis.call('ZREM', leases, b)
    else
      redis.call('HSET', batches, b, m)
    end
  end`}}},
	{name: "no-token-format", edits: []attrEdit{{"ack", "'~' .. string.format('%d', base + pos - 1)", "'~' .. b"}}},
	{name: "token-format-f", edits: []attrEdit{{"ack", "string.format('%d', base + pos - 1)", "string.format('%.0f', base + pos - 1)"}}},
	{name: "no-strides", edits: []attrEdit{{"ack", "if stride == 5 then", "if false then"}}},
	{name: "no-enq-check", edits: []attrEdit{{"enqueue", "redis.call('HSETNX', tasks, id, env) == 0", "redis.call('HSET', tasks, id, env) == 2"}}},
}

// attrScripts are the scripts a variant may edit.
var attrScripts = map[string]struct {
	src string
	dst **redis.Script
}{
	"enqueue": {enqueueLua, &enqueueScript},
	"dequeue": {dequeueLua, &dequeueScript},
	"ack":     {ackLua, &ackScript},
	"extend":  {extendLua, &extendScript},
}

// variantScripts returns the variant's edited scripts by name.
func variantScripts(b *testing.B, v attrVariant) map[string]*redis.Script {
	srcs := map[string]string{}
	for _, e := range v.edits {
		src, ok := srcs[e.script]
		if !ok {
			src = attrScripts[e.script].src
		}
		if strings.Count(src, e.old) != 1 {
			b.Fatalf("variant %s: %q is not in %s.lua exactly once", v.name, e.old, e.script)
		}
		srcs[e.script] = strings.Replace(src, e.old, e.new, 1)
	}
	out := map[string]*redis.Script{}
	for name, src := range srcs {
		out[name] = redis.NewScript(withPrelude(src))
	}
	return out
}

// attrQueue flushes the server and returns a queue on it whose settled window is full.
func attrQueue(b *testing.B, rdb *redis.Client) *RedisTaskQueue {
	require.NoError(b, rdb.FlushAll(context.Background()).Err())
	reg, ref := testRegistry(b)
	require.NoError(b, Register(ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "attr", reg, quiet(nil))
	require.NoError(b, err)
	attrLifecycle(b, q, "w", nil)
	return q
}

// runWhole measures one lifecycle whole, with direct calls or through a TaskWorker.
func runWhole(b *testing.B, rdb *redis.Client, worker bool) attrWhole {
	q := attrQueue(b, rdb)
	cpu0, st0, n0 := attrCPU(b, rdb), attrStats(b, rdb), attrStatCalls(b, rdb)
	if worker {
		attrDrain(b, rdb, q)
	} else {
		attrLifecycle(b, q, "m", nil)
	}
	cpu, st, n := attrCPU(b, rdb), attrStats(b, rdb), attrStatCalls(b, rdb)
	w := attrWhole{cpu: (cpu - cpu0) / float64(attrTasks), calls: float64(n-n0) / float64(attrTasks), other: map[string]float64{}}
	inner := map[string]bool{}
	for _, c := range []string{"hsetnx", "hget", "hset", "hmget", "hdel", "rpush", "lpush", "lpop", "ltrim", "llen",
		"zadd", "zrem", "zrange", "zrangebyscore", "exists", "get", "set", "incrby", "time"} {
		inner[c] = true
	}
	for c, us := range st {
		d := (us - st0[c]) / float64(attrTasks)
		switch {
		case c == "evalsha" || c == "eval":
			w.scripts += d
		case c == "info" || d == 0:
		case !inner[c]:
			w.other[c] += d
		}
	}
	return w
}

// runSplit measures one lifecycle call by call; the calls of each script the variant edits alternate between the
// real script and the variant. Each figure is the median over the calls of the call's time per task (the time
// of a call is wall clock inside Redis, which a loaded machine inflates now and then: the median drops that).
func runSplit(b *testing.B, rdb *redis.Client, v attrVariant) attrSplit {
	q := attrQueue(b, rdb)
	alt := variantScripts(b, v)
	turn := map[string]int{}
	samples := map[string][]float64{} // by "base/script", "variant/script", "inner/script", "cmd/script/command"
	attrLifecycle(b, q, "s", func(script string, n int, call func()) {
		side := "base/"
		if sc, ok := alt[script]; ok {
			turn[script]++
			if v.whole || turn[script]%2 == 0 {
				side = "variant/"
				saved := *attrScripts[script].dst
				*attrScripts[script].dst = sc
				defer func() { *attrScripts[script].dst = saved }()
			}
		}
		before := attrStats(b, rdb)
		call()
		after := attrStats(b, rdb)
		per := func(cmd string) float64 { return (after[cmd] - before[cmd]) / float64(n) }
		samples[side+script] = append(samples[side+script], per("evalsha")+per("eval"))
		if side == "variant/" {
			return
		}
		inner := 0.0
		for cmd := range after {
			if cmd == "evalsha" || cmd == "eval" || cmd == "info" {
				continue
			}
			inner += per(cmd)
			samples["cmd/"+script+"/"+cmd] = append(samples["cmd/"+script+"/"+cmd], per(cmd))
		}
		samples["inner/"+script] = append(samples["inner/"+script], inner)
	})
	smp := attrSplit{base: map[string]float64{}, variant: map[string]float64{}, inner: map[string]float64{},
		byCmd: map[string]float64{}}
	for k, v := range samples {
		kind, rest, _ := strings.Cut(k, "/")
		m := map[string]map[string]float64{"base": smp.base, "variant": smp.variant, "inner": smp.inner, "cmd": smp.byCmd}[kind]
		if kind == "cmd" && median(slices.Clone(v)) == 0 {
			// A command most calls do not make (the wake-up): its mean, not its median.
			sum := 0.0
			for _, x := range v {
				sum += x
			}
			if sum > 0 {
				m[rest] = sum / float64(len(v))
			}
			continue
		}
		m[rest] = median(v)
	}
	return smp
}

// attrLifecycle enqueues attrTasks tasks, leases them 100 at a time and acks each pickup in four calls of 25
// positions; with around set, it also extends each pickup's leases once, and wraps every script call in around
// (n: the tasks the call handles).
func attrLifecycle(b *testing.B, q *RedisTaskQueue, tag string, around func(script string, n int, call func())) {
	ctx := context.Background()
	if around == nil {
		around = func(_ string, _ int, call func()) { call() }
	}
	specs := benchSpecs(attrTasks, tag)
	for i := 0; i < attrTasks; i += 100 {
		around("enqueue", 100, func() { require.NoError(b, q.EnqueueBatch(ctx, specs[i:i+100])) })
	}
	for left := attrTasks; left > 0; {
		var l leased
		around("dequeue", 100, func() {
			var err error
			l, _, err = q.dequeueOnce(ctx, 100)
			require.NoError(b, err)
		})
		ds := l.ds
		require.NotEmpty(b, ds)
		for i, d := range ds {
			d.Spec = &TaskSpec{TaskID: l.ids[i]}
		}
		left -= len(ds)
		if tag == "s" {
			around("extend", len(ds), func() {
				lost, err := q.ExtendLeases(ctx, ds)
				require.NoError(b, err)
				require.Empty(b, lost)
			})
		}
		for i := 0; i < len(ds); i += 25 {
			part := ds[i:min(i+25, len(ds))]
			around("ack", len(part), func() { require.NoError(b, q.Ack(ctx, part...)) })
		}
	}
}

// attrDrain enqueues attrTasks tasks and drains them with a TaskWorker (concurrency 100).
func attrDrain(b *testing.B, rdb *redis.Client, q *RedisTaskQueue) {
	ctx := context.Background()
	specs := benchSpecs(attrTasks, "m")
	for i := 0; i < attrTasks; i += 1000 {
		require.NoError(b, q.EnqueueBatch(ctx, specs[i:i+1000]))
	}
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Concurrency: 100}, nil))
	require.NoError(b, err)
	require.NoError(b, w.Start(ctx))
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := rdb.Get(ctx, q.keys.key(keyInflight)).Int64()
		if l := rdb.LLen(ctx, q.keys.key(keyPending)).Val(); (err == nil || errors.Is(err, redis.Nil)) && n == 0 && l == 0 {
			break
		}
		require.True(b, time.Now().Before(deadline), "drain did not finish")
		time.Sleep(time.Millisecond)
	}
	require.NoError(b, stopWorker(nil, w, 10*time.Second))
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// attrCPU returns the server's CPU time (INFO cpu, user + sys) in µs.
func attrCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	require.NoError(b, err)
	var total float64
	for line := range strings.SplitSeq(info, "\r\n") {
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(b, err)
				total += f * 1e6
			}
		}
	}
	return total
}

// attrStats returns INFO commandstats' usec by command.
func attrStats(b *testing.B, rdb *redis.Client) map[string]float64 {
	return attrStatField(b, rdb, "usec=")
}

// attrStatCalls returns how many EVALSHA and EVAL calls the server has run.
func attrStatCalls(b *testing.B, rdb *redis.Client) int64 {
	m := attrStatField(b, rdb, "calls=")
	return int64(m["evalsha"] + m["eval"])
}

func attrStatField(b *testing.B, rdb *redis.Client, field string) map[string]float64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	out := map[string]float64{}
	for line := range strings.SplitSeq(info, "\r\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, vals, _ := strings.Cut(rest, ":")
		for kv := range strings.SplitSeq(vals, ",") {
			if v, ok := strings.CutPrefix(kv, field); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(b, err)
				out[name] = f
			}
		}
	}
	return out
}

// median returns the median of v (sorting it).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
