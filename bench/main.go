// Command compare runs github.com/graflow-go/taskqueue, a floor (the same data movement with no guarantees) and
// its peers side by side on a redis-server of its own (a free loopback port, no persistence), alternating the
// libraries, for several rounds, and prints a markdown table of medians with their range, a column per library;
// the medians also go to a JSON file. A library whose runtime is missing is listed under the table as skipped.
//
//	go run . [-rounds 5] [-quick] [-only process,drain] [-libs ours,asynq] [-out results/latest.json]
//	go run . -only sweep [-rounds 3]   # asynq's configurations, the source of asynq-tuned
//
// BENCH_ROUNDS and BENCH_QUICK=1 set the defaults of -rounds and -quick (the Makefile's bench-compare passes them).
// docs/benchmarks.md says what each figure measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if raw := os.Getenv(childEnv); raw != "" {
		if err := runChild(raw); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
			os.Exit(1)
		}
		return
	}
	rounds, _ := strconv.Atoi(os.Getenv("BENCH_ROUNDS"))
	if rounds < 1 {
		rounds = defaultRounds
	}
	quick := os.Getenv("BENCH_QUICK") == "1"
	var o options
	flag.IntVar(&o.rounds, "rounds", rounds, "rounds (each runs every library)")
	flag.BoolVar(&o.quick, "quick", quick, "small counts and short windows: a smoke test of a minute or two")
	flag.StringVar(&o.out, "out", "", "JSON file of the medians (default results/latest.json, or results/quick.json with -quick)")
	flag.StringVar(&o.only, "only", "", "comma-separated steps to run (enqueue, process, drain, latency, proxy, recovery); default all; \"sweep\" alone runs asynq's configuration sweep instead")
	flag.StringVar(&o.libs, "libs", "", "comma-separated libraries to run ("+strings.Join(knownLibs(), ", ")+"); default all")
	flag.Parse()
	if o.out == "" {
		o.out = "results/latest.json"
		if o.quick {
			o.out = "results/quick.json"
		}
		if o.only != "" || o.libs != "" {
			o.out = "results/partial.json" // a partial run never overwrites the figures of a whole one
		}
	}
	if err := runMain(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// defaultRounds is the rounds of a run without BENCH_ROUNDS or -rounds.
const defaultRounds = 5

// options are the command line's settings.
type options struct {
	rounds int
	quick  bool
	only   string // steps to run, comma-separated; "" for all
	libs   string // libraries to run, comma-separated; "" for all
	out    string
}

// runMain runs the comparison under a context that ends on SIGINT/SIGTERM or after an hour, so that the
// deferred cleanups (redis-server and worker subprocesses killed by pid) always run.
func runMain(o options) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Hour)
	defer cancelT()
	return run(ctx, o, os.Stdout, os.Stderr)
}

// selectLibs returns the libraries to run, in the table's order, after recording in res those whose runtime is
// missing as skipped.
func selectLibs(ctx context.Context, only string, res *results, log io.Writer) ([]string, error) {
	var libs []string
	for _, name := range knownLibs() {
		if only != "" && !slices.Contains(strings.Split(only, ","), name) || only == "" && libDefs[name].optIn {
			continue
		}
		if check := libDefs[name].check; check != nil {
			if err := check(ctx); err != nil {
				res.skip(name, err.Error())
				fmt.Fprintf(log, "skipping %s: %v\n", name, err)
				continue
			}
		}
		if describe := libDefs[name].describe; describe != nil {
			if line := describe(ctx); line != "" {
				res.note("%s", line)
			}
		}
		libs = append(libs, name)
	}
	for _, name := range strings.Split(only, ",") {
		if _, ok := libDefs[name]; name != "" && !ok {
			return nil, fmt.Errorf("unknown library %q (known: %s)", name, strings.Join(knownLibs(), ", "))
		}
	}
	if len(libs) == 0 {
		return nil, errors.New("no library to run")
	}
	return libs, nil
}

// run measures the selected libraries for o.rounds rounds, writes the JSON summary to o.out and the table to w.
func run(ctx context.Context, o options, w, log io.Writer) error {
	start := time.Now()
	sz := fullSizes
	if o.quick {
		sz = quickSizes
	}
	res := newResults()
	libs, err := selectLibs(ctx, o.libs, res, log)
	defer cleanupLibs()
	if err != nil {
		return err
	}
	srv, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer srv.stop()
	version, _ := srv.rdb.InfoMap(ctx, "server").Result()
	b := &bench{srv: srv, sz: sz, res: res, log: log}
	if o.only == "sweep" {
		return b.sweep(ctx, o.rounds, w)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	selected := func(step string) bool { return o.only == "" || slices.Contains(strings.Split(o.only, ","), step) }
	waitRecovery := func() error { return nil }
	if selected("recovery") {
		waitRecovery = b.recoveryRuns(ctx, libs, o.rounds, o.quick)
	}
	var steps []step
	for _, s := range []step{
		{"enqueue", "enqueue", b.enqueueRuns},
		{"process", "process", b.processRuns},
		{"drain", "drain", b.drainRun},
		{"latency", "latency", b.latencyRuns},
		{"proxy", "process +1ms RTT", b.proxyRun},
	} {
		if selected(s.key) {
			steps = append(steps, s)
		}
	}
	if slices.Contains(libs, libAsynqTuned) {
		res.note("asynq-tuned: %s", asynqTuned)
	}
	for r := range o.rounds {
		order := slices.Clone(libs)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		b.round = r
		load0 := loadAvg()
		for _, s := range steps {
			for _, name := range order {
				t := time.Now()
				f := s.f
				if own, ok := libDefs[name].steps[s.key]; ok {
					f = func(ctx context.Context, _ string) error { return own(ctx, b) }
				}
				if err := f(ctx, name); err != nil && !errors.Is(err, errUnsupported) {
					cancel() // ends the recovery trials, whose deferred cleanups kill their servers and workers
					_ = waitRecovery()
					return fmt.Errorf("round %d, %s: %w", r+1, s.name, err)
				}
				fmt.Fprintf(log, "round %d/%d %-16s %-11s %5.1fs\n", r+1, o.rounds, s.name, name, time.Since(t).Seconds())
			}
		}
		res.note("round %d: load average %s at the start, %s at the end", r+1, load0, loadAvg())
	}
	fmt.Fprintln(log, "waiting for the recovery trials")
	if err := waitRecovery(); err != nil {
		return err
	}
	fmt.Fprintf(w, "taskqueue vs its peers: %d round(s)%s, Redis %s, %s, GOMAXPROCS %d, %s\n\n", o.rounds,
		map[bool]string{true: " (quick mode: small counts)", false: ""}[o.quick], version["Server"]["redis_version"],
		runtime.Version(), runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.DateOnly))
	res.writeTable(w)
	fmt.Fprintf(w, "\nwall time %.0fs; medians written to %s\n", time.Since(start).Seconds(), o.out)
	return res.writeJSON(o.out)
}

// cleanupLibs runs the cleanup of every library that has one (those whose check did not run have nothing to
// release).
func cleanupLibs() {
	for _, d := range libDefs {
		if d.cleanup != nil {
			d.cleanup()
		}
	}
}

// loadAvg is the first three fields of /proc/loadavg (1, 5 and 15 minutes), "?" if it cannot be read.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// step is one measurement of a round: key names it in -only, name in the progress lines. A step returns
// errUnsupported when the library has no API for it (its cells stay n/a).
type step struct {
	key, name string
	f         func(context.Context, string) error
}
