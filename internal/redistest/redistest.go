// Package redistest starts redis-server processes for the tests of every module of this repository (the root
// package, cmd/taskqueue): on a free loopback port, never 6379, with the data and log in a directory of their own,
// killed by pid when the test ends and, on Linux, when the test binary dies. It is not part of the API.
package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NoPersistence is the persistence flags of a server that writes nothing to disk.
var NoPersistence = []string{"--save", "", "--appendonly", "no"}

// ErrExited is wrapped by the error of a server that exited before it answered; the error carries its output.
var ErrExited = errors.New("redis-server exited at start")

// Options says how to start a server. The zero value is a plain server with the redis-server defaults.
type Options struct {
	// Config is a configuration file, passed first (redis-server reads a file only as its first argument).
	Config string
	// Args come after the launcher's own (--port, --bind, --dir, --daemonize, --loglevel warning, --logfile), so
	// that a repeated simple setting (--loglevel notice) replaces the launcher's.
	Args []string
	// Dir holds the data and the log; empty means a new temporary directory, removed by [Server.Kill].
	Dir string
	// Port is the port to listen on; 0 means a free loopback port.
	Port int
	// TLS, when set, turns the plaintext listener off (--port 0), listens for TLS on the port instead, and is the
	// client configuration the launcher's readiness check connects with.
	TLS *tls.Config
	// Timeout bounds the wait until the server answers and has loaded its data; 0 means 15s.
	Timeout time.Duration
}

// Server is one redis-server process. Kill and Restart may be called from any goroutine.
type Server struct {
	Addr    string // 127.0.0.1:port
	Port    int
	Dir     string
	LogFile string

	bin     string
	args    []string
	tlsCfg  *tls.Config
	timeout time.Duration
	ownDir  bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the redis-server on PATH.
func Binary() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("no redis-server on PATH (%w)", err)
	}
	return bin, nil
}

// Need skips t loudly when there is no redis-server binary, except under CI, where it fails t.
func Need(t testing.TB) {
	t.Helper()
	if _, err := Binary(); err != nil {
		SkipOrFail(t, err)
	}
}

// SkipOrFail fails t under CI (CI set), where a real redis-server is required, and skips it loudly elsewhere.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("real redis-server needed in CI: %v", err)
	}
	t.Skipf("SKIPPING real-Redis test: %v (install redis-server to run it)", err)
}

// FreePort returns a free loopback port other than 6379, which may hold someone else's data.
func FreePort() (int, error) {
	for range 10 {
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
	return 0, errors.New("no free loopback port")
}

// Start starts a server and waits until it answers and has loaded its data. The caller kills it.
func Start(o Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, Port: o.Port, Dir: o.Dir, tlsCfg: o.TLS, timeout: o.Timeout}
	if s.Port == 0 {
		if s.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if s.Port == 6379 {
		return nil, errors.New("redistest never starts a server on 6379")
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "taskqueue-redis-"); err != nil {
			return nil, err
		}
		s.ownDir = true
	}
	if s.timeout == 0 {
		s.timeout = 15 * time.Second
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.Port)
	s.LogFile = filepath.Join(s.Dir, fmt.Sprintf("redis-%d.log", s.Port))
	if o.Config != "" {
		s.args = append(s.args, o.Config)
	}
	if o.TLS != nil {
		s.args = append(s.args, "--port", "0", "--tls-port", strconv.Itoa(s.Port))
	} else {
		s.args = append(s.args, "--port", strconv.Itoa(s.Port))
	}
	s.args = append(s.args, "--bind", "127.0.0.1", "--dir", s.Dir, "--daemonize", "no", "--loglevel", "warning",
		"--logfile", s.LogFile)
	s.args = append(s.args, o.Args...)
	if err := s.Restart(); err != nil {
		s.removeDir()
		return nil, err
	}
	return s, nil
}

// Run starts a server for t (skipping or failing t as [Need] does without a binary) and kills it when t ends. An
// empty o.Dir means a directory under t.TempDir().
func Run(t testing.TB, o Options) *Server {
	t.Helper()
	Need(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill) // registered after TempDir: runs before the directory is removed
	return s
}

// Restart starts the server (again, after [Server.Kill]) on the same port, directory and arguments, so that an
// append-only file is reloaded, and waits until it answers and has loaded its data.
func (s *Server) Restart() error {
	cmd := exec.Command(s.bin, s.args...)
	var out bytes.Buffer // what redis-server prints before its log file is open (a bad argument)
	cmd.Stdout, cmd.Stderr = &out, &out
	DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: s.tlsCfg, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	deadline := time.Now().Add(s.timeout)
	for {
		err := rdb.Ping(context.Background()).Err()
		if err == nil {
			var info string
			info, err = rdb.Info(context.Background(), "persistence").Result()
			if err == nil && !strings.Contains(info, "loading:1") {
				return nil
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(s.LogFile)
			return fmt.Errorf("%w on %s: %s%s", ErrExited, s.Addr, out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server did not come up on %s: %v", s.Addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL (no shutdown, no final fsync) and waits until it is gone.
// Killing twice does no harm; [Server.Restart] starts it again.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// Stop kills the server and removes the directory the launcher made for it, if it made one.
func (s *Server) Stop() {
	s.Kill()
	s.removeDir()
}

func (s *Server) removeDir() {
	if s.ownDir {
		_ = os.RemoveAll(s.Dir)
	}
}

// Signal sends sig to the running server (SIGSTOP and SIGCONT freeze and thaw it).
func (s *Server) Signal(sig os.Signal) error {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("redis-server not running")
	}
	return cmd.Process.Signal(sig)
}

// Exited is closed when the current process has exited.
func (s *Server) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exited
}
