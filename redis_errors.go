package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// isReplyError reports whether err is an error reply from the server (it answered), not a network or context
// failure. Permission refusals are not treated as mere replies: they must surface.
func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil) && !errors.Is(classify(err), ErrPermission)
}

// classify sorts a Redis call's failure for its callers, keeping the Redis error in the chain: a refusal for lack
// of rights (NOPERM, NOAUTH, WRONGPASS) wraps [ErrPermission], so that a worker can stop instead of retrying a
// call that can never succeed; a failure that a resend may cure (see [ErrTransient]) is a [*TransientError]. Any
// other error, and nil, is returned as is. Callers wrap every Redis call's error with it.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrPermission) || errors.Is(err, ErrTransient) {
		return err
	}
	if redis.IsPermissionError(err) || redis.IsAuthError(err) || hasPermissionPrefix(err.Error()) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if reason := transientReason(err); reason != "" {
		return &TransientError{Reason: reason, Unavailable: unreachable(err), Err: err}
	}
	return err
}

// unreachable reports a failure to reach Redis at all, before any command was sent: a dial that failed (refused,
// no route, a name that did not resolve, a dial timeout) or no free connection within the pool's timeout.
func unreachable(err error) bool {
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de)
}

// transientReplies are the prefixes of the Redis error replies that a resend may cure: a Cluster slot on the move
// (TRYAGAIN, ASK, MOVED), a Cluster or a primary down or being replaced, a server loading its data or busy with a
// script. The client follows ASK and MOVED itself, a few times; one that reaches the queue is surfaced mid-move.
var transientReplies = []string{"TRYAGAIN", "ASK", "MOVED", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY"}

// transientReason names a failure that a resend may cure, "" for any other (and for a context's own end, which
// is its caller's decision).
func transientReason(err error) string {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ""
	}
	var re redis.Error
	if errors.As(err, &re) {
		return replyReason(strings.TrimPrefix(re.Error(), "ERR "), false) // KVRocks adds "ERR "
	}
	if reason := replyReason(err.Error(), true); reason != "" {
		return reason // a wrapper kept only the reply's text
	}
	if errors.Is(err, redis.ErrPoolTimeout) {
		return "timeout"
	}
	var ne net.Error // a reset, refused or broken connection is a *net.OpError
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return "timeout"
		}
		return "connection"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection"
	}
	return ""
}

// replyReason returns the prefix of a transient error reply: at the start of msg, or anywhere after ": " when
// inside is set (the text of a reply wrapped by another error).
func replyReason(msg string, inside bool) string {
	for _, p := range transientReplies {
		if strings.HasPrefix(msg, p+" ") || (inside && strings.Contains(msg, ": "+p+" ")) {
			return p
		}
	}
	return ""
}

// hasPermissionPrefix catches the refusals by their text, wherever a wrapper put them in the message.
func hasPermissionPrefix(msg string) bool {
	for _, p := range []string{"NOPERM ", "NOAUTH ", "WRONGPASS "} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, ": "+p) {
			return true
		}
	}
	return false
}

// isUnblocked reports the error Redis gives a blocked client when its server stops being a primary (a failover
// turned it into a replica): "UNBLOCKED force unblock from blocking operation, instance state changed".
func isUnblocked(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "UNBLOCKED ")
}

// isSlotMoving reports the refusals of a Cluster whose slots are moving or being reassigned: TRYAGAIN (a
// multi-key call while the slot's keys are split between two nodes), ASK and MOVED that go-redis did not follow
// to the end (it follows a few), and CLUSTERDOWN. A call refused with one of them did not run.
func isSlotMoving(err error) bool {
	if err == nil {
		return false
	}
	switch transientReason(err) { // the one reading of Redis's replies, classify's
	case "TRYAGAIN", "ASK", "MOVED", "CLUSTERDOWN":
		return true
	}
	return false
}

// isNoScript reports Redis's answer to an EVALSHA of a script it does not have cached.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// isMoved reports the errors after which a Cluster's slot map is stale: the slot moved (a failover or a
// resharding), or its node is gone.
func isMoved(err error) bool {
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	if _, ok := redis.IsAskError(err); ok {
		return true
	}
	var ne net.Error
	return redis.IsClusterDownError(err) || redis.IsTryAgainError(err) || redis.IsReadOnlyError(err) ||
		errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED)
}
