package taskqueue

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultKeyPrefix is the key prefix a worker binary uses when neither --key-prefix nor TASKQUEUE_KEY_PREFIX
// names one. Producers that share the worker's queue use the same prefix.
const DefaultKeyPrefix = "taskqueue"

// WorkerMainConfig is the configuration of a worker binary, as [ParseWorkerMainConfig] reads it from the command
// line and the environment. Build one with ParseWorkerMainConfig (an empty command line gives every default);
// then [WorkerMainConfig.Run] runs the worker. The fields after WorkerID are set by no flag: a binary that needs
// them sets them between parsing and running.
type WorkerMainConfig struct {
	// Redis is the client configuration, from --redis-url or REDIS_URL, else from --redis-host, --redis-port and
	// --redis-db. Default localhost:6379, database 0. The --tls-* flags set its TLSConfig.
	Redis *redis.Options
	// KeyPrefix is the queue's key prefix (--key-prefix). Default, and when empty, [DefaultKeyPrefix].
	KeyPrefix string
	// ResolverID is the queue's default resolver id (--resolver-id); the binary must have registered it.
	// Default, and when empty, [DefaultResolverID].
	ResolverID string
	// Concurrency is how many tasks run at once (--concurrency). Default 10.
	Concurrency int
	// Lease is how long a task stays owned without a heartbeat (--lease). Default 30s, at least 100ms.
	Lease time.Duration
	// ShutdownGrace is how long running tasks may take to finish once the worker is told to stop
	// (--shutdown-grace); those still running then are cancelled and handed back to the queue. Default 20s.
	ShutdownGrace time.Duration
	// LogLevel is the lowest level logged (--log-level). Default info.
	LogLevel slog.Level
	// LogFormat is "text" or "json" (--log-format). Default "text".
	LogFormat string
	// Signing is the queue's envelope signing ([RedisConfig.Signing]), from the keys file that
	// --signing-keys-file names, with --signing-allow-unsigned. Nil without a keys file: no signing.
	Signing *SigningConfig
	// WorkerID names the worker in logs and in Redis (--worker-id; [WorkerConfig.Name]). Empty means
	// "<hostname>-<pid>-<random>".
	WorkerID string
	// Scheduler runs a [Scheduler] beside the worker, which fires the queue's periodic schedules (--scheduler,
	// on by default from ParseWorkerMainConfig; --scheduler=false turns it off). Any number of processes may run
	// one: each tick still makes one task (docs/periodic.md).
	Scheduler bool
	// Queues, from --queues, makes the worker serve several queues ([MultiQueue]) instead of KeyPrefix alone:
	// key prefixes with their weights. Empty serves KeyPrefix.
	Queues []WorkerMainQueue
	// Strict (--strict) serves Queues in the order given rather than by weight ([MultiQueueConfig.Strict]).
	Strict bool

	// The TLS flags (--tls-ca, --tls-server-name, --tls-cert, --tls-key, --tls-insecure-skip-verify) have no
	// fields of their own: they are applied to Redis.TLSConfig, which is nil without TLS.

	// Logger, if set, is used instead of the standard-error logger that LogLevel and LogFormat describe.
	Logger *slog.Logger
	// Middleware wraps every task's handler, as [WorkerConfig.Middleware].
	Middleware []Middleware
	// OnEvent, if set, is called for every [Event], as [WorkerConfig.OnEvent].
	OnEvent func(Event)
	// SchedulerConfig configures the scheduler that Scheduler runs; nil takes the defaults (its Logger, if
	// unset, is the worker's).
	SchedulerConfig *SchedulerConfig
}

// workerFlag describes one command-line flag of a worker binary: its environment fallback (none for the Redis
// host, port and db, see below), the placeholder and default shown by --help, and its help text.
type workerFlag struct {
	name, env, arg, def, help string
	boolean                   bool // written --name alone (or --name=false); the variable takes true/false/1/0
}

// workerFlags lists the flags in the order --help shows them. There is deliberately no REDIS_HOST/REDIS_PORT
// fallback: Docker links and Kubernetes services inject REDIS_PORT=tcp://10.0.0.1:6379 into every container of a
// namespace with a service named "redis", which would silently redirect or break the worker.
var workerFlags = []workerFlag{
	{"redis-url", "REDIS_URL", "URL", "", "Redis to connect to: redis://[user:password@]host:port/db, rediss:// for TLS,\nor unix:///path/to/redis.sock. Wins over --redis-host, --redis-port and --redis-db.", false},
	{"redis-host", "", "HOST", "localhost", "Redis host, when no URL is given.", false},
	{"redis-port", "", "PORT", "6379", "Redis port, when no URL is given.", false},
	{"redis-db", "", "N", "0", "Redis database number, when no URL is given.", false},
	{"key-prefix", "TASKQUEUE_KEY_PREFIX", "PREFIX", DefaultKeyPrefix, "Key prefix of the queue: producers and workers of one queue use the same one.\nLetters, digits and _.:/- only.", false},
	{name: "queues", env: "TASKQUEUE_QUEUES", arg: "LIST", help: "Serve several queues instead of --key-prefix: key prefixes with weights, such as\ncritical:6,default:3,low:1 (a weight left out is 1). While several have tasks,\neach pickup batch comes from one, in proportion to the weights (docs/flow-control.md)."},
	{name: "strict", env: "TASKQUEUE_STRICT", def: "false", boolean: true, help: "With --queues, serve the queues in the order given: every task of a queue before\nany of the next one (weights are ignored)."},
	{"resolver-id", "TASKQUEUE_RESOLVER_ID", "ID", DefaultResolverID, "Resolver id of tasks that name none. This binary must have registered it.", false},
	{"concurrency", "TASKQUEUE_CONCURRENCY", "N", "10", "How many tasks run at once.", false},
	{"lease", "TASKQUEUE_LEASE", "DURATION", "30s", "How long a task stays owned without a heartbeat: after a crash, its tasks run\nagain elsewhere once this passes. Use the same value in every worker of a queue.", false},
	{"shutdown-grace", "TASKQUEUE_SHUTDOWN_GRACE", "DURATION", "20s", "On SIGINT or SIGTERM, how long running tasks may take to finish; those still\nrunning then are cancelled and handed back to the queue at once. Keep it below\nyour supervisor's kill timeout (Kubernetes: terminationGracePeriodSeconds, 30s).", false},
	{"worker-id", "TASKQUEUE_WORKER_ID", "ID", "", "Name of this worker in logs and in Redis; unique per process.\nDefault <hostname>-<pid>-<random>.", false},
	{"log-level", "TASKQUEUE_LOG_LEVEL", "LEVEL", "info", "debug, info, warn or error.", false},
	{"log-format", "TASKQUEUE_LOG_FORMAT", "FORMAT", "text", "text or json (one JSON object per line, on standard error).", false},
	{name: "scheduler", env: "TASKQUEUE_SCHEDULER", def: "true", boolean: true, help: "On by default: fire the queue's periodic schedules from this process too\n(docs/periodic.md). Every worker may; each tick still makes one task.\n--scheduler=false (or TASKQUEUE_SCHEDULER=false) turns it off."},
	{name: "signing-keys-file", env: "TASKQUEUE_SIGNING_KEYS_FILE", arg: "FILE", help: "Keys to verify task signatures with (HMAC-SHA256), one \"<key id>=<base64 key>\"\nper line, the first one active (it signs tasks this worker enqueues). Tasks\nunsigned or signed otherwise are parked. Keys are 32 to 1024 bytes."},
	{name: "signing-allow-unsigned", env: "TASKQUEUE_SIGNING_ALLOW_UNSIGNED", def: "false", boolean: true, help: "With --signing-keys-file, run unsigned tasks too (while rolling signing out);\ntasks with a bad signature are still parked."},
	{name: "tls-ca", env: "TASKQUEUE_TLS_CA", arg: "FILE", help: "PEM file of the CA certificates to trust for Redis's certificate, instead of the\nsystem's. Turns TLS on (needed with --redis-host; with a URL, use rediss://)."},
	{name: "tls-server-name", env: "TASKQUEUE_TLS_SERVER_NAME", arg: "NAME", help: "Name to verify Redis's certificate against (and to send as SNI), when it is not\nthe host connected to. Turns TLS on."},
	{name: "tls-cert", env: "TASKQUEUE_TLS_CERT", arg: "FILE", help: "PEM client certificate, for a Redis that requires one (tls-auth-clients yes);\ngive --tls-key with it. Turns TLS on."},
	{name: "tls-key", env: "TASKQUEUE_TLS_KEY", arg: "FILE", help: "PEM private key of --tls-cert."},
	{name: "tls-insecure-skip-verify", env: "TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", def: "false", boolean: true, help: "DANGEROUS: accept any certificate Redis presents, so anyone on the path can read\nand change the traffic, password included. For tests only; logged as a warning.\nCannot be combined with --tls-ca or --tls-server-name. Turns TLS on."},
}

// ParseWorkerMainConfig reads a worker binary's configuration from its command-line arguments (without the
// program name: os.Args[1:]) and, for each flag not given, from its environment variable, looked up with getenv
// (os.Getenv in a binary; nil reads no environment; an empty value counts as unset). A flag wins over its
// variable, which wins over the default. Flags are written --name value or --name=value (one dash works too).
//
// Every value is checked here, so a binary fails at start rather than at its first task. Errors wrap
// [ErrInvalidConfig] or [ErrInvalidKeyPrefix] and name the flag or variable at fault; they never repeat a Redis
// URL, which may hold a password. For -h or --help the error is [flag.ErrHelp]: show [WriteWorkerMainUsage].
//
// ParseWorkerMainConfig touches no global state: no flag.CommandLine, no os.Args, no environment unless getenv
// reads it.
func ParseWorkerMainConfig(args []string, getenv func(string) string) (*WorkerMainConfig, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; usage is the caller's to show
	for _, f := range workerFlags {
		if f.boolean {
			fs.Bool(f.name, f.def == "true", f.help)
		} else {
			fs.String(f.name, f.def, f.help)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, fmt.Errorf("%w: %v (see --help)", ErrInvalidConfig, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %s; flags only (see --help)", ErrInvalidConfig, quote(fs.Arg(0)))
	}
	p := &flagReader{fs: fs, given: map[string]bool{}, getenv: getenv}
	fs.Visit(func(f *flag.Flag) { p.given[f.Name] = true })

	c := &WorkerMainConfig{}
	var err error
	if c.Redis, err = p.redisOptions(); err != nil {
		return nil, err
	}
	if err := p.applyTLS(c.Redis); err != nil {
		return nil, err
	}
	c.KeyPrefix, _ = p.value("key-prefix")
	if err := validateKeyPrefix(c.KeyPrefix); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, p.source("key-prefix"))
	}
	c.ResolverID = p.ident("resolver-id", resolverIDPattern, &err)
	c.WorkerID = p.ident("worker-id", consumerNamePattern, &err)
	c.Concurrency = p.intIn("concurrency", 1, 1<<20, &err)
	c.Lease = p.duration("lease", 100*time.Millisecond, &err)
	c.ShutdownGrace = p.duration("shutdown-grace", 0, &err)
	c.LogLevel = p.logLevel(&err)
	c.LogFormat = p.oneOf("log-format", &err, "text", "json")
	if err != nil {
		return nil, err
	}
	schedStr, _ := p.value("scheduler")
	if c.Scheduler, err = strconv.ParseBool(schedStr); err != nil {
		err = nil
		p.bad(&err, "scheduler", schedStr, "true or false")
		return nil, err
	}
	if c.Signing, err = p.signing(); err != nil {
		return nil, err
	}
	if c.Queues, c.Strict, err = p.queueList(); err != nil { // workermain_queues.go
		return nil, err
	}
	return c, nil
}

// flagReader resolves each flag to its value and says where the value came from, for error messages.
type flagReader struct {
	fs     *flag.FlagSet
	given  map[string]bool
	getenv func(string) string
}

func (p *flagReader) spec(name string) workerFlag {
	for _, f := range workerFlags {
		if f.name == name {
			return f
		}
	}
	panic("taskqueue: no worker flag " + name)
}

// value returns the flag's value by precedence (flag, variable, default) and whether it was set at all.
func (p *flagReader) value(name string) (string, bool) {
	if p.given[name] {
		return p.fs.Lookup(name).Value.String(), true
	}
	if env := p.spec(name).env; env != "" && p.getenv != nil {
		if v := p.getenv(env); v != "" {
			return v, true
		}
	}
	return p.spec(name).def, false
}

// source names where the flag's value came from: "--name", "$VAR" or "default of --name".
func (p *flagReader) source(name string) string {
	if p.given[name] {
		return "--" + name
	}
	if env := p.spec(name).env; env != "" && p.getenv != nil && p.getenv(env) != "" {
		return "$" + env
	}
	return "default of --" + name
}

// bad records the first invalid value in *errp.
func (p *flagReader) bad(errp *error, name, value, want string) {
	if *errp == nil {
		*errp = fmt.Errorf("%w: %s %s: want %s", ErrInvalidConfig, p.source(name), quote(value), want)
	}
}

// ident reads a name that must match pattern (a resolver id, a worker's consumer name).
func (p *flagReader) ident(name string, pattern *regexp.Regexp, errp *error) string {
	v, set := p.value(name)
	if set && !pattern.MatchString(v) {
		p.bad(errp, name, v, "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	return v
}

func (p *flagReader) intIn(name string, lo, hi int, errp *error) int {
	v, _ := p.value(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.bad(errp, name, v, fmt.Sprintf("a whole number from %d to %d", lo, hi))
	}
	return n
}

func (p *flagReader) duration(name string, least time.Duration, errp *error) time.Duration {
	v, _ := p.value(name)
	d, err := time.ParseDuration(v)
	if err != nil || d < least {
		p.bad(errp, name, v, fmt.Sprintf("a duration of at least %s, such as 500ms, 30s or 2m", least))
	}
	return d
}

func (p *flagReader) oneOf(name string, errp *error, choices ...string) string {
	v, _ := p.value(name)
	v = strings.ToLower(v)
	for _, c := range choices {
		if v == c {
			return v
		}
	}
	p.bad(errp, name, v, strings.Join(choices, " or "))
	return v
}

func (p *flagReader) logLevel(errp *error) slog.Level {
	switch p.oneOf("log-level", errp, "debug", "info", "warn", "error") {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// redisOptions applies the Redis precedence: a --redis-url flag; else --redis-host/--redis-port/--redis-db if any
// is given (flags win over REDIS_URL); else REDIS_URL; else the host, port and db defaults.
func (p *flagReader) redisOptions() (*redis.Options, error) {
	hostFlags := p.given["redis-host"] || p.given["redis-port"] || p.given["redis-db"]
	if p.given["redis-url"] && hostFlags {
		return nil, fmt.Errorf("%w: --redis-url cannot be combined with --redis-host, --redis-port or --redis-db", ErrInvalidConfig)
	}
	if u, set := p.value("redis-url"); set && !hostFlags {
		opts, err := redis.ParseURL(u)
		if err != nil {
			// A *url.Error repeats the whole URL, password included: keep only its cause.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("%w: %s: invalid Redis URL: %v", ErrInvalidConfig, p.source("redis-url"), err)
		}
		return opts, nil
	}
	var err error
	host, _ := p.value("redis-host")
	if host == "" || strings.ContainsAny(host, "/@ \t") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		p.bad(&err, "redis-host", host, "a host name or IP address (the port goes in --redis-port)")
	}
	port := p.intIn("redis-port", 1, 65535, &err)
	db := p.intIn("redis-db", 0, 1<<20, &err)
	if err != nil {
		return nil, err
	}
	return &redis.Options{Addr: net.JoinHostPort(host, strconv.Itoa(port)), DB: db}, nil
}

// applyTLS applies the --tls-* flags to opts. Any of them turns TLS on for --redis-host/--redis-port and for the
// defaults; a rediss:// URL already has it (verified against the URL's host); a redis:// or unix:// URL asked
// for plaintext, so combining one with a TLS flag is an error rather than a silent upgrade.
func (p *flagReader) applyTLS(opts *redis.Options) error {
	ca, _ := p.value("tls-ca")
	serverName, _ := p.value("tls-server-name")
	certFile, _ := p.value("tls-cert")
	keyFile, _ := p.value("tls-key")
	insecureStr, _ := p.value("tls-insecure-skip-verify")
	insecure, perr := strconv.ParseBool(insecureStr)
	if perr != nil {
		var err error
		p.bad(&err, "tls-insecure-skip-verify", insecureStr, "true or false")
		return err
	}
	if ca == "" && serverName == "" && certFile == "" && keyFile == "" && !insecure {
		return nil
	}
	if insecure && (ca != "" || serverName != "") {
		other := "tls-server-name"
		if ca != "" {
			other = "tls-ca"
		}
		return fmt.Errorf("%w: %s turns certificate checks off, so %s would have no effect: drop one of them",
			ErrInvalidConfig, p.source("tls-insecure-skip-verify"), p.source(other))
	}
	if (certFile == "") != (keyFile == "") {
		alone := "tls-key"
		if certFile != "" {
			alone = "tls-cert"
		}
		return fmt.Errorf("%w: --tls-cert and --tls-key go together (only %s is given)", ErrInvalidConfig, p.source(alone))
	}
	if opts.Network == "unix" {
		return fmt.Errorf("%w: TLS flags do not apply to a unix:// Redis URL", ErrInvalidConfig)
	}
	if opts.TLSConfig == nil {
		if _, set := p.value("redis-url"); set && !(p.given["redis-host"] || p.given["redis-port"] || p.given["redis-db"]) {
			return fmt.Errorf("%w: TLS flags given with a redis:// URL (%s), which asks for plaintext: use rediss://", ErrInvalidConfig, p.source("redis-url"))
		}
		host, _, _ := net.SplitHostPort(opts.Addr)
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	cfg := opts.TLSConfig
	if serverName != "" {
		cfg.ServerName = serverName
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("%w: %s: cannot read the CA file: %v", ErrInvalidConfig, p.source("tls-ca"), err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: %s: %s holds no PEM certificate", ErrInvalidConfig, p.source("tls-ca"), quote(ca))
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("%w: %s and %s: cannot load the client certificate: %v", ErrInvalidConfig, p.source("tls-cert"), p.source("tls-key"), err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if insecure {
		cfg.InsecureSkipVerify = true
	}
	return nil
}

// signing reads --signing-keys-file and --signing-allow-unsigned; nil without a keys file.
func (p *flagReader) signing() (*SigningConfig, error) {
	allowStr, _ := p.value("signing-allow-unsigned")
	allow, perr := strconv.ParseBool(allowStr)
	var err error
	if perr != nil {
		p.bad(&err, "signing-allow-unsigned", allowStr, "true or false")
		return nil, err
	}
	file, _ := p.value("signing-keys-file")
	if file == "" {
		if allow {
			return nil, fmt.Errorf("%w: %s needs --signing-keys-file", ErrInvalidConfig, p.source("signing-allow-unsigned"))
		}
		return nil, nil
	}
	c, err := LoadSigningKeysFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, p.source("signing-keys-file"))
	}
	c.AllowUnsigned = allow
	return c, nil
}

// WriteWorkerMainUsage writes the --help text of a worker binary named program: what it does, an example, and
// every flag with its environment variable and default.
func WriteWorkerMainUsage(w io.Writer, program string) {
	var b strings.Builder
	fmt.Fprintf(&b, `Usage: %[1]s [flags]

Runs a taskqueue worker: it takes tasks from the Redis queue under --key-prefix and
runs the functions this binary registered, until it gets SIGINT or SIGTERM. It then
stops taking tasks, lets running ones finish within --shutdown-grace, hands the rest
back to the queue (another worker picks them up at once) and exits. A second signal
exits at once; tasks still running then return to the queue after --lease.

Examples:
  %[1]s --redis-url redis://localhost:6379/0 --concurrency 20
  REDIS_URL=rediss://app:secret@redis.example.com:6380/0 %[1]s --log-format json
  %[1]s --redis-host 10.0.0.5 --redis-port 6380 --redis-db 2 --worker-id worker-1
  %[1]s --redis-url rediss://10.0.0.5:6380/0 --tls-ca ca.pem --tls-server-name redis.internal

Flags (a flag wins over its environment variable, which wins over the default):
`, program)
	for _, f := range workerFlags {
		fmt.Fprintf(&b, "  --%s", f.name)
		if f.arg != "" {
			b.WriteString(" " + f.arg)
		}
		var notes []string
		if f.env != "" {
			notes = append(notes, "$"+f.env)
		}
		if f.def != "" && !f.boolean { // a boolean flag is off unless given

			notes = append(notes, "default "+showDefault(f.def))
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, "  (%s)", strings.Join(notes, ", "))
		}
		b.WriteString("\n")
		for line := range strings.SplitSeq(f.help, "\n") {
			b.WriteString("        " + line + "\n")
		}
	}
	b.WriteString("  -h, --help\n        Show this help.\n")
	_, _ = io.WriteString(w, b.String())
}

// showDefault quotes a word, so that --resolver-id reads (default "default"), and leaves numbers and durations.
func showDefault(def string) string {
	if _, err := strconv.Atoi(def); err == nil {
		return def
	}
	if _, err := time.ParseDuration(def); err == nil {
		return def
	}
	return strconv.Quote(def)
}

// RunWorkerMain is the whole main of a worker binary once it has registered its functions in reg: it parses
// args (os.Args[1:]) and the environment with [ParseWorkerMainConfig], connects to Redis, runs a [TaskWorker]
// until ctx is done or the process gets SIGINT or SIGTERM, stops it within the shutdown grace, closes the Redis
// client and returns. It returns nil after a clean stop and after printing --help (to standard output); an
// invalid flag, a Redis that cannot be reached at start, or a resolver id the binary did not register is an
// error. After the first signal a second one ends the process at once (Go's default behaviour): the tasks it
// was running then return to the queue when their lease expires.
//
//	func main() {
//		ref := taskqueue.NewReferenceResolver()
//		taskqueue.MustRegister(ref, "greetings", "say_hello", sayHello)
//		reg := taskqueue.NewResolverRegistry()
//		reg.MustRegister(taskqueue.DefaultResolverID, ref)
//		if err := taskqueue.RunWorkerMain(context.Background(), reg, os.Args[1:]); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//	}
func RunWorkerMain(ctx context.Context, reg *ResolverRegistry, args []string) error {
	return runWorkerMain(ctx, reg, args, os.Getenv, os.Stdout)
}

// runWorkerMain is RunWorkerMain with its environment and standard output injected, for tests.
func runWorkerMain(ctx context.Context, reg *ResolverRegistry, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := ParseWorkerMainConfig(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		WriteWorkerMainUsage(stdout, filepath.Base(os.Args[0]))
		return nil
	}
	if err != nil {
		return err
	}
	// go-redis logs pool and dial failures to standard error on its own, through a process-wide logger; in a
	// worker binary they duplicate the worker's own structured logs, so they go to its logger at debug level.
	// Only this binary entry point sets the global: the library leaves it to embedders (docs/operations.md).
	redis.SetLogger(redisLog{cfg.logger()})
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once the graceful stop has begun, give signals back to Go's default handling, so a second one ends the
	// process.
	context.AfterFunc(ctx, stop)
	return cfg.Run(ctx, reg)
}

// Run connects to c.Redis, runs the worker with [WorkerMainConfig.RunWithClient] until ctx is done, and closes
// the client. It handles no signals: [RunWorkerMain] does, or the caller cancels ctx.
func (c *WorkerMainConfig) Run(ctx context.Context, reg *ResolverRegistry) error {
	if c.Redis == nil {
		return fmt.Errorf("%w: no Redis options (build the config with ParseWorkerMainConfig)", ErrInvalidConfig)
	}
	opts := *c.Redis
	if opts.PoolSize == 0 {
		// One connection stays blocked in pickup; acks, heartbeats and the reaper need theirs beside the tasks'.
		opts.PoolSize = max(10*runtime.GOMAXPROCS(0), c.Concurrency+4)
	}
	// Without this, go-redis ignores context deadlines on the socket and a call on a silent connection waits out
	// the read timeout (5s), longer than a short lease: a heartbeat must give up in time for the worker to cancel
	// its handlers before the lease deadline (docs/reliability.md, scenario 5).
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(&opts)
	defer rdb.Close()
	target := opts.Addr
	if opts.Network == "unix" {
		target = "unix:" + opts.Addr
	}
	logger := c.logger()
	if opts.TLSConfig != nil && opts.TLSConfig.InsecureSkipVerify {
		logger.Warn("taskqueue: TLS CERTIFICATE VERIFICATION IS OFF (--tls-insecure-skip-verify): anyone on the network path " +
			"can impersonate Redis and read or change every task and the password. Use --tls-ca instead outside tests.")
	}
	logger.Info("taskqueue: connecting to Redis", slog.String("addr", target), slog.Int("db", opts.DB),
		slog.Bool("tls", opts.TLSConfig != nil), slog.Bool("auth", opts.Password != "" || opts.Username != ""))
	err := c.run(ctx, rdb, reg, logger, " at "+target)
	if err != nil && opts.TLSConfig == nil && opts.Network != "unix" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		// What a TLS-only port (tls-port with port 0) does to a plaintext client: say what to check.
		err = fmt.Errorf("%w (the server closed the connection: if it accepts only TLS, use a rediss:// URL)", err)
	}
	return err
}

// RunWithClient runs the worker on rdb until ctx is done, then stops it within c.ShutdownGrace: running tasks
// that have not finished by then are cancelled and handed back to the queue at once. It returns nil after a
// clean stop, including when ctx is done before the worker started. It fails at once if rdb cannot be reached,
// or if reg is empty or lacks c.ResolverID. The caller owns rdb (RunWithClient does not close it): this is the
// entry point for tests and for programs that embed a worker.
func (c *WorkerMainConfig) RunWithClient(ctx context.Context, rdb redis.UniversalClient, reg *ResolverRegistry) error {
	return c.run(ctx, rdb, reg, c.logger(), "")
}

// run is RunWithClient; where ("" or " at host:port") completes the message of a failed connection.
func (c *WorkerMainConfig) run(ctx context.Context, rdb redis.UniversalClient, reg *ResolverRegistry, logger *slog.Logger, where string) error {
	if rdb == nil {
		return fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	// The check TaskWorker.Start makes, before anything connects: a registry that can resolve no task.
	if err := checkResolvers(reg); err != nil {
		return err
	}
	resolverID, prefix := cmp.Or(c.ResolverID, DefaultResolverID), cmp.Or(c.KeyPrefix, DefaultKeyPrefix)
	if _, err := reg.Lookup(resolverID); err != nil {
		return fmt.Errorf("%w: resolver id %s is not registered by this binary (it has %s)", ErrInvalidConfig, quote(resolverID), strings.Join(reg.IDs(), ", "))
	}
	rcfg := &RedisConfig{DefaultResolverID: resolverID, Lease: c.Lease, Logger: logger, Signing: c.Signing}
	q, err := NewRedisTaskQueue(rdb, prefix, reg, rcfg)
	if err != nil {
		return err
	}
	queues, consumed := []*RedisTaskQueue{q}, TaskQueue(q)
	if len(c.Queues) > 0 { // workermain_queues.go: a worker on several queues
		if queues, consumed, err = c.multiQueue(rdb, reg, rcfg); err != nil {
			return err
		}
		q, prefix = queues[0], prefixes(queues)
	}
	name := c.WorkerID
	if name == "" {
		name = defaultWorkerName()
	}
	w, err := NewTaskWorker(consumed, &WorkerConfig{
		Concurrency: c.Concurrency,
		Logger:      logger,
		Middleware:  c.Middleware,
		OnEvent:     logEvents(logger, c.OnEvent),
		Name:        name,
	})
	if err != nil {
		return err
	}

	// Fail fast on a wrong address, password or TLS setting, rather than retrying pickups forever.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = rdb.Ping(pctx).Err()
	cancel()
	if ctx.Err() != nil {
		return nil // stopped before it started: nothing ran, nothing to hand back
	}
	if err != nil {
		return fmt.Errorf("taskqueue: worker: cannot reach Redis%s: %w", where, classify(err))
	}
	// Refuse a Redis too old for the scripts; the check logs the other findings (an eviction policy that can drop
	// tasks) as warnings. A user without +info gets a warning, not a failed start.
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = q.check(cctx)
	ccancel()
	if errors.Is(err, ErrRedisTooOld) {
		return fmt.Errorf("taskqueue: worker: %w", err)
	}
	if err != nil && ctx.Err() == nil {
		logger.Warn("taskqueue: worker: start-up check skipped", slog.Any("error", err))
	}
	if err := w.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	logger.Info("taskqueue: worker ready", slog.String("worker", w.Name()), slog.String("key_prefix", prefix),
		slog.String("resolvers", strings.Join(reg.IDs(), ",")), slog.Duration("lease", q.LeaseDuration()))
	for _, q := range queues {
		sweepLocksAtStart(ctx, q, logger) // unique.go
	}
	schedDone, err := c.startSchedulers(ctx, queues, logger)
	if err != nil {
		return err
	}
	defer func() { <-schedDone }()
	// A stuck consumer (pickup cannot reach Redis) shows in the log: see TaskWorker.Health.
	watched := make(chan struct{})
	go func() { defer close(watched); w.watchHealth(ctx, logger) }()
	<-ctx.Done()
	<-watched

	logger.Info("taskqueue: stopping worker", slog.String("worker", w.Name()), slog.Duration("grace", c.ShutdownGrace))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownGrace)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		return fmt.Errorf("taskqueue: worker stop: %w", err)
	}
	return nil
}

// logEvents logs what happens to tasks, so that a worker binary reports failures without any code, then passes
// each event on to next. Successes and starts are debug; retries and lost leases warnings; dead letters errors.
func logEvents(logger *slog.Logger, next func(Event)) func(Event) {
	return func(e Event) {
		level := slog.LevelDebug
		switch e.Kind {
		case EventRetried, EventLeaseLost:
			level = slog.LevelWarn
		case EventDead:
			level = slog.LevelError
		case EventReleased:
			level = slog.LevelInfo
		}
		// Queue errors are left out: the worker logs them where they happen, with more context.
		if e.Kind != EventQueueError && logger.Enabled(context.Background(), level) {
			attrs := []slog.Attr{slog.String("task_id", truncate(e.TaskID, 64))}
			if e.Spec != nil {
				if module, name, ok := referenceName(e.Spec.Executable); ok {
					attrs = append(attrs, slog.String("task", module+"."+name))
				}
			}
			attrs = append(attrs, slog.Int("attempt", e.Attempt+1))
			if e.Duration > 0 {
				attrs = append(attrs, slog.Duration("took", e.Duration))
			}
			if e.Kind == EventRetried {
				attrs = append(attrs, slog.Duration("retry_in", e.Delay))
			}
			if e.Err != nil {
				attrs = append(attrs, slog.String("error", truncate(e.Err.Error(), 512)))
			}
			logger.LogAttrs(context.Background(), level, "taskqueue: task "+string(e.Kind), attrs...)
		}
		if next != nil {
			next(e)
		}
	}
}

// referenceName returns the module and name of a reference task.
func referenceName(exe Executable) (module, name string, ok bool) {
	r, ok := exe.(Referencer)
	if !ok {
		return "", "", false
	}
	module, name, _ = r.TaskReference()
	return module, name, true
}

// logger returns c.Logger, or a standard-error logger at c.LogLevel in c.LogFormat.
// redisLog sends go-redis's own log lines to a worker's logger, at debug level.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	if r.l.Enabled(ctx, slog.LevelDebug) {
		r.l.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
	}
}

func (c *WorkerMainConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return newWorkerLogger(os.Stderr, c.LogLevel, c.LogFormat)
}

func newWorkerLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// defaultWorkerName is "<hostname>-<pid>-<random>", which tells workers apart in logs; the random part keeps
// containers that share a host name and a pid (pid 1 in each) apart. It is "" (the library's random name) when
// the host name cannot be made to fit.
func defaultWorkerName() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r < 128 && (r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return r
		}
		return '-'
	}, host)
	host = truncateASCII(host, 40)
	name := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID()[:4])
	if !consumerNamePattern.MatchString(name) {
		return ""
	}
	return name
}

func truncateASCII(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
