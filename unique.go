package taskqueue

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Unique tasks: a task that carries a [Unique] takes a lock on its unique key when it is stored, and a second
// task with the same key is refused ([ErrUniqueKeyHeld]) or dropped ([Dropped]) while the lock is held. See
// docs/unique.md for the semantics and the failure behaviour.
//
// The lock is a record in one hash per queue (locks: unique key -> "<expiry ms>|<lifetime>|<holder id>",
// lua/unique.lua), and the record is only a claim: a lock is held while its holder task still is what its
// lifetime asks (pending, running, retrying, or dead for UniqueUntilSuccess), read from the holder's own keys
// by the script that checks it. A task that leaves the queue by any path therefore frees its key in the same
// script that moves it, and a record whose task was lost frees it too. The record itself is deleted after the
// task's pickup (UniqueUntilStart), ack or dead letter, and by a bounded sweep: that only frees memory.

// UniqueLifetime says how long a unique task holds its key (within its [Unique.TTL]).
type UniqueLifetime uint8

// The lifetimes of a unique lock.
const (
	// UniqueUntilDone, the default, holds the key until the task leaves the queue: it succeeds, or it is
	// dead-lettered, purged or deleted. Retries hold it.
	UniqueUntilDone UniqueLifetime = iota
	// UniqueUntilStart holds the key while the task waits (pending or scheduled): its first pickup frees it, so a
	// duplicate may be queued while it runs.
	UniqueUntilStart
	// UniqueUntilSuccess holds the key until the task succeeds: a dead letter keeps it (until the TTL passes or
	// the dead letter is deleted or purged), so that a failing task is not replaced while an operator looks at it.
	UniqueUntilSuccess
	numUniqueLifetimes
)

func (l UniqueLifetime) String() string {
	switch l {
	case UniqueUntilDone:
		return "until-done"
	case UniqueUntilStart:
		return "until-start"
	case UniqueUntilSuccess:
		return "until-success"
	}
	return "UniqueLifetime(" + strconv.Itoa(int(l)) + ")"
}

// UniqueMode says what the lock does to a duplicate.
type UniqueMode uint8

// The modes of a unique lock.
const (
	// UniqueLock, the default: a duplicate is refused while the lock is held (by its lifetime and TTL).
	UniqueLock UniqueMode = iota
	// UniqueThrottle: at most one task per key per TTL. The lock is held for the whole TTL, whatever becomes of
	// the task; Lifetime is ignored.
	UniqueThrottle
	// UniqueDebounce: the task waits TTL (or its own delay, if longer) before it runs; an enqueue of the same key
	// while it still waits replaces its payload (and everything but its task id) and pushes its due time to TTL
	// from then ([Debounced]). Once it is due, the next enqueue starts a new task. Lifetime is ignored. Not
	// available on a queue that signs its envelopes (the signature covers the task id).
	UniqueDebounce
	numUniqueModes
)

func (m UniqueMode) String() string {
	switch m {
	case UniqueLock:
		return "lock"
	case UniqueThrottle:
		return "throttle"
	case UniqueDebounce:
		return "debounce"
	}
	return "UniqueMode(" + strconv.Itoa(int(m)) + ")"
}

// Bounds of a [Unique].
const (
	// MaxUniqueKeyLen is the longest unique key, in bytes.
	MaxUniqueKeyLen = 512
	// MaxUniqueTTL is the longest lock TTL.
	MaxUniqueTTL = 90 * 24 * time.Hour
)

// Unique makes a task unique by a key: set it on [TaskSpec.Unique]. Supported by [RedisTaskQueue] (and a
// [ShardedQueue] of them, for explicit keys); [MemoryQueue] refuses it.
type Unique struct {
	// Key is the unique key: up to [MaxUniqueKeyLen] bytes of valid UTF-8 without control characters. Empty
	// derives it from the task: the reference strategy's module and name, and the arguments named in ArgFields.
	Key string
	// ArgFields, with an empty Key, are the top-level fields of the arguments (a JSON object) that make the key;
	// nil takes all the arguments. A field that is absent counts as null.
	ArgFields []string
	// TTL bounds the lock: after it, the key is free whatever became of the task. Required: more than 0, at most
	// [MaxUniqueTTL]. For [UniqueThrottle] it is the throttle period, for [UniqueDebounce] the quiet period.
	TTL time.Duration
	// Lifetime is how long the task holds the key within TTL; default [UniqueUntilDone].
	Lifetime UniqueLifetime
	// Mode is what happens to duplicates; default [UniqueLock].
	Mode UniqueMode
	// DropDuplicate turns the duplicate's error ([*DuplicateError]) into the outcome [Dropped]: nothing is stored
	// and the enqueue succeeds.
	DropDuplicate bool
}

// uniqueField is the envelope's member that carries a task's lock: {"key", "life", "ttl_ms"}. It is kept through
// retries as every unknown member is (envelope.extra) and is not signed: it only says which record to release.
const uniqueField = "unique"

// uniqueRef is what the envelope says of a task's lock.
type uniqueRef struct {
	Key   string `json:"key"`
	Life  string `json:"life"` // one character, see lua/unique.lua
	TTLms int64  `json:"ttl_ms"`
}

// lifeCode is the record's lifetime character for a mode and a lifetime.
func lifeCode(u *Unique) string {
	switch u.Mode {
	case UniqueThrottle:
		return "t"
	case UniqueDebounce:
		return "d"
	}
	return [...]string{"l", "b", "s"}[u.Lifetime]
}

// lifeOf is the reverse of lifeCode, for display.
func lifeOf(code string) string {
	switch code {
	case "l":
		return UniqueUntilDone.String()
	case "b":
		return UniqueUntilStart.String()
	case "s":
		return UniqueUntilSuccess.String()
	case "t":
		return UniqueThrottle.String()
	case "d":
		return UniqueDebounce.String()
	}
	return "unknown"
}

// validate checks a Unique; the error is a [*UniqueError] naming the field.
func (u *Unique) validate() error {
	bad := func(field, problem string) error { return &UniqueError{Field: field, Problem: problem} }
	switch {
	case len(u.Key) > MaxUniqueKeyLen:
		return bad("Key", fmt.Sprintf("%d bytes, limit %d", len(u.Key), MaxUniqueKeyLen))
	case !utf8.ValidString(u.Key) || strings.ContainsFunc(u.Key, isControl):
		return bad("Key", "not valid UTF-8 without control characters")
	case u.TTL <= 0:
		return bad("TTL", "must be more than 0")
	case u.TTL > MaxUniqueTTL:
		return bad("TTL", fmt.Sprintf("%s, limit %s", u.TTL, MaxUniqueTTL))
	case u.Lifetime >= numUniqueLifetimes:
		return bad("Lifetime", "unknown "+u.Lifetime.String())
	case u.Mode >= numUniqueModes:
		return bad("Mode", "unknown "+u.Mode.String())
	case len(u.ArgFields) > 64:
		return bad("ArgFields", "more than 64 fields")
	}
	for _, f := range u.ArgFields {
		if f == "" || len(f) > maxRefLen {
			return bad("ArgFields", fmt.Sprintf("a field name must be 1 to %d bytes", maxRefLen))
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// uniqueKey returns the key of u for a task serialized as st: Key, or one derived from the reference strategy's
// module, name and the chosen arguments ("ref:<module>.<name>:<sha-256 of the arguments, canonical JSON>").
func uniqueKey(u *Unique, st SerializedTask) (string, error) {
	if u.Key != "" {
		return u.Key, nil
	}
	if st.Strategy != StrategyReference {
		return "", &UniqueError{Field: "Key", Problem: "required unless the task uses the reference strategy"}
	}
	module, name, args, err := decodeReferencePayload(st.Payload)
	if err != nil {
		return "", &UniqueError{Field: "Key", Problem: "cannot derive it: " + err.Error()}
	}
	canon, err := canonicalArgs(args, u.ArgFields)
	if err != nil {
		return "", &UniqueError{Field: "ArgFields", Problem: err.Error()}
	}
	sum := sha256.Sum256(canon)
	return "ref:" + string(module) + "." + string(name) + ":" + hex.EncodeToString(sum[:16]), nil
}

// canonicalArgs returns the arguments (or the chosen top-level fields of them) as canonical JSON: object keys
// sorted, numbers as written, no spaces, so that equal arguments give equal keys however they were encoded.
func canonicalArgs(args json.RawMessage, fields []string) ([]byte, error) {
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage("null")
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if fields != nil {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, errors.New("the arguments are not a JSON object")
		}
		picked := make(map[string]any, len(fields))
		for _, f := range fields {
			picked[f] = obj[f]
		}
		v = picked
	}
	return json.Marshal(v) // maps are written with sorted keys; json.Number as written
}

// attachUnique records spec's lock in env (encodeInto) and returns the task's delay, which debounce lengthens to
// the TTL. Nothing is stored when it fails.
func (q *RedisTaskQueue) attachUnique(u *Unique, env *envelope, delay time.Duration) (time.Duration, error) {
	if err := u.validate(); err != nil {
		return 0, err
	}
	if u.Mode == UniqueDebounce && q.signer != nil {
		return 0, &UniqueError{Field: "Mode", Problem: "debounce is not available on a queue that signs its envelopes"}
	}
	key, err := uniqueKey(u, env.SerializedTask)
	if err != nil {
		return 0, err
	}
	if u.Mode == UniqueDebounce {
		delay = max(delay, u.TTL)
		env.Status = StateScheduled
	}
	raw, err := json.Marshal(uniqueRef{Key: key, Life: lifeCode(u), TTLms: max(u.TTL.Milliseconds(), 1)})
	if err != nil {
		return 0, err
	}
	if env.extra == nil {
		env.extra = make(map[string]json.RawMessage, 1)
	}
	env.extra[uniqueField] = raw
	return delay, nil
}

// uniqueOf returns the lock an envelope carries, if any. Cheap for a task without one: a nil map.
func uniqueOf(env *envelope) (uniqueRef, bool) {
	if env == nil || env.extra == nil {
		return uniqueRef{}, false
	}
	raw, ok := env.extra[uniqueField]
	if !ok {
		return uniqueRef{}, false
	}
	var r uniqueRef
	if json.Unmarshal(raw, &r) != nil || r.Key == "" || len(r.Life) != 1 {
		return uniqueRef{}, false
	}
	return r, true
}

var (
	//go:embed lua/unique.lua
	uniqueLua string
	//go:embed lua/unique_enqueue.lua
	uniqueEnqueueLua string
	//go:embed lua/unique_release.lua
	uniqueReleaseLua string

	uniqueEnqueueSrc    = withPrelude(uniqueEnqueueLua)
	uniqueReleaseSrc    = withPrelude(uniqueReleaseLua)
	uniqueEnqueueScript = redis.NewScript(uniqueEnqueueSrc)
	uniqueReleaseScript = redis.NewScript(uniqueReleaseSrc)
)

// locks is the queue's hash of unique locks (lua/unique.lua). Not in the whole key set: only the unique scripts
// touch it.
func (k keySet) locks() string { return k.tag + ":unique" }

// uniqueEnqueueKeys are unique_enqueue.lua's KEYS.
func (q *RedisTaskQueue) uniqueEnqueueKeys() []string {
	return []string{q.keys.key(keyTasks), q.keys.key(keyPending), q.keys.key(keyWake), q.keys.key(keyScheduled),
		q.keys.key(keyDead), q.keys.locks()}
}

// uniqueReleaseKeys are unique_release.lua's KEYS.
func (q *RedisTaskQueue) uniqueReleaseKeys() []string {
	return []string{q.keys.key(keyTasks), q.keys.key(keyDead), q.keys.locks()}
}

// hasUnique reports whether a spec of the batch carries a [Unique].
func hasUnique(specs []*TaskSpec) bool {
	return slices.ContainsFunc(specs, func(s *TaskSpec) bool { return s != nil && s.Unique != nil })
}

// enqueueUnique is EnqueueBatch for a batch with unique tasks: the same, through unique_enqueue.lua, which takes
// each created task's lock in the call that stores it.
func (q *RedisTaskQueue) enqueueUnique(ctx context.Context, specs []*TaskSpec) error {
	var errs []error
	type sent struct {
		index int
		env   *envelope
		u     *Unique
	}
	envs := make([]envelope, len(specs))
	batch := make([]sent, 0, len(specs))
	args := make([]any, 0, 6*len(specs))
	for i, spec := range specs {
		prepare(spec)
		env := &envs[i]
		raw, delay, err := q.sealInto(spec, env)
		if err != nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: specID(spec), Err: err})
			continue
		}
		ref, _ := uniqueOf(env)
		args = append(args, env.TaskID, raw, delay.Milliseconds(), ref.Key, ref.TTLms, ref.Life)
		batch = append(batch, sent{i, env, spec.Unique})
	}
	if len(batch) == 0 {
		return errors.Join(errs...)
	}
	reply, err := q.runUniqueEnqueue(ctx, args)
	res := reply.res
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("taskqueue: enqueue: %w", classify(err)))...)
	}
	if len(res) != len(batch) {
		return errors.Join(append(errs, fmt.Errorf("taskqueue: enqueue: unexpected reply of %d items", len(res)))...)
	}
	for j, r := range res {
		s := batch[j]
		spec := specs[s.index]
		switch r := r.(type) {
		case int64:
			spec.Enqueued = [...]EnqueueOutcome{Duplicate, Stored, AlreadyCompleted}[min(max(r, 0), 2)]
		case string:
			if sameTask(r, s.env, q.cfg.Limits) {
				spec.Enqueued = Duplicate
			} else {
				errs = append(errs, &EnqueueError{Index: s.index, TaskID: s.env.TaskID, Err: ErrTaskIDConflict})
			}
		case []any:
			code, _ := r[0].(int64)
			holder, _ := r[1].(string)
			ref, _ := uniqueOf(s.env)
			switch {
			case code == 3:
				spec.TaskID, spec.Enqueued = holder, Debounced
			case s.u != nil && s.u.DropDuplicate:
				spec.Enqueued = Dropped
			default:
				errs = append(errs, &EnqueueError{Index: s.index, TaskID: s.env.TaskID, Err: &DuplicateError{Key: ref.Key, TaskID: holder}})
			}
		}
	}
	q.uniqueUsed()
	return errors.Join(append(errs, reply.notReplicated)...)
}

// runUniqueEnqueue runs unique_enqueue.lua on args (six per task), one call per enqueueChunk tasks in one pipeline,
// then WAIT when the config asks for a durable enqueue; EVAL again when a script was missing from the cache.
func (q *RedisTaskQueue) runUniqueEnqueue(ctx context.Context, args []any) (enqueueReply, error) {
	const per = 6
	keys := q.uniqueEnqueueKeys()
	for _, sha := range []bool{true, false} {
		var cmds []*redis.Cmd
		var wait *redis.Cmd
		_, _ = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < len(args); i += per * enqueueChunk {
				chunk := args[i:min(i+per*enqueueChunk, len(args))]
				part := append([]any{len(chunk) / per}, chunk...)
				if sha {
					cmds = append(cmds, uniqueEnqueueScript.EvalSha(ctx, p, keys, part...))
				} else {
					cmds = append(cmds, uniqueEnqueueScript.Eval(ctx, p, keys, part...))
				}
			}
			if q.cfg.DurableReplicas > 0 {
				wait = p.Do(ctx, "wait", q.cfg.DurableReplicas, q.cfg.DurableTimeout.Milliseconds())
			}
			return nil
		})
		if sha && slices.ContainsFunc(cmds, func(c *redis.Cmd) bool { return isNoScript(c.Err()) }) {
			continue
		}
		out := make([]any, 0, len(args)/per)
		for _, c := range cmds {
			res, err := c.Slice()
			if err != nil {
				return enqueueReply{}, err
			}
			out = append(out, res...)
		}
		r := enqueueReply{res: out}
		if wait != nil {
			if got, werr := wait.Int64(); werr != nil || int(got) < q.cfg.DurableReplicas {
				r.notReplicated = &ReplicationError{Want: q.cfg.DurableReplicas, Got: int(got), Timeout: q.cfg.DurableTimeout, Err: werr}
			}
		}
		return r, nil
	}
	return enqueueReply{}, errors.New("taskqueue: enqueue: unreachable: EVAL needs no script cache")
}

// releaseLocks deletes the lock records of the deliveries that carry one, in one call: mode "start" after their
// pickup (only lifetime UniqueUntilStart), "leave" after their ack or dead letter (a record whose holder still
// holds it stays: the call is safe whatever the outcome was). Deliveries without a lock cost a nil check each
// and no call. It is housekeeping (a lock whose task left is already free), so a failure is only logged.
func (q *RedisTaskQueue) releaseLocks(ctx context.Context, mode string, ds []*Delivery) {
	var args []any
	for _, d := range ds {
		if d == nil || d.env == nil || d.env.extra == nil {
			continue
		}
		ref, ok := uniqueOf(d.env)
		if !ok || (mode == "start" && ref.Life != "b") {
			continue
		}
		if args == nil {
			args = []any{mode}
		}
		args = append(args, ref.Key, d.Spec.TaskID)
	}
	if args == nil {
		return
	}
	if err := uniqueReleaseScript.Run(ctx, q.rdb, q.uniqueReleaseKeys(), args...).Err(); err != nil {
		q.cfg.Logger.WarnContext(ctx, "taskqueue: could not delete unique lock records; a sweep will", slog.Any("error", err))
	}
	q.uniqueUsed()
}

// releaseTaskLocks is the Go side of unique_release (lua/unique.lua) for code that removes tasks from the queue
// by other paths (cancellation, deletion): it deletes the lock records that the given tasks (id -> envelope as
// stored) held, once they are no longer held. Envelopes without a lock are skipped.
func (q *RedisTaskQueue) releaseTaskLocks(ctx context.Context, envs map[string]string) error {
	var args []any
	for id, raw := range envs {
		env, err := decodeStored(id, []byte(raw), q.cfg.Limits)
		if err != nil {
			continue
		}
		if ref, ok := uniqueOf(env); ok {
			if args == nil {
				args = []any{"leave"}
			}
			args = append(args, ref.Key, id)
		}
	}
	if args == nil {
		return nil
	}
	return uniqueReleaseScript.Run(ctx, q.rdb, q.uniqueReleaseKeys(), args...).Err()
}

// uniqueSweepEvery is how many unique calls (enqueues, releases) a queue makes between two pages of its sweep.
const uniqueSweepEvery = 64

// uniqueUsed counts a call of a queue that uses unique tasks and sweeps one page of lock records every
// uniqueSweepEvery calls, so that records of locks freed by paths that do not call releaseLocks (purge, delete,
// a lost task, an expired throttle) do not pile up. A queue without unique tasks never gets here.
func (q *RedisTaskQueue) uniqueUsed() {
	if q.uniqueCalls.Add(1)%uniqueSweepEvery != 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next, _, err := q.sweepLocksPage(ctx, q.uniqueCursor.Load(), 100)
	if err == nil {
		q.uniqueCursor.Store(next)
	}
}

// sweepLocksPage deletes the free records among one HSCAN page of the locks hash.
func (q *RedisTaskQueue) sweepLocksPage(ctx context.Context, cursor uint64, count int) (uint64, int, error) {
	res, err := uniqueReleaseScript.Run(ctx, q.rdb, q.uniqueReleaseKeys(), "sweep", cursor, count).Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("taskqueue: sweep unique locks: %w", classify(err))
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("taskqueue: sweep unique locks: unexpected reply of %d items", len(res))
	}
	s, _ := res[0].(string)
	next, _ := strconv.ParseUint(s, 10, 64)
	n, _ := res[1].(int64)
	return next, int(n), nil
}

// SweepLocks deletes the records of every unique lock that is free (its TTL passed, or its task left the queue
// or was lost), scanning the whole locks hash in pages of 100; it returns how many it deleted. Workers sweep a
// page now and then on their own; this is for operators (the CLI's "locks sweep").
func (q *RedisTaskQueue) SweepLocks(ctx context.Context) (int, error) {
	var cursor uint64
	total := 0
	for range 1 << 20 { // bounded: HSCAN ends in a number of pages proportional to the hash's size
		next, n, err := q.sweepLocksPage(ctx, cursor, 100)
		if err != nil {
			return total, err
		}
		total += n
		if cursor = next; cursor == 0 {
			break
		}
	}
	return total, nil
}

// LockInfo describes a unique lock record.
type LockInfo struct {
	// Key is the unique key.
	Key string
	// TaskID is the task that took the lock.
	TaskID string
	// Lifetime is the record's lifetime or mode: "until-done", "until-start", "until-success", "throttle" or
	// "debounce".
	Lifetime string
	// ExpiresAt is when the TTL ends.
	ExpiresAt time.Time
	// Held says whether the lock still holds the key: false for a record whose TTL passed or whose task left
	// the queue (or was lost), which the next enqueue of the key, or a sweep, replaces.
	Held bool
}

// Lock returns the lock record of a unique key, or nil when there is none.
func (q *RedisTaskQueue) Lock(ctx context.Context, key string) (*LockInfo, error) {
	locks, err := q.describeLocks(ctx, []string{key})
	if err != nil || len(locks) == 0 {
		return nil, err
	}
	return &locks[0], nil
}

// Locks lists up to about count lock records from cursor (0 to start), as HSCAN does, and the cursor of the next
// page (0 at the end).
func (q *RedisTaskQueue) Locks(ctx context.Context, cursor uint64, count int) ([]LockInfo, uint64, error) {
	kv, next, err := q.rdb.HScan(ctx, q.keys.locks(), cursor, "", int64(max(count, 1))).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("taskqueue: locks: %w", classify(err))
	}
	keys := make([]string, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		keys = append(keys, kv[i])
	}
	locks, err := q.describeLocks(ctx, keys)
	return locks, next, err
}

// TaskLock returns the lock that a task carries (nil when it carries none, or when its task does not exist).
func (q *RedisTaskQueue) TaskLock(ctx context.Context, taskID string) (*LockInfo, error) {
	raw, err := q.rdb.HGet(ctx, q.keys.key(keyTasks), taskID).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("taskqueue: task lock: %w", classify(err))
	}
	env, err := decodeStored(taskID, []byte(raw), q.cfg.Limits)
	if err != nil {
		return nil, nil //nolint:nilerr // a tombstone or an undecodable envelope carries no lock we can read
	}
	ref, ok := uniqueOf(env)
	if !ok {
		return nil, nil
	}
	l, err := q.Lock(ctx, ref.Key)
	if err == nil && l == nil {
		l = &LockInfo{Key: ref.Key, Lifetime: lifeOf(ref.Life)} // freed and deleted: no holder
	}
	return l, err
}

// ReleaseLock deletes the lock record of a unique key whatever it says (an operator's action: the CLI's "locks
// release"); it reports whether there was one. A lock never strands (a record whose task left is free), so this
// is only needed to let a duplicate in while the holder still exists.
func (q *RedisTaskQueue) ReleaseLock(ctx context.Context, key string) (bool, error) {
	n, err := uniqueReleaseScript.Run(ctx, q.rdb, q.uniqueReleaseKeys(), "force", key, "").Int64()
	if err != nil {
		return false, fmt.Errorf("taskqueue: release lock: %w", classify(err))
	}
	return n == 1, nil
}

// describeLocks reads the records of keys and whether each is held (one script call).
func (q *RedisTaskQueue) describeLocks(ctx context.Context, keys []string) ([]LockInfo, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 1+len(keys))
	args = append(args, "inspect")
	for _, k := range keys {
		args = append(args, k)
	}
	res, err := uniqueReleaseScript.Run(ctx, q.rdb, q.uniqueReleaseKeys(), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: locks: %w", classify(err))
	}
	out := make([]LockInfo, 0, len(keys))
	for i := 0; i+1 < len(res) && i/2 < len(keys); i += 2 {
		rec, ok := res[i].(string)
		if !ok {
			continue
		}
		parts := strings.SplitN(rec, "|", 3)
		if len(parts) != 3 {
			continue
		}
		exp, _ := strconv.ParseInt(parts[0], 10, 64)
		held, _ := res[i+1].(int64)
		out = append(out, LockInfo{Key: keys[i/2], TaskID: parts[2], Lifetime: lifeOf(parts[1]),
			ExpiresAt: time.UnixMilli(exp), Held: held == 1})
	}
	return out, nil
}

// sweepLocksAtStart deletes the free lock records a worker binary finds when it starts (those left by tasks that
// went while no worker ran, or lost in a restart), so that a queue whose producers stopped using a key does not
// keep its record. Bounded to 10 s; a failure (a Redis user without HSCAN) is only logged at debug level.
func sweepLocksAtStart(ctx context.Context, q *RedisTaskQueue, logger *slog.Logger) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := q.SweepLocks(sctx)
	switch {
	case err != nil:
		logger.Debug("taskqueue: worker: unique lock sweep skipped", slog.Any("error", err))
	case n > 0:
		logger.Info("taskqueue: worker: swept free unique lock records", slog.Int("records", n))
	}
}
