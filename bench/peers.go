package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// The two peers on other runtimes or stores: BullMQ (Node.js, on the bench's Redis) and River (Go, on the
// machine's PostgreSQL). Each registers a libDef whose check sets it up (and whose error is the reason it is
// skipped) and whose cleanup releases what the check made.

// riverURLEnv passes the URL of the run's River database to the worker subprocesses of the drain measurement.
const riverURLEnv = "TASKQUEUE_BENCH_RIVER_URL"

// peerState is what the peers' checks set up for the run.
var peerState struct {
	mu     sync.Mutex
	river  *riverDB
	bullmq *bullmqRuns
}

func init() {
	libDefs[libRiver] = libDef{
		check:    riverCheck,
		open:     func(string, libOptions) (lib, error) { return openRiver() },
		notRedis: true,
		steps:    map[string]func(context.Context, *bench) error{"proxy": riverProxy},
		cleanup:  riverCleanup,
		describe: riverNote,
	}
	libDefs[libBullMQ] = libDef{
		check:    bullmqCheck,
		describe: bullmqNote,
		open: func(string, libOptions) (lib, error) {
			return nil, errors.New("bench: BullMQ runs its scenarios whole in Node (bullmq/bench.mjs), not through the lib interface")
		},
		steps: map[string]func(context.Context, *bench) error{
			"enqueue": func(ctx context.Context, b *bench) error { return bullmqState().enqueue(ctx, b) },
			"process": func(ctx context.Context, b *bench) error { return bullmqState().process(ctx, b) },
			"drain":   func(ctx context.Context, b *bench) error { return bullmqState().drain(ctx, b) },
			"latency": func(ctx context.Context, b *bench) error { return bullmqState().latency(ctx, b) },
			"proxy":   func(ctx context.Context, b *bench) error { return bullmqState().proxy(ctx, b) },
		},
	}
	rows = append(rows, row{"drain_c1_tps", "drain a backlog, concurrency 1 (BullMQ's worker-generic)", "tasks/s", true, false, nil})
	jsonKeys = append(jsonKeys, peerJSONKeys()...)
}

// peerJSONKeys are the keys of latest.json for BullMQ and River: the bullmq_process_tps and
// river_process_tps (processing while producing, concurrency 100), then one key per row, <lib>_<metric>.
func peerJSONKeys() []struct{ key, lib, metric string } {
	out := []struct{ key, lib, metric string }{
		{"bullmq_process_tps", libBullMQ, "process_c100_tps"},
		{"river_process_tps", libRiver, "process_c100_tps"},
	}
	for _, l := range []string{libBullMQ, libRiver} {
		for _, rw := range rows {
			out = append(out, struct{ key, lib, metric string }{l + "_" + rw.metric, l, rw.metric})
		}
	}
	return out
}

// riverCheck creates the run's River database (its error is the reason River is skipped: PostgreSQL unreachable,
// say) and passes its URL on to the worker subprocesses through the environment.
func riverCheck(ctx context.Context) error {
	db, err := createRiverDB(ctx, pgAdmin())
	if err != nil {
		return err
	}
	peerState.mu.Lock()
	peerState.river = db
	peerState.mu.Unlock()
	return os.Setenv(riverURLEnv, db.url)
}

// riverNote describes River's setup for the notes under the table.
func riverNote(ctx context.Context) string {
	version := "?"
	peerState.mu.Lock()
	db := peerState.river
	peerState.mu.Unlock()
	if db == nil {
		return ""
	}
	if conn, err := pgx.Connect(ctx, db.url); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&version)
		_ = conn.Close(ctx)
	}
	return fmt.Sprintf("river %s on PostgreSQL %s (a database of this run, created and dropped by it, synchronous_commit %s; "+
		"the Redis rows are n/a): FetchCooldown %s and FetchPollInterval %s as in River's own benchmark, MaxWorkers = "+
		"concurrency, a pgx pool of %d, batches with InsertManyFast (COPY FROM)", riverVersion, version, riverSyncCommit(),
		riverFetchCooldown, riverFetchPollInterval, riverPoolConns)
}

// riverCleanup drops the run's River database, if its check made one.
func riverCleanup() {
	peerState.mu.Lock()
	db := peerState.river
	peerState.river = nil
	peerState.mu.Unlock()
	if db != nil {
		db.drop()
	}
}

// openRiver connects to the run's River database. In the harness's own process it first empties River's tables
// (the counterpart of the FLUSHALL before every measurement); a drain worker subprocess connects only, to the
// backlog the harness filled.
func openRiver() (lib, error) {
	if os.Getenv(childEnv) != "" {
		url := os.Getenv(riverURLEnv)
		if url == "" {
			return nil, errors.New("bench: no River database for the worker subprocess")
		}
		return newRiver(url)
	}
	peerState.mu.Lock()
	db := peerState.river
	peerState.mu.Unlock()
	if db == nil {
		return nil, errors.New("bench: River's database was not created (its check did not run)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.reset(ctx); err != nil {
		return nil, err
	}
	return newRiver(db.url)
}

// riverProxy measures River at concurrency 100 with 1 ms added to every round trip to PostgreSQL (the harness's
// proxy step puts its delay in front of Redis, which River does not use).
func riverProxy(ctx context.Context, b *bench) error {
	peerState.mu.Lock()
	db := peerState.river
	peerState.mu.Unlock()
	if db == nil {
		return errors.New("bench: River's database was not created")
	}
	host, err := pgHostPort(db.url)
	if err != nil {
		return err
	}
	p, err := startProxy(host, time.Millisecond)
	if err != nil {
		return err
	}
	defer p.close()
	url, err := withHostPort(db.url, p.addr())
	if err != nil {
		return err
	}
	if err := db.reset(ctx); err != nil {
		return err
	}
	l, err := newRiver(url)
	if err != nil {
		return err
	}
	defer l.close()
	st, err := processRate(ctx, l, 100, b.sz)
	if err != nil {
		return err
	}
	b.res.add(libRiver, "process_c100_1ms_tps", st.tps)
	return nil
}

// pgHostPort is the host:port of a postgres:// URL (port 5432 if it names none).
func pgHostPort(raw string) (string, error) {
	u, err := pgURL(raw)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432"), nil
	}
	return u.Host, nil
}

// withHostPort returns a postgres:// URL with its host:port replaced by hostPort.
func withHostPort(raw, hostPort string) (string, error) {
	u, err := pgURL(raw)
	if err != nil {
		return "", err
	}
	u.Host = hostPort
	return u.String(), nil
}

// bullmqCheck installs BullMQ (npm ci, once) and checks that bench.mjs loads; its error is the skip reason.
func bullmqCheck(ctx context.Context) error {
	n, err := bullmqSetup(ctx, "bullmq")
	if err != nil {
		return err
	}
	peerState.mu.Lock()
	peerState.bullmq = &bullmqRuns{n: n}
	peerState.mu.Unlock()
	return nil
}

func bullmqState() *bullmqRuns {
	peerState.mu.Lock()
	defer peerState.mu.Unlock()
	return peerState.bullmq
}

// bullmqNote describes BullMQ's setup for the notes under the table.
func bullmqNote(ctx context.Context) string {
	version := "?"
	if r := bullmqState(); r != nil {
		if out, err := exec.CommandContext(ctx, r.n.node, "--version").Output(); err == nil {
			version = strings.TrimSpace(string(out))
		}
	}
	return fmt.Sprintf("bullmq %s (ioredis 5.11.1) on Node.js %s: every scenario runs whole in Node; jobs with "+
		"removeOnComplete: true; enqueue batches are addBulk of %d (BullMQ's own benchmark); the producer of the "+
		"process rows runs in a Node process of its own", bullmqVersion, version, bullmqBulk)
}
