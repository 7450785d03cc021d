package taskqueue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// SerializedTask is the seed's serialization envelope: everything a resolver needs to rehydrate a task. Strategy
// names how Payload is to be read ("reference" for the built-in [ReferenceResolver]); Payload is a JSON object.
type SerializedTask struct {
	Strategy string          `json:"strategy"`
	Payload  json.RawMessage `json:"payload"`
}

// EnvelopeVersion is the schema version this package writes in the envelope's "v" field. Envelopes without "v"
// are the seed's version 0 and are read as such; envelopes with a higher version are parked with
// [ErrUnsupportedVersion].
const EnvelopeVersion = 1

// Default decoding limits; see [Limits].
const (
	DefaultMaxEnvelopeBytes = 1 << 20
	DefaultMaxDepth         = 32
)

// Limits bound what the envelope decoder accepts. Zero fields take their defaults.
type Limits struct {
	// MaxEnvelopeBytes is the largest envelope accepted, on enqueue and on pickup. Default 1 MiB.
	MaxEnvelopeBytes int
	// MaxDepth is the deepest nesting of JSON objects and arrays accepted. Default 32.
	MaxDepth int
}

func (l Limits) withDefaults() Limits {
	if l.MaxEnvelopeBytes == 0 {
		l.MaxEnvelopeBytes = DefaultMaxEnvelopeBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

func (l Limits) validate() error {
	if l.MaxEnvelopeBytes < 256 {
		return fmt.Errorf("%w: Limits.MaxEnvelopeBytes must be at least 256", ErrInvalidConfig)
	}
	if l.MaxDepth < 4 || l.MaxDepth > 1000 {
		return fmt.Errorf("%w: Limits.MaxDepth must be between 4 and 1000", ErrInvalidConfig)
	}
	return nil
}

// envelope is the JSON record stored in Redis for one task: the seed's "Data Format Example", field for field,
// plus the schema version and what delivery needs. See docs/data-format.md.
type envelope struct {
	V              int
	TaskID         string
	Status         TaskStatus
	CreatedAt      float64 // Unix seconds, as in the seed
	Strategy       string
	ResolverID     string
	SerializedTask SerializedTask
	GroupID        string
	Attempt        int   // handler failures so far
	MaxRetries     int   // failures allowed before the task is dead-lettered; -1 means none
	TimeoutMS      int64 // per-run timeout, 0 for the worker's default
	LastError      string
	FailedAt       float64

	extra map[string]json.RawMessage // unknown top-level fields, kept when the envelope is rewritten
}

// wireEnvelope fixes the field names and order on the wire.
type wireEnvelope struct {
	V              int            `json:"v"`
	TaskID         string         `json:"task_id"`
	Status         TaskStatus     `json:"status"`
	CreatedAt      float64        `json:"created_at"`
	Strategy       string         `json:"strategy"`
	ResolverID     string         `json:"resolver_id"`
	SerializedTask SerializedTask `json:"serialized_task"`
	GroupID        string         `json:"group_id,omitempty"`
	Attempt        int            `json:"attempt,omitempty"`
	MaxRetries     int            `json:"max_retries"`
	TimeoutMS      int64          `json:"timeout_ms,omitempty"`
	LastError      string         `json:"last_error,omitempty"`
	FailedAt       float64        `json:"failed_at,omitempty"`
}

// knownFields lists the top-level names, each with the decoder of its value.
var knownFields = map[string]func(e *envelope, raw []byte) error{
	"v":               func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.V) },
	"task_id":         func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.TaskID) },
	"status":          func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.Status) },
	"created_at":      func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.CreatedAt) },
	"strategy":        func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.Strategy) },
	"resolver_id":     func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.ResolverID) },
	"serialized_task": decodeSerializedTask,
	"group_id":        func(e *envelope, raw []byte) error { return decodeNullableString(raw, &e.GroupID) },
	"attempt":         func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.Attempt) },
	"max_retries":     func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.MaxRetries) },
	"timeout_ms":      func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.TimeoutMS) },
	"last_error":      func(e *envelope, raw []byte) error { return decodeNullableString(raw, &e.LastError) },
	"failed_at":       func(e *envelope, raw []byte) error { return json.Unmarshal(raw, &e.FailedAt) },
}

var requiredFields = []string{"task_id", "strategy", "resolver_id", "serialized_task"}

func decodeNullableString(raw []byte, dst *string) error {
	if string(raw) == "null" {
		return nil
	}
	return json.Unmarshal(raw, dst)
}

func decodeSerializedTask(e *envelope, raw []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	if fields == nil {
		return fmt.Errorf("must be an object")
	}
	for k := range fields {
		if k != "strategy" && k != "payload" {
			return fmt.Errorf("unknown field %s", quote(k))
		}
	}
	s, ok := fields["strategy"]
	if !ok {
		return fmt.Errorf("missing strategy")
	}
	if err := json.Unmarshal(s, &e.SerializedTask.Strategy); err != nil {
		return fmt.Errorf("strategy: %w", err)
	}
	p, ok := fields["payload"]
	if !ok {
		return fmt.Errorf("missing payload")
	}
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return fmt.Errorf("payload must be an object")
	}
	e.SerializedTask.Payload = p
	return nil
}

// marshal encodes the envelope, keeping unknown fields after the known ones. HTML characters are not escaped, so
// the stored JSON reads as written.
func (e *envelope) marshal() ([]byte, error) {
	payload := e.SerializedTask.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	w := wireEnvelope{
		V: EnvelopeVersion, TaskID: e.TaskID, Status: e.Status, CreatedAt: e.CreatedAt, Strategy: e.Strategy,
		ResolverID: e.ResolverID, SerializedTask: SerializedTask{Strategy: e.SerializedTask.Strategy, Payload: payload},
		GroupID: e.GroupID, Attempt: e.Attempt, MaxRetries: e.MaxRetries, TimeoutMS: e.TimeoutMS,
		LastError: e.LastError, FailedAt: e.FailedAt,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&w); err != nil {
		return nil, err
	}
	out := bytes.TrimRight(buf.Bytes(), "\n")
	if len(e.extra) == 0 {
		return out, nil
	}
	extra, err := json.Marshal(e.extra) // sorted keys: a stable rewrite
	if err != nil {
		return nil, err
	}
	out = append(out[:len(out)-1], ',')
	return append(out, extra[1:]...), nil
}

// decodeEnvelope reads a stored envelope strictly: size and depth limits, valid UTF-8, no duplicate or
// case-variant keys, exact field names, typed values. The returned error is an [*EnvelopeError].
func decodeEnvelope(data []byte, lim Limits) (*envelope, error) {
	if len(data) > lim.MaxEnvelopeBytes {
		return nil, &EnvelopeError{Kind: ErrEnvelopeTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(data), lim.MaxEnvelopeBytes)}
	}
	if !utf8.Valid(data) {
		return nil, malformed("invalid UTF-8")
	}
	if err := validateJSON(data, lim.MaxDepth); err != nil {
		return nil, malformed(err.Error())
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, malformed("not a JSON object")
	}
	e := &envelope{}
	if raw, ok := fields["v"]; ok {
		if err := json.Unmarshal(raw, &e.V); err != nil {
			return nil, malformed(`field "v": not an integer`)
		}
		if e.V > EnvelopeVersion {
			return nil, &EnvelopeError{Kind: ErrUnsupportedVersion, Detail: fmt.Sprintf("version %d, this build reads up to %d", e.V, EnvelopeVersion)}
		}
		if e.V < 0 {
			return nil, malformed(`field "v": negative`)
		}
	}
	for name, raw := range fields {
		dec, ok := knownFields[name]
		if !ok {
			for known := range knownFields {
				if strings.EqualFold(known, name) {
					return nil, malformed(fmt.Sprintf("field %s: case variant of %q", quote(name), known))
				}
			}
			if e.extra == nil {
				e.extra = make(map[string]json.RawMessage)
			}
			e.extra[name] = raw
			continue
		}
		if err := dec(e, raw); err != nil {
			return nil, malformed(fmt.Sprintf("field %q: %s", name, truncate(err.Error(), 120)))
		}
	}
	for _, name := range requiredFields {
		if _, ok := fields[name]; !ok {
			return nil, malformed(fmt.Sprintf("missing field %q", name))
		}
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return e, nil
}

// check validates field values that the JSON types do not.
func (e *envelope) check() error {
	if err := validateTaskID(e.TaskID); err != nil {
		return malformed("task_id: " + err.Error())
	}
	if e.ResolverID == "" || e.SerializedTask.Strategy == "" {
		return malformed("resolver_id and serialized_task.strategy must not be empty")
	}
	if e.Strategy != "" && e.Strategy != e.SerializedTask.Strategy {
		return malformed(fmt.Sprintf("strategy %s does not match serialized_task.strategy %s", quote(e.Strategy), quote(e.SerializedTask.Strategy)))
	}
	if e.Attempt < 0 || e.MaxRetries < -1 || e.TimeoutMS < 0 {
		return malformed("attempt, max_retries or timeout_ms out of range")
	}
	if math.IsNaN(e.CreatedAt) || e.CreatedAt < 0 {
		return malformed("created_at out of range")
	}
	return nil
}

func malformed(detail string) error {
	return &EnvelopeError{Kind: ErrMalformedEnvelope, Detail: detail}
}

// unixSeconds converts a time to the seed's float seconds, at millisecond precision.
func unixSeconds(t time.Time) float64 {
	return float64(t.UnixMilli()) / 1000
}

// fromUnixSeconds converts the seed's float seconds back to a time.
func fromUnixSeconds(s float64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(math.Round(s * 1000)))
}

// jsonEqual reports whether two JSON texts hold the same value (object key order and spacing aside).
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	da := json.NewDecoder(bytes.NewReader(a))
	da.UseNumber()
	db := json.NewDecoder(bytes.NewReader(b))
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	ea, _ := json.Marshal(va)
	eb, _ := json.Marshal(vb)
	return bytes.Equal(ea, eb)
}
