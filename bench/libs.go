package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// errUnsupported marks a measurement a library has no API for (asynq has no batch enqueue).
var errUnsupported = errors.New("bench: not supported by this library")

// lib is one task queue under test, connected to one Redis address. Both implementations are driven the same way:
// tasks carry a 200-byte JSON payload with a sequence number, and onStart is called with it when a handler starts.
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

const (
	libOurs  = "ours"
	libAsynq = "asynq"
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

// newLib connects the named library to addr. lease > 0 sets our lease (asynq's is fixed at 30s).
func newLib(name, addr string, lease time.Duration) (lib, error) {
	switch name {
	case libOurs:
		return newOurs(addr, lease)
	case libAsynq:
		return newAsynq(addr), nil
	}
	return nil, errors.New("bench: unknown library " + strconv.Quote(name))
}
