package taskqueue

import (
	"fmt"
	"regexp"
	"strconv"
)

// MaxKeyPrefixLen is the longest key prefix accepted.
const MaxKeyPrefixLen = 128

// keyPrefixPattern admits letters, digits and "_.:/-". Braces would break the hash tag, glob characters would
// make prefixes match each other in SCAN patterns and ACL key patterns, and whitespace reads badly in redis-cli.
var keyPrefixPattern = regexp.MustCompile(`^[A-Za-z0-9_.:/-]+$`)

func validateKeyPrefix(prefix string) error {
	if prefix == "" || len(prefix) > MaxKeyPrefixLen || !keyPrefixPattern.MatchString(prefix) {
		return fmt.Errorf("%w: %s must be 1 to %d characters of letters, digits and _.:/-", ErrInvalidKeyPrefix, quote(prefix), MaxKeyPrefixLen)
	}
	return nil
}

// Indexes into keySet.all: the order in which the scripts that take the whole key set receive their KEYS (KEYS[i]
// is all[i-1]). A new key is appended before numKeys, so that the KEYS[i] of every existing script stay valid.
const (
	keyTasks       = iota // HASH   task id -> envelope JSON
	keyPending            // LIST   task ids ready to run, oldest at the head
	keyActive             // ZSET   previous layout: task id -> lease deadline; only drained (reap.lua) after an upgrade
	keyLease              // HASH   previous layout: task id -> fencing token; only drained (reap.lua) after an upgrade
	keyDeliveries         // HASH   task id -> leases that expired since the task last settled (crash-loop detection)
	keyScheduled          // ZSET   task id -> due time (ms, server clock): delayed tasks and retries
	keyDead               // ZSET   task id -> time it was dead-lettered (ms)
	keyErrors             // HASH   task id -> why it was dead-lettered
	keySettled            // ZSET   previous layout: task id -> token*4+outcome; converted to tombstones by reap.lua
	keySeq                // STRING fencing-token counter
	keyWake               // LIST   wake-up tokens for blocked consumers; carries no task data
	keyPaused             // STRING present while pickup is paused: the time it was paused (ms, server clock)
	keyEpoch              // STRING base of the fencing tokens: the server time (ms) x 256 when the counter started
	keyLeases             // ZSET   base token of a pickup batch -> its lease deadline (ms, server clock)
	keyBatches            // HASH   base token of a pickup batch -> its record: a mask (one char per task) + the ids
	keyInflight           // STRING number of tasks leased in batches and not yet settled (Stats' Active)
	keyWindow             // LIST   ids whose tasks value is a tombstone (acked recently), oldest at the head
	keyLevels             // HASH   priority levels (priority.go): marker '*', and id -> level of a scheduled or dead task
	keyPendingHigh        // LIST   ready task ids of level PriorityHigh, oldest at the head
	keyPendingLow         // LIST   ready task ids of level PriorityLow, oldest at the head
	keyFlow               // HASH   flow keys (flow.go): marker '*', counter '#', id -> flow key of a scheduled or dead task
	keyFlowReady          // ZSET   ready keyed tasks, all scored 0: "<flow key> <15-digit seq><id>", FIFO per key (lex)
	keyFlowRot            // LIST   flow keys with ready tasks that pickup takes from, in rotation order
	keyFlowState          // HASH   flow key with ready tasks -> 'r' (in rotation), 'f' (at its limit), 'w' (over its rate)
	keyFlowWait           // ZSET   flow key over its rate -> when it may start again (ms, server clock)
	keyFlowRun            // HASH   flow key -> its tasks leased now (the slots that leases hold)
	keyLimits             // HASH   flow limits: "c:<key>", "c:*" concurrency; "r:<key>", "r:*", "q" rates "<n>/<ms>"
	keyLimitsRate         // ZSET   flow key, or "*" for the queue -> its rate limiter's theoretical arrival time (ms)
	numKeys
)

var keySuffixes = [numKeys]string{"tasks", "pending", "active", "lease", "deliveries", "scheduled", "dead", "errors", "settled", "seq", "wake", "paused", "epoch", "leases", "batches", "inflight", "window", "levels", "pending:high", "pending:low",
	"flow", "flow:ready", "flow:rotation", "flow:state", "flow:wait", "flow:running", "limits", "limits:rate"}

// keySet holds every key of one queue. All share the hash tag {prefix}, so a queue lives in one Cluster slot and
// every script can touch all of them.
//
// Most scripts receive all of them as KEYS. The calls a busy queue makes most (enqueue, ack, lease renewal)
// declare only the keys they touch, and of those only the ones that exist while such a call has work to do: while a
// Cluster moves the queue's slot, Redis refuses a call (TRYAGAIN) as long as one of the keys it declares is missing
// on the node that gets it, and the queue's keys do not all exist at once (paused, scheduled, deliveries, dead and
// errors usually do not), nor move at once. See docs/scaling.md for what it gains.
type keySet struct {
	tag string   // "{prefix}"
	all []string // the whole key set, in the order of the key* constants: KEYS of every other script

	enqueue        []string // enqueue.lua: tasks, pending, wake
	enqueueDelayed []string // enqueue.lua for a call with a delayed task: the same, then scheduled
	ack            []string // ack.lua: tasks, batches, leases, inflight, window
	ackRedelivered []string // ack.lua for a batch with a delivery whose lease expired before: the same, then deliveries
	extend         []string // extend.lua: leases, batches
	enqueueLevels  []string // enqueue_levels.lua: tasks, pending, wake, scheduled, levels, high, low
	ackFlow        []string // appended to ack.lua's KEYS by a call with a keyed batch: running, state, rotation, wake
}

func newKeySet(prefix string) keySet {
	ks := keySet{tag: "{" + prefix + "}", all: make([]string, numKeys)}
	for i, s := range keySuffixes {
		ks.all[i] = ks.tag + ":" + s
	}
	pick := func(idx ...int) []string {
		out := make([]string, len(idx))
		for i, k := range idx {
			out[i] = ks.all[k]
		}
		return out
	}
	ks.enqueue = pick(keyTasks, keyPending, keyWake)
	ks.enqueueDelayed = pick(keyTasks, keyPending, keyWake, keyScheduled)
	ks.ack = pick(keyTasks, keyBatches, keyLeases, keyInflight, keyWindow)
	ks.ackRedelivered = pick(keyTasks, keyBatches, keyLeases, keyInflight, keyWindow, keyDeliveries)
	ks.extend = pick(keyLeases, keyBatches)
	ks.enqueueLevels = pick(keyTasks, keyPending, keyWake, keyScheduled, keyLevels, keyPendingHigh, keyPendingLow)
	ks.ackFlow = pick(keyFlowRun, keyFlowState, keyFlowRot, keyWake)
	return ks
}

func (k keySet) key(i int) string { return k.all[i] }

// consumerWake is the list a single consumer also blocks on, so that it can be interrupted (by Stop) without
// waking anyone else.
func (k keySet) consumerWake(consumer string) string { return k.tag + ":wake:" + consumer }

// group is the hash of one group run; groupID is "<name>@<run id>" (see group.go).
func (k keySet) group(groupID string) string { return k.tag + ":group:" + groupID }

// groupDone is the list the last member of a group run pushes a wake-up to.
func (k keySet) groupDone(groupID string) string { return k.tag + ":group:" + groupID + ":done" }

// groupWaiter is the list one waiter also blocks on, so that cancelling its context ends its wait at once.
func (k keySet) groupWaiter(groupID, waiter string) string {
	return k.tag + ":group:" + groupID + ":w:" + waiter
}

// result holds the result of a task that is not a group member (group members keep theirs in the run's hash).
func (k keySet) result(taskID string) string { return k.tag + ":result:" + taskID }

// scheduleWake is the pub/sub channel on which the schedule scripts announce every change to the queue's
// schedules (schedules() plus ":wake", computed in Lua from KEYS[1]), so that idle [Scheduler]s wake at once.
func (k keySet) scheduleWake() string { return k.tag + ":schedules:wake" }

// schedules are the keys of the queue's periodic schedules (schedule.go, lua/schedule_*.lua), in the order those
// scripts take them: the definitions (HASH name -> JSON), the due index (ZSET name -> when a scheduler looks at
// it next, ms, server clock) and the states (HASH name -> JSON written by the scripts). They are not in the
// whole key set: no task script touches them.
func (k keySet) schedules() []string {
	return []string{k.tag + ":schedules", k.tag + ":schedules:due", k.tag + ":schedules:state"}
}

// cancelled is the sorted set of the queue's cancelled tasks (id -> when cancelled, ms, server clock), kept for
// RedisConfig.ControlRetention; lua/cancel.lua publishes the ids of cancelled running tasks on cancelNotify.
func (k keySet) cancelled() string { return k.tag + ":cancelled" }

// cancelNotify is the pub/sub channel of the queue's cancels of running tasks (cancelled() plus ":notify",
// computed in Lua from the cancelled key): every worker of the queue subscribes to it (cancel_listener.go).
func (k keySet) cancelNotify() string { return k.tag + ":cancelled:notify" }

// history is the hash of one minute of the queue's history (history.go): minute is the Unix time / 60 (server
// clock); fields are counts and latency histogram buckets, written by HINCRBY, and the hash expires a day after its
// last write (historyTTL). Not in the whole key set: no task script touches it.
func (k keySet) history(minute int64) string {
	return k.tag + ":history:" + strconv.FormatInt(minute, 10)
}

// progress holds the last progress a task's handler reported (ReportProgress), for RedisConfig.ControlRetention.
func (k keySet) progress(taskID string) string { return k.tag + ":progress:" + taskID }
