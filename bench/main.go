// Command compare runs github.com/graflow-go/taskqueue and github.com/hibiken/asynq side by side on a
// redis-server of its own (a free loopback port, no persistence), alternating the two libraries, for several
// rounds, and prints a markdown table of medians with their range; the medians also go to a JSON file.
//
//	go run . [-rounds 3] [-quick] [-only process,drain] [-out results/latest.json]
//
// BENCH_ROUNDS and BENCH_QUICK=1 set the defaults of -rounds and -quick (the Makefile's bench-compare passes them).
// docs/benchmarks.md says what each figure measures.
package main

import (
	"context"
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
		rounds = 3
	}
	quick := os.Getenv("BENCH_QUICK") == "1"
	flag.IntVar(&rounds, "rounds", rounds, "rounds (each runs both libraries)")
	flag.BoolVar(&quick, "quick", quick, "small counts and short windows: a smoke test of about a minute")
	out := flag.String("out", "", "JSON file of the medians (default results/latest.json, or results/quick.json with -quick)")
	only := flag.String("only", "", "comma-separated steps to run (enqueue, process, drain, latency, proxy, recovery); default all")
	flag.Parse()
	if *out == "" {
		*out = "results/latest.json"
		if quick {
			*out = "results/quick.json"
		}
		if *only != "" {
			*out = "results/partial.json" // a partial run never overwrites the figures of a whole one
		}
	}
	if err := runMain(rounds, quick, *only, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// runMain runs the comparison under a context that ends on SIGINT/SIGTERM or after 15 minutes, so that the
// deferred cleanups (redis-server and worker subprocesses killed by pid) always run.
func runMain(rounds int, quick bool, only, out string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 15*time.Minute)
	defer cancelT()
	return run(ctx, rounds, quick, only, out, os.Stdout, os.Stderr)
}

// run measures both libraries for rounds rounds, writes the JSON summary to out and the table to w. A non-empty
// only names the steps to run, separated by commas.
func run(ctx context.Context, rounds int, quick bool, only, out string, w, log io.Writer) error {
	start := time.Now()
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	srv, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer srv.stop()
	version, _ := srv.rdb.InfoMap(ctx, "server").Result()
	b := &bench{srv: srv, sz: sz, res: newResults(), log: log}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	selected := func(step string) bool { return only == "" || slices.Contains(strings.Split(only, ","), step) }
	waitRecovery := func() error { return nil }
	if selected("recovery") {
		waitRecovery = b.recoveryRuns(ctx, rounds, quick)
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
	for r := range rounds {
		order := []string{libOurs, libAsynq}
		if r%2 == 1 {
			order = []string{libAsynq, libOurs}
		}
		for _, s := range steps {
			for _, name := range order {
				t := time.Now()
				if err := s.f(ctx, name); err != nil {
					cancel() // ends the recovery trials, whose deferred cleanups kill their servers and workers
					_ = waitRecovery()
					return fmt.Errorf("round %d, %s: %w", r+1, s.name, err)
				}
				fmt.Fprintf(log, "round %d/%d %-16s %-5s %5.1fs\n", r+1, rounds, s.name, name, time.Since(t).Seconds())
			}
		}
	}
	fmt.Fprintln(log, "waiting for the recovery trials")
	if err := waitRecovery(); err != nil {
		return err
	}
	fmt.Fprintf(w, "taskqueue vs asynq v0.26.0: %d round(s)%s, Redis %s, %s, GOMAXPROCS %d, %s\n\n", rounds,
		map[bool]string{true: " (quick mode: small counts)", false: ""}[quick], version["Server"]["redis_version"],
		runtime.Version(), runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.DateOnly))
	b.res.writeTable(w)
	fmt.Fprintf(w, "\nwall time %.0fs; medians written to %s\n", time.Since(start).Seconds(), out)
	return b.res.writeJSON(out)
}

// step is one measurement of a round: key names it in -only, name in the progress lines.
type step struct {
	key, name string
	f         func(context.Context, string) error
}
