package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server this harness started on a free loopback port; it is the only Redis the harness
// talks to (never the one on port 6379), and it is killed by pid at the end.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	rdb  *redis.Client // an admin connection: INFO, FLUSHALL, CONFIG
}

// startRedis starts redis-server without persistence on a free 127.0.0.1 port and waits until it answers PING.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not on PATH (Debian: apt-get install redis-server): %w", err)
	}
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
		cmd.Stdout, cmd.Stderr = nil, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		s := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
		s.rdb = redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 2})
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if s.rdb.Ping(ctx).Err() == nil {
				return s, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.stop() // the port was taken in between, or the server is slow: try another port
	}
	return nil, errors.New("redis-server did not start")
}

// freePort returns a loopback port that was free a moment ago; never 6379.
func freePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port != 6379 {
			return port, nil
		}
	}
}

// stop kills the server by pid and reaps it.
func (s *redisServer) stop() {
	_ = s.rdb.Close()
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// flush empties this server (FLUSHALL on our own server only) and resets its statistics.
func (s *redisServer) flush(ctx context.Context) error {
	if err := s.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	return s.rdb.ConfigResetStat(ctx).Err()
}

// info returns the numeric fields of one INFO section.
func (s *redisServer) info(ctx context.Context, section string) (map[string]float64, error) {
	raw, err := s.rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(raw), nil
}

// parseInfo reads "key:value" lines; for commandstats lines ("cmdstat_x:calls=1,usec=2,...") it stores
// "cmdstat_x.calls", "cmdstat_x.usec", and so on.
func parseInfo(raw string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.SplitSeq(raw, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(v, "=") {
			for kv := range strings.SplitSeq(v, ",") {
				sk, sv, ok := strings.Cut(kv, "=")
				if f, err := strconv.ParseFloat(sv, 64); ok && err == nil {
					out[k+"."+sk] = f
				}
			}
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = f
		}
	}
	return out
}

// cpuSeconds is the CPU time the server has used, user + system.
func (s *redisServer) cpuSeconds(ctx context.Context) (float64, error) {
	m, err := s.info(ctx, "cpu")
	if err != nil {
		return 0, err
	}
	return m["used_cpu_user"] + m["used_cpu_sys"], nil
}

// usedMemory is INFO memory's used_memory.
func (s *redisServer) usedMemory(ctx context.Context) (float64, error) {
	m, err := s.info(ctx, "memory")
	if err != nil {
		return 0, err
	}
	return m["used_memory"], nil
}
