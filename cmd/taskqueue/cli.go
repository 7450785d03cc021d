package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"golang.org/x/term"

	"github.com/graflow-go/taskqueue"
)

// Exit codes. They are part of the interface: scripts rely on them (docs/operations.md).
const (
	exitOK       = 0 // done
	exitError    = 1 // Redis unreachable or a command failed
	exitUsage    = 2 // bad command line, or a bulk action with neither --yes nor a terminal to confirm on
	exitNotFound = 3 // show, requeue or delete named a task that is not there
	exitDeclined = 4 // the confirmation prompt was answered no
	exitNoQueue  = 5 // the queue has no key in that database: a wrong --key-prefix or database, or never written
)

const defaultRedisURL = "redis://localhost:6379/0"

// cli is one run of the program, with its streams and environment injected.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	stdinTTY       bool // a person can answer a confirmation prompt
	stdoutTTY      bool // watch may redraw the screen
	stderrTTY      bool // progress may redraw one line

	g globals
	q *queue // opened by the first c.open
}

// globals are the flags every command takes, before or after its name.
type globals struct {
	redisURL  string
	keyPrefix string
	json      bool
}

// usageError is a bad command line: exit 2, with a hint to the help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// codeError carries an exit code other than 1 for an error already worth showing as it is.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// run is the whole program: it parses args (without the program name), runs the command and returns the exit code.
// getenv reads the environment (os.Getenv; nil reads none).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: getenv,
		stdinTTY: term.IsTerminal(int(os.Stdin.Fd())), stdoutTTY: isTerminal(stdout), stderrTTY: isTerminal(stderr)}
	return c.run(ctx, args)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// command is one subcommand: its flags, its help, and what it does.
type command struct {
	name    string
	args    string // the synopsis after the name
	summary string
	help    string // the long help: what it does, its flags, examples
	flags   func(fs *flag.FlagSet) any
	// run checks its arguments before it opens the queue with c.open, so that a usage error never touches Redis.
	run func(ctx context.Context, c *cli, opts any, args []string) error
}

var commands []*command // filled by commands.go's init, in help order

func lookup(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

func (c *cli) run(ctx context.Context, args []string) int {
	if c.getenv == nil {
		c.getenv = func(string) string { return "" }
	}
	c.g = globals{
		redisURL:  cmp.Or(c.getenv("REDIS_URL"), defaultRedisURL),
		keyPrefix: cmp.Or(c.getenv("TASKQUEUE_KEY_PREFIX"), taskqueue.DefaultKeyPrefix),
	}
	cmd, opts, rest, err := c.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.help(cmd)
		return exitOK
	}
	if err != nil {
		return c.fail(cmd, err)
	}
	if cmd.name == "help" {
		if len(rest) > 1 {
			return c.fail(cmd, usagef("help takes at most one command"))
		}
		if len(rest) == 1 {
			if cmd = lookup(rest[0]); cmd == nil {
				return c.fail(nil, usagef("unknown command %q", clip(rest[0], 40)))
			}
			c.help(cmd)
			return exitOK
		}
		c.help(nil)
		return exitOK
	}
	defer c.close()
	return c.fail(cmd, cmd.run(ctx, c, opts, rest))
}

// fail prints err (if any) on standard error and returns its exit code.
func (c *cli) fail(cmd *command, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ce *codeError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "taskqueue: %s\n", ue.msg)
		if cmd != nil && cmd.name != "help" {
			fmt.Fprintf(c.stderr, "Run 'taskqueue %s --help' for usage.\n", cmd.name)
		} else {
			fmt.Fprintln(c.stderr, "Run 'taskqueue --help' for usage.")
		}
		return exitUsage
	case errors.As(err, &ce):
		fmt.Fprintf(c.stderr, "taskqueue: %s\n", ce.err)
		return ce.code
	case errors.Is(err, taskqueue.ErrNotFound):
		fmt.Fprintf(c.stderr, "taskqueue: %s\n", err)
		return exitNotFound
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(c.stderr, "taskqueue: interrupted")
		return exitError
	}
	fmt.Fprintf(c.stderr, "taskqueue: %s\n", err)
	return exitError
}

// parse reads the global flags before the command name, then the command's flags and arguments, in any order.
// It returns the command ("help" when none is named).
func (c *cli) parse(args []string) (*command, any, []string, error) {
	top := flag.NewFlagSet("taskqueue", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	c.globalFlags(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, nil, err
		}
		return nil, nil, nil, usagef("%v", err)
	}
	if top.NArg() == 0 {
		return nil, nil, nil, flag.ErrHelp
	}
	cmd := lookup(top.Arg(0))
	if cmd == nil {
		return nil, nil, nil, usagef("unknown command %q", clip(top.Arg(0), 40))
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.globalFlags(fs)
	var opts any
	if cmd.flags != nil {
		opts = cmd.flags(fs)
	}
	rest, err := parseInterleaved(fs, top.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		return cmd, nil, nil, err
	}
	if err != nil {
		return cmd, nil, nil, usagef("%v", err)
	}
	return cmd, opts, rest, nil
}

// globalFlags defines the flags of every command on fs, with the values read so far as defaults, so that a flag
// given before the command name stays unless it is given again after it.
func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.g.redisURL, "redis-url", c.g.redisURL, "")
	fs.StringVar(&c.g.keyPrefix, "key-prefix", c.g.keyPrefix, "")
	fs.BoolVar(&c.g.json, "json", c.g.json, "")
}

// parseInterleaved parses flags and positional arguments in any order (the standard library stops at the first
// positional one). Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// queue is a connection to one queue, administered through its [taskqueue.Admin].
type queue struct {
	*taskqueue.Admin
	rdb   *redis.Client
	where string // host:port and db, for messages; never the URL, which may hold a password
}

// open connects to the queue on first use.
func (c *cli) open(ctx context.Context) (*queue, error) {
	if c.q != nil {
		return c.q, nil
	}
	q, err := c.connect(ctx)
	c.q = q
	return q, err
}

// openExisting opens the queue like open, and fails with exit 5 when none of its keys exists: a read of a queue
// that is not there would look like an empty one, and an action on it would claim a success it did not have.
func (c *cli) openExisting(ctx context.Context) (*queue, error) {
	q, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := q.requireExists(ctx); err != nil {
		return nil, err
	}
	return q, nil
}

// requireExists returns a *codeError with exitNoQueue when the queue has no key. A user who may not run EXISTS
// (an ACL written before it was documented) skips the check rather than fail.
func (q *queue) requireExists(ctx context.Context) error {
	err := q.RequireExists(ctx)
	var nf *taskqueue.QueueNotFoundError
	switch {
	case errors.As(err, &nf):
		return &codeError{exitNoQueue, errors.New(q.notFound(ctx, nf))}
	case errors.Is(err, taskqueue.ErrPermission):
		return nil
	}
	return err
}

// notFound is the message for a queue with no key: the prefix, the server and database, the queues seen in that
// database, and the other databases that hold keys (when the user may run INFO).
func (q *queue) notFound(ctx context.Context, nf *taskqueue.QueueNotFoundError) string {
	msg := fmt.Sprintf("no queue %q on %s: none of its keys exists (wrong --key-prefix or database?)", clip(nf.Prefix, 140), q.where)
	if len(nf.Found) > 0 {
		found := make([]string, len(nf.Found))
		for i, p := range nf.Found {
			found[i] = clip(p, 140)
		}
		msg += fmt.Sprintf("\nqueues in db %d: %s", q.rdb.Options().DB, strings.Join(found, ", "))
	}
	if dbs := q.otherDBs(ctx); len(dbs) > 0 {
		msg += "\nother databases with keys: " + strings.Join(dbs, ", ")
	}
	return msg
}

// otherDBs lists the databases other than the queue's that hold keys, from INFO keyspace; none when INFO is not
// allowed.
func (q *queue) otherDBs(ctx context.Context) []string {
	info, err := q.rdb.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(info, "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), ":keys=")
		if ok && strings.HasPrefix(name, "db") && name != fmt.Sprintf("db%d", q.rdb.Options().DB) {
			out = append(out, strings.TrimPrefix(name, "db"))
		}
	}
	return out
}

func (c *cli) close() {
	if c.q != nil {
		_ = c.q.rdb.Close()
		c.q = nil
	}
}

func (c *cli) connect(ctx context.Context) (*queue, error) {
	opts, err := redis.ParseURL(c.g.redisURL)
	if err != nil {
		// A *url.Error repeats the whole URL, password included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, usagef("invalid --redis-url (or REDIS_URL): %v", err)
	}
	opts.PoolSize = 4
	rdb := redis.NewClient(opts)
	where := fmt.Sprintf("%s db %d", opts.Addr, opts.DB)
	if opts.Network == "unix" {
		where = fmt.Sprintf("unix:%s db %d", opts.Addr, opts.DB)
	}
	q, err := taskqueue.NewRedisTaskQueue(rdb, c.g.keyPrefix, taskqueue.NewResolverRegistry(),
		&taskqueue.RedisConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		_ = rdb.Close()
		return nil, usagef("--key-prefix (or TASKQUEUE_KEY_PREFIX): %v", err)
	}
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	// A TIME through the library rather than a PING: its error is classified, so an unreachable Redis wraps
	// taskqueue.ErrUnavailable.
	if _, err := admin.ServerTime(ctx); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", where, err)
	}
	return &queue{Admin: admin, rdb: rdb, where: where}, nil
}

// confirm asks a yes/no question on standard error, once a bulk action has been described. Without a terminal on
// standard input it refuses (exit 2), so that a script never hangs on, or silently answers, a prompt.
func (c *cli) confirm(question string) error {
	if !c.stdinTTY {
		return usagef("refusing to %s without confirmation: standard input is not a terminal; pass --yes to go ahead", question)
	}
	fmt.Fprintf(c.stderr, "%s? [y/N] ", upperFirst(question))
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(c.stderr)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &codeError{exitDeclined, errors.New("declined: nothing changed")}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// help writes the help of cmd, or the overview when cmd is nil, to standard output.
func (c *cli) help(cmd *command) {
	if cmd == nil || cmd.name == "help" {
		_, _ = io.WriteString(c.stdout, overview())
		return
	}
	fmt.Fprintf(c.stdout, "Usage: taskqueue %s%s\n\n%s\n%s", cmd.name, prefixSpace(cmd.args), cmd.help, globalHelp)
}

func prefixSpace(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}

const globalHelp = `Global flags (before or after the command):
  --redis-url URL      Redis to connect to ($REDIS_URL; default redis://localhost:6379/0).
                       redis://[user:password@]host:port/db; rediss:// for TLS; unix:///path.sock
  --key-prefix PREFIX  the queue's key prefix ($TASKQUEUE_KEY_PREFIX; default "taskqueue"),
                       the same as the workers' --key-prefix
  --json               machine-readable output on standard output
  -h, --help           this help
`

const exitHelp = `Exit codes:
  0  done
  1  error: Redis unreachable, a command failed, interrupted
  2  usage: unknown command or flag, a wrong argument, an invalid URL or prefix,
     or a bulk action with neither --yes nor a terminal to confirm on
  3  not found: show, requeue or delete named a task that is not there
  4  declined: the confirmation prompt was answered no; nothing changed
  5  no such queue: no key of the queue exists under --key-prefix in that database
     (a wrong prefix or db, or a queue never written); every command but pause exits so
  6  already finished: cancel, delete-task or progress named a task that finished
  7  running: delete-task named a running task (cancel it first)
`

func overview() string {
	var b strings.Builder
	b.WriteString(`taskqueue inspects and operates a taskqueue queue in Redis. It reads the stored JSON
envelopes and runs no task, so it needs nothing but the Redis URL and the queue's key prefix.

Usage:
  taskqueue [global flags] COMMAND [flags] [arguments]

Commands:
`)
	width := 0
	for _, cmd := range commands {
		width = max(width, len(cmd.name)+len(prefixSpace(cmd.args)))
	}
	for _, cmd := range commands {
		syn := cmd.name + prefixSpace(cmd.args)
		fmt.Fprintf(&b, "  %-*s  %s\n", width, syn, cmd.summary)
	}
	b.WriteString("\n")
	b.WriteString(globalHelp)
	b.WriteString(`
Examples:
  export REDIS_URL=rediss://ops:secret@redis.example.com:6380/0 TASKQUEUE_KEY_PREFIX=etl
  taskqueue stats                                    # how is the queue doing?
  taskqueue list dead --limit 50                     # what failed, and why?
  taskqueue show 2024-06-25-extract                  # one task's envelope
  taskqueue requeue --reason-contains 503 --older-than 10m --dry-run
  taskqueue requeue --reason-contains 503 --older-than 10m --yes
  taskqueue pause && taskqueue purge pending --yes && taskqueue resume
  taskqueue watch --interval 5s
  taskqueue stats --json | jq .dead                  # in scripts and health checks

`)
	b.WriteString(exitHelp)
	b.WriteString("\nRun 'taskqueue COMMAND --help' for a command's flags and examples.\n")
	return b.String()
}

// clip bounds untrusted text (a task id, an argument) for a message or a table cell, and makes control characters
// visible, so that nothing stored in Redis can move the cursor of an operator's terminal.
func clip(s string, n int) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }) >= 0 {
		s = strings.Trim(fmt.Sprintf("%q", s), `"`)
	}
	if len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xc0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
