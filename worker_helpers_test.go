package taskqueue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recorder collects worker events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) on(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) count(kind EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func (r *recorder) last(kind EventKind) Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Kind == kind {
			return r.events[i]
		}
	}
	return Event{}
}

func quietWorker(cfg WorkerConfig, rec *recorder) *WorkerConfig {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if rec != nil {
		cfg.OnEvent = rec.on
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(int, error) time.Duration { return 10 * time.Millisecond }
	}
	return &cfg
}

// startWorker starts a worker and stops it when the test ends.
func startWorker(t *testing.T, q TaskQueue, cfg *WorkerConfig) *TaskWorker {
	t.Helper()
	w, err := NewTaskWorker(q, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("stop: %v", err)
		}
	})
	return w
}

func stopWorker(_ testing.TB, w *TaskWorker, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return w.Stop(ctx)
}
