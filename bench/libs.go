package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
)

// errUnsupported marks a measurement a library has no API for (asynq has no batch enqueue); the table shows n/a.
var errUnsupported = errors.New("bench: not supported by this library")

// lib is one task queue under test. Every implementation is driven the same way: tasks carry a 200-byte JSON
// payload with a sequence number, and onStart is called with it when a handler starts. A method a library has no
// API for returns errUnsupported.
type lib interface {
	name() string
	// enqueue adds one task, due after delay (0: now).
	enqueue(ctx context.Context, seq int, delay time.Duration) error
	// batches reports whether the library can enqueue many tasks in one call.
	batches() bool
	// enqueueBatch adds n tasks, seq0 to seq0+n-1, in one call (errUnsupported where there is no such API).
	enqueueBatch(ctx context.Context, seq0, n int) error
	// startWorker runs a worker of the given concurrency until stop is called; stop waits for it to finish.
	startWorker(ctx context.Context, conc int, onStart func(seq int)) (stop func(), err error)
	// close releases the clients.
	close()
}

// Library names. libOrder is the order of the table's columns; a library is a column when it has results or was
// skipped.
const (
	libFloor      = "floor"
	libOurs       = "ours"
	libAsynq      = "asynq"
	libAsynqTuned = "asynq-tuned"
	libBullMQ     = "bullmq"
	libRiver      = "river"

	libOursKeys      = "ours-keys100"
	libOursKeysLimit = "ours-keys100-limit10"
)

var libOrder = []string{libFloor, libOurs, libAsynq, libAsynqTuned, libBullMQ, libRiver}

// libDef says how the harness runs one library. A peer registers its libDef in libDefs (from its own file's init
// function, or here).
type libDef struct {
	// check reports why the library cannot run on this machine (its runtime is missing, say), nil if it can. A
	// library whose check fails is reported under the table as skipped, with the reason. nil: always runs.
	check func(ctx context.Context) error
	// open connects a new instance to the bench's redis-server at addr.
	open func(addr string, o libOptions) (lib, error)
	// notRedis says the library keeps its tasks in a store other than the bench's Redis (River: PostgreSQL): the
	// rows measured on that Redis (its CPU, memory and script calls) are n/a for it.
	notRedis bool
	// recovery is how long the recovery trial at the library's defaults may wait for the task to come back; 0:
	// the trial is not run (n/a).
	recovery time.Duration
	// steps replaces the harness's measurement of a step, by its key (enqueue, process, drain, latency, proxy),
	// for a peer that runs whole scenarios in its own runtime (BullMQ in Node) or needs its own plumbing (River
	// behind the latency proxy). A missing key: the harness drives the lib interface.
	steps map[string]func(ctx context.Context, b *bench) error
	// describe returns a line for the notes under the table saying how the library was set up (versions,
	// configuration); it runs after a successful check. nil or "": no line.
	describe func(ctx context.Context) string
	// cleanup releases what check set up (River's database); it runs at the end of the run, also after an error
	// or an interrupt. nil: nothing to release.
	cleanup func()
	// optIn says the library runs only when -libs names it (our library with flow keys: flow.go).
	optIn bool
}

// libOptions are the settings a measurement may change.
type libOptions struct {
	lease time.Duration // > 0: the lease (visibility timeout) of a library that has one
}

// libDefs holds every library the harness knows.
var libDefs = map[string]libDef{
	libFloor: {open: func(addr string, _ libOptions) (lib, error) { return newFloor(addr), nil }},
	libOurs: {
		open:     func(addr string, o libOptions) (lib, error) { return newOurs(addr, o.lease) },
		recovery: 2 * time.Minute,
	},
	libAsynq: {
		open:     func(addr string, _ libOptions) (lib, error) { return newAsynq(addr, libAsynq, asynqDefault), nil },
		recovery: 6 * time.Minute,
	},
	libAsynqTuned: {
		open: func(addr string, _ libOptions) (lib, error) { return newAsynq(addr, libAsynqTuned, asynqTuned), nil },
	},
	// Our library with every task keyed over 100 flow keys, without and with a concurrency limit of 10 per key
	// (docs/flow-control.md): opt-in, -libs ours,ours-keys100,ours-keys100-limit10.
	libOursKeys: {
		open:  func(addr string, o libOptions) (lib, error) { return newOursKeyed(addr, o.lease, libOursKeys, 100, 0) },
		optIn: true,
	},
	libOursKeysLimit: {
		open: func(addr string, o libOptions) (lib, error) {
			return newOursKeyed(addr, o.lease, libOursKeysLimit, 100, 10)
		},
		optIn: true,
	},
}

// producerCounter is implemented by a library configuration that says how many goroutines should feed it one
// task per call (asynq-tuned: the best count of the sweep).
type producerCounter interface{ producers() int }

// producersOf is how many goroutines feed l one task per call where it has no batch enqueue: its own count, or 8.
func producersOf(l lib) int {
	if p, ok := l.(producerCounter); ok && p.producers() > 0 {
		return p.producers()
	}
	return producers
}

// onRedis reports whether the named library keeps its tasks in the bench's Redis.
func onRedis(name string) bool { return !libDefs[name].notRedis }

// knownLibs returns the registered libraries in the table's order: those of libOrder first, then any other, sorted.
func knownLibs() []string {
	var out, rest []string
	for _, n := range libOrder {
		if _, ok := libDefs[n]; ok {
			out = append(out, n)
		}
	}
	for n := range libDefs {
		if !slices.Contains(libOrder, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

const (
	// payloadSize is the size of every task's payload, the size of the figures.
	payloadSize = 200
	// taskType is the asynq task type and our registered function name.
	taskType = "noop"
)

// payload returns the JSON payload of task seq: {"seq":N,"data":"xxx…"}, exactly payloadSize bytes (as our
// library marshals args{Seq, Data}).
func payload(seq int) []byte {
	s := strconv.Itoa(seq)
	pad := payloadSize - len(`{"seq":,"data":""}`) - len(s)
	b := make([]byte, 0, payloadSize)
	b = append(b, `{"seq":`...)
	b = append(b, s...)
	b = append(b, `,"data":"`...)
	b = append(b, strings.Repeat("x", pad)...)
	return append(b, `"}`...)
}

// padding returns the data field of task seq's payload.
func padding(seq int) string {
	return strings.Repeat("x", payloadSize-len(`{"seq":,"data":""}`)-len(strconv.Itoa(seq)))
}

// seqOf reads the sequence number at the start of a payload without a JSON decoder; -1 if it is not there.
func seqOf(p []byte) int {
	rest, ok := strings.CutPrefix(string(p), `{"seq":`)
	if !ok {
		return -1
	}
	end := strings.IndexByte(rest, ',')
	if end < 0 {
		return -1
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// newLib connects the named library to addr. lease > 0 sets the lease of a library that has one.
func newLib(name, addr string, lease time.Duration) (lib, error) {
	d, ok := libDefs[name]
	if !ok {
		return nil, errors.New("bench: unknown library " + strconv.Quote(name))
	}
	return d.open(addr, libOptions{lease: lease})
}
