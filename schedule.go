package taskqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue/internal/cron"
)

// Errors of periodic schedules (docs/periodic.md). Every error about a schedule's definition is a
// [*ScheduleError] naming the schedule and the field at fault.
var (
	// ErrInvalidSchedule is returned when a schedule's definition cannot work: a malformed cron expression, an
	// unknown time zone, an interval below [MinScheduleInterval], a bad name, a task template that does not
	// serialize. Nothing is stored.
	ErrInvalidSchedule = errors.New("taskqueue: invalid schedule")
	// ErrScheduleExists is returned by [Schedules.Create] for a name already taken. Nothing is
	// stored; [Schedules.Update] replaces a definition.
	ErrScheduleExists = errors.New("taskqueue: schedule already exists")
	// ErrScheduleNotFound is returned for a schedule name that does not exist.
	ErrScheduleNotFound = errors.New("taskqueue: schedule not found")
	// ErrScheduleUndecodable is reported for a stored schedule that this build cannot read (written by hand or
	// by a newer version): schedulers skip it, and [Schedules.List] shows it with this error.
	ErrScheduleUndecodable = errors.New("taskqueue: stored schedule cannot be decoded")
)

// ScheduleError describes what is wrong with a schedule. Field names the [Schedule] field at fault ("Name",
// "Cron", "Every", "TimeZone", "Task", "MisfireGrace", "MaxCatchUp"; "" when the error is not about one field).
// It wraps [ErrInvalidSchedule], [ErrScheduleExists], [ErrScheduleNotFound] or [ErrScheduleUndecodable], and
// the cause.
type ScheduleError struct {
	Schedule string
	Field    string
	Err      error
}

func (e *ScheduleError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("taskqueue: schedule %s: %v", quote(e.Schedule), e.Err)
	}
	return fmt.Sprintf("taskqueue: schedule %s: %s: %v", quote(e.Schedule), e.Field, e.Err)
}

func (e *ScheduleError) Unwrap() error { return e.Err }

func invalidSchedule(name, field string, format string, args ...any) error {
	return &ScheduleError{Schedule: name, Field: field, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalidSchedule}, args...)...)}
}

// MisfirePolicy says what a schedule does with ticks that no scheduler fired in time (all schedulers were down,
// or Redis was unreachable).
type MisfirePolicy uint8

// The misfire policies.
const (
	// MisfireSkip (the default) fires a tick that is at most [Schedule.MisfireGrace] late and skips older ones:
	// after a short interruption nothing is lost, after a long one the schedule continues with its next tick.
	MisfireSkip MisfirePolicy = iota
	// MisfireCatchUp fires every missed tick, but at most [Schedule.MaxCatchUp] of them (the latest ones): after
	// a night of downtime an hourly schedule runs its missed hours, each tick as its own task.
	MisfireCatchUp
)

func (p MisfirePolicy) String() string {
	switch p {
	case MisfireSkip:
		return "skip"
	case MisfireCatchUp:
		return "catch_up"
	}
	return "MisfirePolicy(" + strconv.Itoa(int(p)) + ")"
}

// Bounds of a [Schedule].
const (
	// MinScheduleInterval is the shortest [Schedule.Every]; a cron expression's seconds field fires at most once
	// a second too.
	MinScheduleInterval = time.Second
	// MaxScheduleNameLen is the longest schedule name.
	MaxScheduleNameLen = 128
	// MaxCatchUpLimit bounds [Schedule.MaxCatchUp].
	MaxCatchUpLimit = 1000
	// DefaultMisfireGrace is the default [Schedule.MisfireGrace].
	DefaultMisfireGrace = time.Minute
	// DefaultMaxCatchUp is the default [Schedule.MaxCatchUp].
	DefaultMaxCatchUp = 10
)

// scheduleNamePattern: letters, digits and "_.-", starting with a letter or digit (the name is part of task ids
// and shows in the CLI).
var scheduleNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Schedule is a periodic task: a name, when it fires (a cron expression in a time zone, or a fixed interval),
// and the task each tick enqueues. It is stored in Redis under the queue's hash tag, so it outlives every
// process; any number of [Scheduler]s fire it, each tick exactly once (docs/periodic.md).
type Schedule struct {
	// Name identifies the schedule in the queue: 1 to [MaxScheduleNameLen] letters, digits, "_", "." or "-",
	// starting with a letter or digit.
	Name string
	// Cron is a cron expression: five fields (minute hour day-of-month month day-of-week) or six (seconds
	// first), or a macro such as @daily; see docs/periodic.md. Exactly one of Cron and Every is set.
	Cron string
	// TimeZone is the IANA zone Cron is read in ("Europe/Berlin"); empty means UTC. Only with Cron.
	TimeZone string
	// Every fires the schedule at a fixed interval, at least [MinScheduleInterval], counted from its creation
	// (or last update) on the Redis server's clock. Whole milliseconds.
	Every time.Duration
	// Task is the template of the task each tick enqueues: an [Executable] the queue's registry serializes, or a
	// [SerializedTask] with its ResolverID; MaxRetries, Timeout and Metadata are copied to each task. TaskID,
	// GroupID, ProcessIn and ProcessAt must be empty: each tick's task id is derived from the schedule's name
	// and the tick's instant ([ScheduleTaskID]).
	Task *TaskSpec
	// Misfire says what happens to ticks no scheduler fired in time. Default [MisfireSkip].
	Misfire MisfirePolicy
	// MisfireGrace is how late a tick may be and still fire under [MisfireSkip]. Default
	// [DefaultMisfireGrace]; at least 1s.
	MisfireGrace time.Duration
	// MaxCatchUp is the most missed ticks [MisfireCatchUp] fires after downtime, the latest ones. Default
	// [DefaultMaxCatchUp]; 1 to [MaxCatchUpLimit].
	MaxCatchUp int
}

// ScheduleInfo is a stored schedule with its state, as [Schedules.List] reports it.
type ScheduleInfo struct {
	// Schedule is the definition; only Name is set when Err is.
	Schedule Schedule
	// Paused is true while the schedule is paused.
	Paused bool
	// Next is the tick the schedule fires next (server clock); zero while paused.
	Next time.Time
	// LastTick is the instant of the last tick fired; zero if none yet.
	LastTick time.Time
	// LastRun is when the last task was enqueued (a tick, or [Schedules.Trigger]), server clock.
	LastRun time.Time
	// LastTaskID is the id of that task.
	LastTaskID string
	// Revision counts the definitions the schedule had (1 after creation, +1 per update).
	Revision int
	// Err is a [*ScheduleError] wrapping [ErrScheduleUndecodable] when the stored definition cannot be read.
	Err error
}

// scheduleDef is the stored definition (JSON in {prefix}:schedules), version scheduleVersion. Decoding is
// strict: an unknown field or a newer version makes the record undecodable (reported and skipped), never half
// read.
type scheduleDef struct {
	V          int           `json:"v"`
	Name       string        `json:"name"`
	Cron       string        `json:"cron,omitempty"`
	TZ         string        `json:"tz,omitempty"`
	EveryMS    int64         `json:"every_ms,omitempty"`
	AnchorMS   int64         `json:"anchor_ms,omitempty"` // the interval's origin: ticks are anchor + k*every
	Misfire    string        `json:"misfire"`
	GraceMS    int64         `json:"grace_ms"`
	MaxCatchUp int           `json:"max_catch_up"`
	Task       scheduleTempl `json:"task"`
	UpdatedMS  int64         `json:"updated_ms"`

	cron *cron.Schedule // parsed Cron, set by check
}

// scheduleTempl is the stored task template: the serialized task and the options copied to each tick's task.
type scheduleTempl struct {
	ResolverID string            `json:"resolver_id"`
	Strategy   string            `json:"strategy"`
	Payload    json.RawMessage   `json:"payload"`
	MaxRetries int               `json:"max_retries,omitempty"`
	TimeoutMS  int64             `json:"timeout_ms,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	Priority   int               `json:"priority,omitempty"` // TaskSpec.Priority (docs/flow-control.md)
	FlowKey    string            `json:"flow_key,omitempty"` // TaskSpec.FlowKey (docs/flow-control.md)
}

const scheduleVersion = 1

// Metadata keys each tick's task carries (beside the template's own), so that a handler knows its tick.
const (
	// ScheduleMetaName is the metadata key holding the schedule's name.
	ScheduleMetaName = "taskqueue.schedule"
	// ScheduleMetaTick is the metadata key holding the tick's instant (RFC 3339, UTC, milliseconds); "manual" for
	// a run of [Schedules.Trigger].
	ScheduleMetaTick = "taskqueue.tick"
)

// ScheduleTaskID returns the task id of a schedule's tick: "sched:<name>:<tick in UTC, RFC 3339, with
// milliseconds when not zero>". Every scheduler derives the same id for the same tick, and the enqueue is
// idempotent by task id, so a tick makes one task however many schedulers fire it.
func ScheduleTaskID(name string, tick time.Time) string {
	return "sched:" + name + ":" + tick.UTC().Format("2006-01-02T15:04:05.999Z")
}

// buildScheduleDef checks a schedule and returns its stored form. now is the server's clock (the interval's
// anchor).
func (q *RedisTaskQueue) buildScheduleDef(s *Schedule, now time.Time) (*scheduleDef, error) {
	if s == nil {
		return nil, invalidSchedule("", "", "nil schedule")
	}
	name := s.Name
	if len(name) == 0 || len(name) > MaxScheduleNameLen || !scheduleNamePattern.MatchString(name) {
		return nil, invalidSchedule(truncate(name, 64), "Name", "must be 1 to %d letters, digits, _ . or -, starting with a letter or digit", MaxScheduleNameLen)
	}
	d := &scheduleDef{V: scheduleVersion, Name: name, Cron: s.Cron, TZ: s.TimeZone, UpdatedMS: now.UnixMilli()}
	switch {
	case s.Cron != "" && s.Every != 0:
		return nil, invalidSchedule(name, "Every", "set either Cron or Every, not both")
	case s.Cron == "" && s.Every == 0:
		return nil, invalidSchedule(name, "Cron", "set Cron or Every")
	case s.Every != 0:
		if s.Every < MinScheduleInterval {
			return nil, invalidSchedule(name, "Every", "%s is below the minimum interval %s", s.Every, MinScheduleInterval)
		}
		if s.Every%time.Millisecond != 0 {
			return nil, invalidSchedule(name, "Every", "must be whole milliseconds")
		}
		if s.TimeZone != "" {
			return nil, invalidSchedule(name, "TimeZone", "a time zone applies to Cron only")
		}
		d.EveryMS, d.AnchorMS = s.Every.Milliseconds(), now.UnixMilli()
	}
	switch s.Misfire {
	case MisfireSkip, MisfireCatchUp:
		d.Misfire = s.Misfire.String()
	default:
		return nil, invalidSchedule(name, "Misfire", "unknown policy %d", s.Misfire)
	}
	d.GraceMS, d.MaxCatchUp = s.MisfireGrace.Milliseconds(), s.MaxCatchUp
	if s.MisfireGrace == 0 {
		d.GraceMS = DefaultMisfireGrace.Milliseconds()
	}
	if d.GraceMS < 1000 {
		return nil, invalidSchedule(name, "MisfireGrace", "must be at least 1s")
	}
	if s.MaxCatchUp == 0 {
		d.MaxCatchUp = DefaultMaxCatchUp
	}
	if d.MaxCatchUp < 1 || d.MaxCatchUp > MaxCatchUpLimit {
		return nil, invalidSchedule(name, "MaxCatchUp", "must be 1 to %d", MaxCatchUpLimit)
	}
	t, err := q.scheduleTemplate(name, s.Task)
	if err != nil {
		return nil, err
	}
	d.Task = *t
	if err := d.check(); err != nil {
		return nil, err
	}
	return d, nil
}

// scheduleTemplate serializes a schedule's task template, and checks that a tick's envelope fits the queue's
// size limit.
func (q *RedisTaskQueue) scheduleTemplate(name string, spec *TaskSpec) (*scheduleTempl, error) {
	switch {
	case spec == nil:
		return nil, invalidSchedule(name, "Task", "no task template")
	case spec.TaskID != "":
		return nil, invalidSchedule(name, "Task", "TaskID must be empty: each tick's id is derived from the tick")
	case spec.GroupID != "":
		return nil, invalidSchedule(name, "Task", "GroupID must be empty")
	case spec.ProcessIn != 0 || !spec.ProcessAt.IsZero():
		return nil, invalidSchedule(name, "Task", "ProcessIn and ProcessAt must be zero: a tick's task is due at the tick")
	case len(spec.Metadata) > MaxMetadataEntries-2:
		return nil, invalidSchedule(name, "Task", "at most %d Metadata entries (two are the tick's)", MaxMetadataEntries-2)
	}
	for k := range spec.Metadata {
		if k == ScheduleMetaName || k == ScheduleMetaTick {
			return nil, invalidSchedule(name, "Task", "Metadata key %s is reserved", quote(k))
		}
	}
	tmpl := *spec
	if tmpl.ResolverID == "" {
		tmpl.ResolverID = q.cfg.DefaultResolverID
	}
	ser, err := tmpl.Serialized(q.reg)
	if err != nil {
		return nil, &ScheduleError{Schedule: name, Field: "Task", Err: fmt.Errorf("%w: %w", ErrInvalidSchedule, err)}
	}
	payload := ser.SerializedTask.Payload
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = json.RawMessage("{}")
	}
	t := &scheduleTempl{ResolverID: ser.ResolverID, Strategy: ser.SerializedTask.Strategy, Payload: payload,
		MaxRetries: ser.MaxRetries, TimeoutMS: ser.Timeout.Milliseconds(), Meta: ser.Metadata, Priority: int(ser.Priority),
		FlowKey: ser.FlowKey}
	// The largest task a tick makes: the longest id and both tick metadata entries.
	probe := t.spec(name, time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), "manual-9999999999999")
	if err := validateMetadata(probe.Metadata); err != nil {
		return nil, &ScheduleError{Schedule: name, Field: "Task", Err: fmt.Errorf("%w: %w", ErrInvalidSchedule, err)}
	}
	raw, _ := json.Marshal(probe.SerializedTask)
	meta, _ := json.Marshal(probe.Metadata)
	if n := len(raw) + len(meta) + len(probe.TaskID) + 512; n > q.cfg.Limits.MaxEnvelopeBytes {
		return nil, invalidSchedule(name, "Task", "a tick's envelope would be about %d bytes, above the queue's limit %d", n, q.cfg.Limits.MaxEnvelopeBytes)
	}
	return t, nil
}

// spec returns the task of one tick (suffix "" for a tick, else the id's last part of a manual run).
func (t *scheduleTempl) spec(name string, tick time.Time, manual string) *TaskSpec {
	meta := maps.Clone(t.Meta)
	if meta == nil {
		meta = make(map[string]string, 2)
	}
	meta[ScheduleMetaName] = name
	id := ScheduleTaskID(name, tick)
	meta[ScheduleMetaTick] = tick.UTC().Format("2006-01-02T15:04:05.000Z")
	if manual != "" {
		id = "sched:" + name + ":" + manual
		meta[ScheduleMetaTick] = "manual"
	}
	return &TaskSpec{
		TaskID:         id,
		SerializedTask: &SerializedTask{Strategy: t.Strategy, Payload: bytes.Clone(t.Payload)},
		ResolverID:     t.ResolverID,
		MaxRetries:     t.MaxRetries,
		Timeout:        time.Duration(t.TimeoutMS) * time.Millisecond,
		Metadata:       meta,
		Priority:       Priority(t.Priority),
		FlowKey:        t.FlowKey,
	}
}

// check validates a definition, written by this build or read from Redis, and parses its cron expression.
func (d *scheduleDef) check() error {
	name := d.Name
	if d.EveryMS == 0 {
		loc := time.UTC
		if d.TZ != "" {
			var err error
			if loc, err = time.LoadLocation(d.TZ); err != nil || d.TZ == "Local" {
				return invalidSchedule(name, "TimeZone", "unknown time zone %s", quote(truncate(d.TZ, 64)))
			}
		}
		cs, err := cron.Parse(d.Cron, loc)
		if err != nil {
			return invalidSchedule(name, "Cron", "%v", err)
		}
		if cs.Next(time.Now()).IsZero() {
			return invalidSchedule(name, "Cron", "the expression never fires")
		}
		d.cron = cs
	} else if d.EveryMS < MinScheduleInterval.Milliseconds() || d.Cron != "" {
		return invalidSchedule(name, "Every", "below the minimum interval or combined with Cron")
	}
	return nil
}

// decodeScheduleDef reads a stored definition strictly.
func decodeScheduleDef(name, raw string) (*scheduleDef, error) {
	var d scheduleDef
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.DisallowUnknownFields()
	err := dec.Decode(&d)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: %v", ErrScheduleUndecodable, err)
	case d.V != scheduleVersion:
		err = fmt.Errorf("%w: version %d (this build reads %d)", ErrScheduleUndecodable, d.V, scheduleVersion)
	case d.Name != name:
		err = fmt.Errorf("%w: stored under another name", ErrScheduleUndecodable)
	case d.Misfire != MisfireSkip.String() && d.Misfire != MisfireCatchUp.String():
		err = fmt.Errorf("%w: misfire policy %s", ErrScheduleUndecodable, quote(truncate(d.Misfire, 32)))
	case d.GraceMS < 1000 || d.MaxCatchUp < 1 || d.MaxCatchUp > MaxCatchUpLimit || d.Task.Strategy == "":
		err = fmt.Errorf("%w: field out of range", ErrScheduleUndecodable)
	default:
		if cerr := d.check(); cerr != nil {
			err = fmt.Errorf("%w: %w", ErrScheduleUndecodable, cerr)
		}
	}
	if err != nil {
		return nil, &ScheduleError{Schedule: name, Err: err}
	}
	return &d, nil
}

// schedule returns the public form of a definition.
func (d *scheduleDef) schedule() Schedule {
	s := Schedule{Name: d.Name, Cron: d.Cron, TimeZone: d.TZ, Every: time.Duration(d.EveryMS) * time.Millisecond,
		MisfireGrace: time.Duration(d.GraceMS) * time.Millisecond, MaxCatchUp: d.MaxCatchUp}
	if d.Misfire == MisfireCatchUp.String() {
		s.Misfire = MisfireCatchUp
	}
	s.Task = &TaskSpec{SerializedTask: &SerializedTask{Strategy: d.Task.Strategy, Payload: bytes.Clone(d.Task.Payload)},
		ResolverID: d.Task.ResolverID, MaxRetries: d.Task.MaxRetries, Timeout: time.Duration(d.Task.TimeoutMS) * time.Millisecond,
		Metadata: maps.Clone(d.Task.Meta), Priority: Priority(d.Task.Priority), FlowKey: d.Task.FlowKey}
	return s
}

// next returns the schedule's first tick strictly after t.
func (d *scheduleDef) next(t time.Time) time.Time {
	if d.EveryMS > 0 {
		ms := t.UnixMilli()
		k := (ms - d.AnchorMS) / d.EveryMS
		if ms < d.AnchorMS {
			k = -1 // the anchor itself is not a tick; its first is one interval later
		}
		return time.UnixMilli(d.AnchorMS + (k+1)*d.EveryMS).UTC()
	}
	return d.cron.Next(t).Truncate(time.Millisecond)
}

// scheduleState is the state the scripts keep beside a definition.
type scheduleState struct {
	Next   *float64 `json:"next"`
	Last   float64  `json:"last"`
	Ran    float64  `json:"ran"`
	Task   string   `json:"task"`
	Paused float64  `json:"paused"`
	Rev    float64  `json:"rev"`
}

func decodeScheduleState(raw string) scheduleState {
	var st scheduleState
	_ = json.Unmarshal([]byte(raw), &st) // written by our scripts; a damaged one reads as empty and recovers
	return st
}

func msTime(ms float64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// Schedules administers a queue's periodic schedules (docs/periodic.md): create, update, pause, resume, trigger,
// delete, and read them with their state. Like [Admin], it is kept apart from the queue's own methods, which are
// what producers and workers call; the [Scheduler]s that fire the ticks run in workers (every worker binary runs
// one). Every change wakes the queue's idle schedulers, in any process, so that they act on it at once.
//
// It is safe for concurrent use and holds nothing but the queue; make one whenever it is needed.
type Schedules struct {
	q *RedisTaskQueue
}

// NewSchedules returns the [Schedules] of q; a nil queue is [ErrInvalidConfig].
func NewSchedules(q *RedisTaskQueue) (*Schedules, error) {
	if q == nil {
		return nil, fmt.Errorf("%w: NewSchedules needs a queue", ErrInvalidConfig)
	}
	return &Schedules{q: q}, nil
}

// KeyPrefix returns the key prefix of the queue whose schedules these are.
func (sc *Schedules) KeyPrefix() string { return sc.q.KeyPrefix() }

// Create stores a new schedule, which the queue's [Scheduler]s fire from its first tick after now
// (server clock). A definition that cannot work is a [*ScheduleError] wrapping [ErrInvalidSchedule] and naming
// the field; a name already taken wraps [ErrScheduleExists]. Either way nothing is stored.
func (sc *Schedules) Create(ctx context.Context, s *Schedule) error {
	return sc.q.putSchedule(ctx, s, "create")
}

// Update replaces the definition of an existing schedule ([ErrScheduleNotFound] otherwise). Its next
// tick is recomputed from now (an interval restarts from now); its run history and paused flag are kept.
func (sc *Schedules) Update(ctx context.Context, s *Schedule) error {
	return sc.q.putSchedule(ctx, s, "update")
}

func (q *RedisTaskQueue) putSchedule(ctx context.Context, s *Schedule, mode string) error {
	now, err := q.serverTime(ctx)
	if err != nil {
		return err
	}
	d, err := q.buildScheduleDef(s, now)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return invalidSchedule(d.Name, "Task", "%v", err)
	}
	res, err := schedulePutScript.Run(ctx, q.rdb, q.keys.schedules(), d.Name, raw, d.next(now).UnixMilli(), mode).Text()
	if err != nil {
		return fmt.Errorf("taskqueue: schedule %s: %w", quote(d.Name), classify(err))
	}
	switch res {
	case "exists":
		return &ScheduleError{Schedule: d.Name, Field: "Name", Err: ErrScheduleExists}
	case "missing":
		return &ScheduleError{Schedule: d.Name, Err: ErrScheduleNotFound}
	}
	return nil
}

// Delete removes a schedule; tasks it already enqueued stay. [ErrScheduleNotFound] if there is none.
func (sc *Schedules) Delete(ctx context.Context, name string) error {
	_, err := sc.q.scheduleCtl(ctx, "delete", name, "")
	return err
}

// Pause stops a schedule from firing until [Schedules.Resume]. It reports whether it was
// running; pausing a paused schedule is a no-op.
func (sc *Schedules) Pause(ctx context.Context, name string) (changed bool, err error) {
	return sc.q.scheduleCtl(ctx, "pause", name, "")
}

// Resume lets a paused schedule fire again, from its first tick after now: the ticks of the pause are
// skipped, whatever the misfire policy. It reports whether it was paused.
func (sc *Schedules) Resume(ctx context.Context, name string) (changed bool, err error) {
	q := sc.q
	info, err := q.getSchedule(ctx, name)
	if err != nil {
		return false, err
	}
	if info.Err != nil {
		return false, info.Err
	}
	if !info.Paused {
		return false, nil
	}
	now, err := q.serverTime(ctx)
	if err != nil {
		return false, err
	}
	return q.scheduleCtl(ctx, "resume", name, strconv.FormatInt(info.def.next(now).UnixMilli(), 10))
}

// Trigger enqueues one run of the schedule's task now, beside its ticks (which it does not move), and
// returns the task's id: "sched:<name>:manual-<server time in ms>". It works on a paused schedule too.
func (sc *Schedules) Trigger(ctx context.Context, name string) (taskID string, err error) {
	q := sc.q
	info, err := q.getSchedule(ctx, name)
	if err != nil {
		return "", err
	}
	if info.Err != nil {
		return "", info.Err
	}
	now, err := q.serverTime(ctx)
	if err != nil {
		return "", err
	}
	spec := info.def.Task.spec(name, now, "manual-"+strconv.FormatInt(now.UnixMilli(), 10))
	if err := q.Enqueue(ctx, spec); err != nil {
		return spec.TaskID, err
	}
	if _, err := q.scheduleCtl(ctx, "ran", name, spec.TaskID); err != nil {
		return spec.TaskID, err
	}
	return spec.TaskID, nil
}

func (q *RedisTaskQueue) scheduleCtl(ctx context.Context, op, name, arg string) (bool, error) {
	n, err := scheduleCtlScript.Run(ctx, q.rdb, q.keys.schedules(), op, name, arg).Int()
	if err != nil {
		return false, fmt.Errorf("taskqueue: schedule %s: %s: %w", quote(truncate(name, 64)), op, classify(err))
	}
	if n < 0 {
		return false, &ScheduleError{Schedule: truncate(name, 64), Err: ErrScheduleNotFound}
	}
	return n == 1, nil
}

// scheduleInfo is a ScheduleInfo with its decoded definition (nil when undecodable).
type scheduleInfo struct {
	ScheduleInfo
	def *scheduleDef
}

func newScheduleInfo(name, rawDef, rawState string) scheduleInfo {
	st := decodeScheduleState(rawState)
	info := scheduleInfo{ScheduleInfo: ScheduleInfo{Schedule: Schedule{Name: name}, Paused: st.Paused == 1,
		LastTick: msTime(st.Last), LastRun: msTime(st.Ran), LastTaskID: st.Task, Revision: int(st.Rev)}}
	if st.Next != nil && !info.Paused {
		info.Next = msTime(*st.Next)
	}
	d, err := decodeScheduleDef(name, rawDef)
	if err != nil {
		info.Err = err
		return info
	}
	info.def, info.Schedule = d, d.schedule()
	return info
}

// Get returns one schedule and its state; [ErrScheduleNotFound] if there is none. A stored definition
// this build cannot read is returned with ScheduleInfo.Err set, not as an error.
func (sc *Schedules) Get(ctx context.Context, name string) (*ScheduleInfo, error) {
	info, err := sc.q.getSchedule(ctx, name)
	if err != nil {
		return nil, err
	}
	return &info.ScheduleInfo, nil
}

func (q *RedisTaskQueue) getSchedule(ctx context.Context, name string) (*scheduleInfo, error) {
	keys := q.keys.schedules()
	var def, st *redis.StringCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		def = p.HGet(ctx, keys[0], name)
		st = p.HGet(ctx, keys[2], name)
		return nil
	})
	if errors.Is(def.Err(), redis.Nil) {
		return nil, &ScheduleError{Schedule: truncate(name, 64), Err: ErrScheduleNotFound}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("taskqueue: schedule %s: %w", quote(truncate(name, 64)), classify(err))
	}
	info := newScheduleInfo(name, def.Val(), st.Val())
	return &info, nil
}

// List returns every schedule of the queue with its state, sorted by name. A stored definition this
// build cannot read is listed with ScheduleInfo.Err set.
func (sc *Schedules) List(ctx context.Context) ([]ScheduleInfo, error) {
	q := sc.q
	keys := q.keys.schedules()
	var defs, states *redis.MapStringStringCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		defs = p.HGetAll(ctx, keys[0])
		states = p.HGetAll(ctx, keys[2])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("taskqueue: list schedules: %w", classify(err))
	}
	out := make([]ScheduleInfo, 0, len(defs.Val()))
	for _, name := range slices.Sorted(maps.Keys(defs.Val())) {
		out = append(out, newScheduleInfo(name, defs.Val()[name], states.Val()[name]).ScheduleInfo)
	}
	return out, nil
}
