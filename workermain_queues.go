package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// A worker binary on several queues: --queues lists key prefixes with weights, --strict serves them in order
// (multiqueue.go, docs/flow-control.md).

// WorkerMainQueue is one queue of a worker binary on several queues ([WorkerMainConfig.Queues]).
type WorkerMainQueue struct {
	KeyPrefix string
	Weight    int // 1 to [MaxQueueWeight]; ignored under [WorkerMainConfig.Strict]
}

// queueList reads --queues and --strict: nil without --queues.
func (p *flagReader) queueList() ([]WorkerMainQueue, bool, error) {
	strictStr, _ := p.value("strict")
	strict, perr := strconv.ParseBool(strictStr)
	var err error
	if perr != nil {
		p.bad(&err, "strict", strictStr, "true or false")
		return nil, false, err
	}
	list, set := p.value("queues")
	if !set {
		if strict {
			return nil, false, fmt.Errorf("%w: %s needs --queues", ErrInvalidConfig, p.source("strict"))
		}
		return nil, false, nil
	}
	if _, prefixSet := p.value("key-prefix"); prefixSet {
		return nil, false, fmt.Errorf("%w: %s replaces %s: give one of them", ErrInvalidConfig, p.source("queues"), p.source("key-prefix"))
	}
	qs, err := parseQueueList(list)
	if err != nil {
		return nil, false, fmt.Errorf("%w (%s)", err, p.source("queues"))
	}
	return qs, strict, nil
}

// parseQueueList reads "prefix:weight,prefix,..." (a weight left out is 1).
func parseQueueList(list string) ([]WorkerMainQueue, error) {
	var out []WorkerMainQueue
	seen := map[string]bool{}
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		prefix, weight := item, "1"
		if i := strings.LastIndexByte(item, ':'); i >= 0 {
			prefix, weight = item[:i], item[i+1:]
		}
		if err := validateKeyPrefix(prefix); err != nil {
			return nil, fmt.Errorf("%w: queue %d of the list", err, len(out)+1)
		}
		w, err := strconv.Atoi(weight)
		if err != nil || w < 1 || w > MaxQueueWeight {
			return nil, fmt.Errorf("%w: weight %s of queue %s: want a whole number from 1 to %d", ErrInvalidConfig, quote(weight), quote(prefix), MaxQueueWeight)
		}
		if seen[prefix] {
			return nil, fmt.Errorf("%w: queue %s is listed twice", ErrInvalidConfig, quote(prefix))
		}
		seen[prefix] = true
		out = append(out, WorkerMainQueue{KeyPrefix: prefix, Weight: w})
	}
	if len(out) > MaxMultiQueues {
		return nil, fmt.Errorf("%w: %d queues, at most %d", ErrInvalidConfig, len(out), MaxMultiQueues)
	}
	return out, nil
}

// multiQueue makes the queues of c.Queues with cfg and the [MultiQueue] over them.
func (c *WorkerMainConfig) multiQueue(rdb redis.UniversalClient, reg *ResolverRegistry, cfg *RedisConfig) ([]*RedisTaskQueue, *MultiQueue, error) {
	qs := make([]*RedisTaskQueue, len(c.Queues))
	ws := make([]QueueWeight, len(c.Queues))
	for i, wq := range c.Queues {
		q, err := NewRedisTaskQueue(rdb, wq.KeyPrefix, reg, cfg)
		if err != nil {
			return nil, nil, err
		}
		qs[i], ws[i] = q, QueueWeight{Queue: q, Weight: wq.Weight}
	}
	m, err := NewMultiQueue(ws, &MultiQueueConfig{Strict: c.Strict})
	return qs, m, err
}

// prefixes lists the key prefixes of qs, for a log line.
func prefixes(qs []*RedisTaskQueue) string {
	ps := make([]string, len(qs))
	for i, q := range qs {
		ps[i] = q.prefix
	}
	return strings.Join(ps, ",")
}

// startSchedulers starts a scheduler for each queue (startScheduler); the channel closes once all have ended.
func (c *WorkerMainConfig) startSchedulers(ctx context.Context, qs []*RedisTaskQueue, logger *slog.Logger) (<-chan struct{}, error) {
	var dones []<-chan struct{}
	var err error
	for _, q := range qs {
		var done <-chan struct{}
		l := logger
		if len(qs) > 1 {
			l = logger.With(slog.String("key_prefix", q.prefix))
		}
		if done, err = c.startScheduler(ctx, q, l); err != nil {
			break
		}
		dones = append(dones, done)
	}
	all := make(chan struct{})
	go func() {
		defer close(all)
		for _, d := range dones {
			<-d
		}
	}()
	return all, err
}
