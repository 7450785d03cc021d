package taskqueue

import (
	"fmt"
	"math"
)

// Default decoding limits; see [Limits].
const (
	DefaultMaxEnvelopeBytes = 1 << 20
	DefaultMaxDepth         = 32
)

// EnvelopeHeadroom is how far past [Limits.MaxEnvelopeBytes] a stored envelope may grow, and how much more than
// it a worker reads back: room for the delivery fields that a retry or a dead-lettering writes into an envelope
// accepted at enqueue ("status", "attempt", "last_error", "failed_at"). A "last_error" that would not fit in it
// is cut shorter, so a task accepted at enqueue keeps its retries whatever its size, and a dead letter stays
// readable and can be requeued. See docs/data-format.md.
const EnvelopeHeadroom = 8 << 10

// Limits bound what the envelope decoder accepts. Zero fields take their defaults.
type Limits struct {
	// MaxEnvelopeBytes is the largest envelope accepted on enqueue (Enqueue, EnqueueBatch, DispatchGroup), as
	// it is stored, signature included. Default 1 MiB. What delivery writes into a stored envelope (a retry's
	// or a dead letter's "attempt", "last_error", …) takes it up to [EnvelopeHeadroom] bytes past this limit,
	// and pickup, RequeueDead and the other readers accept stored envelopes up to MaxEnvelopeBytes +
	// EnvelopeHeadroom: a larger one was never accepted, and is parked with [ErrEnvelopeTooLarge].
	MaxEnvelopeBytes int
	// MaxDepth is the deepest nesting of JSON objects and arrays accepted. Default 32.
	MaxDepth int
}

func (l Limits) withDefaults() Limits {
	if l.MaxEnvelopeBytes == 0 {
		l.MaxEnvelopeBytes = DefaultMaxEnvelopeBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// readLimit is the largest stored envelope the decoder reads: MaxEnvelopeBytes plus [EnvelopeHeadroom].
func (l Limits) readLimit() int {
	if l.MaxEnvelopeBytes > math.MaxInt-EnvelopeHeadroom {
		return math.MaxInt
	}
	return l.MaxEnvelopeBytes + EnvelopeHeadroom
}

func (l Limits) validate() error {
	if l.MaxEnvelopeBytes < 256 {
		return fmt.Errorf("%w: Limits.MaxEnvelopeBytes must be at least 256", ErrInvalidConfig)
	}
	if l.MaxDepth < 4 || l.MaxDepth > 1000 {
		return fmt.Errorf("%w: Limits.MaxDepth must be between 4 and 1000", ErrInvalidConfig)
	}
	return nil
}
