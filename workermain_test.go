package taskqueue

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// envMap is a getenv for ParseWorkerMainConfig that reads a fixed map.
func envMap(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestWorkerMainParseDefaults(t *testing.T) {
	t.Parallel()
	for name, getenv := range map[string]func(string) string{"nil getenv": nil, "empty env": envMap()} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseWorkerMainConfig(nil, getenv)
			require.NoError(t, err)
			require.Equal(t, "localhost:6379", c.Redis.Addr)
			require.Zero(t, c.Redis.DB)
			require.Nil(t, c.Redis.TLSConfig)
			require.Equal(t, DefaultKeyPrefix, c.KeyPrefix)
			require.Equal(t, DefaultResolverID, c.ResolverID)
			require.Equal(t, 10, c.Concurrency)
			require.Equal(t, 30*time.Second, c.Lease)
			require.Equal(t, 20*time.Second, c.ShutdownGrace)
			require.Equal(t, slog.LevelInfo, c.LogLevel)
			require.Equal(t, "text", c.LogFormat)
			require.Empty(t, c.WorkerID)
		})
	}
}

func TestWorkerMainParseFlags(t *testing.T) {
	t.Parallel()
	c, err := ParseWorkerMainConfig([]string{
		"--redis-url", "rediss://app:s3cret@redis.example.com:6380/3",
		"--key-prefix=billing", "-concurrency", "32", "--resolver-id", "jobs",
		"--lease", "1m", "--shutdown-grace=5s", "--log-level", "DEBUG", "--log-format", "json",
		"--worker-id", "worker-1",
	}, nil)
	require.NoError(t, err)
	require.Equal(t, "redis.example.com:6380", c.Redis.Addr)
	require.Equal(t, 3, c.Redis.DB)
	require.Equal(t, "app", c.Redis.Username)
	require.Equal(t, "s3cret", c.Redis.Password)
	require.NotNil(t, c.Redis.TLSConfig, "rediss:// turns TLS on")
	require.Equal(t, "redis.example.com", c.Redis.TLSConfig.ServerName)
	require.Equal(t, "billing", c.KeyPrefix)
	require.Equal(t, 32, c.Concurrency)
	require.Equal(t, "jobs", c.ResolverID)
	require.Equal(t, time.Minute, c.Lease)
	require.Equal(t, 5*time.Second, c.ShutdownGrace)
	require.Equal(t, slog.LevelDebug, c.LogLevel)
	require.Equal(t, "json", c.LogFormat)
	require.Equal(t, "worker-1", c.WorkerID)
}

func TestWorkerMainParseEnvFallbacks(t *testing.T) {
	t.Parallel()
	c, err := ParseWorkerMainConfig(nil, envMap(
		"REDIS_URL", "redis://:pw@10.1.2.3:6390/2",
		"TASKQUEUE_KEY_PREFIX", "env-prefix",
		"TASKQUEUE_CONCURRENCY", "3",
		"TASKQUEUE_RESOLVER_ID", "env-resolver",
		"TASKQUEUE_LEASE", "45s",
		"TASKQUEUE_SHUTDOWN_GRACE", "1s",
		"TASKQUEUE_LOG_LEVEL", "warn",
		"TASKQUEUE_LOG_FORMAT", "json",
		"TASKQUEUE_WORKER_ID", "env-worker",
	))
	require.NoError(t, err)
	require.Equal(t, "10.1.2.3:6390", c.Redis.Addr)
	require.Equal(t, 2, c.Redis.DB)
	require.Equal(t, "pw", c.Redis.Password)
	require.Equal(t, "env-prefix", c.KeyPrefix)
	require.Equal(t, 3, c.Concurrency)
	require.Equal(t, "env-resolver", c.ResolverID)
	require.Equal(t, 45*time.Second, c.Lease)
	require.Equal(t, time.Second, c.ShutdownGrace)
	require.Equal(t, slog.LevelWarn, c.LogLevel)
	require.Equal(t, "json", c.LogFormat)
	require.Equal(t, "env-worker", c.WorkerID)
}

func TestWorkerMainParsePrecedence(t *testing.T) {
	t.Parallel()
	env := envMap("TASKQUEUE_CONCURRENCY", "3", "TASKQUEUE_KEY_PREFIX", "from-env", "REDIS_URL", "redis://env-host:1111/1")

	// A flag wins over its variable; the variable wins over the default.
	c, err := ParseWorkerMainConfig([]string{"--concurrency", "7"}, env)
	require.NoError(t, err)
	require.Equal(t, 7, c.Concurrency)
	require.Equal(t, "from-env", c.KeyPrefix)
	require.Equal(t, "env-host:1111", c.Redis.Addr)
	require.Equal(t, 30*time.Second, c.Lease)

	// An empty variable counts as unset.
	c, err = ParseWorkerMainConfig(nil, envMap("TASKQUEUE_CONCURRENCY", "", "REDIS_URL", ""))
	require.NoError(t, err)
	require.Equal(t, 10, c.Concurrency)
	require.Equal(t, "localhost:6379", c.Redis.Addr)

	// --redis-url beats REDIS_URL.
	c, err = ParseWorkerMainConfig([]string{"--redis-url", "redis://flag-host:2222/4"}, env)
	require.NoError(t, err)
	require.Equal(t, "flag-host:2222", c.Redis.Addr)
	require.Equal(t, 4, c.Redis.DB)

	// Host, port and db flags beat REDIS_URL too; the parts not given take their defaults, not the URL's.
	c, err = ParseWorkerMainConfig([]string{"--redis-db", "5"}, env)
	require.NoError(t, err)
	require.Equal(t, "localhost:6379", c.Redis.Addr)
	require.Equal(t, 5, c.Redis.DB)

	c, err = ParseWorkerMainConfig([]string{"--redis-host", "10.0.0.5", "--redis-port", "6380", "--redis-db", "2"}, nil)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.5:6380", c.Redis.Addr)
	require.Equal(t, 2, c.Redis.DB)

	c, err = ParseWorkerMainConfig([]string{"--redis-host", "::1"}, nil)
	require.NoError(t, err)
	require.Equal(t, "[::1]:6379", c.Redis.Addr)

	// Redis host and port have no variable: Kubernetes sets REDIS_PORT=tcp://… for a service named redis.
	c, err = ParseWorkerMainConfig(nil, envMap("REDIS_HOST", "elsewhere", "REDIS_PORT", "tcp://10.0.0.1:6379"))
	require.NoError(t, err)
	require.Equal(t, "localhost:6379", c.Redis.Addr)
}

func TestWorkerMainParseErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		args   []string
		env    []string
		want   error
		substr string
	}{
		{"unknown flag", []string{"--nope"}, nil, ErrInvalidConfig, "nope"},
		{"missing value", []string{"--concurrency"}, nil, ErrInvalidConfig, "concurrency"},
		{"positional argument", []string{"extra"}, nil, ErrInvalidConfig, `"extra"`},
		{"concurrency not a number", []string{"--concurrency", "many"}, nil, ErrInvalidConfig, "--concurrency"},
		{"concurrency zero", []string{"--concurrency", "0"}, nil, ErrInvalidConfig, "--concurrency"},
		{"concurrency negative", []string{"--concurrency=-2"}, nil, ErrInvalidConfig, "--concurrency"},
		{"bad env names the variable", nil, []string{"TASKQUEUE_CONCURRENCY", "ten"}, ErrInvalidConfig, "$TASKQUEUE_CONCURRENCY"},
		{"lease without unit", []string{"--lease", "30"}, nil, ErrInvalidConfig, "--lease"},
		{"lease too short", []string{"--lease", "50ms"}, nil, ErrInvalidConfig, "at least 100ms"},
		{"negative grace", []string{"--shutdown-grace", "-1s"}, nil, ErrInvalidConfig, "--shutdown-grace"},
		{"bad env duration", nil, []string{"TASKQUEUE_LEASE", "soon"}, ErrInvalidConfig, "$TASKQUEUE_LEASE"},
		{"log level", []string{"--log-level", "verbose"}, nil, ErrInvalidConfig, "debug or info or warn or error"},
		{"log format", []string{"--log-format", "xml"}, nil, ErrInvalidConfig, "text or json"},
		{"bad env log level", nil, []string{"TASKQUEUE_LOG_LEVEL", "loud"}, ErrInvalidConfig, "$TASKQUEUE_LOG_LEVEL"},
		{"key prefix with braces", []string{"--key-prefix", "a{b}"}, nil, ErrInvalidKeyPrefix, "--key-prefix"},
		{"empty key prefix", []string{"--key-prefix="}, nil, ErrInvalidKeyPrefix, "--key-prefix"},
		{"bad env key prefix", nil, []string{"TASKQUEUE_KEY_PREFIX", "has space"}, ErrInvalidKeyPrefix, "$TASKQUEUE_KEY_PREFIX"},
		{"worker id with space", []string{"--worker-id", "my worker"}, nil, ErrInvalidConfig, "--worker-id"},
		{"empty resolver id", []string{"--resolver-id="}, nil, ErrInvalidConfig, "--resolver-id"},
		{"redis url scheme", []string{"--redis-url", "http://localhost:6379"}, nil, ErrInvalidConfig, "invalid URL scheme"},
		{"redis url db", []string{"--redis-url", "redis://localhost:6379/zero"}, nil, ErrInvalidConfig, "database"},
		{"bad env redis url", nil, []string{"REDIS_URL", "localhost:6379"}, ErrInvalidConfig, "$REDIS_URL"},
		{"url and host together", []string{"--redis-url", "redis://h:1/0", "--redis-host", "h"}, nil, ErrInvalidConfig, "cannot be combined"},
		{"port out of range", []string{"--redis-port", "70000"}, nil, ErrInvalidConfig, "--redis-port"},
		{"port not a number", []string{"--redis-port", "http"}, nil, ErrInvalidConfig, "--redis-port"},
		{"negative db", []string{"--redis-db", "-1"}, nil, ErrInvalidConfig, "--redis-db"},
		{"host with port", []string{"--redis-host", "cache:6380"}, nil, ErrInvalidConfig, "--redis-port"},
		{"empty host", []string{"--redis-host="}, nil, ErrInvalidConfig, "--redis-host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseWorkerMainConfig(tc.args, envMap(tc.env...))
			require.Nil(t, c)
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.substr)
		})
	}
}

func TestWorkerMainParseNeverEchoesRedisPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://user:hunter2@localhost:notaport/0",
		"redis://user:hunter2@local host:6379/0",
		"rediss://user:hunter2@localhost:6379/x",
		"redis://user:hunter2@localhost:6379/0?dial_timeout=forever",
	} {
		_, err := ParseWorkerMainConfig([]string{"--redis-url", u}, nil)
		require.ErrorIs(t, err, ErrInvalidConfig, u)
		require.NotContains(t, err.Error(), "hunter2")
		_, err = ParseWorkerMainConfig(nil, envMap("REDIS_URL", u))
		require.ErrorIs(t, err, ErrInvalidConfig, u)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

func TestWorkerMainParseHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "--help", "-help"} {
		c, err := ParseWorkerMainConfig([]string{"--concurrency", "3", arg}, nil)
		require.Nil(t, c)
		require.ErrorIs(t, err, flag.ErrHelp, arg)
	}

	var b bytes.Buffer
	WriteWorkerMainUsage(&b, "myworker")
	usage := b.String()
	require.Contains(t, usage, "Usage: myworker [flags]")
	require.Contains(t, usage, "Examples:\n  myworker --redis-url")
	require.Contains(t, usage, "SIGTERM")
	for _, f := range workerFlags {
		require.Contains(t, usage, "--"+f.name+" ", f.name)
		if f.env != "" {
			require.Contains(t, usage, "$"+f.env, f.name)
		}
	}
	require.Contains(t, usage, "($TASKQUEUE_CONCURRENCY, default 10)", "defaults are shown")
	require.Contains(t, usage, `($TASKQUEUE_RESOLVER_ID, default "default")`)
}

// miniURL returns a Redis URL for a miniredis.
func miniURL(mr *miniredis.Miniredis) string { return "redis://" + mr.Addr() + "/0" }

func TestWorkerMainRunsTasksUntilCancelled(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)

	// The worker binary: functions registered under module and name.
	reg, ref := testRegistry(t)
	ran := make(chan string, 1)
	require.NoError(t, Register(ref, "greetings", "say_hello", func(_ context.Context, a struct {
		Name string `json:"name"`
	}) error {
		ran <- "Hello, " + a.Name
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Flags and environment together, as a deployment would: the environment names Redis.
		env := envMap("REDIS_URL", miniURL(mr), "TASKQUEUE_LOG_LEVEL", "error")
		done <- runWorkerMain(ctx, reg, []string{"--key-prefix", "e2e", "--concurrency", "2", "--worker-id", "e2e-worker",
			"--shutdown-grace", "2s"}, env, io.Discard)
	}()

	// The producer: only Redis details and a resolver that knows no functions.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	preg, _ := testRegistry(t)
	pq, err := NewRedisTaskQueue(rdb, "e2e", preg, nil)
	require.NoError(t, err)
	require.NoError(t, pq.Enqueue(ctx, NewTaskSpec("hello-ada", Ref("greetings", "say_hello", map[string]string{"name": "Ada"}))))

	select {
	case got := <-ran:
		require.Equal(t, "Hello, Ada", got)
	case err := <-done:
		t.Fatalf("the worker returned before running the task: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the worker to run the task")
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not return after its context was cancelled")
	}
	st, err := countsOf(context.Background(), pq)
	require.NoError(t, err)
	require.Equal(t, Counts{}, st, "the ack was flushed before RunWorkerMain returned")
}

func TestWorkerMainHelpReturnsNil(t *testing.T) {
	t.Parallel()
	// --help prints to standard output and returns nil without connecting anywhere.
	var out bytes.Buffer
	require.NoError(t, runWorkerMain(context.Background(), nil, []string{"--help"}, nil, &out))
	require.Contains(t, out.String(), "Usage: ")
}

func TestWorkerMainRunWithClientHandsBackOnStop(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	started := make(chan struct{})
	require.NoError(t, Register(s.ref, "slow", "wait", func(ctx context.Context, _ struct{}) error {
		close(started)
		<-ctx.Done() // runs until the worker stops
		return ctx.Err()
	}))
	c, err := ParseWorkerMainConfig([]string{"--key-prefix", "test", "--shutdown-grace", "50ms"}, nil)
	require.NoError(t, err)
	var events []EventKind
	evc := make(chan EventKind, 16)
	c.Logger = slog.New(slog.DiscardHandler)
	c.OnEvent = func(e Event) { evc <- e.Kind }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.RunWithClient(ctx, s.rdb, s.reg) }()
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("slow-1", Ref("slow", "wait", nil))))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the task to start")
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("RunWithClient did not return within the shutdown grace")
	}
	close(evc)
	for k := range evc {
		events = append(events, k)
	}
	require.Equal(t, []EventKind{EventStarted, EventReleased}, events)
	require.NoError(t, s.rdb.Ping(context.Background()).Err(), "RunWithClient leaves the caller's client open")
	st, err := countsOf(context.Background(), s.q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: 1}, st, "the unfinished task was handed back at once, not after its lease")
}

func TestWorkerMainStartupErrors(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.DiscardHandler)

	t.Run("unreachable Redis", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		addr := mr.Addr()
		mr.Close() // nothing listens there any more
		reg, _ := testRegistry(t)
		c, err := ParseWorkerMainConfig([]string{"--redis-url", "redis://app:hunter2@" + addr + "/0?max_retries=-1"}, nil)
		require.NoError(t, err)
		c.Logger = quiet
		err = c.Run(context.Background(), reg)
		require.Error(t, err)
		require.Contains(t, err.Error(), "cannot reach Redis at "+addr)
		require.NotContains(t, err.Error(), "hunter2")
	})
	t.Run("resolver id not registered", func(t *testing.T) {
		t.Parallel()
		s := newMini(t, nil)
		c, err := ParseWorkerMainConfig([]string{"--resolver-id", "other"}, nil)
		require.NoError(t, err)
		c.Logger = quiet
		err = c.RunWithClient(context.Background(), s.rdb, s.reg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.Contains(t, err.Error(), `"other" is not registered`)
	})
	t.Run("empty registry", func(t *testing.T) {
		t.Parallel()
		s := newMini(t, nil)
		c, err := ParseWorkerMainConfig(nil, nil)
		require.NoError(t, err)
		c.Logger = quiet
		require.ErrorIs(t, c.RunWithClient(context.Background(), s.rdb, NewResolverRegistry()), ErrInvalidConfig)
		require.ErrorIs(t, c.RunWithClient(context.Background(), s.rdb, nil), ErrInvalidConfig)
		require.ErrorIs(t, c.RunWithClient(context.Background(), nil, s.reg), ErrInvalidConfig)
	})
	t.Run("cancelled before start", func(t *testing.T) {
		t.Parallel()
		s := newMini(t, nil)
		c, err := ParseWorkerMainConfig(nil, nil)
		require.NoError(t, err)
		c.Logger = quiet
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, c.RunWithClient(ctx, s.rdb, s.reg))
	})
	t.Run("hand-built config takes defaults", func(t *testing.T) {
		t.Parallel()
		s := newMini(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, (&WorkerMainConfig{Logger: quiet}).RunWithClient(ctx, s.rdb, s.reg))
		require.ErrorIs(t, (&WorkerMainConfig{Logger: quiet}).Run(ctx, s.reg), ErrInvalidConfig, "no Redis options")
	})
	t.Run("bad flags", func(t *testing.T) {
		t.Parallel()
		err := RunWorkerMain(context.Background(), NewResolverRegistry(), []string{"--concurrency", "none"})
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestWorkerMainDefaultWorkerName(t *testing.T) {
	t.Parallel()
	a, b := defaultWorkerName(), defaultWorkerName()
	require.Regexp(t, resolverIDPattern, a)
	require.NotEqual(t, a, b, "two processes on one host with one pid still differ")
}

func ExampleParseWorkerMainConfig() {
	getenv := func(name string) string {
		return map[string]string{"REDIS_URL": "rediss://app:secret@redis.internal:6380/2", "TASKQUEUE_CONCURRENCY": "8"}[name]
	}
	c, err := ParseWorkerMainConfig([]string{"--key-prefix", "billing", "--concurrency", "16"}, getenv)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Redis.Addr, c.Redis.DB, c.Redis.TLSConfig != nil, c.KeyPrefix, c.Concurrency, c.ShutdownGrace)

	_, err = ParseWorkerMainConfig([]string{"--log-level", "chatty"}, nil)
	fmt.Println(errors.Is(err, ErrInvalidConfig), strings.TrimPrefix(err.Error(), "taskqueue: invalid configuration: "))
	// Output:
	// redis.internal:6380 2 true billing 16 20s
	// true --log-level "chatty": want debug or info or warn or error
}

func TestWorkerMainParseTLS(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)

	t.Run("off by default", func(t *testing.T) {
		c, err := ParseWorkerMainConfig([]string{"--redis-url", "redis://h:1/0"}, nil)
		require.NoError(t, err)
		require.Nil(t, c.Redis.TLSConfig)
	})
	t.Run("rediss with a CA file", func(t *testing.T) {
		c, err := ParseWorkerMainConfig([]string{"--redis-url", "rediss://redis.internal:6380/0", "--tls-ca", p.caFile}, nil)
		require.NoError(t, err)
		tc := c.Redis.TLSConfig
		require.NotNil(t, tc)
		require.Equal(t, "redis.internal", tc.ServerName, "verified against the URL's host")
		require.NotNil(t, tc.RootCAs, "the CA file replaces the system pool")
		require.False(t, tc.InsecureSkipVerify)
		require.GreaterOrEqual(t, tc.MinVersion, uint16(tls.VersionTLS12))
		require.Empty(t, tc.Certificates)
	})
	t.Run("server name overrides the host", func(t *testing.T) {
		c, err := ParseWorkerMainConfig([]string{"--redis-url", "rediss://10.0.0.7:6380/0", "--tls-server-name", "redis.internal"}, nil)
		require.NoError(t, err)
		require.Equal(t, "redis.internal", c.Redis.TLSConfig.ServerName)
		require.Nil(t, c.Redis.TLSConfig.RootCAs, "no CA file: the system pool")
	})
	t.Run("host flags turn TLS on", func(t *testing.T) {
		c, err := ParseWorkerMainConfig([]string{"--redis-host", "cache.internal", "--redis-port", "6380", "--tls-ca", p.caFile}, nil)
		require.NoError(t, err)
		require.Equal(t, "cache.internal:6380", c.Redis.Addr)
		require.Equal(t, "cache.internal", c.Redis.TLSConfig.ServerName)
		require.Equal(t, uint16(tls.VersionTLS12), c.Redis.TLSConfig.MinVersion)
		// A TLS flag alone (the defaults: localhost) turns it on too.
		c, err = ParseWorkerMainConfig([]string{"--tls-server-name", "redis.test"}, nil)
		require.NoError(t, err)
		require.Equal(t, "redis.test", c.Redis.TLSConfig.ServerName)
	})
	t.Run("environment fallbacks and client certificate", func(t *testing.T) {
		c, err := ParseWorkerMainConfig(nil, envMap(
			"REDIS_URL", "rediss://redis.internal:6380/0",
			"TASKQUEUE_TLS_CA", p.caFile,
			"TASKQUEUE_TLS_SERVER_NAME", "other.internal",
			"TASKQUEUE_TLS_CERT", p.clientCertFile,
			"TASKQUEUE_TLS_KEY", p.clientKeyFile,
		))
		require.NoError(t, err)
		tc := c.Redis.TLSConfig
		require.Equal(t, "other.internal", tc.ServerName)
		require.NotNil(t, tc.RootCAs)
		require.Len(t, tc.Certificates, 1)
		// A flag wins over its variable.
		c, err = ParseWorkerMainConfig([]string{"--tls-server-name", "flag.internal"}, envMap("REDIS_URL", "rediss://h:1/0", "TASKQUEUE_TLS_SERVER_NAME", "env.internal"))
		require.NoError(t, err)
		require.Equal(t, "flag.internal", c.Redis.TLSConfig.ServerName)
	})
	t.Run("insecure skip verify is an explicit opt-in", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			env  []string
			want bool
		}{
			{[]string{"--redis-url", "rediss://h:1/0"}, nil, false},
			{[]string{"--redis-url", "rediss://h:1/0", "--tls-insecure-skip-verify"}, nil, true},
			{[]string{"--redis-url", "rediss://h:1/0", "--tls-insecure-skip-verify=true"}, nil, true},
			{[]string{"--redis-url", "rediss://h:1/0", "--tls-insecure-skip-verify=false"}, []string{"TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "true"}, false},
			{[]string{"--redis-url", "rediss://h:1/0"}, []string{"TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "1"}, true},
			{[]string{"--redis-url", "rediss://h:1/0"}, []string{"TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "false"}, false},
		} {
			c, err := ParseWorkerMainConfig(tc.args, envMap(tc.env...))
			require.NoError(t, err, tc.args)
			require.Equal(t, tc.want, c.Redis.TLSConfig.InsecureSkipVerify, "%v %v", tc.args, tc.env)
		}
	})

	notPEM := filepath.Join(t.TempDir(), "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	missing := filepath.Join(t.TempDir(), "missing.pem")
	rediss := []string{"--redis-url", "rediss://h:6380/0"}
	with := func(extra ...string) []string { return append(append([]string{}, rediss...), extra...) }
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		substr []string
	}{
		{"unreadable CA file", with("--tls-ca", missing), nil, []string{"--tls-ca", "cannot read the CA file", "no such file"}},
		{"unreadable CA file from env", rediss, []string{"TASKQUEUE_TLS_CA", missing}, []string{"$TASKQUEUE_TLS_CA", "cannot read"}},
		{"CA file without PEM", with("--tls-ca", notPEM), nil, []string{"--tls-ca", "holds no PEM certificate"}},
		{"cert without key", with("--tls-cert", p.clientCertFile), nil, []string{"go together", "--tls-cert"}},
		{"key without cert", with("--tls-key", p.clientKeyFile), nil, []string{"go together", "--tls-key"}},
		{"unreadable client cert", with("--tls-cert", missing, "--tls-key", p.clientKeyFile), nil, []string{"cannot load the client certificate"}},
		{"cert and key that do not match", with("--tls-cert", p.clientCertFile, "--tls-key", p.keyFile), nil, []string{"cannot load the client certificate"}},
		{"insecure with a CA", with("--tls-insecure-skip-verify", "--tls-ca", p.caFile), nil, []string{"--tls-insecure-skip-verify", "--tls-ca", "no effect"}},
		{"insecure with a server name", with("--tls-server-name", "x"), []string{"TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "true"}, []string{"$TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "--tls-server-name"}},
		{"bad insecure variable", rediss, []string{"TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "maybe"}, []string{"$TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "true or false"}},
		{"bad insecure flag value", with("--tls-insecure-skip-verify=maybe"), nil, []string{"tls-insecure-skip-verify"}},
		{"plaintext URL with a TLS flag", []string{"--redis-url", "redis://h:6379/0", "--tls-ca", p.caFile}, nil, []string{"use rediss://", "--redis-url"}},
		{"plaintext env URL with a TLS flag", []string{"--tls-insecure-skip-verify"}, []string{"REDIS_URL", "redis://h:6379/0"}, []string{"use rediss://", "$REDIS_URL"}},
		{"unix socket with a TLS flag", []string{"--redis-url", "unix:///tmp/redis.sock", "--tls-ca", p.caFile}, nil, []string{"unix://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWorkerMainConfig(tc.args, envMap(tc.env...))
			require.Nil(t, c)
			require.ErrorIs(t, err, ErrInvalidConfig)
			for _, s := range tc.substr {
				require.Contains(t, err.Error(), s)
			}
		})
	}
}

func TestWorkerMainUsageShowsTLSFlags(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	WriteWorkerMainUsage(&b, "w")
	usage := b.String()
	require.Contains(t, usage, "  --tls-ca FILE  ($TASKQUEUE_TLS_CA)\n")
	require.Contains(t, usage, "  --tls-insecure-skip-verify  ($TASKQUEUE_TLS_INSECURE_SKIP_VERIFY)\n")
	require.Contains(t, usage, "DANGEROUS")
}
