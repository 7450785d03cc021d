package taskqueue

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunQueueHandsEveryTaskOnce: tasks pushed in launches are each taken once, in order by a single taker, and
// spread over several takers while a handler blocks; close lets the takers drain what is queued and then end.
func TestRunQueueHandsEveryTaskOnce(t *testing.T) {
	t.Parallel()
	r := newRunQueue(4)
	fs := make([]inflight, 10)
	r.push(fs[:5])
	r.push(fs[5:])
	for i := range fs {
		f, ok := r.take()
		require.True(t, ok)
		require.Same(t, &fs[i], f, "FIFO")
	}

	// Four takers; the first task blocks its taker, so the others must run the rest.
	release := make(chan struct{})
	var taken, blocked atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for f, ok := r.take(); ok; f, ok = r.take() {
				if f == &fs[0] && blocked.Add(1) == 1 {
					<-release
				}
				taken.Add(1)
			}
		})
	}
	for range 50 {
		r.push(fs)
	}
	deadline := time.Now().Add(20 * time.Second)
	for taken.Load() < 499 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, int32(499), taken.Load(), "the other takers ran the tasks while one blocked")
	close(release)
	r.close()
	wg.Wait()
	require.Equal(t, int32(500), taken.Load())
	_, ok := r.take()
	require.False(t, ok)
}

// TestRunQueueDoesNotGrow: under a steady flow that never empties the queue, its slice stays bounded.
func TestRunQueueDoesNotGrow(t *testing.T) {
	t.Parallel()
	r := newRunQueue(8)
	fs := make([]inflight, 4)
	r.push(fs)
	for range 1000 {
		r.push(fs)
		for range len(fs) {
			_, ok := r.take()
			require.True(t, ok)
		}
	}
	require.Equal(t, len(fs), len(r.q)-r.head)
	require.LessOrEqual(t, cap(r.q), 32)
}
