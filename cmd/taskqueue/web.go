package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/dashboard"
)

// The web command joins the command table before "help", as locks does.
func init() {
	cmd := &command{name: "web", summary: "serve the web dashboard (127.0.0.1:8080 by default)", flags: webFlags, run: runWeb,
		help: `Serves the web dashboard of the queue (docs/dashboard.md) until Ctrl-C: counts, tasks by
state, one task, dead letters with bulk requeue and delete, search, schedules, unique locks,
groups and workflows, pause and resume, history charts. It listens on 127.0.0.1 unless --addr
says otherwise, and asks for no password: anyone who can reach the address can act on the
queue. Serve it on a loopback address, or with --read-only, or behind a proxy that
authenticates; an application that embeds the dashboard wraps it in its own middleware.

Flags:
  --addr HOST:PORT    where to listen (default 127.0.0.1:8080; port 0 picks a free one)
  --read-only         no action at all: the pages only read
  --base-path PATH    serve under PATH (default /), for a reverse proxy that forwards a prefix
  --queues A,B        show these key prefixes (default: --key-prefix)
  --shards N          the queues are sharded queues of N shards (default 0: plain queues)

Examples:
  taskqueue web
  taskqueue web --read-only --addr 0.0.0.0:8080
  taskqueue web --queues billing,emails --shards 4
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd)
}

type webOpts struct {
	addr, basePath, queues string
	readOnly               bool
	shards                 int
}

func webFlags(fs *flag.FlagSet) any {
	o := &webOpts{}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "")
	fs.BoolVar(&o.readOnly, "read-only", false, "")
	fs.StringVar(&o.basePath, "base-path", "", "")
	fs.StringVar(&o.queues, "queues", "", "")
	fs.IntVar(&o.shards, "shards", 0, "")
	return o
}

func runWeb(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*webOpts)
	if len(args) > 0 {
		return usagef("web takes no arguments")
	}
	if o.shards < 0 || o.shards > 1024 {
		return usagef("--shards must be 0 to 1024")
	}
	prefixes := []string{c.g.keyPrefix}
	if o.queues != "" {
		prefixes = strings.Split(o.queues, ",")
	}
	q, err := c.open(ctx)
	if err != nil {
		return err
	}
	var queues []dashboard.Queue
	for _, p := range prefixes {
		dq, err := webQueue(q, strings.TrimSpace(p), o.shards)
		if err != nil {
			return err
		}
		queues = append(queues, dq)
	}
	logger := slog.New(slog.NewTextHandler(c.stderr, nil))
	d, err := dashboard.New(dashboard.Config{Queues: queues, ReadOnly: o.readOnly, BasePath: o.basePath, Logger: logger})
	if err != nil {
		return usagef("%v", err)
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.addr, err)
	}
	srv := &http.Server{Handler: webMux(d, o.basePath), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	mode := ""
	if o.readOnly {
		mode = " (read-only)"
	}
	fmt.Fprintf(c.stdout, "taskqueue web: serving %s on http://%s%s/%s\n", strings.Join(prefixes, ", "), ln.Addr(), strings.TrimRight(o.basePath, "/"), mode)
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !o.readOnly && !isLoopback(host) {
		fmt.Fprintln(c.stderr, "taskqueue web: WARNING: listening beyond loopback without authentication: anyone who reaches this address can act on the queue")
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shut)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// webQueue is the dashboard queue of one key prefix: a plain queue (with its schedules) or a sharded one.
func webQueue(q *queue, prefix string, shards int) (dashboard.Queue, error) {
	reg := taskqueue.NewResolverRegistry()
	if err := reg.Register(taskqueue.DefaultResolverID, taskqueue.NewReferenceResolver()); err != nil {
		return dashboard.Queue{}, err
	}
	cfg := &taskqueue.RedisConfig{Logger: slog.New(slog.DiscardHandler)}
	if shards > 1 {
		sq, err := taskqueue.NewShardedQueue(q.rdb, prefix, shards, reg, cfg)
		if err != nil {
			return dashboard.Queue{}, usagef("--queues %q: %v", clip(prefix, 140), err)
		}
		adm, err := taskqueue.NewAdmin(sq)
		return dashboard.Queue{Name: webName(prefix), Admin: adm}, err
	}
	rq, err := taskqueue.NewRedisTaskQueue(q.rdb, prefix, reg, cfg)
	if err != nil {
		return dashboard.Queue{}, usagef("--queues %q: %v", clip(prefix, 140), err)
	}
	adm, err := taskqueue.NewAdmin(rq)
	if err != nil {
		return dashboard.Queue{}, err
	}
	sc, err := taskqueue.NewSchedules(rq)
	return dashboard.Queue{Name: webName(prefix), Admin: adm, Schedules: sc}, err
}

// webName is the dashboard's name of a key prefix: the prefix, with the characters a URL segment of the dashboard
// does not take ("/") made "_".
func webName(prefix string) string { return strings.ReplaceAll(prefix, "/", "_") }

// webMux mounts the dashboard at basePath.
func webMux(d http.Handler, basePath string) http.Handler {
	base := strings.TrimRight(basePath, "/")
	if base == "" {
		return d
	}
	m := http.NewServeMux()
	m.Handle(base+"/", d)
	m.Handle(base, d)
	return m
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
