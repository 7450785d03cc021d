package taskqueuetest

import (
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Clock drives the clock of a miniredis, for delayed tasks and retries.
//
// The queue's scripts time everything by the Redis server's clock (the TIME command): due times of delayed tasks
// and retries, lease deadlines. miniredis answers TIME with its SetTime value, or the machine's clock when none
// was set; its FastForward only shortens key TTLs and does not change TIME, so a delayed task never falls due
// after a FastForward. A Clock therefore freezes the server's clock with SetTime and moves it with Advance, which
// also fast-forwards the TTLs by the same amount, so that both clocks agree.
//
// A frozen clock makes due times exact: a task enqueued with ProcessIn d is due at [Clock.Now] + d, a retry never
// falls due while a test runs, and [RunEnqueued] runs a delayed task only once the test has advanced the clock.
type Clock struct {
	mr  *miniredis.Miniredis
	mu  sync.Mutex
	now time.Time
}

// NewClock freezes mr's clock at the current time, to the millisecond (the unit of the queue's due times).
func NewClock(mr *miniredis.Miniredis) *Clock {
	c := &Clock{mr: mr, now: time.Now().Truncate(time.Millisecond)}
	mr.SetTime(c.now)
	return c
}

// Now returns the time the server's clock shows.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the server's clock forward by d (TTLs too): tasks due within d are due now. They run at the next
// pickup; [RunEnqueued] runs them.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("taskqueuetest: Clock.Advance with a negative duration")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.mr.SetTime(c.now)
	c.mr.FastForward(d)
}
