package tqprom

import (
	"fmt"

	"github.com/graflow-go/taskqueue"
)

// InstrumentQueues sets cfg.OnEvent so that a worker of several queues (a [taskqueue.MultiQueue]) reports each
// task's events to the collector of the queue the task came from: [taskqueue.Event.Queue] is matched against each
// collector's key prefix (its queue's KeyPrefix, or Config.Queue for a collector made without a queue). Events
// that name no queue (a failed pickup concerns them all) and events of a queue that no collector covers are
// counted by the first collector. A hook already in cfg.OnEvent runs after it, as with [Collector.Instrument].
//
// It returns an error wrapping [taskqueue.ErrInvalidConfig] for no collectors, a nil one, or two of one prefix,
// and then leaves cfg unchanged.
func InstrumentQueues(cfg *taskqueue.WorkerConfig, cs ...*Collector) error {
	if len(cs) == 0 {
		return fmt.Errorf("%w: tqprom: InstrumentQueues needs at least one collector", taskqueue.ErrInvalidConfig)
	}
	byPrefix := make(map[string]*Collector, len(cs))
	for i, c := range cs {
		if c == nil {
			return fmt.Errorf("%w: tqprom: collector %d is nil", taskqueue.ErrInvalidConfig, i)
		}
		if _, dup := byPrefix[c.prefix]; dup {
			return fmt.Errorf("%w: tqprom: two collectors of the queue %q", taskqueue.ErrInvalidConfig, c.prefix)
		}
		byPrefix[c.prefix] = c
	}
	first, prev := cs[0], cfg.OnEvent
	cfg.OnEvent = func(e taskqueue.Event) {
		c, ok := byPrefix[e.Queue]
		if !ok {
			c = first
		}
		c.OnEvent(e)
		if prev != nil {
			prev(e)
		}
	}
	return nil
}
