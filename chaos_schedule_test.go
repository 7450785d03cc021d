//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildChaosScheduler builds internal/chaosscheduler into dir (with -race unless CHAOS_WORKER_RACE=0, as the
// worker) and returns its path.
func buildChaosScheduler(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	out := filepath.Join(dir, "chaosscheduler")
	args := []string{"build", "-o", out}
	if os.Getenv("CHAOS_WORKER_RACE") != "0" {
		args = append(args, "-race")
	}
	b, err := exec.Command(goBin, append(args, "./internal/chaosscheduler")...).CombinedOutput()
	require.NoError(t, err, "go build ./internal/chaosscheduler: %s", b)
	return out
}

// startChaosScheduler starts a scheduler subprocess and waits until it is connected; it is killed (SIGKILL) when
// the test ends if it still runs. Its JSON logs go to a file.
func startChaosScheduler(t testing.TB, bin, addr, prefix, name string, env ...string) *chaosProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, "--redis-url", "redis://"+addr+"/0", "--key-prefix", prefix, "--claim", "1s")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GORACE=atexit_sleep_ms=0"}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p := &chaosProc{name: name, cmd: cmd, logPath: logPath, started: time.Now(), exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state, p.exitedAt = cmd.ProcessState, time.Now()
		_ = logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.exited
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "DATA RACE") || strings.Contains(string(b), "panic:") {
			t.Errorf("scheduler %s reported a data race or a panic; log:\n%s", name, b)
		}
	})
	p.waitLog(t, 15*time.Second, "chaosscheduler: ready")
	return p
}

// chaosScheduleTicks (scenario 21 of docs/reliability.md and docs/periodic.md): five scheduler processes fire a 1-second schedule for a
// 30-second window (the issue's) while they are SIGKILLed and restarted (one at a time, two at once, all five at
// once for 2.5 s, then three more rounds of one to three at once), one of them with a local clock an hour ahead. A worker in the test process, never killed, runs every
// task and counts the runs per task id. Every tick of the window runs exactly once: none missing (the ticks of
// the full outage fire late, within the misfire grace), none twice, and no task id off the tick grid.
func chaosScheduleTicks(t *testing.T) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	ctx := context.Background()
	const prefix = "chaos-sched"
	q, ref := chaosQueue(t, rdb, prefix, nil)

	var mu sync.Mutex
	runs := map[string]int{}
	late := map[string]time.Duration{}
	require.NoError(t, Register(ref, "chaossched", "tick", func(context.Context, struct{}) error { return nil }))
	record := func(next Handler) Handler {
		return func(ctx context.Context, spec *TaskSpec) error {
			tick, err := time.Parse("2006-01-02T15:04:05.000Z", spec.Metadata[ScheduleMetaTick])
			mu.Lock()
			runs[spec.TaskID]++
			if err == nil {
				late[spec.TaskID] = time.Since(tick)
			}
			mu.Unlock()
			return next(ctx, spec)
		}
	}
	w, err := NewTaskWorker(q, &WorkerConfig{Concurrency: 4, Middleware: []Middleware{record}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	defer func() { require.NoError(t, w.Stop(context.Background())) }()

	bin := buildChaosScheduler(t, t.TempDir())
	require.NoError(t, mustSchedules(q).Create(ctx, &Schedule{Name: "sec", Every: time.Second, Task: &TaskSpec{Executable: Ref("chaossched", "tick", nil)}}))
	created, err := mustSchedules(q).Get(ctx, "sec")
	require.NoError(t, err)
	firstTick := created.Next

	names := []string{"s0", "s1", "s2", "s3", "skewed"}
	envs := map[string][]string{"skewed": {"CHAOS_CLOCK_SKEW=1h"}}
	procs := make([]*chaosProc, len(names))
	for i, n := range names {
		procs[i] = startChaosScheduler(t, bin, srv.addr, prefix, n, envs[n]...)
	}
	restart := func(i int) {
		procs[i] = startChaosScheduler(t, bin, srv.addr, prefix, names[i]+"-r"+fmt.Sprint(time.Now().UnixNano()%1e6), envs[names[i]]...)
	}
	kill := func(idx ...int) {
		for _, i := range idx {
			procs[i].signal(t, syscall.SIGKILL)
			<-procs[i].exited
		}
	}
	start := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) } // the chaos timeline, not a wait for work
	kills := 0
	at(1500 * time.Millisecond)
	kill(0)
	kills++
	at(2500 * time.Millisecond)
	restart(0)
	at(3500 * time.Millisecond)
	kill(1, 2)
	kills += 2
	at(5 * time.Second)
	restart(1)
	restart(2)
	at(6 * time.Second)
	kill(4) // the skewed one
	kills++
	at(7 * time.Second)
	restart(4)
	at(8 * time.Second)
	kill(0, 1, 2, 3, 4) // every scheduler down for 2.5 s
	kills += 5
	at(10500 * time.Millisecond)
	for i := range procs {
		restart(i)
	}
	at(14 * time.Second)
	kill(3)
	kills++
	at(15 * time.Second)
	restart(3)
	at(18 * time.Second)
	kill(0, 4) // one of them the skewed one
	kills += 2
	at(19500 * time.Millisecond)
	restart(0)
	restart(4)
	at(23 * time.Second)
	kill(1, 2, 3)
	kills += 3
	at(25 * time.Second)
	restart(1)
	restart(2)
	restart(3)
	at(27 * time.Second)
	kill(2)
	kills++
	at(28 * time.Second)
	restart(2)
	at(30 * time.Second)
	windowEnd := firstTick.Add(30 * time.Second)

	// Every tick of the window has run (the schedulers keep firing meanwhile); then stop them and check.
	waitFor(t, 30*time.Second, "every tick of the window to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for tk := firstTick; !tk.After(windowEnd); tk = tk.Add(time.Second) {
			if runs[ScheduleTaskID("sec", tk)] == 0 {
				return false
			}
		}
		return true
	})
	for _, p := range procs {
		p.signal(t, syscall.SIGTERM)
	}
	for _, p := range procs {
		require.Equal(t, 0, p.wait(t, 10*time.Second), "scheduler %s exits cleanly on SIGTERM", p.name)
	}
	info, err := mustSchedules(q).Get(ctx, "sec")
	require.NoError(t, err)
	waitFor(t, 10*time.Second, "every tick fired to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for tk := firstTick; !tk.After(info.LastTick); tk = tk.Add(time.Second) {
			if runs[ScheduleTaskID("sec", tk)] == 0 {
				return false
			}
		}
		return true
	})

	mu.Lock()
	defer mu.Unlock()
	grid := map[string]bool{}
	ticks := 0
	var lateness []time.Duration
	for tk := firstTick; !tk.After(info.LastTick); tk = tk.Add(time.Second) {
		id := ScheduleTaskID("sec", tk)
		grid[id] = true
		ticks++
		require.Equal(t, 1, runs[id], "tick %s runs exactly once", id)
		lateness = append(lateness, late[id])
	}
	for id, n := range runs {
		require.True(t, grid[id], "task %s (ran %d times) is no tick of the schedule", id, n)
	}
	require.GreaterOrEqual(t, ticks, 13)
	figure(t, "21_ScheduleKilledSchedulers", "schedulers", len(names), "kills", kills, "ticks", ticks, "runs", len(runs),
		"duplicates", 0, "missing", 0, "lateness_p50_ms", ms(percentile(lateness, 0.5)), "lateness_max_ms", ms(maxDur(lateness)))
	chaosResult(t, "%d ticks over %s with %d SIGKILLs of 5 schedulers (one skewed +1h, all down for 2.5s): each ran once; lateness %s",
		ticks, time.Since(start).Round(time.Second), kills, durStats(lateness))
}
