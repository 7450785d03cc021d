package taskqueue

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"unicode"
)

// namePattern is what every name the queue keeps in its keys or its envelopes must match: 1 to 64 letters,
// digits, '.', '_' or '-', starting with a letter or digit (no braces, globs or separators).
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// The kinds of names, each checked by its own name (one pattern today; messages quote it).
var (
	resolverIDPattern   = namePattern // resolver ids: registry, RedisConfig.DefaultResolverID, TaskSpec.ResolverID
	consumerNamePattern = namePattern // consumers of a pickup: DequeueOptions.Consumer, Interrupt, worker names
	groupNamePattern    = namePattern // group names and member ids (DispatchGroup)
)

// MaxTaskIDLen is the longest task id accepted.
const MaxTaskIDLen = 256

// validateTaskID checks a task id: 1 to MaxTaskIDLen bytes of printable characters, no space.
func validateTaskID(id string) error {
	if id == "" || len(id) > MaxTaskIDLen {
		return fmt.Errorf("%w: must be 1 to %d bytes", ErrInvalidTaskID, MaxTaskIDLen)
	}
	for _, r := range id {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: %s holds a space, control or invalid character", ErrInvalidTaskID, quote(id))
		}
	}
	return nil
}

// validKeyID reports whether id is 1 to MaxSigningKeyIDLen of [A-Za-z0-9._-], starting with a letter or digit.
func validKeyID(id string) bool {
	if id == "" || len(id) > MaxSigningKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// idLen is the length of a generated id: a task id when the spec names none ([TaskSpec.TaskID]), a group's run
// id ([GroupRun.RunID]).
const idLen = 22

// taskIDLen is the length of a generated task id (a spec enqueued without [TaskSpec.TaskID]): 16 letters and
// digits, 95 random bits. A task id only has to differ from the ids its queue holds at the time (tasks pending,
// leased, scheduled or dead, and the settled window's tombstones): with 10^7 of them a new id meets one with a
// probability of 2e-22. The 6 bytes less than idLen are what a pending task's id costs in the pending list, and
// take a pending task with a 200-byte payload from 485 to 479 bytes of Redis memory (BenchmarkMemoryPerTask).
const taskIDLen = 16

// newTaskID returns a generated task id: taskIDLen characters drawn as newID draws them.
func newTaskID() string { return newID()[:taskIDLen] }

// idAlphabet is the alphabet of generated ids, in ASCII order: letters and digits only, so that an id is a valid
// name (see namePattern), never starts with a dash (the CLI would read it as a flag), and needs no escaping in a
// URL, a shell or a Redis key.
const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns a random id of idLen letters and digits: 22 characters, each uniform over 62, carry 130 bits
// (32 hex digits carried 128 in 10 more bytes, which a queue stores three times per task: as the task hash's
// field, in a list, in the envelope). Each character takes the low 6 bits of a random byte; 62 and 63 are drawn
// again.
func newID() string {
	var id [idLen]byte
	var buf [32]byte // 22 accepted draws out of 32 fail with a probability below 1e-9: one read, almost always
	n := 0
	for n < idLen {
		_, _ = rand.Read(buf[:]) // never fails (crypto/rand)
		for _, c := range buf {
			if c &= 63; c < 62 && n < idLen {
				id[n] = idAlphabet[c]
				n++
			}
		}
	}
	return string(id[:])
}
