package taskqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzLimits are small, so that the fuzzer reaches the size and depth limits.
var fuzzLimits = Limits{MaxEnvelopeBytes: 4096, MaxDepth: 12}

// envelopeSeeds are valid envelopes (v0 and v1) and hostile ones.
func envelopeSeeds(tb testing.TB) []string {
	seed, err := os.ReadFile("testdata/seed_v0.json")
	if err != nil {
		tb.Fatal(err)
	}
	bench, err := benchEnvelope(tb).marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return []string{
		string(seed),
		validV1,
		string(bench),
		`{"task_id":"t","strategy":"reference","resolver_id":"default","serialized_task":{"strategy":"reference","payload":{}}}`,
		`{"v":1,"task_id":"t","status":"retry","created_at":0,"strategy":"","resolver_id":"r","serialized_task":{"strategy":"s","payload":{"a":[1,2.5e-3,"\u00e9\ud83d\ude00",null,true]}},"group_id":null,"last_error":null,"x":{"y":[]}}`,
		strings.Replace(validV1, `"v":1`, `"v":2`, 1),
		strings.Replace(validV1, `"v":1`, `"v":3`, 1),
		`{"v":2,"created_at":1719300000.5,"resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"m","name":"f"}}}`,
		`{"v":2,"task_id":"","serialized_task":{"strategy":"s","payload":{}},"resolver_id":"r","status":"pending","strategy":"s"}`,
		strings.Replace(validV1, `"v":1`, `"v":123456789012345678901234567890`, 1),
		strings.Replace(validV1, `"v":1`, `"v":-1`, 1),
		strings.Replace(validV1, `"status":"pending"`, `"status":"ready"`, 1),
		strings.Replace(validV1, `"status":"pending"`, `"status":"pending","Status":"dead"`, 1),
		strings.Replace(validV1, `"status":"pending"`, `"status":"pending","st\u0061tus":"dead"`, 1),
		strings.Replace(validV1, `"group_id"`, `"GROUP_ID"`, 1),
		strings.Replace(validV1, `"boom"`, `"\ud800"`, 1),
		strings.Replace(validV1, `"boom"`, "\"\xff\"", 1),
		strings.Replace(validV1, `{"n":1}`, `{"n":12345678901234567890123,"N":1}`, 1),
		strings.Replace(validV1, `{"n":1}`, nestedArrays(20), 1),
		strings.Replace(validV1, `"attempt":2`, `"attempt":2.0`, 1),
		strings.Replace(validV1, `"created_at":1719300000.5`, `"created_at":1e400`, 1),
		strings.Replace(validV1, `"payload":{`, `"payload":[{`, 1),
		metaV1,
		strings.Replace(metaV1, `"tracestate"`, `"TraceParent"`, 1),
		strings.Replace(metaV1, `"rojo=00f067aa0ba902b7"`, `1`, 1),
		strings.Replace(metaV1, `"tracestate"`, `"trace state"`, 1),
		strings.Replace(metaV1, `"rojo=00f067aa0ba902b7"`, `"\u00e9\ud83d\ude00"`, 1),
		strings.Replace(validV1, `"v":1`, `"v":1,"meta":{}`, 1),
		strings.Replace(validV1, `"v":1`, `"v":1,"meta":null`, 1),
		validV1 + " {}",
		signedV1,
		strings.Replace(signedV1, `"kid":"k1"`, `"kid":"k\u0031"`, 1),
		strings.Replace(signedV1, `"alg":"HS256"`, `"alg":"none"`, 1),
		strings.Replace(signedV1, `"mac":"`, `"mac":"A`, 1),
		strings.Replace(signedV1, `"mac":"A`, `"mac":"`, 1),
		strings.Replace(signedV1, `AAAQ"`, `AAAR"`, 1),
		strings.Replace(signedV1, `,"kid":"k1"`, ``, 1),
		strings.Replace(signedV1, `"sig":{`, `"sig":{"x":1,`, 1),
		strings.Replace(signedV1, `"sig":{`, `"SIG":{`, 1),
		strings.Replace(validV1, `"v":1`, `"v":1,"sig":null`, 1),
		`{"v":1,"a":1,"a":2}`,
		`{"k":1,"\u212a":2}`,
		`[]`,
		`"`,
		``,
	}
}

// signedV1 is validV1 with a well-formed signature (not a valid MAC of it: the decoder does not verify).
var signedV1 = strings.TrimSuffix(validV1, "}") +
	`,"sig":{"alg":"HS256","kid":"k1","mac":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ"}}`

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeEnvelope(t, data)
	})
}

// checkDecodeEnvelope holds the decoder's invariants for any input.
func checkDecodeEnvelope(t *testing.T, data []byte) {
	t.Helper()
	input := bytes.Clone(data)
	e, err := decodeEnvelope(data, fuzzLimits)
	if !bytes.Equal(input, data) {
		t.Fatalf("decode changed its input")
	}
	if err != nil {
		if e != nil {
			t.Fatalf("an envelope with an error")
		}
		if !errorsIsOneOf(err, ErrMalformedEnvelope, ErrEnvelopeTooLarge, ErrUnsupportedVersion) {
			t.Fatalf("error %v is none of the envelope sentinels", err)
		}
		var ee *EnvelopeError
		if !errors.As(err, &ee) {
			t.Fatalf("error %v is not an *EnvelopeError", err)
		}
		if n := len(err.Error()); n > maxErrorLen {
			t.Fatalf("error message of %d bytes: %.200s", n, err.Error())
		}
		return
	}
	// Accepted: it is JSON that encoding/json reads, an object, and its payload is an object.
	if !json.Valid(data) {
		t.Fatalf("accepted invalid JSON %q", data)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		t.Fatalf("accepted what encoding/json cannot read as an object: %q", data)
	}
	if validateJSON(e.SerializedTask.Payload, fuzzLimits.MaxDepth) != nil || e.SerializedTask.Payload[0] != '{' {
		t.Fatalf("accepted a payload that is not a valid object: %q", e.SerializedTask.Payload)
	}
	if e.V < 0 || e.V > EnvelopeVersion {
		t.Fatalf("accepted version %d", e.V)
	}
	// Round trip: re-marshalled, it decodes to an equal envelope, and the second rewrite is byte for byte the first.
	out, err := e.marshal()
	if err != nil {
		t.Fatalf("accepted envelope does not marshal: %v", err)
	}
	again, err := decodeEnvelope(out, Limits{MaxEnvelopeBytes: DefaultMaxEnvelopeBytes, MaxDepth: fuzzLimits.MaxDepth})
	if err != nil {
		t.Fatalf("re-marshalled envelope does not decode: %v\nin:  %q\nout: %q", err, data, out)
	}
	if again.V != max(e.V, 1) { // a rewrite keeps the version; version 0 becomes 1
		t.Fatalf("rewritten as version %d", again.V)
	}
	again.V = e.V
	if !sameEnvelope(e, again) {
		t.Fatalf("round trip changed the envelope\nin:  %q\nout: %q\n%#v\n%#v", data, out, e, again)
	}
	out2, err := again.marshal()
	if err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("rewrite is not stable (%v)\n1: %q\n2: %q", err, out, out2)
	}
}

// sameEnvelope compares two envelopes, payloads and kept fields as JSON values.
func sameEnvelope(a, b *envelope) bool {
	if !jsonEqual(a.SerializedTask.Payload, b.SerializedTask.Payload) || len(a.extra) != len(b.extra) {
		return false
	}
	for k, v := range a.extra {
		w, ok := b.extra[k]
		if !ok || !jsonEqual(v, w) {
			return false
		}
	}
	x, y := *a, *b
	x.SerializedTask.Payload, y.SerializedTask.Payload, x.extra, y.extra = nil, nil, nil, nil
	return reflect.DeepEqual(x, y)
}

func FuzzValidateJSON(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add([]byte(s))
	}
	for _, s := range []string{`0`, `-1.5e+10`, `"\"\\\/\b\f\n\r\t\u0041"`, `[1,[2,[3]]]`, `{"a":{"b":{}}}`, `true`,
		`null`, ` [ ] `, `{"ß":1,"ss":2}`, `{"σ":1,"ς":2}`, `"\ud83d\ude00"`, `"\udc00\ud800"`, "\"\xed\xa0\x80\"",
		`01`, `1.`, `[1,]`, `{"a" 1}`, "\xef\xbb\xbf1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const depth = 8
		err := validateJSON(data, depth)
		std := json.Valid(data)
		if err == nil && !std {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err != nil && len(err.Error()) > maxErrorLen {
			t.Fatalf("error message of %d bytes", len(err.Error()))
		}
		if !std {
			return
		}
		// encoding/json accepts it: we refuse it exactly when it is stricter territory.
		reason := stricterReason(t, data, depth)
		if (err == nil) != (reason == "") {
			t.Fatalf("validateJSON says %v, oracle says %q, for %q", err, reason, data)
		}
	})
}

// stricterReason says why validateJSON must refuse JSON that encoding/json accepts, or "" if it must not: a
// duplicate or case-variant key, invalid UTF-8, an unpaired surrogate escape, nesting deeper than maxDepth. It
// is written independently of the scanner, on encoding/json's tokens.
func stricterReason(t *testing.T, data []byte, maxDepth int) string {
	if !utf8.Valid(data) {
		return "invalid UTF-8"
	}
	if unpairedSurrogate(data) {
		return "unpaired surrogate"
	}
	type frame struct {
		object  bool
		wantKey bool
		keys    []string
	}
	var stack []*frame
	dup, depth := false, 0
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("encoding/json tokens of valid JSON %q: %v", data, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if key, ok := tok.(string); ok {
				for _, k := range top.keys {
					dup = dup || strings.EqualFold(k, key)
				}
				top.keys = append(top.keys, key)
				top.wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			stack = append(stack, &frame{object: tok == json.Delim('{'), wantKey: true})
			depth = max(depth, len(stack))
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
		default:
			if top != nil && top.object {
				top.wantKey = true
			}
		}
	}
	switch {
	case dup:
		return "duplicate key"
	case depth > maxDepth:
		return "too deep"
	}
	return ""
}

// unpairedSurrogate reports a \u escape of a surrogate that is not a high half followed by a low half.
func unpairedSurrogate(data []byte) bool {
	hex := func(i int) (rune, bool) {
		if i+4 > len(data) {
			return 0, false
		}
		var r rune
		for _, c := range data[i : i+4] {
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				v = c - 'A' + 10
			default:
				return 0, false
			}
			r = r*16 + rune(v)
		}
		return r, true
	}
	inString := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\' && i+1 < len(data) && data[i+1] == 'u':
			r, _ := hex(i + 2)
			i += 5
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return true
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 < len(data) && data[i+1] == '\\' && data[i+2] == 'u' {
					if lo, ok := hex(i + 3); ok && lo >= 0xDC00 && lo <= 0xDFFF {
						i += 6
						continue
					}
				}
				return true
			}
		case c == '\\':
			i++
		}
	}
	return false
}

// TestFuzzSeeds runs the fuzz invariants over the seeds in every plain test run.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	for _, s := range envelopeSeeds(t) {
		checkDecodeEnvelope(t, []byte(s))
	}
}

// fuzzArgs is a closed argument type (no interface anywhere): it decodes through the plain path.
type fuzzArgs struct {
	ID    int64              `json:"id"`
	Score float64            `json:"score"`
	Tags  []string           `json:"tags"`
	Next  *fuzzArgs          `json:"next"`
	Attrs map[string]float32 `json:"attrs"`
	Plain uint8
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		`{"module":"fz","name":"closed","args":{"id":1,"score":2.5,"tags":["a"],"next":{"id":2},"attrs":{"k":1},"Plain":3}}`,
		`{"module":"fz","name":"loose","args":{"a":1,"f":0.5,"any":{"X":[1,2]},"num":123456789012345678901,"big":-1,"custom":{"Q":1},"when":"2024-06-25T10:00:00Z","inner":{"x":1},"list":[{"x":2}],"free":{"K":{"x":3}},"floats":{"a":1e3}}}`,
		`{"module":"fz","name":"closed","args":{"ID":1}}`,
		`{"module":"fz","name":"closed","args":{"score":12345678901234567891}}`,
		`{"module":"fz","name":"loose","args":{"A":1}}`,
		`{"module":"fz","name":"closed","args":null}`,
		`{"mod\u0075le":"fz","name":"closed"}`,
		`{"module":"os/exec","name":"Command"}`,
		`{"module":"fz","name":"closed","args":{"next":{"next":{"next":{"tags":["\ud83d\ude00"]}}}}}`,
	} {
		f.Add(s)
	}
	reg, ref := testRegistry(f)
	MustRegister(ref, "fz", "closed", func(context.Context, fuzzArgs) error { return nil })
	MustRegister(ref, "fz", "loose", func(context.Context, strictArgs) error { return nil })
	f.Fuzz(func(t *testing.T, payload string) {
		exe, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(payload)})
		if err != nil {
			if !errorsIsOneOf(err, ErrUnknownTask, ErrInvalidArgs) {
				t.Fatalf("error %v is neither ErrUnknownTask nor ErrInvalidArgs", err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
			return
		}
		if err := exe.Run(context.Background()); err != nil {
			t.Fatalf("run: %v", err)
		}
		// Accepted: never laxer than encoding/json with DisallowUnknownFields and UseNumber.
		call := exe.(*boundCall)
		if !json.Valid([]byte(payload)) {
			t.Fatalf("accepted invalid JSON %q", payload)
		}
		raw, _ := call.Args.(json.RawMessage)
		if len(raw) == 0 {
			return
		}
		var target any = new(fuzzArgs)
		if call.Name == "loose" {
			target = new(strictArgs)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		dec.UseNumber()
		if err := dec.Decode(target); err != nil {
			t.Fatalf("accepted args that encoding/json refuses (%v): %s", err, raw)
		}
	})
}
