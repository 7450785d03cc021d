// Command chaosworker is the worker binary of the chaos tests (chaos_test.go, build tag chaos): the tests build
// it with go build, run it as a subprocess against a redis-server they started, and kill, stop or signal it.
// It registers a few reference functions under the module "chaos" and hands everything else (flags,
// environment, Redis, signals, graceful stop) to [taskqueue.RunWorkerMain], exactly as a user's worker would.
//
// Every function appends to an execution ledger, a file outside the queue named by $CHAOS_LEDGER, so that a test
// can count how often each task really ran, in which process and when, whatever happened to the queue. Each
// line is written with one write(2) on a file opened with O_APPEND, so that lines of concurrent runs and
// processes never interleave:
//
//	<event> <task id> <pid> <unix ns> [<detail>]
//
// where event is "start" (a run began: one line per run), "done" (the handler is about to return nil), "fail"
// (it is about to return an error), "cancel" (it saw its context cancelled; detail is the cause) or "exit" and
// "panic" (it is about to end the process or panic).
//
// The functions (module "chaos"):
//
//   - work: records a start, sleeps (first_sleep_ms on the task's first run, as the ledger tells, else sleep_ms),
//     then records done and returns nil; with first_fail it returns an error after its first run's sleep. With
//     honor_ctx the sleep ends when the context is cancelled (recorded as cancel, returning the cause);
//     without, it sleeps on like a handler stuck in a system call.
//   - exit: records a start, then ends the process with os.Exit(3), as a segfault or an OOM kill would.
//   - panic: records a start, then panics, every time.
//   - quick: records a start, sleeps sleep_ms, records done. Unlike work it never reads the ledger, so that a
//     soak of many thousands of tasks costs no more per task at its end than at its start.
//   - node: a workflow node (docs/workflows.md): reads each parent's result (taskqueue.ParentResult); records
//     "early" (detail: the parent) and fails when one cannot be read, else records a start, sleeps sleep_ms,
//     records done and returns its id as its result.
//
// With $CHAOS_STATS set, the process appends "<unix ns> <goroutines> <heap alloc bytes>" to that file, after a
// garbage collection, each time it receives SIGUSR1: the soak test samples a long-lived worker for drift.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/graflow-go/taskqueue"
)

// Module is the module every chaos function is registered under.
const Module = "chaos"

// WorkArgs are the arguments of chaos.work.
type WorkArgs struct {
	ID           string `json:"id"`             // the task id, for the ledger (handlers do not see their spec)
	SleepMS      int64  `json:"sleep_ms"`       // how long a run sleeps, except the first
	FirstSleepMS int64  `json:"first_sleep_ms"` // how long the first run sleeps
	FirstFail    bool   `json:"first_fail"`     // the first run returns an error after its sleep
	HonorCtx     bool   `json:"honor_ctx"`      // the sleep ends when the context is cancelled
}

// IDArgs are the arguments of chaos.exit and chaos.panic.
type IDArgs struct {
	ID string `json:"id"`
}

func main() {
	ledger := os.Getenv("CHAOS_LEDGER")
	if ledger == "" {
		fmt.Fprintln(os.Stderr, "chaosworker: set CHAOS_LEDGER to the execution ledger's path")
		os.Exit(2)
	}
	l := &ledgerFile{path: ledger}
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, Module, "work", l.work)
	taskqueue.MustRegister(ref, Module, "quick", l.quick)
	taskqueue.MustRegisterResult(ref, Module, "node", l.node)
	if path := os.Getenv("CHAOS_STATS"); path != "" {
		writeStatsOnSignal(path)
	}
	taskqueue.MustRegister(ref, Module, "exit", func(_ context.Context, a IDArgs) error {
		l.record("start", a.ID, "")
		l.record("exit", a.ID, "")
		os.Exit(3)
		return nil
	})
	taskqueue.MustRegister(ref, Module, "panic", func(_ context.Context, a IDArgs) error {
		l.record("start", a.ID, "")
		l.record("panic", a.ID, "")
		panic("chaos: deliberate panic in " + a.ID)
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	if err := taskqueue.RunWorkerMain(context.Background(), reg, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chaosworker:", err)
		os.Exit(1)
	}
}

// writeStatsOnSignal appends a goroutine and heap sample to path on every SIGUSR1, for the life of the process.
func writeStatsOnSignal(path string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			line := fmt.Sprintf("%d %d %d\n", time.Now().UnixNano(), runtime.NumGoroutine(), ms.HeapAlloc)
			if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
				_, _ = f.WriteString(line)
				_ = f.Close()
			}
		}
	}()
}

// ledgerFile appends lines to the execution ledger.
type ledgerFile struct{ path string }

// record appends one line. A ledger that cannot be written ends the process: a test must never read a ledger
// with a run missing.
func (l *ledgerFile) record(event, id, detail string) {
	line := fmt.Sprintf("%s %s %d %d", event, id, os.Getpid(), time.Now().UnixNano())
	if detail != "" {
		line += " " + strings.ReplaceAll(detail, "\n", " ")
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = f.WriteString(line + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosworker: ledger:", err)
		os.Exit(2)
	}
}

// ranBefore reports whether the ledger already holds a start of the task.
func (l *ledgerFile) ranBefore(id string) bool {
	f, err := os.Open(l.path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	prefix := "start " + id + " "
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return true
		}
	}
	return false
}

// QuickArgs are the arguments of chaos.quick.
type QuickArgs struct {
	ID      string `json:"id"`
	SleepMS int64  `json:"sleep_ms"`
}

func (l *ledgerFile) quick(_ context.Context, a QuickArgs) error {
	l.record("start", a.ID, "")
	time.Sleep(time.Duration(a.SleepMS) * time.Millisecond)
	l.record("done", a.ID, "")
	return nil
}

func (l *ledgerFile) work(ctx context.Context, a WorkArgs) error {
	first := !l.ranBefore(a.ID)
	l.record("start", a.ID, "")
	sleep := time.Duration(a.SleepMS) * time.Millisecond
	if first {
		sleep = time.Duration(a.FirstSleepMS) * time.Millisecond
	}
	if a.HonorCtx {
		t := time.NewTimer(sleep)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			cause := context.Cause(ctx)
			l.record("cancel", a.ID, cause.Error())
			return cause
		}
	} else {
		time.Sleep(sleep)
	}
	if first && a.FirstFail {
		l.record("fail", a.ID, "")
		return errors.New("chaos: first run fails")
	}
	l.record("done", a.ID, "")
	return nil
}

// NodeArgs are the arguments of chaos.node.
type NodeArgs struct {
	ID      string   `json:"id"`
	Node    string   `json:"node"`
	Parents []string `json:"parents"`
	SleepMS int64    `json:"sleep_ms"`
}

func (l *ledgerFile) node(ctx context.Context, a NodeArgs) (string, error) {
	for _, p := range a.Parents {
		v, err := taskqueue.ParentResult[string](ctx, p)
		if err != nil || v != p {
			l.record("early", a.ID, p)
			return "", fmt.Errorf("chaos: parent %s of %s not done: %v", p, a.Node, err)
		}
	}
	l.record("start", a.ID, "")
	time.Sleep(time.Duration(a.SleepMS) * time.Millisecond)
	l.record("done", a.ID, "")
	return a.Node, nil
}
