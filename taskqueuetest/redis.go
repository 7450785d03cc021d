package taskqueuetest

import (
	"testing"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// RedisServer starts a redis-server of the test's own on a free loopback port (never 6379), with nothing written
// to disk, stops it when the test ends (or when the test process dies), and returns its address for [WithAddr].
// It never touches another Redis. Without a redis-server binary on PATH it skips the test, or fails it when the
// environment has CI=true.
func RedisServer(t testing.TB) string {
	t.Helper()
	return redistest.Run(t, redistest.Options{Args: redistest.NoPersistence}).Addr
}
