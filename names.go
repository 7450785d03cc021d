package taskqueue

import (
	"crypto/rand"
	"encoding/hex"
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

// newID returns a random id of 32 hex digits: a task id when the spec names none, a group's run id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
