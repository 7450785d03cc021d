package taskqueue

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A generated id is 22 letters and digits, a valid task id and a valid name, and ids do not repeat; every
// character of the alphabet turns up, and none more often than chance allows.
func TestNewIDIsShortAndRandom(t *testing.T) {
	t.Parallel()
	const n = 20000
	seen := make(map[string]bool, n)
	counts := map[rune]int{}
	for range n {
		id := newID()
		require.Regexp(t, `^[0-9A-Za-z]{22}$`, id)
		require.NoError(t, validateTaskID(id))
		require.True(t, namePattern.MatchString(id), "a generated id is also a valid name")
		require.False(t, seen[id], "id %s repeated", id)
		seen[id] = true
		for _, c := range id {
			counts[c]++
		}
	}
	require.Len(t, counts, len(idAlphabet), "every character of the alphabet")
	mean := float64(n*idLen) / float64(len(idAlphabet)) // 7097 per character
	for c, k := range counts {
		require.InDelta(t, mean, float64(k), 0.1*mean, "character %q drawn %d times", c, k)
	}
}

// A group id names a run whether its run id is a generated id of today (22 letters and digits) or of a version
// before 2026-12 (32 hex digits), so that runs dispatched before an upgrade still complete.
func TestGroupRunIDs(t *testing.T) {
	t.Parallel()
	for _, gid := range []string{"g@" + newID(), "etl.batch@" + strings.Repeat("0a", 16), "g@5f0c2e8a9b7d4c1e8f3a6b2d9c0e1f47"} {
		require.True(t, isGroupRun(gid), gid)
	}
	for _, gid := range []string{"g", "g@", "@" + newID(), "g@" + newID()[:21], "g@" + newID() + "x", "g@" + strings.Repeat("A", 32),
		"g@" + strings.Repeat("0", 31), "-g@" + newID(), "g@" + newID()[:21] + "-"} {
		require.False(t, isGroupRun(gid), gid)
	}
	require.True(t, regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(idAlphabet))
}

// A spec enqueued without an id gets a generated task id of taskIDLen letters and digits, a valid task id.
func TestGeneratedTaskIDIsShort(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	spec := NewTaskSpec("", Ref("m", "f", nil))
	require.NoError(t, s.q.Enqueue(context.Background(), spec))
	require.Regexp(t, `^[0-9A-Za-z]{16}$`, spec.TaskID)
	require.NoError(t, validateTaskID(spec.TaskID))
	seen := map[string]bool{}
	for range 1000 {
		id := newTaskID()
		require.Len(t, id, taskIDLen)
		require.False(t, seen[id], "id %s repeated", id)
		seen[id] = true
	}
}
