package taskqueue

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// EnvelopeVersion is the schema version this package writes in the envelope's "v" field. Envelopes without "v"
// are the seed's version 0 and are read as such; envelopes with a higher version are parked with
// [ErrUnsupportedVersion].
//
// Version 2 leaves out what it stores elsewhere: "task_id" when it is the hash field the envelope is stored
// under, "status" when it is pending, "strategy" when it is serialized_task's. Readers take them from there; see
// docs/data-format.md. Versions 0 and 1 are still read, and a rewrite keeps an envelope's version (a version-0
// one becomes 1), so that a signature over it still verifies and an older worker can still read it.
const EnvelopeVersion = 2

// envelope is the JSON record stored in Redis for one task: the seed's "Data Format Example", field for field,
// plus the schema version and what delivery needs. See docs/data-format.md.
type envelope struct {
	V              int
	TaskID         string
	Status         State
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
	Meta           map[string]string // [TaskSpec.Metadata]; nil when empty
	Sig            *envSig           // the signature, made and checked in signing.go; nil when unsigned
	Priority       int               // [TaskSpec.Priority]; 0 (absent) for the default level
	FlowKey        string            // [TaskSpec.FlowKey]; "" (absent) for none

	// key is the hash field the envelope is stored under, when known (encode, decodeStored): marshal leaves out a
	// task_id equal to it (version 2). Unknown (""), task_id is written.
	key string

	extra map[string]json.RawMessage // unknown top-level fields, kept when the envelope is rewritten
	// payloadOK says SerializedTask.Payload was checked to be a valid JSON object (by encode), so marshal does not
	// scan it again.
	payloadOK bool
}

// The envelope's top-level fields, in the order they are written. A field's bit is 1<<index.
var envelopeFields = [...]string{
	"v", "task_id", "status", "created_at", "strategy", "resolver_id", "serialized_task", "group_id",
	"attempt", "max_retries", "timeout_ms", "last_error", "failed_at", "meta", "sig", "priority",
	"flow_key",
}

const (
	fieldV = 1 << iota
	fieldTaskID
	fieldStatus
	fieldCreatedAt
	fieldStrategy
	fieldResolverID
	fieldSerializedTask
	fieldGroupID
	fieldAttempt
	fieldMaxRetries
	fieldTimeoutMS
	fieldLastError
	fieldFailedAt
	fieldMeta
	fieldSig
	fieldPriority
	fieldFlowKey

	requiredFields = fieldTaskID | fieldStrategy | fieldResolverID | fieldSerializedTask
)

// envelopeField returns the bit of an exact top-level field name, 0 for any other name.
func envelopeField(name []byte) int {
	for i, f := range envelopeFields {
		if string(name) == f {
			return 1 << i
		}
	}
	return 0
}

// decodeEnvelope reads a stored envelope strictly, in one pass over the bytes: size (at most lim.readLimit(): the
// enqueue limit plus [EnvelopeHeadroom]) and depth limits, valid UTF-8, no duplicate or case-variant keys
// (escaped or not), exact field names, typed values, integers that fit.
// A version newer than [EnvelopeVersion] is reported as such even when the rest does not parse as this version.
// The returned error is an [*EnvelopeError]; the envelope holds no reference to data.
func decodeEnvelope(data []byte, lim Limits) (*envelope, error) {
	if n := lim.readLimit(); len(data) > n {
		return nil, &EnvelopeError{Kind: ErrEnvelopeTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(data), n)}
	}
	d := envDecoder{s: scanner{data: data, maxDepth: lim.MaxDepth}, e: &envelope{}}
	if err := d.document(); err != nil {
		return nil, malformed(err.Error())
	}
	if d.seen&fieldV != 0 {
		switch {
		case d.version > EnvelopeVersion:
			return nil, &EnvelopeError{Kind: ErrUnsupportedVersion, Detail: fmt.Sprintf("version %s, this build reads up to %d", d.versionText(), EnvelopeVersion)}
		case d.version < 0:
			return nil, malformed(`field "v": negative`)
		}
		d.e.V = int(d.version)
	}
	if d.fieldErr != "" {
		return nil, malformed(d.fieldErr)
	}
	required := requiredFields
	if d.e.V >= 2 { // version 2 leaves out what is stored elsewhere (see marshal)
		required &^= fieldTaskID | fieldStrategy
		if d.seen&fieldStrategy == 0 {
			d.e.Strategy = d.e.SerializedTask.Strategy
		}
		if d.seen&fieldStatus == 0 {
			d.e.Status = StatePending
		}
	}
	if missing := required &^ d.seen; missing != 0 {
		for i, name := range envelopeFields {
			if missing&(1<<i) != 0 {
				return nil, malformed(fmt.Sprintf("missing field %q", name))
			}
		}
	}
	if err := d.e.check(required&fieldTaskID == 0 && d.seen&fieldTaskID == 0); err != nil {
		return nil, err
	}
	return d.e, nil
}

// decodeStored is decodeEnvelope for an envelope read from the hash field id: the task id of a version-2 envelope
// that leaves it out (it is the field's), and the field that marshal compares task_id with.
func decodeStored(id string, data []byte, lim Limits) (*envelope, error) {
	e, err := decodeEnvelope(data, lim)
	if err != nil {
		return nil, err
	}
	if e.TaskID == "" {
		e.TaskID = id
	}
	e.key = id
	return e, nil
}

// stringBytes returns the bytes of a string (a pickup's reply) without a copy, for the envelope decoder, which
// only reads its input and keeps no reference to it.
func stringBytes(raw string) []byte {
	return unsafe.Slice(unsafe.StringData(raw), len(raw))
}

// envDecoder holds the state of one decodeEnvelope. Syntax errors end the walk at once; a field of the wrong
// type or value is remembered (the first one) and reported once the version is known.
type envDecoder struct {
	s        scanner
	e        *envelope
	seen     int
	version  int64
	vRaw     []byte // the "v" literal, when it does not fit an int64
	fieldErr string
}

func (d *envDecoder) fail(field, problem string) {
	if d.fieldErr == "" {
		d.fieldErr = fmt.Sprintf("field %q: %s", field, problem)
	}
}

func (d *envDecoder) versionText() string {
	if d.vRaw != nil {
		return truncate(string(d.vRaw), 24)
	}
	return strconv.FormatInt(d.version, 10)
}

func (d *envDecoder) document() error {
	s := &d.s
	s.skipSpace()
	if s.peek() != '{' {
		return errors.New("not a JSON object")
	}
	if err := s.members(1, d.member); err != nil {
		return err
	}
	return s.end()
}

// member reads the value of one top-level member.
func (d *envDecoder) member(key []byte) error {
	e := d.e
	bit := envelopeField(key)
	d.seen |= bit
	switch bit {
	case fieldV:
		return d.versionField()
	case fieldTaskID:
		return d.stringField("task_id", &e.TaskID, false)
	case fieldStatus:
		var s string
		err := d.stringField("status", &s, false)
		e.Status = stateOfStatus(s)
		return err
	case fieldCreatedAt:
		return d.floatField("created_at", &e.CreatedAt)
	case fieldStrategy:
		return d.stringField("strategy", &e.Strategy, false)
	case fieldResolverID:
		return d.stringField("resolver_id", &e.ResolverID, false)
	case fieldSerializedTask:
		return d.serializedTask()
	case fieldGroupID:
		return d.stringField("group_id", &e.GroupID, true)
	case fieldAttempt:
		return d.intField("attempt", &e.Attempt)
	case fieldMaxRetries:
		return d.intField("max_retries", &e.MaxRetries)
	case fieldTimeoutMS:
		var n int
		err := d.intField("timeout_ms", &n)
		e.TimeoutMS = int64(n)
		return err
	case fieldLastError:
		return d.stringField("last_error", &e.LastError, true)
	case fieldFailedAt:
		return d.floatField("failed_at", &e.FailedAt)
	case fieldMeta:
		return d.meta()
	case fieldSig:
		return d.sig()
	case fieldPriority:
		return d.intField("priority", &e.Priority)
	case fieldFlowKey:
		return d.stringField("flow_key", &e.FlowKey, false)
	}
	start := d.s.pos
	if err := d.s.value(1); err != nil {
		return err
	}
	for _, known := range envelopeFields {
		if bytes.EqualFold(key, []byte(known)) {
			d.fail(truncate(string(key), 64), "case variant of "+strconv.Quote(known))
			return nil
		}
	}
	if e.extra == nil {
		e.extra = make(map[string]json.RawMessage)
	}
	e.extra[string(key)] = bytes.Clone(d.s.data[start:d.s.pos])
	return nil
}

// scalar scans a value and returns its text, which is a number only if it starts like one.
func (d *envDecoder) scalar(depth int) ([]byte, error) {
	start := d.s.pos
	err := d.s.value(depth)
	return d.s.data[start:d.s.pos], err
}

func isNumber(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// stringField reads a string; null leaves dst empty if the field is nullable.
func (d *envDecoder) stringField(name string, dst *string, nullable bool) error {
	return d.stringAt(1, name, dst, nullable)
}

func (d *envDecoder) stringAt(depth int, name string, dst *string, nullable bool) error {
	if d.s.peek() == '"' {
		raw, escaped, err := d.s.str()
		if err == nil {
			*dst = internString(raw, escaped)
		}
		return err
	}
	raw, err := d.scalar(depth)
	if err == nil && !(nullable && string(raw) == "null") {
		d.fail(name, "not a string")
	}
	return err
}

// internString returns the common values without allocating.
func internString(raw []byte, escaped bool) string {
	if !escaped {
		switch string(raw) {
		case string(StatePending):
			return string(StatePending)
		case StrategyReference:
			return StrategyReference
		case DefaultResolverID:
			return DefaultResolverID
		case string(StateRetry):
			return string(StateRetry)
		case string(StateDead):
			return string(StateDead)
		case string(StateScheduled):
			return string(StateScheduled)
		case statusReady: // the seed's name of pending, in envelopes written before it was renamed
			return statusReady
		}
	}
	return stringValue(raw, escaped)
}

// intField reads an integer literal that fits an int; fractions and exponents are refused, as
// encoding/json refuses them for integer fields.
func (d *envDecoder) intField(name string, dst *int) error {
	raw, err := d.scalar(1)
	if err != nil {
		return err
	}
	n, ok, fits := parseInt(raw)
	switch {
	case !ok:
		d.fail(name, "not an integer")
	case !fits || int64(int(n)) != n:
		d.fail(name, "integer out of range")
	default:
		*dst = int(n)
	}
	return nil
}

// versionField reads "v". An integer too large for int64 is a (much) newer version, not a malformed envelope.
func (d *envDecoder) versionField() error {
	raw, err := d.scalar(1)
	if err != nil {
		return err
	}
	n, ok, fits := parseInt(raw)
	switch {
	case !ok:
		d.seen &^= fieldV
		d.fail("v", "not an integer")
	case !fits && raw[0] == '-':
		d.version = -1
	case !fits:
		d.version, d.vRaw = math.MaxInt64, raw
	default:
		d.version = n
	}
	return nil
}

// parseInt parses a JSON integer literal (no fraction or exponent) exactly. ok reports an integer literal, fits
// that it fits an int64.
func parseInt(raw []byte) (n int64, ok, fits bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, false, false
	}
	var u uint64
	fits = true
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false, false
		}
		if u > (math.MaxUint64-9)/10 {
			fits = false
			continue
		}
		u = u*10 + uint64(c-'0')
	}
	if raw[0] == '-' {
		if !fits || u > 1<<63 {
			return 0, true, false
		}
		return -int64(u), true, true
	}
	if !fits || u > math.MaxInt64 {
		return 0, true, false
	}
	return int64(u), true, true
}

func (d *envDecoder) floatField(name string, dst *float64) error {
	raw, err := d.scalar(1)
	if err != nil {
		return err
	}
	if !isNumber(raw) {
		d.fail(name, "not a number")
		return nil
	}
	f, perr := strconv.ParseFloat(string(raw), 64)
	if perr != nil {
		d.fail(name, "number out of range")
		return nil //nolint:nilerr // recorded by d.fail and reported after the scan
	}
	*dst = f
	return nil
}

// skipNonObject reads past a value that should have been an object, records the failure under name, and reports
// whether it did so.
func (d *envDecoder) skipNonObject(name string) (bool, error) {
	if d.s.peek() == '{' {
		return false, nil
	}
	_, err := d.scalar(1)
	d.fail(name, "not an object")
	return true, err
}

// serializedTask reads {"strategy", "payload"}; the payload must be an object, kept as its exact bytes.
func (d *envDecoder) serializedTask() error {
	s := &d.s
	const name = "serialized_task"
	if skipped, err := d.skipNonObject(name); skipped {
		return err
	}
	var seen int
	st := &d.e.SerializedTask
	err := s.members(2, func(key []byte) error {
		switch string(key) {
		case "strategy":
			seen |= 1
			return d.stringAt(2, "serialized_task.strategy", &st.Strategy, false)
		case "payload":
			seen |= 2
			isObject := s.peek() == '{'
			raw, err := d.scalar(2)
			if err == nil {
				if isObject {
					st.Payload = bytes.Clone(raw)
				} else {
					d.fail("serialized_task.payload", "not an object")
				}
			}
			return err
		default:
			_, err := d.scalar(2)
			d.fail(name, "unknown field "+quote(string(key)))
			return err
		}
	})
	if err != nil {
		return err
	}
	if seen&1 == 0 {
		d.fail(name, "missing strategy")
	}
	if seen&2 == 0 {
		d.fail(name, "missing payload")
	}
	return nil
}

// meta reads {"key": "value", ...}: string values, keys and values within the bounds of [TaskSpec.Metadata],
// at most [MaxMetadataEntries] of them. The scanner refuses duplicate and case-variant keys, as in any object.
// An empty object leaves Meta nil.
func (d *envDecoder) meta() error {
	s := &d.s
	const name = "meta"
	if skipped, err := d.skipNonObject(name); skipped {
		return err
	}
	n := 0
	return s.members(2, func(key []byte) error {
		n++
		if s.peek() != '"' {
			_, err := d.scalar(2)
			d.fail(name, "value of "+quote(string(key))+" is not a string")
			return err
		}
		raw, escaped, err := s.str()
		switch {
		case err != nil:
			return err
		case n > MaxMetadataEntries:
			d.fail(name, fmt.Sprintf("more than %d entries", MaxMetadataEntries))
		case !validMetadataKey(key):
			d.fail(name, fmt.Sprintf("key %s is not 1 to %d characters of [A-Za-z0-9._-]", quote(string(key)), MaxMetadataKeyLen))
		default:
			v := stringValue(raw, escaped)
			if len(v) > MaxMetadataValueLen {
				d.fail(name, fmt.Sprintf("value of %s is over %d bytes", quote(string(key)), MaxMetadataValueLen))
				return nil
			}
			if d.e.Meta == nil {
				d.e.Meta = make(map[string]string, 2)
			}
			d.e.Meta[metaKey(key)] = v
		}
		return nil
	})
}

// metaKey returns the trace context's keys without allocating.
func metaKey(key []byte) string {
	switch string(key) {
	case "traceparent":
		return "traceparent"
	case "tracestate":
		return "tracestate"
	}
	return string(key)
}

// check validates field values that the JSON types do not. noID says a version-2 envelope left task_id out.
func (e *envelope) check(noID bool) error {
	if noID {
		// the id it is stored under (decodeStored)
	} else if err := validateTaskID(e.TaskID); err != nil {
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
	if math.IsNaN(e.CreatedAt) || math.IsInf(e.CreatedAt, 0) || e.CreatedAt < 0 {
		return malformed("created_at out of range")
	}
	if math.IsNaN(e.FailedAt) || math.IsInf(e.FailedAt, 0) || e.FailedAt < 0 {
		return malformed("failed_at out of range")
	}
	return nil
}

func malformed(detail string) error {
	return &EnvelopeError{Kind: ErrMalformedEnvelope, Detail: detail}
}

// marshal encodes the envelope as it is stored: in its version (a version-0 one as version 1, the oldest this
// package writes), the known fields in their fixed order (see envelopeFields), then the unknown fields that
// decoding kept, sorted by name. Version 2 leaves out what readers find elsewhere: a task_id equal to e.key (the
// hash field), a pending status, a strategy equal to serialized_task's. HTML characters are not escaped, so the
// stored JSON reads as written. The payload and the kept fields must be valid JSON (they are compacted); a
// payload that is not an object is refused with [ErrNotSerializable], since no decoder would read it back.
func (e *envelope) marshal() ([]byte, error) {
	return e.marshalAs(false)
}

// record encodes the envelope as the seed's record: like marshal, but with task_id, status and strategy always
// written (what [TaskInfo.Record] shows).
func (e *envelope) record() ([]byte, error) {
	return e.marshalAs(true)
}

func (e *envelope) marshalAs(full bool) ([]byte, error) {
	payload := e.SerializedTask.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	if !e.payloadOK {
		if err := validateJSON(payload, maxSyntaxDepth); err != nil {
			return nil, fmt.Errorf("%w: payload: %v", ErrNotSerializable, err)
		}
	}
	if payload = bytes.TrimLeft(payload, " \t\r\n"); len(payload) == 0 || payload[0] != '{' {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrNotSerializable)
	}
	if !finite(e.CreatedAt) || !finite(e.FailedAt) {
		return nil, fmt.Errorf("%w: created_at or failed_at is not a finite number", ErrNotSerializable)
	}
	size := 256 + len(payload) + len(e.TaskID) + len(e.Status) + len(e.Strategy) + len(e.ResolverID) +
		len(e.SerializedTask.Strategy) + len(e.GroupID) + len(e.LastError)
	if len(e.Meta) > 0 {
		if err := validateMetadata(e.Meta); err != nil {
			return nil, fmt.Errorf("%w: meta: %v", ErrNotSerializable, err)
		}
		for k, v := range e.Meta {
			size += len(k) + len(v) + 6
		}
	}
	for name, raw := range e.extra {
		size += len(name) + len(raw) + 4
	}
	if e.Sig != nil {
		size += 128
	}
	v := min(max(e.V, 1), EnvelopeVersion)
	full = full || v < 2
	b := make([]byte, 0, size)
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(v), 10)
	if full || e.TaskID != e.key {
		b = append(b, `,"task_id":`...)
		b = appendString(b, e.TaskID)
	}
	if full || e.Status != StatePending {
		b = append(b, `,"status":`...)
		b = appendString(b, string(e.Status))
	}
	b = append(b, `,"created_at":`...)
	b = appendFloat(b, e.CreatedAt)
	if full || e.Strategy != e.SerializedTask.Strategy {
		b = append(b, `,"strategy":`...)
		b = appendString(b, e.Strategy)
	}
	b = append(b, `,"resolver_id":`...)
	b = appendString(b, e.ResolverID)
	b = append(b, `,"serialized_task":{"strategy":`...)
	b = appendString(b, e.SerializedTask.Strategy)
	b = append(b, `,"payload":`...)
	b = appendCompact(b, payload)
	b = append(b, '}')
	if e.GroupID != "" {
		b = append(b, `,"group_id":`...)
		b = appendString(b, e.GroupID)
	}
	if e.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(e.Attempt), 10)
	}
	if e.MaxRetries != 0 { // 0, the worker's default, is what an absent field reads as: 16 bytes less per task
		b = append(b, `,"max_retries":`...)
		b = strconv.AppendInt(b, int64(e.MaxRetries), 10)
	}
	if e.TimeoutMS != 0 {
		b = append(b, `,"timeout_ms":`...)
		b = strconv.AppendInt(b, e.TimeoutMS, 10)
	}
	if e.LastError != "" {
		b = append(b, `,"last_error":`...)
		b = appendString(b, e.LastError)
	}
	if e.FailedAt != 0 {
		b = append(b, `,"failed_at":`...)
		b = appendFloat(b, e.FailedAt)
	}
	if len(e.Meta) > 0 {
		b = appendMeta(b, e.Meta)
	}
	if e.Sig != nil {
		b = appendSig(b, e.Sig)
	}
	if e.Priority != 0 {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, int64(e.Priority), 10)
	}
	if e.FlowKey != "" {
		b = append(b, `,"flow_key":`...)
		b = appendString(b, e.FlowKey)
	}
	if len(e.extra) > 0 {
		names := make([]string, 0, len(e.extra))
		for name := range e.extra {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			raw := e.extra[name]
			if envelopeField([]byte(name)) != 0 || validateJSON(raw, maxSyntaxDepth) != nil {
				return nil, fmt.Errorf("%w: kept field %s is not valid JSON or shadows a known field", ErrNotSerializable, quote(name))
			}
			b = append(b, ',')
			b = appendString(b, name)
			b = append(b, ':')
			b = appendCompact(b, raw)
		}
	}
	return append(b, '}'), nil
}

// appendMeta appends the "meta" member, its keys sorted so that a rewrite is byte for byte the same. m must have
// passed validateMetadata (at most MaxMetadataEntries keys).
func appendMeta(b []byte, m map[string]string) []byte {
	var buf [MaxMetadataEntries]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, `,"meta":{`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

// maxSyntaxDepth bounds the recursion of a syntax check where no configured limit applies: the largest
// [Limits.MaxDepth] accepted.
const maxSyntaxDepth = 1000

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// appendFloat formats f as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping off: invalid UTF-8 becomes U+FFFD, and U+2028
// and U+2029 are escaped, so the text is also valid JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plainByte[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendCompact appends valid JSON without the white space between its tokens.
func appendCompact(b, raw []byte) []byte {
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return append(b, raw...) // compact already, as encoders write it: one fast scan instead of a slow one
	}
	compactRuns(raw, func(run []byte) { b = append(b, run...) })
	return b
}

// compactRuns calls emit with the runs of valid JSON raw that lie between white space outside strings, in
// order: together they are raw without the white space between its tokens (what appendCompact stores and what a
// signature covers, signing.go).
func compactRuns(raw []byte, emit func([]byte)) {
	inString, escaped := false, false
	start := 0
	for i, c := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if i > start {
				emit(raw[start:i])
			}
			start = i + 1
		}
	}
	if start < len(raw) {
		emit(raw[start:])
	}
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

// macLen is the length of a MAC encoded as unpadded base64url.
var macLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// envSig is an envelope's "sig" field. A pointer in the envelope, so that unsigned envelopes stay as small as
// they were (248 bytes would take the 256-byte size class instead of 208).
type envSig struct {
	KeyID string
	MAC   [sha256.Size]byte
}

// appendSig appends the "sig" member of a signed envelope.
func appendSig(b []byte, sig *envSig) []byte {
	b = append(b, `,"sig":{"alg":"`+SignatureAlgorithm+`","kid":`...)
	b = appendString(b, sig.KeyID)
	b = append(b, `,"mac":"`...)
	b = base64.RawURLEncoding.AppendEncode(b, sig.MAC[:])
	return append(b, `"}`...)
}

// strictMAC decodes only the canonical encoding: no padding, zero trailing bits.
var strictMAC = base64.RawURLEncoding.Strict()

// sig reads {"alg": "HS256", "kid": "<key id>", "mac": "<43 base64url characters>"}: all three, nothing else,
// without escapes. The values are checked whether or not the queue verifies signatures.
func (d *envDecoder) sig() error {
	s := &d.s
	const name = "sig"
	if skipped, err := d.skipNonObject(name); skipped {
		return err
	}
	var seen int
	sig := &envSig{}
	d.e.Sig = sig
	err := s.members(2, func(key []byte) error {
		if s.peek() != '"' {
			_, err := d.scalar(2)
			d.fail(name, "value of "+quote(string(key))+" is not a string")
			return err
		}
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		switch string(key) {
		case "alg":
			seen |= 1
			if escaped || string(raw) != SignatureAlgorithm {
				d.fail(name, fmt.Sprintf("alg %s is not %s", quote(string(raw)), SignatureAlgorithm))
			}
		case "kid":
			seen |= 2
			if escaped || !validKeyID(string(raw)) {
				d.fail(name, fmt.Sprintf("kid %s is not 1 to %d of [A-Za-z0-9._-]", quote(string(raw)), MaxSigningKeyIDLen))
				return nil
			}
			sig.KeyID = string(raw)
		case "mac":
			seen |= 4
			if !decodeMAC(&sig.MAC, raw, escaped) {
				d.fail(name, fmt.Sprintf("mac is not %d characters of unpadded base64url", macLen))
			}
		default:
			d.fail(name, "unknown field "+quote(string(key)))
		}
		return nil
	})
	if err == nil && seen != 7 {
		d.fail(name, "want alg, kid and mac")
	}
	return err
}

// decodeMAC decodes exactly macLen characters of canonical base64url into mac. The length is checked first:
// Decode writes as many bytes as its input holds, whatever the size of mac.
func decodeMAC(mac *[sha256.Size]byte, raw []byte, escaped bool) bool {
	if escaped || len(raw) != macLen {
		return false
	}
	n, err := strictMAC.Decode(mac[:], raw)
	return err == nil && n == sha256.Size
}
