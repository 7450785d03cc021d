//go:build linux

package taskqueue

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// BenchmarkWorkerPeakRSS measures a worker's peak RSS as the peer comparison does (bench/child.go): a backlog of
// b.N tasks is enqueued first, then a subprocess (this test binary again, running TestWorkerRSSChild) drains it
// with one worker at concurrency 100 and reads its VmHWM when the last task starts. The child also reports what
// the Go runtime holds at that moment (runtime/metrics), which says what the resident memory is made of: heap
// objects, heap the runtime keeps free, goroutine stacks, runtime metadata, and the rest (the binary's pages
// that were read, the C and thread stacks). Run it with a fixed count, e.g. -benchtime=100000x.
func BenchmarkWorkerPeakRSS(b *testing.B) {
	s, _ := benchSetup(b)
	ctx := context.Background()
	specs := benchSpecs(b.N, "rss")
	for i := 0; i < b.N; i += 1000 {
		require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:min(i+1000, b.N)]))
	}
	opts := s.rdb.Options()
	cfg, err := json.Marshal(rssChildConfig{Addr: opts.Addr, Prefix: s.q.KeyPrefix(), Expect: b.N})
	require.NoError(b, err)
	b.ResetTimer()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestWorkerRSSChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), rssChildEnv+"="+string(cfg))
	out, err := cmd.Output()
	b.StopTimer()
	require.NoError(b, err, "child: %s", out)
	var rep map[string]float64
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "rss-report "); ok {
			require.NoError(b, json.Unmarshal([]byte(v), &rep))
		}
	}
	require.NotNil(b, rep, "child: %s", out)
	for k, v := range rep {
		b.ReportMetric(v, k)
	}
}

const rssChildEnv = "TASKQUEUE_TEST_RSS_CHILD"

type rssChildConfig struct {
	Addr   string `json:"addr"`
	Prefix string `json:"prefix"`
	Expect int    `json:"expect"`
}

// TestWorkerRSSChild is BenchmarkWorkerPeakRSS's subprocess; without its environment variable it does nothing.
func TestWorkerRSSChild(t *testing.T) {
	raw := os.Getenv(rssChildEnv)
	if raw == "" {
		t.Skip("the subprocess of BenchmarkWorkerPeakRSS")
	}
	var cfg rssChildConfig
	require.NoError(t, json.Unmarshal([]byte(raw), &cfg))
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr})
	defer func() { _ = rdb.Close() }()
	reg, ref := testRegistry(t)
	var count atomic.Int64
	report := make(chan map[string]float64, 1)
	require.NoError(t, Register(ref, "bench", "noop", func(context.Context, payload200) error {
		if count.Add(1) == int64(cfg.Expect) {
			report <- rssReport()
		}
		return nil
	}))
	q, err := NewRedisTaskQueue(rdb, cfg.Prefix, reg, quiet(nil))
	require.NoError(t, err)
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Concurrency: 100}, nil))
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	select {
	case rep := <-report:
		v, err := json.Marshal(rep)
		require.NoError(t, err)
		fmt.Println("rss-report " + string(v))
	case <-time.After(5 * time.Minute):
		t.Fatal("the drain did not finish in 5 minutes")
	}
	require.NoError(t, stopWorker(t, w, 10*time.Second))
}

// rssReport returns the process's peak and current RSS (MiB) and what the Go runtime holds now, by class (MiB).
func rssReport() map[string]float64 {
	rep := map[string]float64{}
	if f, err := os.Open("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			for _, k := range []string{"VmHWM", "VmRSS", "RssAnon", "RssFile"} {
				if v, ok := strings.CutPrefix(sc.Text(), k+":"); ok {
					kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
					rep[k+"-MiB"] = kib / 1024
				}
			}
		}
		_ = f.Close()
	}
	classes := map[string]string{
		"heap-objects-MiB":  "/memory/classes/heap/objects:bytes",
		"heap-unused-MiB":   "/memory/classes/heap/unused:bytes", // in spans, not in objects
		"heap-free-MiB":     "/memory/classes/heap/free:bytes",   // free, not returned to the OS
		"stacks-MiB":        "/memory/classes/heap/stacks:bytes",
		"os-stacks-MiB":     "/memory/classes/os-stacks:bytes",
		"metadata-MiB":      "/memory/classes/metadata/other:bytes",
		"mspan-MiB":         "/memory/classes/metadata/mspan/inuse:bytes",
		"other-runtime-MiB": "/memory/classes/other:bytes",
		"go-total-MiB":      "/memory/classes/total:bytes",
		"go-released-MiB":   "/memory/classes/heap/released:bytes",
	}
	var samples []metrics.Sample
	for _, name := range classes {
		samples = append(samples, metrics.Sample{Name: name})
	}
	metrics.Read(samples)
	for k, name := range classes {
		for _, s := range samples {
			if s.Name == name && s.Value.Kind() == metrics.KindUint64 {
				rep[k] = float64(s.Value.Uint64()) / (1 << 20)
			}
		}
	}
	rep["goroutines"] = float64(runtime.NumGoroutine())
	return rep
}
