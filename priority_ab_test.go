package taskqueue

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// evalshaUsec returns the calls and usec of EVALSHA from INFO commandstats.
func evalshaUsec(t testing.TB, rdb *redis.Client) (int64, int64) {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			var calls, usec int64
			for _, kv := range strings.Split(v, ",") {
				k, val, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(val, 10, 64)
				switch k {
				case "calls":
					calls = n
				case "usec":
					usec = n
				}
			}
			return calls, usec
		}
	}
	return 0, 0
}

// TestPickupCostAB measures the Redis time of the dequeue script per call (INFO commandstats, usec of EVALSHA) on
// the real redis-server, for pickups of 1 and of 100 tasks, 40 rounds in rotating order: on a queue that uses no
// priority level ("plain"), on one that does ("levels"), and, when TASKQUEUE_AB_DEQUEUE names another version of
// lua/dequeue.lua (e.g. git show <commit>:lua/dequeue.lua > /tmp/old.lua), on a plain queue with that version
// ("other"), the A/B of docs/flow-control.md. It logs the minimum, 10th percentile and median of the rounds (the
// low quantiles are the ones a loaded machine disturbs least). Opt-in: TASKQUEUE_PICKUP_AB=1.
func TestPickupCostAB(t *testing.T) {
	if os.Getenv("TASKQUEUE_PICKUP_AB") == "" {
		t.Skip("set TASKQUEUE_PICKUP_AB=1 to measure")
	}
	vs := []string{"plain", "levels"}
	oldScript := dequeueScript
	if path := os.Getenv("TASKQUEUE_AB_DEQUEUE"); path != "" {
		old, err := os.ReadFile(path)
		require.NoError(t, err)
		oldScript = redis.NewScript(withPrelude(string(old)))
		vs = append(vs, "other")
	}

	ctx := context.Background()
	for _, n := range []int{1, 100} {
		tot := map[string][2]int64{}
		per := map[string][]float64{}
		for round := range 40 {
			for k := range vs {
				v := vs[(k+round)%len(vs)]
				s := newReal(t, nil)
				require.NoError(t, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
				specs := benchSpecs(2000, fmt.Sprint("ab", round))
				if v == "levels" {
					specs[0].Priority = PriorityHigh // the queue uses levels
				}
				for i := 0; i < len(specs); i += 500 {
					require.NoError(t, s.q.EnqueueBatch(ctx, specs[i:i+500]))
				}
				script := dequeueScript
				if v == "other" {
					script = oldScript
				}
				require.NoError(t, script.Load(ctx, s.rdb).Err())
				keys := s.q.keys.all
				if v == "other" {
					keys = keys[:oldKeyCount()] // the key set the other version was written for
				}
				c0, u0 := evalshaUsec(t, s.rdb)
				calls := 0
				for left := 2000; left > 0; left -= n {
					_, err := script.EvalSha(ctx, s.rdb, keys, n, 30000, 100).Slice()
					require.NoError(t, err)
					calls++
				}
				c1, u1 := evalshaUsec(t, s.rdb)
				require.Equal(t, int64(calls), c1-c0)
				x := tot[v]
				x[0] += c1 - c0
				x[1] += u1 - u0
				tot[v] = x
				per[v] = append(per[v], float64(u1-u0)/float64(c1-c0))
			}
		}
		for _, v := range vs {
			x := tot[v]
			m := per[v]
			slices.Sort(m)
			t.Logf("batch=%d %s: %d calls, mean %.2f µs/call, min %.2f, p10 %.2f, median %.2f", n, v, x[0], float64(x[1])/float64(x[0]), m[0], m[len(m)/10], m[len(m)/2])
		}
	}
}

// oldKeyCount is how many keys of the key set TASKQUEUE_AB_KEYS says the other version takes (default: all).
func oldKeyCount() int {
	if n, err := strconv.Atoi(os.Getenv("TASKQUEUE_AB_KEYS")); err == nil && n > 0 && n <= numKeys {
		return n
	}
	return numKeys
}
