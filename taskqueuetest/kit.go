package taskqueuetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// Kit is one test's queue, ready to use: a Redis (a miniredis of its own by default), a client, a registry with a
// [taskqueue.ReferenceResolver] under [taskqueue.DefaultResolverID], a quiet logger and a
// [taskqueue.RedisTaskQueue]. Everything is closed and removed when the test ends.
type Kit struct {
	// Queue is the queue under test: hand it to the code that enqueues, and to the kit's helpers.
	Queue *taskqueue.RedisTaskQueue
	// Registry is the queue's registry (the one passed with [WithRegistry], if any).
	Registry *taskqueue.ResolverRegistry
	// Resolver is the reference resolver under [taskqueue.DefaultResolverID], where tests [taskqueue.Register]
	// the functions that [RunEnqueued] runs; nil when a registry passed with [WithRegistry] holds another kind.
	Resolver *taskqueue.ReferenceResolver
	// Client is the Redis client; the kit closes it.
	Client redis.UniversalClient
	// Miniredis is the embedded server, nil on a real Redis ([WithAddr]).
	Miniredis *miniredis.Miniredis
	// Clock moves the miniredis clock that the queue's scripts read; nil on a real Redis.
	Clock *Clock
	// Logger is the queue's logger: it discards everything unless [WithLogger] gave another.
	Logger *slog.Logger
}

// Option configures [New].
type Option func(*options)

type options struct {
	addr   string
	prefix string
	cfg    *taskqueue.RedisConfig
	reg    *taskqueue.ResolverRegistry
	logger *slog.Logger
}

// WithAddr runs the kit on the real Redis at addr ("127.0.0.1:6390") instead of a miniredis. The queue gets a
// random key prefix unless [WithPrefix] names one, and its keys are deleted when the test ends. [RedisServer]
// starts a server for a test.
func WithAddr(addr string) Option { return func(o *options) { o.addr = addr } }

// WithPrefix sets the queue's key prefix. Default "test" on miniredis, "taskqueuetest-<random>" on a real Redis.
func WithPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithConfig configures the queue; the config is copied, and its Logger, when nil, is the kit's.
func WithConfig(cfg *taskqueue.RedisConfig) Option { return func(o *options) { o.cfg = cfg } }

// WithRegistry makes the queue use reg, the registry of the code under test, instead of a new one.
func WithRegistry(reg *taskqueue.ResolverRegistry) Option { return func(o *options) { o.reg = reg } }

// WithLogger replaces the quiet default logger of the queue (and of [RunEnqueued] on the kit's queue):
// slog.New(slog.NewTextHandler(t.Output(), nil)) shows the logs in the test's output.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Quiet returns a logger that discards everything: the kit's default, so that queue and worker logs stay out of
// test output.
func Quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// New returns a [Kit] for t. On miniredis (the default) the server's clock is frozen at the current time (see
// [Clock]), so that due times are exact and delayed tasks fall due only when the test advances it. Any failure to
// set up ends the test with t.Fatalf.
func New(t testing.TB, opts ...Option) *Kit {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	k := &Kit{Logger: o.logger, Registry: o.reg}
	if k.Logger == nil {
		k.Logger = Quiet()
	}
	if o.addr == "" {
		k.Miniredis = miniredis.RunT(t)
		k.Clock = NewClock(k.Miniredis)
		o.addr = k.Miniredis.Addr()
		if o.prefix == "" {
			o.prefix = "test"
		}
	} else if o.prefix == "" {
		o.prefix = "taskqueuetest-" + randomHex(t)
	}
	client := redis.NewClient(&redis.Options{Addr: o.addr})
	k.Client = client
	t.Cleanup(func() { _ = client.Close() })
	if k.Miniredis == nil {
		if err := client.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("taskqueuetest: no Redis at %s: %v", o.addr, err)
		}
		t.Cleanup(func() { deleteKeys(client, o.prefix) })
	}
	if k.Registry == nil {
		k.Resolver = taskqueue.NewReferenceResolver()
		k.Registry = taskqueue.NewResolverRegistry()
		k.Registry.MustRegister(taskqueue.DefaultResolverID, k.Resolver)
	} else if res, err := k.Registry.Lookup(taskqueue.DefaultResolverID); err == nil {
		k.Resolver, _ = res.(*taskqueue.ReferenceResolver)
	}
	var cfg taskqueue.RedisConfig
	if o.cfg != nil {
		cfg = *o.cfg
	}
	if cfg.Logger == nil {
		cfg.Logger = k.Logger
	}
	q, err := taskqueue.NewRedisTaskQueue(client, o.prefix, k.Registry, &cfg)
	if err != nil {
		t.Fatalf("taskqueuetest: queue: %v", err)
	}
	k.Queue = q
	return k
}

// Advance moves the kit's miniredis clock forward by d, so that tasks delayed by up to d fall due (see [Clock]).
// On a real Redis, whose clock cannot be moved, it ends the test with t.Fatalf.
func (k *Kit) Advance(t testing.TB, d time.Duration) {
	t.Helper()
	if k.Clock == nil {
		t.Fatalf("taskqueuetest: Advance needs the kit's miniredis: a real Redis's clock cannot be moved")
	}
	k.Clock.Advance(d)
}

func randomHex(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("taskqueuetest: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// deleteKeys removes a queue's keys, "{prefix}:…", from a real Redis at the end of a test.
func deleteKeys(client *redis.Client, prefix string) {
	ctx := context.Background()
	iter := client.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		_ = client.Del(ctx, iter.Val()).Err()
	}
}
