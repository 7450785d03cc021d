package taskqueue

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// schedSetup is a queue on miniredis whose server clock is frozen at start, with the function test.tick.
func schedSetup(t *testing.T, start time.Time) *setup {
	t.Helper()
	s := newMini(t, nil)
	s.mr.SetTime(start)
	require.NoError(t, Register(s.ref, "test", "tick", func(context.Context, struct {
		N int `json:"n"`
	}) error {
		return nil
	}))
	return s
}

func (s *setup) setTime(t time.Time) { s.mr.SetTime(t) }

// pendingIDs lists the ids of the pending tasks, oldest first.
func (s *setup) pendingIDs(t *testing.T) []string {
	t.Helper()
	infos, err := s.adm.List(context.Background(), StatePending, 0, 1000)
	require.NoError(t, err)
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.TaskID
	}
	return out
}

// eventLog collects a scheduler's events.
type eventLog struct {
	mu sync.Mutex
	ev []ScheduleEvent
}

func (l *eventLog) add(e ScheduleEvent) { l.mu.Lock(); l.ev = append(l.ev, e); l.mu.Unlock() }

func (l *eventLog) of(kind ScheduleEventKind) []ScheduleEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ScheduleEvent
	for _, e := range l.ev {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func newTestScheduler(t *testing.T, q *RedisTaskQueue, log *eventLog) *Scheduler {
	t.Helper()
	cfg := &SchedulerConfig{Logger: slog.New(slog.DiscardHandler)}
	if log != nil {
		cfg.OnEvent = log.add
	}
	sc, err := NewScheduler(q, cfg)
	require.NoError(t, err)
	return sc
}

func tickTask() *TaskSpec { return &TaskSpec{Executable: Ref("test", "tick", map[string]int{"n": 1})} }

// TestScheduleBadInputStoresNothing: every mistake in a definition is a *ScheduleError wrapping
// ErrInvalidSchedule (or ErrScheduleExists) that names the field, and nothing is stored.
func TestScheduleBadInputStoresNothing(t *testing.T) {
	t.Parallel()
	s := schedSetup(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	closure := &TaskSpec{Executable: Func(func(context.Context) error { return nil })}
	cases := []struct {
		name  string
		sched Schedule
		field string
	}{
		{"bad cron", Schedule{Name: "a", Cron: "61 * * * *", Task: tickTask()}, "Cron"},
		{"cron field count", Schedule{Name: "a", Cron: "* * *", Task: tickTask()}, "Cron"},
		{"unknown zone", Schedule{Name: "a", Cron: "@daily", TimeZone: "Mars/Olympus_Mons", Task: tickTask()}, "TimeZone"},
		{"local zone", Schedule{Name: "a", Cron: "@daily", TimeZone: "Local", Task: tickTask()}, "TimeZone"},
		{"interval below minimum", Schedule{Name: "a", Every: 500 * time.Millisecond, Task: tickTask()}, "Every"},
		{"both", Schedule{Name: "a", Cron: "@daily", Every: time.Hour, Task: tickTask()}, "Every"},
		{"neither", Schedule{Name: "a", Task: tickTask()}, "Cron"},
		{"bad name", Schedule{Name: "a b", Every: time.Hour, Task: tickTask()}, "Name"},
		{"empty name", Schedule{Every: time.Hour, Task: tickTask()}, "Name"},
		{"no template", Schedule{Name: "a", Every: time.Hour}, "Task"},
		{"template does not serialize", Schedule{Name: "a", Every: time.Hour, Task: closure}, "Task"},
		{"template with an id", Schedule{Name: "a", Every: time.Hour, Task: &TaskSpec{TaskID: "x", Executable: Ref("test", "tick", nil)}}, "Task"},
		{"template delayed", Schedule{Name: "a", Every: time.Hour, Task: &TaskSpec{ProcessIn: time.Second, Executable: Ref("test", "tick", nil)}}, "Task"},
		{"unsafe strategy", Schedule{Name: "a", Every: time.Hour, Task: &TaskSpec{SerializedTask: &SerializedTask{Strategy: "pickle", Payload: []byte(`{}`)}}}, "Task"},
		{"grace", Schedule{Name: "a", Every: time.Hour, Task: tickTask(), MisfireGrace: time.Millisecond}, "MisfireGrace"},
		{"catch-up bound", Schedule{Name: "a", Every: time.Hour, Task: tickTask(), Misfire: MisfireCatchUp, MaxCatchUp: MaxCatchUpLimit + 1}, "MaxCatchUp"},
	}
	for _, c := range cases {
		err := mustSchedules(s.q).Create(ctx, &c.sched)
		require.ErrorIs(t, err, ErrInvalidSchedule, c.name)
		var se *ScheduleError
		require.ErrorAs(t, err, &se, c.name)
		require.Equal(t, c.field, se.Field, "%s: %v", c.name, err)
	}
	require.ErrorIs(t, mustSchedules(s.q).Create(ctx, nil), ErrInvalidSchedule)
	n, err := s.rdb.Exists(ctx, s.q.keys.schedules()...).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing stored")

	// A name that collides: the first definition stays as it was.
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "dup", Every: time.Hour, Task: tickTask()}))
	err = mustSchedules(s.q).Create(ctx, &Schedule{Name: "dup", Cron: "@daily", Task: tickTask()})
	require.ErrorIs(t, err, ErrScheduleExists)
	var se *ScheduleError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "Name", se.Field)
	info, err := mustSchedules(s.q).Get(ctx, "dup")
	require.NoError(t, err)
	require.Equal(t, time.Hour, info.Schedule.Every)
	require.Equal(t, 1, info.Revision)

	_, err = mustSchedules(s.q).Get(ctx, "nope")
	require.ErrorIs(t, err, ErrScheduleNotFound)
	require.ErrorIs(t, mustSchedules(s.q).Update(ctx, &Schedule{Name: "nope", Every: time.Hour, Task: tickTask()}), ErrScheduleNotFound)
	require.ErrorIs(t, mustSchedules(s.q).Delete(ctx, "nope"), ErrScheduleNotFound)
	_, err = mustSchedules(s.q).Pause(ctx, "nope")
	require.ErrorIs(t, err, ErrScheduleNotFound)
}

// TestSchedulerEachTickOnce: three schedulers on an interval schedule, passes in varying orders, and two
// schedulers firing the same claimed state (as after a claim that expired while its holder still worked): each
// tick makes exactly one task, with the id derived from the tick, and only the first enqueue stores it.
func TestSchedulerEachTickOnce(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "every", Every: 2 * time.Second, Task: tickTask()}))
	logs := []*eventLog{{}, {}, {}}
	scheds := []*Scheduler{newTestScheduler(t, s.q, logs[0]), newTestScheduler(t, s.q, logs[1]), newTestScheduler(t, s.q, logs[2])}

	var want []string
	for i := 1; i <= 10; i++ {
		now := start.Add(time.Duration(i) * time.Second)
		s.setTime(now)
		if i%2 == 0 {
			want = append(want, ScheduleTaskID("every", now))
		}
		for j := range scheds {
			_, err := scheds[(i+j)%3].pass(ctx)
			require.NoError(t, err)
		}
	}
	require.Equal(t, want, s.pendingIDs(t))
	stored := 0
	for _, l := range logs {
		for _, e := range l.of(ScheduleFired) {
			require.Equal(t, Stored, e.Outcome)
			stored++
		}
	}
	require.Equal(t, 5, stored, "one stored enqueue per tick")

	// Two schedulers fire the same state: the second's enqueue is a duplicate and its advance changes nothing.
	keys := s.q.keys.schedules()
	def, err := s.rdb.HGet(ctx, keys[0], "every").Result()
	require.NoError(t, err)
	st, err := s.rdb.HGet(ctx, keys[2], "every").Result()
	require.NoError(t, err)
	now := start.Add(12 * time.Second)
	s.setTime(now)
	_, err = scheds[0].fire(ctx, now, "every", def, st)
	require.NoError(t, err)
	_, err = scheds[1].fire(ctx, now, "every", def, st)
	require.NoError(t, err)
	want = append(want, ScheduleTaskID("every", now))
	require.Equal(t, want, s.pendingIDs(t))
	last := logs[1].of(ScheduleFired)
	require.Equal(t, Duplicate, last[len(last)-1].Outcome)

	info, err := mustSchedules(s.q).Get(ctx, "every")
	require.NoError(t, err)
	require.Equal(t, now, info.LastTick)
	require.Equal(t, now.Add(2*time.Second), info.Next)
	require.Equal(t, ScheduleTaskID("every", now), info.LastTaskID)

	// The tasks carry the tick in their metadata and run as the template says.
	ds := s.lease(t, 1)
	require.Equal(t, "every", ds[0].Spec.Metadata[ScheduleMetaName])
	require.Equal(t, "2026-01-01T00:00:02.000Z", ds[0].Spec.Metadata[ScheduleMetaTick])
}

// TestScheduleMisfire: after downtime, MisfireSkip fires the ticks within the grace and skips older ones;
// MisfireCatchUp fires the latest MaxCatchUp missed ticks.
func TestScheduleMisfire(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "skip", Every: 10 * time.Second, MisfireGrace: 30 * time.Second, Task: tickTask()}))
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "catch", Cron: "0 * * * *", Misfire: MisfireCatchUp, MaxCatchUp: 3, Task: tickTask()}))
	log := &eventLog{}
	sc := newTestScheduler(t, s.q, log)

	now := start.Add(10*time.Hour + 5*time.Second) // ten hours of downtime
	s.setTime(now)
	_, err := sc.pass(ctx)
	require.NoError(t, err)
	got := s.pendingIDs(t)
	slices.Sort(got)
	want := []string{
		ScheduleTaskID("catch", start.Add(8*time.Hour)), ScheduleTaskID("catch", start.Add(9*time.Hour)), ScheduleTaskID("catch", start.Add(10*time.Hour)),
		ScheduleTaskID("skip", now.Add(-25*time.Second)), ScheduleTaskID("skip", now.Add(-15*time.Second)), ScheduleTaskID("skip", now.Add(-5*time.Second)),
	}
	slices.Sort(want)
	require.Equal(t, want, got)
	skipped := log.of(ScheduleSkipped)
	require.Len(t, skipped, 2)
	for _, e := range skipped {
		switch e.Schedule {
		case "skip":
			require.Equal(t, start.Add(10*time.Second), e.Tick)
			require.Equal(t, now.Add(-25*time.Second), e.Next)
		case "catch":
			require.Equal(t, start.Add(time.Hour), e.Tick)
		}
	}
	for _, name := range []string{"skip", "catch"} {
		info, err := mustSchedules(s.q).Get(ctx, name)
		require.NoError(t, err)
		require.True(t, info.Next.After(now), name)
	}
}

// TestSchedulePauseResumeTriggerDelete: a paused schedule fires nothing; resuming skips the ticks of the pause;
// trigger enqueues one run beside the ticks, paused or not; update keeps the history; delete removes it.
func TestSchedulePauseResumeTriggerDelete(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "p", Every: time.Minute, Task: tickTask()}))
	sc := newTestScheduler(t, s.q, nil)

	changed, err := mustSchedules(s.q).Pause(ctx, "p")
	require.NoError(t, err)
	require.True(t, changed)
	changed, err = mustSchedules(s.q).Pause(ctx, "p")
	require.NoError(t, err)
	require.False(t, changed)
	s.setTime(start.Add(5 * time.Minute))
	_, err = sc.pass(ctx)
	require.NoError(t, err)
	require.Empty(t, s.pendingIDs(t), "paused: nothing fires")

	id, err := mustSchedules(s.q).Trigger(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, "sched:p:manual-"+strconv.FormatInt(start.Add(5*time.Minute).UnixMilli(), 10), id)
	require.Equal(t, []string{id}, s.pendingIDs(t))
	info, err := mustSchedules(s.q).Get(ctx, "p")
	require.NoError(t, err)
	require.True(t, info.Paused)
	require.True(t, info.Next.IsZero())
	require.Equal(t, id, info.LastTaskID)
	require.Equal(t, start.Add(5*time.Minute), info.LastRun)

	changed, err = mustSchedules(s.q).Resume(ctx, "p")
	require.NoError(t, err)
	require.True(t, changed)
	info, err = mustSchedules(s.q).Get(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, start.Add(6*time.Minute), info.Next, "the ticks of the pause are skipped")
	s.setTime(start.Add(6 * time.Minute))
	_, err = sc.pass(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{id, ScheduleTaskID("p", start.Add(6*time.Minute))}, s.pendingIDs(t))

	require.NoError(t, mustSchedules(s.q).Update(ctx, &Schedule{Name: "p", Cron: "*/5 * * * *", Task: tickTask()}))
	info, err = mustSchedules(s.q).Get(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 2, info.Revision)
	require.Equal(t, "*/5 * * * *", info.Schedule.Cron)
	require.Equal(t, start.Add(10*time.Minute), info.Next)
	require.Equal(t, start.Add(6*time.Minute), info.LastTick, "the history is kept")

	list, err := mustSchedules(s.q).List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.NoError(t, mustSchedules(s.q).Delete(ctx, "p"))
	list, err = mustSchedules(s.q).List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

// TestScheduleUndecodableIsSkipped: a stored definition that cannot be read (garbage, a newer version, an unknown
// field) is reported once per scheduler and listed with its error, and the other schedules fire on time.
func TestScheduleUndecodableIsSkipped(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "good", Every: time.Second, Task: tickTask()}))
	keys := s.q.keys.schedules()
	for name, raw := range map[string]string{
		"garbage": "{not json",
		"newer":   `{"v":2,"name":"newer"}`,
		"unknown": `{"v":1,"name":"unknown","every_ms":1000,"misfire":"skip","grace_ms":1000,"max_catch_up":1,"task":{"resolver_id":"default","strategy":"reference","payload":{}},"updated_ms":1,"extra":1}`,
	} {
		require.NoError(t, s.rdb.HSet(ctx, keys[0], name, raw).Err())
		require.NoError(t, s.rdb.ZAdd(ctx, keys[1], redis.Z{Score: 0, Member: name}).Err())
	}
	log := &eventLog{}
	sc := newTestScheduler(t, s.q, log)
	for i := 1; i <= 12; i++ {
		s.setTime(start.Add(time.Duration(i) * time.Second))
		_, err := sc.pass(ctx)
		require.NoError(t, err)
	}
	require.Len(t, s.pendingIDs(t), 12, "the good schedule fired every tick")
	bad := log.of(ScheduleUndecodable)
	require.Len(t, bad, 3, "each reported once, though looked at again after each claim")
	for _, e := range bad {
		require.ErrorIs(t, e.Err, ErrScheduleUndecodable)
	}
	list, err := mustSchedules(s.q).List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 4)
	for _, in := range list {
		if in.Schedule.Name == "good" {
			require.NoError(t, in.Err)
		} else {
			require.ErrorIs(t, in.Err, ErrScheduleUndecodable, in.Schedule.Name)
		}
	}
	_, err = mustSchedules(s.q).Trigger(ctx, "garbage")
	require.ErrorIs(t, err, ErrScheduleUndecodable)
}

// TestScheduleCronDST: a daily 02:30 in New York fires at 03:00 EDT on the day 02:00-03:00 is skipped, and a daily
// 01:30 fires once (01:30 EDT) on the day 01:00-02:00 repeats, on the scheduler's own path (server clock).
func TestScheduleCronDST(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	start := time.Date(2027, 3, 13, 12, 0, 0, 0, ny)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "spring", Cron: "30 2 * * *", TimeZone: "America/New_York", Task: tickTask()}))
	sc := newTestScheduler(t, s.q, nil)
	step := func(to time.Time) {
		for now := s.serverNow(t); now.Before(to); {
			now = now.Add(15 * time.Minute)
			s.setTime(now)
			_, err := sc.pass(ctx)
			require.NoError(t, err)
		}
	}
	step(time.Date(2027, 3, 15, 12, 0, 0, 0, ny))
	require.Equal(t, []string{"sched:spring:2027-03-14T07:00:00Z", "sched:spring:2027-03-15T06:30:00Z"}, s.pendingIDs(t))

	require.NoError(t, mustSchedules(s.q).Delete(ctx, "spring"))
	s.setTime(time.Date(2027, 11, 6, 12, 0, 0, 0, ny))
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "fall", Cron: "30 1 * * *", TimeZone: "America/New_York", Task: tickTask()}))
	step(time.Date(2027, 11, 8, 12, 0, 0, 0, ny))
	require.Equal(t, []string{"sched:spring:2027-03-14T07:00:00Z", "sched:spring:2027-03-15T06:30:00Z",
		"sched:fall:2027-11-07T05:30:00Z", "sched:fall:2027-11-08T06:30:00Z"}, s.pendingIDs(t))
}

func (s *setup) serverNow(t *testing.T) time.Time {
	t.Helper()
	now, err := s.adm.ServerTime(context.Background())
	require.NoError(t, err)
	return now
}

// TestSchedulerRealRedis: two schedulers running on a real redis-server (its TIME, its claims) fire a 1-second
// schedule: consecutive ticks, each once.
func TestSchedulerRealRedis(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	require.NoError(t, Register(s.ref, "test", "tick", func(context.Context, struct{}) error { return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "sec", Every: time.Second, Task: &TaskSpec{Executable: Ref("test", "tick", nil)}}))
	var wg sync.WaitGroup
	logs := []*eventLog{{}, {}}
	for _, l := range logs {
		sc := newTestScheduler(t, s.q, l)
		wg.Go(func() { _ = sc.Run(ctx) })
	}
	waitFor(t, 15*time.Second, "three ticks", func() bool { return len(s.pendingIDs(t)) >= 3 })
	cancel()
	wg.Wait()
	got := s.pendingIDs(t)
	info, err := mustSchedules(s.q).Get(context.Background(), "sec")
	require.NoError(t, err)
	first := info.LastTick.Add(-time.Duration(len(got)-1) * time.Second)
	for i, id := range got {
		require.Equal(t, ScheduleTaskID("sec", first.Add(time.Duration(i)*time.Second)), id)
	}
	stored := 0
	for _, l := range logs {
		for _, e := range l.of(ScheduleFired) {
			if e.Outcome == Stored {
				stored++
			}
		}
		require.Empty(t, l.of(ScheduleFailed))
	}
	require.Equal(t, len(got), stored)
}

// TestScheduleWorkerACL: a user with the worker allowlist of docs/operations.md creates, pauses, resumes,
// triggers, updates, deletes and fires schedules, and subscribes to their wake-up channel; listing them needs
// +hgetall besides.
func TestScheduleWorkerACL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := "acls-" + newID()[:8]
	admin, rdb, user := workerACLUser(t, realRedis(t), prefix)
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "test", "tick", func(context.Context, struct{}) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(nil))
	require.NoError(t, err)

	// The schedulers' wake-up channel: this user may subscribe to it, and the scripts publish on it.
	ps := rdb.Subscribe(ctx, q.keys.scheduleWake())
	defer ps.Close()
	_, err = ps.Receive(ctx)
	require.NoError(t, err, "subscribed")
	require.NoError(t, mustSchedules(q).Create(ctx, &Schedule{Name: "a", Every: time.Second, Task: &TaskSpec{Executable: Ref("test", "tick", nil)}}))
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := ps.ReceiveMessage(rctx)
	require.NoError(t, err)
	require.Equal(t, "a", msg.Payload, "the create woke the schedulers")
	_, err = mustSchedules(q).Pause(ctx, "a")
	require.NoError(t, err)
	_, err = mustSchedules(q).Resume(ctx, "a")
	require.NoError(t, err)
	_, err = mustSchedules(q).Trigger(ctx, "a")
	require.NoError(t, err)
	log := &eventLog{}
	sc := newTestScheduler(t, q, log)
	waitFor(t, 10*time.Second, "a tick", func() bool {
		_, err := sc.pass(ctx)
		require.NoError(t, err)
		return len(log.of(ScheduleFired)) > 0
	})
	require.NoError(t, mustSchedules(q).Update(ctx, &Schedule{Name: "a", Cron: "@daily", Task: &TaskSpec{Executable: Ref("test", "tick", nil)}}))
	_, err = mustSchedules(q).List(ctx)
	require.ErrorIs(t, err, ErrPermission, "listing needs +hgetall")
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", user, "+hgetall").Err())
	list, err := mustSchedules(q).List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.NoError(t, mustSchedules(q).Delete(ctx, "a"))
}

// TestScheduleClaimOnlySavesWork: a scheduler that claimed a schedule and died delays its tick by at most the
// claim; then another fires it. A claim that ended while its holder still works lets two fire the same tick:
// one task all the same.
func TestScheduleClaimOnlySavesWork(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "c", Every: 10 * time.Second, Task: tickTask()}))
	log := &eventLog{}
	sc := newTestScheduler(t, s.q, log) // claim 5s
	tick := start.Add(10 * time.Second)
	s.setTime(tick)

	// A scheduler claims the schedule and dies before firing it.
	res, err := scheduleDueScript.Run(ctx, s.rdb, s.q.keys.schedules(), 100, 5000).Slice()
	require.NoError(t, err)
	require.Len(t, res, 5, "claimed")
	_, err = sc.pass(ctx)
	require.NoError(t, err)
	require.Empty(t, s.pendingIDs(t), "the others skip a claimed schedule")
	s.setTime(tick.Add(5 * time.Second))
	wait, err := sc.pass(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{ScheduleTaskID("c", tick)}, s.pendingIDs(t), "fired once the claim ended")
	require.Equal(t, 5001*time.Millisecond, wait, "its next tick is 5s away: it sleeps until then")
	s.setTime(tick.Add(9500 * time.Millisecond))
	wait, err = sc.pass(ctx)
	require.NoError(t, err)
	require.Equal(t, 501*time.Millisecond, wait, "it sleeps until the next tick (server time)")

	// The dead scheduler was only stalled: it fires the same tick now. One task, and the schedule stays put.
	def, err := s.rdb.HGet(ctx, s.q.keys.schedules()[0], "c").Result()
	require.NoError(t, err)
	stale, ok := res[4].(string)
	require.True(t, ok)
	_, err = sc.fire(ctx, tick, "c", def, stale)
	require.NoError(t, err)
	require.Equal(t, []string{ScheduleTaskID("c", tick)}, s.pendingIDs(t))
	info, err := mustSchedules(s.q).Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, tick.Add(10*time.Second), info.Next)
	fired := log.of(ScheduleFired)
	require.Equal(t, Duplicate, fired[len(fired)-1].Outcome)
}
