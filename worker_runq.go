package taskqueue

import "sync"

// runQueue hands launched tasks to the task pool. It replaces a channel because of how goroutines are woken: a
// send on a channel that goroutines wait on wakes one of them per task, so a pickup of 100 short tasks cost 100
// goroutine wake-ups and as many parks. Here a launch wakes one idle goroutine, and a goroutine that takes a task
// while more wait wakes one more before it runs its own (one wake-up on its way at a time): tasks still start
// without waiting for each other, a handler that blocks never holds the others back, and goroutines that finish
// their task at once take the next from the queue without sleeping in between.
type runQueue struct {
	mu     sync.Mutex
	q      []*inflight // FIFO: q[head:] wait
	head   int
	idle   int           // goroutines waiting for a task
	waking int           // of those, how many were woken and have not yet looked at the queue
	wake   chan struct{} // one token per wake-up; capacity: every goroutine of the pool
	closed bool
}

func newRunQueue(goroutines int) *runQueue {
	return &runQueue{q: make([]*inflight, 0, goroutines), wake: make(chan struct{}, goroutines)}
}

// push queues the tasks of one launch. It never blocks.
func (r *runQueue) push(fs []inflight) {
	r.mu.Lock()
	if r.head > 0 && r.head >= len(r.q)/2 { // move what waits to the front, so that q does not grow without bound
		n := copy(r.q, r.q[r.head:])
		clear(r.q[n:])
		r.q, r.head = r.q[:n], 0
	}
	for i := range fs {
		r.q = append(r.q, &fs[i])
	}
	r.wakeOne()
	r.mu.Unlock()
}

// wakeOne wakes an idle goroutine when tasks wait and no wake-up is already on its way; r.mu is held.
func (r *runQueue) wakeOne() {
	if len(r.q) > r.head && r.waking == 0 && r.idle > 0 {
		r.waking++
		r.wake <- struct{}{} // never blocks: at most one token per idle goroutine is outstanding
	}
}

// take returns the next task, waiting for one; it reports false once the queue is closed and empty.
func (r *runQueue) take() (*inflight, bool) {
	r.mu.Lock()
	for {
		if len(r.q) > r.head {
			f := r.q[r.head]
			r.q[r.head] = nil
			r.head++
			r.wakeOne() // more wait: let another goroutine take the next while this one runs its task
			r.mu.Unlock()
			return f, true
		}
		if r.closed {
			r.mu.Unlock()
			return nil, false
		}
		r.idle++
		r.mu.Unlock()
		<-r.wake
		r.mu.Lock()
		r.idle--
		r.waking--
	}
}

// close ends the queue: the tasks in it are still taken, then every take reports false.
func (r *runQueue) close() {
	r.mu.Lock()
	r.closed = true
	for r.idle > r.waking {
		r.waking++
		r.wake <- struct{}{}
	}
	r.mu.Unlock()
}
