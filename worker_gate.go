package taskqueue

import (
	"context"
	"sync"
	"sync/atomic"
)

// suspectGate runs a suspect alone. A suspect is a delivery whose task lost its worker before (Deliveries > 1): it
// may crash the process. A suspect holds the gate exclusively while other tasks share it, and no pickup happens
// while a suspect is admitted, so a crash takes no other task down with it. A task holds the gate until its outcome
// is recorded (a success: until its ack is), so a suspect runs only after every other task's outcome is in Redis.
type suspectGate struct {
	mu       sync.RWMutex
	suspects atomic.Int32  // suspects admitted and not yet out of the gate
	out      chan struct{} // a suspect left the gate: a wake-up for the pickup loop (capacity 1)
}

func newSuspectGate() suspectGate { return suspectGate{out: make(chan struct{}, 1)} }

func isSuspect(d *Delivery) bool { return d.Deliveries > 1 }

// admit counts a suspect from its launch on, so that no pickup happens until it is out of the gate.
func (g *suspectGate) admit(d *Delivery) {
	if isSuspect(d) {
		g.suspects.Add(1)
	}
}

// enter waits until d may run: alone for a suspect, beside every other task that is not one otherwise.
func (g *suspectGate) enter(d *Delivery) {
	if isSuspect(d) {
		g.mu.Lock()
	} else {
		g.mu.RLock()
	}
}

// unlock ends d's hold on the gate, once its outcome is recorded.
func (g *suspectGate) unlock(d *Delivery) {
	if !isSuspect(d) {
		g.mu.RUnlock()
		return
	}
	g.mu.Unlock()
	g.suspects.Add(-1)
	select {
	case g.out <- struct{}{}:
	default:
	}
}

// waitClear waits while a suspect is admitted. It reports false if ctx ended first. Both pickup lanes wait here: a
// waiter woken by a suspect's exit passes the wake-up on, so that the other lane wakes too (a wake-up left over
// costs a later waiter one more look at the count).
func (g *suspectGate) waitClear(ctx context.Context) bool {
	waited := false
	for g.suspects.Load() > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-g.out:
			waited = true
		}
	}
	if waited {
		select {
		case g.out <- struct{}{}:
		default:
		}
	}
	return true
}
