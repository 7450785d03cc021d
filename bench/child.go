package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// childEnv names the environment variable that turns this binary into a worker subprocess; its value is the
// childConfig as JSON. A subprocess gives the worker its own peak RSS and lets the harness SIGKILL it mid-task.
const childEnv = "TASKQUEUE_BENCH_CHILD"

type childConfig struct {
	Lib     string `json:"lib"`
	Addr    string `json:"addr"`
	Mode    string `json:"mode"` // drain: run Expect tasks and exit; hang: block in the handler; run: run tasks
	Conc    int    `json:"conc"`
	Workers int    `json:"workers"` // workers of Conc each, on one connection of the library (0: 1)
	Expect  int    `json:"expect"`
	LeaseMS int64  `json:"lease_ms"`
}

// Lines a child prints on stdout.
const (
	lineReady   = "ready"
	lineStarted = "started"
	lineDone    = "done" // then the seconds from worker start to the last task's start, peak RSS (KiB), CPU seconds
)

// runChild is the subprocess: it runs one worker as cfg says and reports on stdout.
func runChild(raw string) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return err
	}
	l, err := newLib(cfg.Lib, cfg.Addr, time.Duration(cfg.LeaseMS)*time.Millisecond)
	if err != nil {
		return err
	}
	defer l.close()
	var mu sync.Mutex
	say := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Println(s)
	}
	var count atomic.Int64
	finished := make(chan struct{})
	var start time.Time
	var cpu0 float64
	var done string // the "done" line, printed after "ready": the drain can end before the last worker has started
	onStart := func(int) {
		switch cfg.Mode {
		case "hang":
			say(lineStarted)
			time.Sleep(time.Hour) // the harness kills this process now
		case "run":
			say(lineStarted)
		default:
			if count.Add(1) == int64(cfg.Expect) {
				secs := time.Since(start).Seconds()
				done = fmt.Sprintf("%s %.6f %d %.6f", lineDone, secs, peakRSSKiB(), cpuSeconds()-cpu0)
				close(finished)
			}
		}
	}
	ctx := context.Background()
	cpu0, start = cpuSeconds(), time.Now()
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	for range max(cfg.Workers, 1) {
		s, err := l.startWorker(ctx, cfg.Conc, onStart)
		if err != nil {
			stop()
			return err
		}
		stops = append(stops, s)
	}
	say(lineReady)
	if cfg.Mode == "drain" {
		select {
		case <-finished:
			say(done)
		case <-time.After(5 * time.Minute):
			return errors.New("drain did not finish in 5 minutes")
		}
		stop()
		return nil
	}
	// hang and run: until the harness kills us (bounded all the same).
	time.Sleep(10 * time.Minute)
	return nil
}

// child is a running worker subprocess.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

// startChild re-executes this binary as a worker subprocess and waits for its "ready" line.
func startChild(ctx context.Context, cfg childConfig) (*child, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	go c.read(out)
	if _, err := c.expect(ctx, lineReady, 30*time.Second); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

func (c *child) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		c.lines <- sc.Text()
	}
	close(c.lines)
}

// expect waits for a line starting with prefix and returns it.
func (c *child) expect(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("worker subprocess exited before printing %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-t.C:
			return "", fmt.Errorf("worker subprocess printed no %q in %s", prefix, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// kill sends SIGKILL and reaps the process.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// peakRSSKiB is this process's VmHWM (KiB), its peak resident set since exec. (getrusage's ru_maxrss would not
// do: on Linux it keeps the parent's high-water mark from before the exec.) 0 if /proc cannot be read.
func peakRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// cpuSeconds is the CPU time this process has used, user + system (getrusage RUSAGE_SELF); 0 if it cannot be read.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// wait reaps a child that exits by itself.
func (c *child) wait(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		return errors.Join(errors.New("worker subprocess did not exit"), <-done)
	}
}

// doneLine is what a drain child reports when its last task starts.
type doneLine struct {
	secs   float64 // from the worker's start to the last task's start
	rssMiB float64 // peak RSS
	cpu    float64 // CPU seconds (user + system) since the worker's start
}

// parseDone reads a "done" line: the seconds of the drain, the peak RSS in KiB and the CPU seconds.
func parseDone(line string) (doneLine, error) {
	f := strings.Fields(strings.TrimPrefix(line, lineDone))
	if len(f) != 3 {
		return doneLine{}, fmt.Errorf("bad line %q", line)
	}
	var d doneLine
	var err error
	if d.secs, err = strconv.ParseFloat(f[0], 64); err != nil {
		return doneLine{}, err
	}
	kib, err := strconv.ParseFloat(f[1], 64)
	if err != nil || kib <= 0 {
		return doneLine{}, fmt.Errorf("no peak RSS in %q", line)
	}
	d.rssMiB = kib / 1024
	if d.cpu, err = strconv.ParseFloat(f[2], 64); err != nil {
		return doneLine{}, err
	}
	return d, nil
}
