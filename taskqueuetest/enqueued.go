package taskqueuetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/graflow-go/taskqueue"
)

// EnqueuedTask is one task held by a queue, read from its stored envelope (docs/data-format.md), so that tests
// need no mirror of it.
type EnqueuedTask struct {
	TaskID string
	// State is where the task is: pending, scheduled, retry, active or dead.
	State taskqueue.State
	// Module and Name are the registered function a reference task names; empty for other strategies.
	Module, Name string
	// Args are the task's arguments as stored (JSON); nil when it has none. See [EnqueuedTask.DecodeArgs].
	Args       json.RawMessage
	Strategy   string
	ResolverID string
	GroupID    string
	// Due is when a scheduled or retry task is due, by the Redis server's clock; zero in the other states.
	Due        time.Time
	CreatedAt  time.Time
	Attempt    int
	MaxRetries int
	Timeout    time.Duration
	Metadata   map[string]string
	LastError  string
	// Reason is why a dead letter was parked.
	Reason string
	// Envelope is the stored JSON, untouched.
	Envelope string
}

// DecodeArgs decodes the task's arguments into v strictly, as a worker would: unknown fields are an error.
// Absent or null arguments leave v as it is.
func (e EnqueuedTask) DecodeArgs(v any) error {
	if len(e.Args) == 0 || bytes.Equal(e.Args, []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(e.Args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the arguments")
	}
	return nil
}

// String is one line for failure messages, with the arguments cut to a bounded length.
func (e EnqueuedTask) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s.%s args=%s state=%s", e.TaskID, e.Module, e.Name, cut(string(e.Args), 200), e.State)
	if e.GroupID != "" {
		fmt.Fprintf(&b, " group=%s", e.GroupID)
	}
	if !e.Due.IsZero() {
		fmt.Fprintf(&b, " due=%s", e.Due.UTC().Format(time.RFC3339Nano))
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", cut(e.Reason, 200))
	}
	return b.String()
}

// envelope mirrors the fields of the stored envelope that tests look at (docs/data-format.md).
type envelope struct {
	TaskID         string  `json:"task_id"`
	CreatedAt      float64 `json:"created_at"`
	Strategy       string  `json:"strategy"`
	ResolverID     string  `json:"resolver_id"`
	SerializedTask struct {
		Strategy string          `json:"strategy"`
		Payload  json.RawMessage `json:"payload"`
	} `json:"serialized_task"`
	GroupID    *string           `json:"group_id"`
	Attempt    int               `json:"attempt"`
	MaxRetries int               `json:"max_retries"`
	TimeoutMS  int64             `json:"timeout_ms"`
	LastError  *string           `json:"last_error"`
	Meta       map[string]string `json:"meta"`
}

// referencePayload is the payload of the reference strategy.
type referencePayload struct {
	Module string          `json:"module"`
	Name   string          `json:"name"`
	Args   json.RawMessage `json:"args"`
}

// maxListed bounds how many tasks of one state the kit reads: a unit test's queue holds far fewer.
const maxListed = 10 * taskqueue.MaxListLimit

// listedStates are the states [Enqueued] reads, in its order (retry tasks are listed with the scheduled ones).
var listedStates = []taskqueue.State{taskqueue.StatePending, taskqueue.StateScheduled, taskqueue.StateActive, taskqueue.StateDead}

// Enqueued returns every task that q holds: pending ones in pickup order, then scheduled and retry ones by due
// time, active ones, and dead letters. It reads through [taskqueue.Admin]; errors end the test with t.Fatalf.
func Enqueued(t testing.TB, q taskqueue.AdminTarget) []EnqueuedTask {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm, err := taskqueue.NewAdmin(q)
	if err != nil {
		t.Fatalf("taskqueuetest: %v", err)
	}
	var out []EnqueuedTask
	for _, st := range listedStates {
		infos, err := listAll(ctx, adm, st)
		if err != nil {
			t.Fatalf("taskqueuetest: list %s tasks: %v", st, err)
		}
		for _, info := range infos {
			out = append(out, fromInfo(info))
		}
	}
	return out
}

func listAll(ctx context.Context, adm *taskqueue.Admin, st taskqueue.State) ([]taskqueue.TaskInfo, error) {
	var all []taskqueue.TaskInfo
	for len(all) < maxListed {
		page, err := adm.List(ctx, st, len(all), taskqueue.MaxListLimit)
		if err != nil {
			return nil, err
		}
		for _, info := range page {
			if info.Envelope != "" { // empty: it finished between two reads
				all = append(all, info)
			}
		}
		if len(page) < taskqueue.MaxListLimit {
			break
		}
	}
	return all, nil
}

// fromInfo reads what it can of one task; a malformed envelope (a parked dead letter) leaves fields empty.
func fromInfo(info taskqueue.TaskInfo) EnqueuedTask {
	e := EnqueuedTask{TaskID: info.TaskID, State: info.State, Envelope: info.Envelope, Reason: info.Reason}
	if info.State == taskqueue.StateScheduled || info.State == taskqueue.StateRetry {
		e.Due = info.Score
	}
	var env envelope
	if json.Unmarshal([]byte(info.Envelope), &env) != nil {
		return e
	}
	e.Strategy, e.ResolverID = env.SerializedTask.Strategy, env.ResolverID
	if env.GroupID != nil {
		e.GroupID = *env.GroupID
	}
	if env.LastError != nil {
		e.LastError = *env.LastError
	}
	if env.CreatedAt > 0 && !math.IsInf(env.CreatedAt, 0) {
		e.CreatedAt = time.UnixMilli(int64(math.Round(env.CreatedAt * 1000)))
	}
	e.Attempt, e.MaxRetries, e.Metadata = env.Attempt, env.MaxRetries, env.Meta
	e.Timeout = time.Duration(env.TimeoutMS) * time.Millisecond
	if e.Strategy == taskqueue.StrategyReference {
		var p referencePayload
		if json.Unmarshal(env.SerializedTask.Payload, &p) == nil {
			e.Module, e.Name, e.Args = p.Module, p.Name, p.Args
		}
	}
	return e
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 { // not inside a UTF-8 sequence
		n--
	}
	return s[:n] + "…"
}
