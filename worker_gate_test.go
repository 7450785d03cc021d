package taskqueue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSuspectGateWakesBothPickupLanes: when a suspect leaves the gate, every pickup lane waiting for it goes on
// (a wake-up for one lane alone once left the first lane waiting for good).
func TestSuspectGateWakesBothPickupLanes(t *testing.T) {
	t.Parallel()
	g := newSuspectGate()
	d := &Delivery{Deliveries: 2}
	g.admit(d)
	g.enter(d)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if !g.waitClear(ctx) {
				t.Error("a lane was not woken")
			}
		}()
	}
	g.unlock(d)
	wg.Wait()
	require.True(t, g.waitClear(context.Background()), "clear without waiting")
}
