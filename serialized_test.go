package taskqueue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// validV1 is a version 1 envelope as this package writes it.
const validV1 = `{"v":1,"task_id":"t1","status":"pending","created_at":1719300000.5,"strategy":"reference",` +
	`"resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"examples.tasks",` +
	`"name":"extract_data","args":{"n":1}}},"group_id":"etl_batch","attempt":2,"max_retries":5,"timeout_ms":1500,` +
	`"last_error":"boom","failed_at":1719300001.25}`

// v1With returns validV1 with the first old replaced by new; old must occur.
func v1With(t testing.TB, old, new string) string {
	t.Helper()
	require.Contains(t, validV1, old)
	return strings.Replace(validV1, old, new, 1)
}

func envLimits() Limits { return Limits{}.withDefaults() }

// seedV0 is the seed's "Data Format Example", byte for byte.
func seedV0(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/seed_v0.json")
	require.NoError(t, err)
	return raw
}

func TestDecodeEnvelopeSeedDataFormatExample(t *testing.T) {
	t.Parallel()
	e, err := decodeEnvelope(seedV0(t), envLimits())
	require.NoError(t, err)
	require.Equal(t, 0, e.V, "no \"v\" is the seed's version 0")
	require.Equal(t, "extract_data", e.TaskID)
	require.Equal(t, StatePending, e.Status)
	require.Equal(t, 1719300000.0, e.CreatedAt)
	require.Equal(t, StrategyReference, e.Strategy)
	require.Equal(t, DefaultResolverID, e.ResolverID)
	require.Equal(t, StrategyReference, e.SerializedTask.Strategy)
	require.JSONEq(t, `{"module":"examples.tasks","name":"extract_data"}`, string(e.SerializedTask.Payload))
	require.Equal(t, "etl_batch", e.GroupID)
	require.Empty(t, e.extra)
	require.Equal(t, time.Unix(1719300000, 0), fromUnixSeconds(e.CreatedAt))

	// Rewritten, it becomes version 1 with the same content.
	out, err := e.marshal()
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(out, []byte(`{"v":1,"task_id":"extract_data",`)), "%s", out)
	again, err := decodeEnvelope(out, envLimits())
	require.NoError(t, err)
	require.Equal(t, 1, again.V)
	again.V = 0
	requireSameEnvelope(t, e, again)
}

func TestDecodeEnvelopeV1(t *testing.T) {
	t.Parallel()
	e, err := decodeEnvelope([]byte(validV1), envLimits())
	require.NoError(t, err)
	require.Equal(t, &envelope{
		V: 1, TaskID: "t1", Status: StatePending, CreatedAt: 1719300000.5, Strategy: StrategyReference,
		ResolverID: DefaultResolverID,
		SerializedTask: SerializedTask{Strategy: StrategyReference,
			Payload: json.RawMessage(`{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`)},
		GroupID: "etl_batch", Attempt: 2, MaxRetries: 5, TimeoutMS: 1500, LastError: "boom", FailedAt: 1719300001.25,
	}, e)
	out, err := e.marshal()
	require.NoError(t, err)
	require.Equal(t, validV1, string(out), "a v1 envelope is rewritten byte for byte")
}

// The seed's "ready" stays valid on read: it is pending, and an envelope rewritten says so in today's word.
func TestDecodeEnvelopeReadyReadsAsPending(t *testing.T) {
	t.Parallel()
	ready := v1With(t, `"status":"pending"`, `"status":"ready"`)
	e, err := decodeEnvelope([]byte(ready), envLimits())
	require.NoError(t, err)
	require.Equal(t, StatePending, e.Status)
	out, err := e.marshal()
	require.NoError(t, err)
	require.Equal(t, validV1, string(out), "rewritten byte for byte but for the status's name")
}

func TestDecodeEnvelopeDoesNotAliasInput(t *testing.T) {
	t.Parallel()
	data := []byte(v1With(t, `"last_error":"boom"`, `"last_error":"boom","x_extra":[1,2]`))
	e, err := decodeEnvelope(data, envLimits())
	require.NoError(t, err)
	for i := range data {
		data[i] = ' '
	}
	require.JSONEq(t, `{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`, string(e.SerializedTask.Payload))
	require.Equal(t, `[1,2]`, string(e.extra["x_extra"]))
	require.Equal(t, "t1", e.TaskID)
}

func TestDecodeEnvelopeAccepts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		input string
		check func(t *testing.T, e *envelope)
	}{
		{"nullable group_id and last_error", v1With(t, `"group_id":"etl_batch"`, `"group_id":null,"x":null`),
			func(t *testing.T, e *envelope) { require.Empty(t, e.GroupID) }},
		{"escaped strings", v1With(t, `"task_id":"t1"`, `"task_id":"t\u00e9\ud83d\ude00\/1"`),
			func(t *testing.T, e *envelope) { require.Equal(t, "té😀/1", e.TaskID) }},
		{"key written with escapes, alone", v1With(t, `"task_id":"t1"`, `"task\u005fid":"t1"`),
			func(t *testing.T, e *envelope) { require.Equal(t, "t1", e.TaskID) }},
		{"white space everywhere", " \n{ \"task_id\" : \"t1\" ,\t\"strategy\":\"reference\",\r\n\"resolver_id\":\"r-1\"," +
			"\"serialized_task\" : { \"payload\" : { } , \"strategy\" : \"reference\" } } \n",
			func(t *testing.T, e *envelope) {
				require.Equal(t, "r-1", e.ResolverID)
				require.Equal(t, "{ }", string(e.SerializedTask.Payload))
			}},
		{"empty top-level strategy", v1With(t, `"strategy":"reference","resolver_id"`, `"strategy":"","resolver_id"`),
			func(t *testing.T, e *envelope) { require.Empty(t, e.Strategy) }},
		{"max_retries -1", v1With(t, `"max_retries":5`, `"max_retries":-1`),
			func(t *testing.T, e *envelope) { require.Equal(t, -1, e.MaxRetries) }},
		{"created_at integer and exponent", v1With(t, `"created_at":1719300000.5`, `"created_at":1.7193e9`),
			func(t *testing.T, e *envelope) { require.Equal(t, 1.7193e9, e.CreatedAt) }},
		{"explicit version 0", v1With(t, `"v":1`, `"v":0`),
			func(t *testing.T, e *envelope) { require.Equal(t, 0, e.V) }},
		{"v after the other fields", `{` + strings.TrimPrefix(validV1, `{"v":1,`)[:len(validV1)-len(`{"v":1,`)-1] + `,"v":1}`,
			func(t *testing.T, e *envelope) { require.Equal(t, 1, e.V) }},
		{"status outside the known set", v1With(t, `"status":"pending"`, `"status":"running"`),
			func(t *testing.T, e *envelope) { require.Equal(t, State("running"), e.Status) }},
		{"20-digit integer in payload kept exact", v1With(t, `"args":{"n":1}`, `"args":{"n":12345678901234567890123}`),
			func(t *testing.T, e *envelope) {
				require.Contains(t, string(e.SerializedTask.Payload), `12345678901234567890123`)
			}},
		{"depth exactly at the limit", v1With(t, `"args":{"n":1}`, `"args":`+nestedArrays(DefaultMaxDepth-3)),
			func(t *testing.T, e *envelope) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := decodeEnvelope([]byte(tc.input), envLimits())
			require.NoError(t, err)
			tc.check(t, e)
		})
	}
}

// nestedArrays returns n nested arrays: [[[...]]].
func nestedArrays(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

func TestDecodeEnvelopeRejects(t *testing.T) {
	t.Parallel()
	deep := v1With(t, `"args":{"n":1}`, `"args":`+nestedArrays(DefaultMaxDepth-2))
	for _, tc := range []struct {
		name   string
		input  string
		kind   error
		detail string // a substring of the message
	}{
		// Size and depth.
		{"too large", validV1 + strings.Repeat(" ", DefaultMaxEnvelopeBytes+EnvelopeHeadroom), ErrEnvelopeTooLarge, "limit 1056768"},
		{"too deep", deep, ErrMalformedEnvelope, "nested deeper than 32"},
		{"far too deep", v1With(t, `"args":{"n":1}`, `"args":`+nestedArrays(100000)), ErrMalformedEnvelope, "nested deeper"},

		// Not JSON, not an object.
		{"empty", "", ErrMalformedEnvelope, "not a JSON object"},
		{"white space", " \n", ErrMalformedEnvelope, "not a JSON object"},
		{"array", `[` + validV1 + `]`, ErrMalformedEnvelope, "not a JSON object"},
		{"string", `"x"`, ErrMalformedEnvelope, "not a JSON object"},
		{"null", `null`, ErrMalformedEnvelope, "not a JSON object"},
		{"truncated", validV1[:len(validV1)-1], ErrMalformedEnvelope, "unexpected end"},
		{"trailing data", validV1 + `{}`, ErrMalformedEnvelope, "trailing data"},
		{"two documents", validV1 + "\n" + validV1, ErrMalformedEnvelope, "trailing data"},
		{"trailing comma", v1With(t, `"failed_at":1719300001.25}`, `"failed_at":1719300001.25,}`), ErrMalformedEnvelope, "expected object key"},
		{"single quotes", v1With(t, `"task_id":"t1"`, `'task_id':'t1'`), ErrMalformedEnvelope, "expected object key"},
		{"leading zero", v1With(t, `"attempt":2`, `"attempt":02`), ErrMalformedEnvelope, "invalid number"},
		{"NaN", v1With(t, `"created_at":1719300000.5`, `"created_at":NaN`), ErrMalformedEnvelope, "unexpected character"},
		{"raw control character", v1With(t, `"boom"`, "\"bo\x01om\""), ErrMalformedEnvelope, "control character"},
		{"bad escape", v1With(t, `"boom"`, `"bo\om"`), ErrMalformedEnvelope, "invalid escape"},
		{"short unicode escape", v1With(t, `"boom"`, `"bo\u12"`), ErrMalformedEnvelope, `invalid \u escape`},

		// Invalid UTF-8 and lone surrogates.
		{"invalid UTF-8 in a value", v1With(t, `"boom"`, "\"bo\xffom\""), ErrMalformedEnvelope, "invalid UTF-8"},
		{"invalid UTF-8 in a key", v1With(t, `"last_error"`, "\"last\xc3_error\""), ErrMalformedEnvelope, "invalid UTF-8"},
		{"invalid UTF-8 in payload", v1With(t, `"n":1`, "\"n\":\"\xed\xa0\x80\""), ErrMalformedEnvelope, "invalid UTF-8"},
		{"overlong encoding", v1With(t, `"boom"`, "\"\xc0\xaf\""), ErrMalformedEnvelope, "invalid UTF-8"},
		{"lone high surrogate", v1With(t, `"boom"`, `"\ud800"`), ErrMalformedEnvelope, "surrogate"},
		{"lone low surrogate", v1With(t, `"boom"`, `"\udc00x"`), ErrMalformedEnvelope, "surrogate"},
		{"reversed surrogates", v1With(t, `"boom"`, `"\ude00\ud83d"`), ErrMalformedEnvelope, "surrogate"},
		{"surrogate in a key", v1With(t, `"last_error"`, `"last_error\ud800"`), ErrMalformedEnvelope, "surrogate"},

		// Duplicate and case-variant keys, written plainly or with escapes, at every level.
		{"duplicate key", v1With(t, `"status":"pending"`, `"status":"pending","status":"dead"`), ErrMalformedEnvelope, `duplicate or case-variant key "status"`},
		{"case-variant duplicate", v1With(t, `"status":"pending"`, `"status":"pending","Status":"dead"`), ErrMalformedEnvelope, `case-variant key "Status"`},
		{"escaped duplicate", v1With(t, `"status":"pending"`, `"status":"pending","st\u0061tus":"dead"`), ErrMalformedEnvelope, `duplicate or case-variant key "status"`},
		{"escaped case-variant duplicate", v1With(t, `"status":"pending"`, `"status":"pending","\u0053TATUS":"dead"`), ErrMalformedEnvelope, `"STATUS"`},
		{"duplicate v", v1With(t, `"v":1`, `"v":1,"v":1`), ErrMalformedEnvelope, `"v"`},
		{"duplicate unknown key", v1With(t, `"attempt":2`, `"attempt":2,"x":1,"x":2`), ErrMalformedEnvelope, `"x"`},
		{"duplicate in serialized_task", v1With(t, `{"strategy":"reference","payload"`, `{"strategy":"reference","strategy":"reference","payload"`), ErrMalformedEnvelope, "duplicate"},
		{"duplicate in payload", v1With(t, `"name":"extract_data"`, `"name":"extract_data","name":"x"`), ErrMalformedEnvelope, "duplicate"},
		{"case variant in args", v1With(t, `{"n":1}`, `{"n":1,"N":2}`), ErrMalformedEnvelope, `"N"`},
		{"Kelvin sign folds to k", v1With(t, `{"n":1}`, `{"k":1,"\u212a":2}`), ErrMalformedEnvelope, "case-variant"},
		{"duplicate after 16 keys", v1With(t, `{"n":1}`, objectWithKeys(20, "k7")), ErrMalformedEnvelope, `"K7"`},

		// Exact field names.
		{"case-variant field name", v1With(t, `"group_id"`, `"Group_ID"`), ErrMalformedEnvelope, `case variant of "group_id"`},
		{"upper-case v", v1With(t, `"v":1`, `"V":1`), ErrMalformedEnvelope, `case variant of "v"`},
		{"escaped case variant", v1With(t, `"group_id"`, `"GROUP\u005fID"`), ErrMalformedEnvelope, `case variant of "group_id"`},
		{"unknown field in serialized_task", v1With(t, `"payload":{`, `"extra":{}, "payload":{`), ErrMalformedEnvelope, `unknown field "extra"`},
		{"case variant in serialized_task", v1With(t, `"payload":{`, `"Payload":{}, "payload":{`), ErrMalformedEnvelope, `case-variant key "payload"`},

		// Wrong types.
		{"task_id number", v1With(t, `"task_id":"t1"`, `"task_id":1`), ErrMalformedEnvelope, `field "task_id": not a string`},
		{"task_id null", v1With(t, `"task_id":"t1"`, `"task_id":null`), ErrMalformedEnvelope, `field "task_id": not a string`},
		{"status null", v1With(t, `"status":"pending"`, `"status":null`), ErrMalformedEnvelope, `field "status": not a string`},
		{"status object", v1With(t, `"status":"pending"`, `"status":{"a":[1]}`), ErrMalformedEnvelope, `field "status": not a string`},
		{"created_at string", v1With(t, `"created_at":1719300000.5`, `"created_at":"1719300000.5"`), ErrMalformedEnvelope, `field "created_at": not a number`},
		{"created_at null", v1With(t, `"created_at":1719300000.5`, `"created_at":null`), ErrMalformedEnvelope, `field "created_at": not a number`},
		{"created_at out of range", v1With(t, `"created_at":1719300000.5`, `"created_at":1e400`), ErrMalformedEnvelope, `out of range`},
		{"created_at negative", v1With(t, `"created_at":1719300000.5`, `"created_at":-1`), ErrMalformedEnvelope, `created_at out of range`},
		{"failed_at negative", v1With(t, `"failed_at":1719300001.25`, `"failed_at":-1`), ErrMalformedEnvelope, `failed_at out of range`},
		{"strategy bool", v1With(t, `"strategy":"reference","resolver_id"`, `"strategy":true,"resolver_id"`), ErrMalformedEnvelope, `field "strategy": not a string`},
		{"resolver_id array", v1With(t, `"resolver_id":"default"`, `"resolver_id":["default"]`), ErrMalformedEnvelope, `field "resolver_id": not a string`},
		{"group_id number", v1With(t, `"group_id":"etl_batch"`, `"group_id":7`), ErrMalformedEnvelope, `field "group_id": not a string`},
		{"serialized_task array", v1With(t, `"serialized_task":{"strategy":"reference","payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}}`, `"serialized_task":[]`), ErrMalformedEnvelope, `field "serialized_task": not an object`},
		{"serialized_task null", v1With(t, `"serialized_task":{"strategy":"reference","payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}}`, `"serialized_task":null`), ErrMalformedEnvelope, `not an object`},
		{"serialized_task empty", v1With(t, `"serialized_task":{"strategy":"reference","payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}}`, `"serialized_task":{}`), ErrMalformedEnvelope, `missing strategy`},
		{"payload missing", v1With(t, `,"payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`, ``), ErrMalformedEnvelope, `missing payload`},
		{"payload array", v1With(t, `"payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`, `"payload":[1]`), ErrMalformedEnvelope, `"serialized_task.payload": not an object`},
		{"payload string", v1With(t, `"payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`, `"payload":"{}"`), ErrMalformedEnvelope, `not an object`},
		{"payload null", v1With(t, `"payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}`, `"payload":null`), ErrMalformedEnvelope, `not an object`},
		{"inner strategy number", v1With(t, `{"strategy":"reference","payload"`, `{"strategy":1,"payload"`), ErrMalformedEnvelope, `"serialized_task.strategy": not a string`},
		{"attempt fraction", v1With(t, `"attempt":2`, `"attempt":2.0`), ErrMalformedEnvelope, `field "attempt": not an integer`},
		{"attempt exponent", v1With(t, `"attempt":2`, `"attempt":2e0`), ErrMalformedEnvelope, `field "attempt": not an integer`},
		{"attempt string", v1With(t, `"attempt":2`, `"attempt":"2"`), ErrMalformedEnvelope, `field "attempt": not an integer`},
		{"attempt 20 digits", v1With(t, `"attempt":2`, `"attempt":12345678901234567890`), ErrMalformedEnvelope, `field "attempt": integer out of range`},
		{"max_retries huge negative", v1With(t, `"max_retries":5`, `"max_retries":-99999999999999999999`), ErrMalformedEnvelope, `integer out of range`},
		{"timeout_ms bool", v1With(t, `"timeout_ms":1500`, `"timeout_ms":false`), ErrMalformedEnvelope, `field "timeout_ms": not an integer`},
		{"v string", v1With(t, `"v":1`, `"v":"1"`), ErrMalformedEnvelope, `field "v": not an integer`},
		{"v fraction", v1With(t, `"v":1`, `"v":1.0`), ErrMalformedEnvelope, `field "v": not an integer`},
		{"v null", v1With(t, `"v":1`, `"v":null`), ErrMalformedEnvelope, `field "v": not an integer`},
		{"v negative", v1With(t, `"v":1`, `"v":-1`), ErrMalformedEnvelope, `negative`},
		{"v hugely negative", v1With(t, `"v":1`, `"v":-123456789012345678901234`), ErrMalformedEnvelope, `negative`},

		// Missing fields and values out of range.
		{"missing task_id", v1With(t, `"task_id":"t1",`, ``), ErrMalformedEnvelope, `missing field "task_id"`},
		{"missing strategy", v1With(t, `"strategy":"reference","resolver_id"`, `"resolver_id"`), ErrMalformedEnvelope, `missing field "strategy"`},
		{"missing resolver_id", v1With(t, `"resolver_id":"default",`, ``), ErrMalformedEnvelope, `missing field "resolver_id"`},
		{"missing serialized_task", v1With(t, `"serialized_task":{"strategy":"reference","payload":{"module":"examples.tasks","name":"extract_data","args":{"n":1}}},`, ``), ErrMalformedEnvelope, `missing field "serialized_task"`},
		{"empty object", `{}`, ErrMalformedEnvelope, `missing field "task_id"`},
		{"empty task_id", v1With(t, `"task_id":"t1"`, `"task_id":""`), ErrMalformedEnvelope, "invalid task id"},
		{"task_id with a space", v1With(t, `"task_id":"t1"`, `"task_id":"t 1"`), ErrMalformedEnvelope, "invalid task id"},
		{"task_id with a newline escape", v1With(t, `"task_id":"t1"`, `"task_id":"t\n1"`), ErrMalformedEnvelope, "invalid task id"},
		{"task_id too long", v1With(t, `"task_id":"t1"`, `"task_id":"`+strings.Repeat("x", MaxTaskIDLen+1)+`"`), ErrMalformedEnvelope, "invalid task id"},
		{"empty resolver_id", v1With(t, `"resolver_id":"default"`, `"resolver_id":""`), ErrMalformedEnvelope, "must not be empty"},
		{"empty inner strategy", v1With(t, `{"strategy":"reference","payload"`, `{"strategy":"","payload"`), ErrMalformedEnvelope, "must not be empty"},
		{"strategy mismatch", v1With(t, `"strategy":"reference","resolver_id"`, `"strategy":"pickle","resolver_id"`), ErrMalformedEnvelope, `strategy "pickle" does not match`},
		{"negative attempt", v1With(t, `"attempt":2`, `"attempt":-1`), ErrMalformedEnvelope, "out of range"},
		{"max_retries -2", v1With(t, `"max_retries":5`, `"max_retries":-2`), ErrMalformedEnvelope, "out of range"},
		{"negative timeout", v1With(t, `"timeout_ms":1500`, `"timeout_ms":-1`), ErrMalformedEnvelope, "out of range"},

		// Newer versions are parked as such, even when the rest is not this version's format.
		{"version 3", v1With(t, `"v":1`, `"v":3`), ErrUnsupportedVersion, "version 3, this build reads up to 2"},
		{"version 3 with another layout", `{"v":3,"task":{"id":"t1"},"status":7}`, ErrUnsupportedVersion, "version 3"},
		{"version 3 written last", `{"task_id":1,"Status":[],"v":3}`, ErrUnsupportedVersion, "version 3"},
		{"version 20 digits", v1With(t, `"v":1`, `"v":12345678901234567890`), ErrUnsupportedVersion, "version 12345678901234567890"},
		{"version 3 but not JSON", `{"v":3,`, ErrMalformedEnvelope, "unexpected end"},
		{"version 3 with duplicate keys", `{"v":3,"a":1,"a":2}`, ErrMalformedEnvelope, "duplicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := decodeEnvelope([]byte(tc.input), envLimits())
			require.Nil(t, e)
			require.ErrorIs(t, err, tc.kind)
			var ee *EnvelopeError
			require.ErrorAs(t, err, &ee)
			require.Contains(t, err.Error(), tc.detail)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		})
	}
}

// objectWithKeys returns an object of n keys k0..k(n-1) with an upper-cased copy of dup at the end.
func objectWithKeys(n int, dup string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		b.WriteString(`"k` + string(rune('0'+i/10)) + string(rune('0'+i%10)) + `":1,`)
	}
	b.WriteString(`"` + strings.ToUpper(dup) + `":1}`)
	return strings.ReplaceAll(b.String(), `"k0`, `"k`)
}

// maxErrorLen bounds every error message, however large the hostile input.
const maxErrorLen = 1024

func TestDecodeEnvelopeLimitsAreConfigurable(t *testing.T) {
	t.Parallel()
	raw := []byte(validV1 + strings.Repeat(" ", EnvelopeHeadroom))
	// Stored envelopes are read up to the enqueue limit plus the headroom of the delivery fields.
	_, err := decodeEnvelope(raw, Limits{MaxEnvelopeBytes: len(raw) - EnvelopeHeadroom - 1}.withDefaults())
	require.ErrorIs(t, err, ErrEnvelopeTooLarge)
	_, err = decodeEnvelope(raw, Limits{MaxEnvelopeBytes: len(raw) - EnvelopeHeadroom}.withDefaults())
	require.NoError(t, err)

	// validV1's args object sits four levels deep.
	_, err = decodeEnvelope(raw, Limits{MaxDepth: 3}.withDefaults())
	require.ErrorIs(t, err, ErrMalformedEnvelope)
	_, err = decodeEnvelope(raw, Limits{MaxDepth: 4}.withDefaults())
	require.NoError(t, err)
	deep := []byte(v1With(t, `"args":{"n":1}`, `"args":`+nestedArrays(96)))
	_, err = decodeEnvelope(deep, envLimits())
	require.ErrorIs(t, err, ErrMalformedEnvelope)
	_, err = decodeEnvelope(deep, Limits{MaxDepth: 100}.withDefaults())
	require.NoError(t, err)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	require.Equal(t, Limits{MaxEnvelopeBytes: 1 << 20, MaxDepth: 32}, Limits{}.withDefaults())
	require.Equal(t, Limits{MaxEnvelopeBytes: 300, MaxDepth: 8}, Limits{MaxEnvelopeBytes: 300, MaxDepth: 8}.withDefaults())
	for _, tc := range []struct {
		lim Limits
		ok  bool
	}{
		{Limits{}.withDefaults(), true},
		{Limits{MaxEnvelopeBytes: 256, MaxDepth: 4}, true},
		{Limits{MaxEnvelopeBytes: 255, MaxDepth: 32}, false},
		{Limits{MaxEnvelopeBytes: -1, MaxDepth: 32}, false},
		{Limits{MaxEnvelopeBytes: 1 << 20, MaxDepth: 3}, false},
		{Limits{MaxEnvelopeBytes: 1 << 20, MaxDepth: 1001}, false},
	} {
		err := tc.lim.validate()
		if tc.ok {
			require.NoError(t, err, "%+v", tc.lim)
		} else {
			require.ErrorIs(t, err, ErrInvalidConfig, "%+v", tc.lim)
		}
	}
}

func TestEnvelopeKeepsUnknownFields(t *testing.T) {
	t.Parallel()
	in := v1With(t, `"v":1,`, `"v":1,"zeta":{"big":123456789012345678901234567890,"html":"<a href='x'>&amp;</a>"},`+
		`"alpha" : [ 1 , 2.50 , "\u00e9" ],"trace_id":"abc","nothing":null,`)
	e, err := decodeEnvelope([]byte(in), envLimits())
	require.NoError(t, err)
	require.Len(t, e.extra, 4)
	e0, err := decodeEnvelope([]byte(in), envLimits())
	require.NoError(t, err)
	out, err := e.marshal()
	require.NoError(t, err)
	// Kept after the known fields, sorted, compacted, numbers and text exactly as written.
	require.True(t, strings.HasSuffix(string(out),
		`"failed_at":1719300001.25,"alpha":[1,2.50,"\u00e9"],"nothing":null,"trace_id":"abc",`+
			`"zeta":{"big":123456789012345678901234567890,"html":"<a href='x'>&amp;</a>"}}`), "%s", out)

	// A rewrite after a state change keeps them too.
	e.Attempt++
	e.LastError = "again"
	out2, err := e.marshal()
	require.NoError(t, err)
	again, err := decodeEnvelope(out2, envLimits())
	require.NoError(t, err)
	require.Equal(t, 3, again.Attempt)
	again.Attempt, again.LastError = 2, "boom"
	requireSameEnvelope(t, e0, again)
}

func TestEnvelopeMarshalFieldNamesAndOrder(t *testing.T) {
	t.Parallel()
	e := &envelope{TaskID: "t", Status: StatePending, CreatedAt: 1.5, Strategy: "reference", ResolverID: "default",
		SerializedTask: SerializedTask{Strategy: "reference", Payload: json.RawMessage(`{"module":"m","name":"n"}`)}}
	out, err := e.marshal()
	require.NoError(t, err)
	require.Equal(t, `{"v":1,"task_id":"t","status":"pending","created_at":1.5,"strategy":"reference","resolver_id":"default",`+
		`"serialized_task":{"strategy":"reference","payload":{"module":"m","name":"n"}}}`, string(out),
		"max_retries 0 (the worker's default) is left out, as absent reads as 0")

	e.GroupID, e.Attempt, e.MaxRetries, e.TimeoutMS, e.LastError, e.FailedAt = "g", 1, -1, 10, "e", 2
	out, err = e.marshal()
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(out, &fields))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"v", "task_id", "status", "created_at", "strategy", "resolver_id",
		"serialized_task", "group_id", "attempt", "max_retries", "timeout_ms", "last_error", "failed_at"}, keys)
	require.Equal(t, []string{"v", "task_id", "status", "created_at", "strategy", "resolver_id",
		"serialized_task", "group_id", "attempt", "max_retries", "timeout_ms", "last_error", "failed_at", "meta", "sig", "priority",
		"flow_key"}, envelopeFields[:])

	// Metadata comes last among the known fields, its keys sorted.
	e.Meta = map[string]string{"tracestate": "k=v", "traceparent": "00-x"}
	out, err = e.marshal()
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(out), `"failed_at":2,"meta":{"traceparent":"00-x","tracestate":"k=v"}}`), "%s", out)

	// An empty payload is written as an empty object.
	e.SerializedTask.Payload = nil
	out, err = e.marshal()
	require.NoError(t, err)
	require.Contains(t, string(out), `"payload":{}`)
}

// referenceEnvelope is the wire form written with encoding/json, the reference for the hand-written encoder.
type referenceEnvelope struct {
	V              int               `json:"v"`
	TaskID         string            `json:"task_id"`
	Status         State             `json:"status"`
	CreatedAt      float64           `json:"created_at"`
	Strategy       string            `json:"strategy"`
	ResolverID     string            `json:"resolver_id"`
	SerializedTask SerializedTask    `json:"serialized_task"`
	GroupID        string            `json:"group_id,omitempty"`
	Attempt        int               `json:"attempt,omitempty"`
	MaxRetries     int               `json:"max_retries,omitempty"`
	TimeoutMS      int64             `json:"timeout_ms,omitempty"`
	LastError      string            `json:"last_error,omitempty"`
	FailedAt       float64           `json:"failed_at,omitempty"`
	Meta           map[string]string `json:"meta,omitempty"`
}

func encodingJSON(t *testing.T, e *envelope) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(referenceEnvelope{V: max(e.V, 1), TaskID: e.TaskID, Status: e.Status,
		CreatedAt: e.CreatedAt, Strategy: e.Strategy, ResolverID: e.ResolverID, SerializedTask: e.SerializedTask,
		GroupID: e.GroupID, Attempt: e.Attempt, MaxRetries: e.MaxRetries, TimeoutMS: e.TimeoutMS,
		LastError: e.LastError, FailedAt: e.FailedAt, Meta: e.Meta}))
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestEnvelopeMarshalMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	texts := []string{"", "plain", `quote " and \ backslash`, "<b>&amp;</b> stays", "tab\tnew\nline\rcr",
		"\b\f\x00\x01\x1f\x7f", "é日本😀", "line\u2028para\u2029sep", "bad\xffutf8\xc3", "\xed\xa0\x80 surrogate bytes",
		strings.Repeat("ü", 300)}
	floats := []float64{0, 1, 1.5, 1719300000.123, 1e-7, 1e-6, 123456789e-15, 1e20, 1e21, 1.7976931348623157e308,
		5e-324, 0.000001234}
	for i, s := range texts {
		e := &envelope{TaskID: "t", Status: State(s), CreatedAt: floats[i%len(floats)], Strategy: s,
			ResolverID: "r", GroupID: s, LastError: s, Attempt: i, MaxRetries: i - 1, TimeoutMS: int64(i) << 40,
			FailedAt:       floats[(i+3)%len(floats)],
			SerializedTask: SerializedTask{Strategy: s, Payload: json.RawMessage(" {\n \"a\" : [ 1 , \"x y\\\" z\" ] ,\"<\":\"&\" }\t")}}
		if utf8.ValidString(s) { // metadata values must be valid UTF-8
			e.Meta = map[string]string{"traceparent": s, "b-2": "x" + s, "A.1": s + "<&>", "z_": ""}
		}
		got, err := e.marshal()
		require.NoError(t, err)
		require.Equal(t, encodingJSON(t, e), string(got), "text %q", s)
	}
	for _, f := range floats {
		e := &envelope{TaskID: "t", CreatedAt: f, FailedAt: f, SerializedTask: SerializedTask{Strategy: "s", Payload: json.RawMessage(`{}`)}}
		got, err := e.marshal()
		require.NoError(t, err)
		require.Equal(t, encodingJSON(t, e), string(got), "float %v", f)
	}
}

func TestEnvelopeMarshalNoHTMLEscaping(t *testing.T) {
	t.Parallel()
	e := &envelope{TaskID: "t<1>", Status: StatePending, Strategy: "reference", ResolverID: "default", GroupID: "a&b",
		LastError: "x < y && y > z", SerializedTask: SerializedTask{Strategy: "reference",
			Payload: json.RawMessage(`{"module":"m","name":"n","args":{"html":"<script>&</script>"}}`)}}
	out, err := e.marshal()
	require.NoError(t, err)
	require.NotContains(t, string(out), `\u003c`)
	require.NotContains(t, string(out), `\u0026`)
	require.Contains(t, string(out), `"args":{"html":"<script>&</script>"}`)
	require.Contains(t, string(out), `"last_error":"x < y && y > z"`)
}

func TestEnvelopeMarshalRefuses(t *testing.T) {
	t.Parallel()
	base := func() *envelope {
		return &envelope{TaskID: "t", Strategy: "s", ResolverID: "r", SerializedTask: SerializedTask{Strategy: "s", Payload: json.RawMessage(`{}`)}}
	}
	for name, mutate := range map[string]func(e *envelope){
		"payload array":        func(e *envelope) { e.SerializedTask.Payload = json.RawMessage(`[1]`) },
		"payload invalid JSON": func(e *envelope) { e.SerializedTask.Payload = json.RawMessage(`{"a":}`) },
		"payload trailing":     func(e *envelope) { e.SerializedTask.Payload = json.RawMessage(`{}{}`) },
		"payload duplicate":    func(e *envelope) { e.SerializedTask.Payload = json.RawMessage(`{"a":1,"A":2}`) },
		"NaN created_at":       func(e *envelope) { e.CreatedAt = math.NaN() },
		"infinite failed_at":   func(e *envelope) { e.FailedAt = math.Inf(1) },
		"kept field invalid":   func(e *envelope) { e.extra = map[string]json.RawMessage{"x": json.RawMessage(`{`)} },
		"kept field shadows":   func(e *envelope) { e.extra = map[string]json.RawMessage{"task_id": json.RawMessage(`"u"`)} },
		"meta bad key":         func(e *envelope) { e.Meta = map[string]string{"a b": "v"} },
		"meta invalid UTF-8":   func(e *envelope) { e.Meta = map[string]string{"k": "\xff"} },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := base()
			mutate(e)
			_, err := e.marshal()
			require.ErrorIs(t, err, ErrNotSerializable)
		})
	}
}

// requireSameEnvelope compares two decoded envelopes, payloads and kept fields as JSON values.
func requireSameEnvelope(t testing.TB, want, got *envelope) {
	t.Helper()
	require.True(t, jsonEqual(want.SerializedTask.Payload, got.SerializedTask.Payload), "payload %s != %s", want.SerializedTask.Payload, got.SerializedTask.Payload)
	require.Len(t, got.extra, len(want.extra))
	for k, v := range want.extra {
		require.True(t, jsonEqual(v, got.extra[k]), "kept field %q", k)
	}
	w, g := *want, *got
	w.SerializedTask.Payload, g.SerializedTask.Payload, w.extra, g.extra = nil, nil, nil, nil
	require.Equal(t, w, g)
}

func TestEnvelopeErrorsBoundedForHostileInput(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("é", 300_000) // 600 kB
	for name, input := range map[string]string{
		"huge task_id":          v1With(t, `"task_id":"t1"`, `"task_id":"`+huge+`"`),
		"huge strategy":         v1With(t, `"strategy":"reference","resolver_id"`, `"strategy":"`+huge+`","resolver_id"`),
		"huge case-variant key": v1With(t, `"attempt":2`, `"attempt":2,"TASK_ID`+huge+`":1,"task_id`+huge+`":2`),
		"huge duplicate key":    v1With(t, `"attempt":2`, `"attempt":2,"`+huge+`":1,"`+huge+`":2`),
		"huge unknown inner":    v1With(t, `"payload":{`, `"`+huge+`":1,"payload":{`),
		"huge version":          v1With(t, `"v":1`, `"v":`+strings.Repeat("9", 500_000)),
		"huge number":           v1With(t, `"created_at":1719300000.5`, `"created_at":`+strings.Repeat("9", 500_000)+`e99999`),
		"huge garbage":          `{"task_id":"t1",` + strings.Repeat("\x01", 500_000),
		"huge too large":        strings.Repeat(" ", 2<<20),
		"huge escaped key":      `{"` + strings.Repeat(`\u0041`, 100_000) + `":1,"` + strings.Repeat("a", 100_000) + `":2}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeEnvelope([]byte(input), envLimits())
			require.Error(t, err)
			require.True(t, errorsIsOneOf(err, ErrMalformedEnvelope, ErrEnvelopeTooLarge, ErrUnsupportedVersion), "%v", err)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen, "%.200s", err.Error())
		})
	}
}

func TestEnvelopeError(t *testing.T) {
	t.Parallel()
	err := error(&EnvelopeError{Kind: ErrMalformedEnvelope, Detail: strings.Repeat("x", 100_000)})
	require.ErrorIs(t, err, ErrMalformedEnvelope)
	require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	require.Equal(t, ErrUnsupportedVersion.Error(), (&EnvelopeError{Kind: ErrUnsupportedVersion}).Error())
	require.NotPanics(t, func() { _ = (&EnvelopeError{}).Error() })
}

func TestUnixSeconds(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1719300000123)
	require.Equal(t, 1719300000.123, unixSeconds(now))
	require.True(t, now.Equal(fromUnixSeconds(unixSeconds(now))))
	require.True(t, fromUnixSeconds(0).IsZero())
	require.True(t, fromUnixSeconds(-5).IsZero())
}

func TestJSONEqual(t *testing.T) {
	t.Parallel()
	require.True(t, jsonEqual([]byte(`{"a":1,"b":[1,2]}`), []byte(`{ "b" : [1,2], "a":1 }`)))
	require.True(t, jsonEqual([]byte(`{"n":12345678901234567890123}`), []byte(`{"n":12345678901234567890123}`)))
	require.False(t, jsonEqual([]byte(`{"n":12345678901234567890123}`), []byte(`{"n":12345678901234567890124}`)))
	require.False(t, jsonEqual([]byte(`{"a":1}`), []byte(`{"a":2}`)))
	require.False(t, jsonEqual([]byte(`{`), []byte(`{}`)))
}

// benchEnvelope returns an envelope whose payload is about 200 bytes.
func benchEnvelope(tb testing.TB) *envelope {
	tb.Helper()
	args := `{"customer":"c-000123","items":[1,2,3,4,5],"note":"` + strings.Repeat("x", 77) + `","priority":7}`
	payload := `{"module":"examples.tasks","name":"extract_data","args":` + args + `}`
	if len(payload) < 190 || len(payload) > 210 {
		tb.Fatalf("payload is %d bytes", len(payload))
	}
	return &envelope{V: 1, TaskID: "extract_data-0001", Status: StatePending, CreatedAt: 1719300000.123,
		Strategy: StrategyReference, ResolverID: DefaultResolverID,
		SerializedTask: SerializedTask{Strategy: StrategyReference, Payload: []byte(payload)},
		GroupID:        "etl_batch", MaxRetries: 3, TimeoutMS: 30000}
}

func TestEnvelopeFewAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun needs a quiet heap.
	raw, err := benchEnvelope(t).marshal()
	require.NoError(t, err)
	lim := envLimits()
	decodeAllocs := testing.AllocsPerRun(100, func() { _, _ = decodeEnvelope(raw, lim) })
	require.LessOrEqual(t, decodeAllocs, 5.0, "decode: the envelope, task id, group id and payload")
	env := benchEnvelope(t)
	encodeAllocs := testing.AllocsPerRun(100, func() { _, _ = env.marshal() })
	require.LessOrEqual(t, encodeAllocs, 1.0)
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	env := benchEnvelope(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	raw, err := benchEnvelope(b).marshal()
	if err != nil {
		b.Fatal(err)
	}
	lim := envLimits()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEnvelope(raw, lim); err != nil {
			b.Fatal(err)
		}
	}
}

// benchArgs are the arguments inside benchEnvelope's payload.
type benchArgs struct {
	Customer string  `json:"customer"`
	Items    []int64 `json:"items"`
	Note     string  `json:"note"`
	Priority int     `json:"priority"`
}

// errorsIsOneOf reports whether err is one of the sentinels.
func errorsIsOneOf(err error, sentinels ...error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// metaV1 is validV1 with metadata, as this package writes it.
var metaV1 = strings.TrimSuffix(validV1, "}") +
	`,"meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"rojo=00f067aa0ba902b7"}}`

func TestEnvelopeMeta(t *testing.T) {
	t.Parallel()
	e, err := decodeEnvelope([]byte(metaV1), envLimits())
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":  "rojo=00f067aa0ba902b7",
	}, e.Meta)
	require.Empty(t, e.extra)
	out, err := e.marshal()
	require.NoError(t, err)
	require.Equal(t, metaV1, string(out), "rewritten byte for byte")

	// A retry rewrite keeps it.
	e.Attempt++
	out, err = e.marshal()
	require.NoError(t, err)
	again, err := decodeEnvelope(out, envLimits())
	require.NoError(t, err)
	require.Equal(t, e.Meta, again.Meta)

	// Without metadata, nothing is written.
	plain, err := decodeEnvelope([]byte(validV1), envLimits())
	require.NoError(t, err)
	require.Nil(t, plain.Meta)
	out, err = plain.marshal()
	require.NoError(t, err)
	require.NotContains(t, string(out), `"meta"`)
}

func TestEnvelopeMetaAccepts(t *testing.T) {
	t.Parallel()
	full := make(map[string]string, MaxMetadataEntries)
	var members []string
	for i := range MaxMetadataEntries {
		k := fmt.Sprintf("k%02d", i)
		full[k] = strings.Repeat("v", MaxMetadataValueLen)
		members = append(members, `"`+k+`":"`+full[k]+`"`)
	}
	for _, tc := range []struct {
		name  string
		input string
		want  map[string]string
	}{
		{"empty object", metaWith(`{}`), nil},
		{"white space", metaWith(` { "a" : "b" , "c.d_e-F9" : "" } `), map[string]string{"a": "b", "c.d_e-F9": ""}},
		{"escapes", metaWith(`{"k":"\u00e9\"\ud83d\ude00\n","\u006b2":"x"}`), map[string]string{"k": "é\"😀\n", "k2": "x"}},
		{"longest key", metaWith(`{"` + strings.Repeat("K", MaxMetadataKeyLen) + `":"v"}`), map[string]string{strings.Repeat("K", MaxMetadataKeyLen): "v"}},
		{"escaped value at the limit", metaWith(`{"k":"` + strings.Repeat(`\u0041`, MaxMetadataValueLen) + `"}`), map[string]string{"k": strings.Repeat("A", MaxMetadataValueLen)}},
		{"most entries, longest values", metaWith(`{` + strings.Join(members, ",") + `}`), full},
		{"in a version-0 envelope", strings.TrimSuffix(string(seedV0(t)), "}\n") + `,"meta":{"a":"b"}}`, map[string]string{"a": "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := decodeEnvelope([]byte(tc.input), envLimits())
			require.NoError(t, err)
			require.Equal(t, tc.want, e.Meta)
			out, err := e.marshal()
			require.NoError(t, err)
			again, err := decodeEnvelope(out, envLimits())
			require.NoError(t, err)
			require.Equal(t, tc.want, again.Meta)
		})
	}
}

// metaWith returns validV1 with the given "meta" value.
func metaWith(value string) string {
	return strings.TrimSuffix(validV1, "}") + `,"meta":` + value + `}`
}

func TestEnvelopeMetaRejects(t *testing.T) {
	t.Parallel()
	var many []string
	for i := range MaxMetadataEntries + 1 {
		many = append(many, fmt.Sprintf(`"k%d":"v"`, i))
	}
	for _, tc := range []struct {
		name   string
		input  string
		detail string
	}{
		{"not an object", metaWith(`"traceparent"`), `field "meta": not an object`},
		{"null", metaWith(`null`), `field "meta": not an object`},
		{"array", metaWith(`[{"a":"b"}]`), `field "meta": not an object`},
		{"number value", metaWith(`{"a":1}`), `field "meta": value of "a" is not a string`},
		{"null value", metaWith(`{"a":null}`), `value of "a" is not a string`},
		{"object value", metaWith(`{"a":{"b":"c"}}`), `value of "a" is not a string`},
		{"bool value after a good one", metaWith(`{"a":"b","c":true}`), `value of "c" is not a string`},
		{"too many entries", metaWith(`{` + strings.Join(many, ",") + `}`), `more than 32 entries`},
		{"empty key", metaWith(`{"":"v"}`), `key "" is not 1 to 64 characters`},
		{"key with a space", metaWith(`{"a b":"v"}`), `key "a b"`},
		{"key with a colon", metaWith(`{"a:b":"v"}`), `key "a:b"`},
		{"non-ASCII key", metaWith(`{"é":"v"}`), `key "é"`},
		{"escaped non-ASCII key", metaWith(`{"\u00e9":"v"}`), `key "é"`},
		{"key too long", metaWith(`{"` + strings.Repeat("k", MaxMetadataKeyLen+1) + `":"v"}`), `is not 1 to 64 characters`},
		{"value too long", metaWith(`{"k":"` + strings.Repeat("v", MaxMetadataValueLen+1) + `"}`), `value of "k" is over 1024 bytes`},
		{"duplicate key", metaWith(`{"a":"1","a":"2"}`), `duplicate or case-variant key "a"`},
		{"case-variant key", metaWith(`{"traceparent":"1","TraceParent":"2"}`), `case-variant key "TraceParent"`},
		{"case variant of the field", strings.TrimSuffix(validV1, "}") + `,"Meta":{}}`, `case variant of "meta"`},
		{"duplicate field", metaWith(`{}`)[:len(metaWith(`{}`))-1] + `,"meta":{}}`, `duplicate or case-variant key "meta"`},
		{"invalid UTF-8 value", metaWith("{\"k\":\"\xff\"}"), `invalid UTF-8`},
		{"lone surrogate value", metaWith(`{"k":"\ud800"}`), `surrogate`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := decodeEnvelope([]byte(tc.input), envLimits())
			require.Nil(t, e)
			require.ErrorIs(t, err, ErrMalformedEnvelope)
			require.Contains(t, err.Error(), tc.detail)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		})
	}
}

func TestEnvelopeMetaBoundedForHostileInput(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("é", 300_000)
	for name, input := range map[string]string{
		"huge key":     metaWith(`{"` + huge + `":"v"}`),
		"huge value":   metaWith(`{"k":"` + huge + `"}`),
		"many entries": metaWith(`{"k":"v"` + manyKeys(20_000) + `}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeEnvelope([]byte(input), envLimits())
			require.ErrorIs(t, err, ErrMalformedEnvelope)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen, "%.200s", err.Error())
		})
	}
}

// manyKeys returns n members ,"m0":"v",... to append after a first member.
func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"m%d":"v"`, i)
	}
	return b.String()
}

func TestTaskSpecMetadataValidation(t *testing.T) {
	t.Parallel()
	reg, _ := testRegistry(t)
	base := func(m map[string]string) *TaskSpec {
		return &TaskSpec{TaskID: "t", SerializedTask: &SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(`{"module":"m","name":"n"}`)}, Metadata: m}
	}
	many := make(map[string]string)
	for i := range MaxMetadataEntries + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for name, m := range map[string]map[string]string{
		"too many entries":    many,
		"empty key":           {"": "v"},
		"key with a space":    {"a b": "v"},
		"key with a slash":    {"a/b": "v"},
		"non-ASCII key":       {"ü": "v"},
		"key too long":        {strings.Repeat("k", MaxMetadataKeyLen+1): "v"},
		"value too long":      {"k": strings.Repeat("v", MaxMetadataValueLen+1)},
		"invalid UTF-8 value": {"k": "a\xffb"},
		"case-variant keys":   {"traceparent": "a", "TRACEPARENT": "b"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := base(m).Serialized(reg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		})
	}

	// The bounds themselves are accepted, and the result holds a copy.
	ok := make(map[string]string)
	for i := range MaxMetadataEntries {
		ok[fmt.Sprintf("%s%02d", strings.Repeat("K", MaxMetadataKeyLen-2), i)] = strings.Repeat("ü", MaxMetadataValueLen/2)
	}
	spec := base(ok)
	out, err := spec.Serialized(reg)
	require.NoError(t, err)
	require.Equal(t, ok, out.Metadata)
	out.Metadata["x"] = "y"
	require.NotContains(t, spec.Metadata, "x", "Serialized copies the metadata")
}

func TestEnvelopeMetaFewAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun needs a quiet heap.
	env := benchEnvelope(t)
	env.Meta = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	raw, err := env.marshal()
	require.NoError(t, err)
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { _, _ = env.marshal() }), 1.0, "encode: the buffer only")
	lim := envLimits()
	decodeAllocs := testing.AllocsPerRun(100, func() { _, _ = decodeEnvelope(raw, lim) })
	require.LessOrEqual(t, decodeAllocs, 7.0, "decode: the plain envelope's four, then the map, the value and the member callback (the key is interned)")
}
