package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

const (
	// riverVersion is the River release in go.mod, printed in the table's header.
	riverVersion = "v0.51.2"
	// pgAdminURL is the PostgreSQL the machine runs (trust auth); the harness only creates and drops a database of
	// its own there. BENCH_PG_URL overrides it.
	pgAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	// riverDBPrefix starts the name of every database the harness creates: riverDBPrefix + pid.
	riverDBPrefix = "taskqueue_bench_river_"
	// River's own benchmark (`river bench`, cmd/river/riverbench) sets these fetch intervals "to maximize job
	// throughput" ("much better than the client's default values"); the Config docs say of FetchCooldown
	// (default 100 ms) "Throughput is limited by this value", and FetchPollInterval (default 1 s) is the
	// fallback when LISTEN/NOTIFY brings no news.
	riverFetchCooldown     = 2 * time.Millisecond
	riverFetchPollInterval = 20 * time.Millisecond
	// riverPoolConns is the pgx pool size: enough for eight producers plus the client's fetch, completer and
	// notifier (pgxpool's default, max(4, NumCPU), is 4 here).
	riverPoolConns = 16
)

// riverArgs are the job's arguments; their JSON is the 200-byte payload (the same fields as benchArgs).
type riverArgs struct {
	Seq  int    `json:"seq"`
	Data string `json:"data"`
}

// Kind is River's job kind.
func (riverArgs) Kind() string { return taskType }

// riverWorker calls onStart with each job's sequence number.
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	onStart func(seq int)
}

func (w *riverWorker) Work(_ context.Context, j *river.Job[riverArgs]) error {
	if w.onStart != nil {
		w.onStart(j.Args.Seq)
	}
	return nil
}

// riverLib drives github.com/riverqueue/river on PostgreSQL through the pgx v5 driver: Insert, InsertManyFast
// (River's COPY FROM bulk insert) and a Client with one queue of MaxWorkers conc, at its defaults except the fetch
// intervals of River's own benchmark and a discarded log.
type riverLib struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx] // insert-only: no queues
	quiet  *slog.Logger
}

// newRiver connects to the River database at dbURL (riverDB.url), whose schema is migrated already.
func newRiver(dbURL string) (*riverLib, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = riverPoolConns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Open the pool's connections now, as a running application has them: a measurement's first calls would
	// otherwise pay for PostgreSQL's connection start-up (a process per connection).
	if err := warmPool(ctx, pool, riverPoolConns/2); err != nil {
		pool.Close()
		return nil, err
	}
	r := &riverLib{pool: pool, quiet: slog.New(slog.DiscardHandler)}
	r.client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: r.quiet})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

// warmPool opens n connections of pool at once and returns them to it idle.
func warmPool(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	return nil
}

func (r *riverLib) name() string { return libRiver }

func riverJob(seq int) riverArgs { return riverArgs{Seq: seq, Data: padding(seq)} }

func (r *riverLib) enqueue(ctx context.Context, seq int, delay time.Duration) error {
	var opts *river.InsertOpts
	if delay > 0 {
		opts = &river.InsertOpts{ScheduledAt: time.Now().Add(delay)}
	}
	_, err := r.client.Insert(ctx, riverJob(seq), opts)
	return err
}

func (r *riverLib) batches() bool { return true }

func (r *riverLib) enqueueBatch(ctx context.Context, seq0, n int) error {
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i].Args = riverJob(seq0 + i)
	}
	_, err := r.client.InsertManyFast(ctx, params)
	return err
}

func (r *riverLib) startWorker(ctx context.Context, conc int, onStart func(seq int)) (func(), error) {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &riverWorker{onStart: onStart}); err != nil {
		return nil, err
	}
	c, err := river.NewClient(riverpgxv5.New(r.pool), &river.Config{
		FetchCooldown:     riverFetchCooldown,
		FetchPollInterval: riverFetchPollInterval,
		Logger:            r.quiet,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: conc}},
		Workers:           workers,
	})
	if err != nil {
		return nil, err
	}
	if err := c.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = c.Stop(sctx)
	}, nil
}

func (r *riverLib) close() { r.pool.Close() }

// riverDB is the database of one harness run on the machine's PostgreSQL: created with River's migrations at the
// start, emptied between measurements (the counterpart of Redis's FLUSHALL) and dropped at the end.
type riverDB struct {
	admin string // URL of the maintenance database ("postgres")
	name  string
	url   string // URL of this database
}

// riverDBName is the name of the database of the harness process pid.
func riverDBName(pid int) string { return riverDBPrefix + strconv.Itoa(pid) }

// riverDBPID returns the pid in a name made by riverDBName, or false for any other name.
func riverDBPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, riverDBPrefix)
	if !ok || rest == "" || strings.TrimLeft(rest, "0123456789") != "" {
		return 0, false
	}
	pid, err := strconv.Atoi(rest)
	return pid, err == nil && pid > 0
}

// pgURL parses a postgres:// (or postgresql://) URL.
func pgURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, fmt.Errorf("bench: not a postgres:// URL: %q", redactURL(raw))
	}
	return u, nil
}

// withDatabase returns a postgres:// URL with its database (the path) replaced by name.
func withDatabase(raw, name string) (string, error) {
	u, err := pgURL(raw)
	if err != nil {
		return "", err
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), nil
}

// pgAdmin returns the URL of the maintenance database: BENCH_PG_URL or pgAdminURL.
func pgAdmin() string {
	if u := os.Getenv("BENCH_PG_URL"); u != "" {
		return u
	}
	return pgAdminURL
}

// createRiverDB drops the databases of earlier harness runs whose process is gone (a SIGKILLed run cannot drop
// its own), creates this process's database and runs River's migrations in it.
func createRiverDB(ctx context.Context, admin string) (*riverDB, error) {
	name := riverDBName(os.Getpid())
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, admin)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL unreachable at %s: %w", redactURL(admin), err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if err := dropStaleRiverDBs(cctx, conn); err != nil {
		return nil, err
	}
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(cctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+ident); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	if riverSyncCommit() == "off" {
		if _, err := conn.Exec(cctx, "ALTER DATABASE "+ident+" SET synchronous_commit = off"); err != nil {
			return nil, fmt.Errorf("database %s: %w", name, err)
		}
	}
	db := &riverDB{admin: admin, name: name, url: dbURL}
	if err := db.migrate(ctx); err != nil {
		db.drop()
		return nil, err
	}
	return db, nil
}

// riverSyncCommit is the synchronous_commit of the River database: "off" (no wait for the WAL flush at commit;
// a crash may lose the last commits but never corrupts, and the bench's Redis keeps nothing on disk at all), or
// "on" with BENCH_RIVER_SYNC_COMMIT=on (the server's default: every commit waits for its fsync).
func riverSyncCommit() string {
	if os.Getenv("BENCH_RIVER_SYNC_COMMIT") == "on" {
		return "on"
	}
	return "off"
}

// dropStaleRiverDBs drops every riverDBPrefix database whose pid is not a running process.
func dropStaleRiverDBs(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1", riverDBPrefix+"%")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		pid, ok := riverDBPID(n)
		if !ok || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	return nil
}

// processAlive reports whether pid is a process of this machine (signal 0 finds it; EPERM means it exists).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// migrate runs River's migrations up to the latest version.
func (d *riverDB) migrate(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, d.url)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	return nil
}

// reset empties River's tables, so that each measurement starts from an empty queue.
func (d *riverDB) reset(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, "TRUNCATE river_job, river_leader, river_queue")
	return err
}

// drop removes the database (WITH (FORCE) ends connections still open); it runs on a context of its own, so that
// it also runs when the harness is interrupted.
func (d *riverDB) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
}

// redactURL hides a password in a URL for messages.
func redactURL(raw string) string {
	return regexp.MustCompile(`://([^:/@]*):[^@]*@`).ReplaceAllString(raw, "://$1:***@")
}
