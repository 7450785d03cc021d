package taskqueuetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer starts a redis-server of the test's own on a free loopback port, stops it when the test ends, and
// returns its address for [WithAddr]. It never touches another Redis. Without a redis-server binary on PATH it
// skips the test, or fails it when the environment has CI=true.
func RedisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("taskqueuetest: no redis-server on PATH (CI=true)")
		}
		t.Skip("taskqueuetest: no redis-server on PATH: skipping the real-Redis variant")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("taskqueuetest: free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatalf("taskqueuetest: redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("taskqueuetest: redis-server did not start on %s", addr)
		}
		time.Sleep(20 * time.Millisecond) // waiting for a process to listen: nothing to block on
	}
	return addr
}
