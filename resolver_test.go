package taskqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type rtInner struct {
	Label string           `json:"label"`
	Tags  []string         `json:"tags"`
	Score float64          `json:"score"`
	Attrs map[string]int64 `json:"attrs,omitempty"`
}

type rtEmbedded struct {
	Region string `json:"region"`
}

// rtArgs exercises what typed arguments can hold.
type rtArgs struct {
	rtEmbedded
	ID       int64       `json:"id"`
	Min      int64       `json:"min"`
	Unsigned uint64      `json:"unsigned"`
	Text     string      `json:"text"`
	HTML     string      `json:"html"`
	Inner    rtInner     `json:"inner"`
	Items    []rtInner   `json:"items"`
	Ptr      *rtInner    `json:"ptr"`
	Nil      *rtInner    `json:"nil"`
	Matrix   [][]int     `json:"matrix"`
	Fixed    [3]int8     `json:"fixed"`
	Flag     bool        `json:"flag"`
	When     time.Time   `json:"when"`
	Big      *big.Int    `json:"big"`
	Num      json.Number `json:"num"`
	Bytes    []byte      `json:"bytes"`
	Plain    string      // untagged: named by its Go name
	Skipped  string      `json:"-"`
}

// refRoundTrip sends args the way a task travels: Ref, TaskSpec.Serialized, the stored envelope (marshal, decode),
// the registry's Resolve, Run. It returns what the registered function received and the stored bytes.
func refRoundTrip[T any](t *testing.T, args T) (T, []byte) {
	t.Helper()
	reg, ref := testRegistry(t)
	got := make(chan T, 1)
	require.NoError(t, Register(ref, "tests.types", "echo", func(_ context.Context, a T) error { got <- a; return nil }))
	spec, err := NewTaskSpec("t1", Ref("tests.types", "echo", args)).Serialized(reg)
	require.NoError(t, err)
	env := &envelope{TaskID: spec.TaskID, Status: StatePending, Strategy: spec.SerializedTask.Strategy,
		ResolverID: spec.ResolverID, SerializedTask: *spec.SerializedTask}
	raw, err := env.marshal()
	require.NoError(t, err)
	decoded, err := decodeEnvelope(raw, envLimits())
	require.NoError(t, err)
	exe, err := reg.Resolve(decoded.ResolverID, decoded.SerializedTask)
	require.NoError(t, err)
	require.NoError(t, exe.Run(context.Background()))
	return <-got, raw
}

func TestReferenceRoundTripTypedArgs(t *testing.T) {
	t.Parallel()
	huge, ok := new(big.Int).SetString("-123456789012345678901234567890123456789", 10)
	require.True(t, ok)
	want := rtArgs{
		rtEmbedded: rtEmbedded{Region: "eu-west"},
		ID:         math.MaxInt64,
		Min:        math.MinInt64,
		Unsigned:   math.MaxUint64,
		Text:       "héllo wörld 日本語 😀 \u2028 \x00 \"quoted\" \\ tab\t",
		HTML:       `<script>alert("x & y")</script>`,
		Inner:      rtInner{Label: "in", Tags: []string{"a", "", "ü"}, Score: 0.1, Attrs: map[string]int64{"k": -1, "K2": math.MaxInt64}},
		Items:      []rtInner{{Label: "one"}, {Label: "two", Score: 1e-300}},
		Ptr:        &rtInner{Label: "ptr", Score: 9007199254740992},
		Matrix:     [][]int{{1, 2}, {}, {3}},
		Fixed:      [3]int8{-128, 0, 127},
		Flag:       true,
		When:       time.Date(2024, 6, 25, 10, 0, 0, 123456789, time.UTC),
		Big:        huge,
		Num:        json.Number("123456789012345678901234567890.5"),
		Bytes:      []byte{0, 1, 2, 255},
		Plain:      "untagged",
		Skipped:    "never sent",
	}
	got, raw := refRoundTrip(t, want)

	require.Equal(t, huge.String(), got.Big.String())
	require.True(t, want.When.Equal(got.When))
	want.Skipped = ""
	got.Big, want.Big = nil, nil
	got.When, want.When = time.Time{}, time.Time{}
	require.Equal(t, want, got)

	// The stored JSON reads as written: no HTML escaping, exact integers, the seed's field names.
	s := string(raw)
	require.Contains(t, s, `"html":"<script>alert(\"x & y\")</script>"`)
	require.NotContains(t, s, `\u003c`)
	require.NotContains(t, s, `\u0026`)
	require.Contains(t, s, `"id":9223372036854775807`)
	require.Contains(t, s, `"unsigned":18446744073709551615`)
	require.Contains(t, s, `"big":-123456789012345678901234567890123456789`)
	require.Contains(t, s, `"num":123456789012345678901234567890.5`)
	require.Contains(t, s, `"serialized_task":{"strategy":"reference","payload":{"module":"tests.types","name":"echo","args":{`)
	require.NotContains(t, s, "never sent")
}

func TestReferenceRoundTripOtherTypes(t *testing.T) {
	t.Parallel()
	t.Run("int64 max", func(t *testing.T) {
		t.Parallel()
		got, _ := refRoundTrip(t, int64(math.MaxInt64))
		require.Equal(t, int64(math.MaxInt64), got)
	})
	t.Run("unicode string", func(t *testing.T) {
		t.Parallel()
		got, _ := refRoundTrip(t, "Ωμέγα 🚀 <&>")
		require.Equal(t, "Ωμέγα 🚀 <&>", got)
	})
	t.Run("slice of structs", func(t *testing.T) {
		t.Parallel()
		in := []addArgs{{A: 1, B: math.MaxInt64}, {A: math.MinInt64}}
		got, _ := refRoundTrip(t, in)
		require.Equal(t, in, got)
	})
	t.Run("map", func(t *testing.T) {
		t.Parallel()
		in := map[string][]float64{"a": {0.5, -2}, "<b>": nil}
		got, _ := refRoundTrip(t, in)
		require.Equal(t, in, got)
	})
	t.Run("pointer", func(t *testing.T) {
		t.Parallel()
		got, _ := refRoundTrip(t, &addArgs{A: 7})
		require.Equal(t, &addArgs{A: 7}, got)
	})
	t.Run("any keeps large numbers exact", func(t *testing.T) {
		t.Parallel()
		got, _ := refRoundTrip[any](t, map[string]any{"n": json.Number("123456789012345678901234567890")})
		require.Equal(t, map[string]any{"n": json.Number("123456789012345678901234567890")}, got)
	})
	t.Run("no args", func(t *testing.T) {
		t.Parallel()
		got, raw := refRoundTrip[*addArgs](t, nil)
		require.Nil(t, got)
		require.NotContains(t, string(raw), `"args"`)
	})
}

// resolveTestArgs resolves a payload whose args are argsJSON for a function taking T, runs it and returns what it got.
func resolveTestArgs[T any](t *testing.T, argsJSON string) (T, error) {
	t.Helper()
	reg, ref := testRegistry(t)
	var got T
	require.NoError(t, Register(ref, "tests.args", "f", func(_ context.Context, a T) error { got = a; return nil }))
	payload := `{"module":"tests.args","name":"f"`
	if argsJSON != "" {
		payload += `,"args":` + argsJSON
	}
	exe, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(payload + "}")})
	if err != nil {
		var zero T
		return zero, err
	}
	require.NoError(t, exe.Run(context.Background()))
	return got, nil
}

type strictInner struct {
	X int `json:"x"`
}

type strictEmbedded struct {
	Promoted string `json:"promoted"`
}

type strictArgs struct {
	strictEmbedded
	A      int64                  `json:"a"`
	F      float64                `json:"f"`
	F32    float32                `json:"f32"`
	U      uint64                 `json:"u"`
	Inner  strictInner            `json:"inner"`
	List   []strictInner          `json:"list"`
	Floats map[string]float64     `json:"floats"`
	Free   map[string]strictInner `json:"free"`
	Plain  int
	Secret int         `json:"-"`
	hidden int         //nolint:unused // an unexported field: the decoder must leave it alone
	Any    any         `json:"any"`
	Num    json.Number `json:"num"`
	Big    *big.Int    `json:"big"`
	Custom caseless    `json:"custom"`
	When   time.Time   `json:"when"`
}

// caseless decodes itself, so its keys are its own business.
type caseless map[string]int

func (c *caseless) UnmarshalJSON(b []byte) error {
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = m
	return nil
}

func TestReferenceArgsAreStrict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		args  string
		err   error
		check func(t *testing.T, a strictArgs)
	}{
		{"exact names", `{"a":1,"inner":{"x":2},"list":[{"x":3}],"Plain":4,"promoted":"p"}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, int64(1), a.A)
			require.Equal(t, 2, a.Inner.X)
			require.Equal(t, 3, a.List[0].X)
			require.Equal(t, 4, a.Plain)
			require.Equal(t, "p", a.Promoted)
		}},
		{"null args", `null`, nil, func(t *testing.T, a strictArgs) { require.Zero(t, a.A) }},
		{"no args", ``, nil, func(t *testing.T, a strictArgs) { require.Zero(t, a.A) }},
		{"map keys are free", `{"free":{"Any Key":{"x":1},"ANY KEY 2":{"x":2}}}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, 2, a.Free["ANY KEY 2"].X)
		}},
		{"keys inside interface values are free", `{"any":{"Whatever":[1,{"X":2}]}}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, map[string]any{"Whatever": []any{json.Number("1"), map[string]any{"X": json.Number("2")}}}, a.Any)
		}},
		{"custom unmarshalers see their own keys", `{"custom":{"AnyCase":1},"when":"2024-06-25T10:00:00Z"}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, caseless{"AnyCase": 1}, a.Custom)
		}},
		{"case variant of a field", `{"A":1}`, ErrInvalidArgs, nil},
		{"case variant of a nested field", `{"inner":{"X":1}}`, ErrInvalidArgs, nil},
		{"case variant in a slice element", `{"list":[{"x":1},{"X":1}]}`, ErrInvalidArgs, nil},
		{"case variant of a map value's field", `{"free":{"k":{"X":1}}}`, ErrInvalidArgs, nil},
		{"case variant of an untagged field", `{"plain":1}`, ErrInvalidArgs, nil},
		{"case variant of a promoted field", `{"Promoted":"p"}`, ErrInvalidArgs, nil},
		{"Kelvin sign", "{\"\u212a\":1}", ErrInvalidArgs, nil},
		{"unknown field", `{"b":1}`, ErrInvalidArgs, nil},
		{"field tagged -", `{"Secret":1}`, ErrInvalidArgs, nil},
		{"unexported field", `{"hidden":1}`, ErrInvalidArgs, nil},
		{"wrong type", `{"a":"1"}`, ErrInvalidArgs, nil},
		{"array for a struct", `[1]`, ErrInvalidArgs, nil},
		{"fraction for an integer", `{"a":1.5}`, ErrInvalidArgs, nil},

		// Large integers stay exact or fail; they are never rounded.
		{"int64 max", `{"a":9223372036854775807}`, nil, func(t *testing.T, a strictArgs) { require.Equal(t, int64(math.MaxInt64), a.A) }},
		{"20 digits for an int64", `{"a":12345678901234567890}`, ErrInvalidArgs, nil},
		{"int64 overflow by one", `{"a":9223372036854775808}`, ErrInvalidArgs, nil},
		{"uint64 max", `{"u":18446744073709551615}`, nil, func(t *testing.T, a strictArgs) { require.Equal(t, uint64(math.MaxUint64), a.U) }},
		{"20 digits for a uint64", `{"u":99999999999999999999}`, ErrInvalidArgs, nil},
		{"negative for a uint64", `{"u":-1}`, ErrInvalidArgs, nil},
		{"20 digits for a float64", `{"f":12345678901234567891}`, ErrInvalidArgs, nil},
		{"2^53+1 for a float64", `{"f":9007199254740993}`, ErrInvalidArgs, nil},
		{"20 digits in a map of floats", `{"floats":{"x":12345678901234567891}}`, ErrInvalidArgs, nil},
		{"2^24+1 for a float32", `{"f32":16777217}`, ErrInvalidArgs, nil},
		{"2^60 is exact in a float64", `{"f":1152921504606846976}`, nil, func(t *testing.T, a strictArgs) { require.Equal(t, math.Exp2(60), a.F) }},
		{"2^53 is exact in a float64", `{"f":-9007199254740992}`, nil, func(t *testing.T, a strictArgs) { require.Equal(t, -math.Exp2(53), a.F) }},
		{"decimals are a float's business", `{"f":0.1,"f32":1e38}`, nil, func(t *testing.T, a strictArgs) { require.Equal(t, 0.1, a.F) }},
		{"float out of range", `{"f":1e400}`, ErrInvalidArgs, nil},
		{"20 digits into json.Number", `{"num":12345678901234567890}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, json.Number("12345678901234567890"), a.Num)
		}},
		{"40 digits into big.Int", `{"big":1234567890123456789012345678901234567890}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, "1234567890123456789012345678901234567890", a.Big.String())
		}},
		{"20 digits into any", `{"any":12345678901234567890}`, nil, func(t *testing.T, a strictArgs) {
			require.Equal(t, json.Number("12345678901234567890"), a.Any)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolveTestArgs[strictArgs](t, tc.args)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				var re *ResolveError
				require.ErrorAs(t, err, &re)
				require.LessOrEqual(t, len(err.Error()), maxErrorLen)
				return
			}
			require.NoError(t, err)
			tc.check(t, got)
		})
	}
}

func TestReferenceTopLevelArgTypes(t *testing.T) {
	t.Parallel()
	n, err := resolveTestArgs[int64](t, `12345678901234567890`)
	require.ErrorIs(t, err, ErrInvalidArgs, "got %d", n)
	_, err = resolveTestArgs[float64](t, `12345678901234567891`)
	require.ErrorIs(t, err, ErrInvalidArgs)
	num, err := resolveTestArgs[json.Number](t, `12345678901234567890`)
	require.NoError(t, err)
	require.Equal(t, json.Number("12345678901234567890"), num)
	v, err := resolveTestArgs[any](t, `{"N":12345678901234567890}`)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"N": json.Number("12345678901234567890")}, v)
	s, err := resolveTestArgs[[]string](t, `["<a>","é"]`)
	require.NoError(t, err)
	require.Equal(t, []string{"<a>", "é"}, s)
}

// argNode is recursive, through a slice and a pointer.
type argNode struct {
	Name     string    `json:"name"`
	Children []argNode `json:"children"`
	Next     *argNode  `json:"next"`
}

// selfPointer is a legal, if odd, recursive pointer type.
type selfPointer *selfPointer

func TestReferenceRecursiveArgTypes(t *testing.T) {
	t.Parallel()
	got, err := resolveTestArgs[argNode](t, `{"name":"a","children":[{"name":"b","next":{"name":"c","children":[]}}]}`)
	require.NoError(t, err)
	require.Equal(t, "c", got.Children[0].Next.Name)
	_, err = resolveTestArgs[argNode](t, `{"name":"a","children":[{"name":"b","next":{"Name":"c"}}]}`)
	require.ErrorIs(t, err, ErrInvalidArgs)
	require.NotPanics(t, func() { _, _ = resolveTestArgs[selfPointer](t, `null`) })
}

func TestReferencePayloadIsStrict(t *testing.T) {
	t.Parallel()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "m", "n", func(context.Context, addArgs) error { return nil }))
	for _, payload := range []string{
		`{"MODULE":"m","name":"n"}`,
		`{"module":"m","Name":"n"}`,
		`{"module":"m","name":"n","Args":{}}`,
		`{"module":"m","name":"n","extra":1}`,
		`{"module":"m","name":"n","module":"m"}`,
		`{"module":"m","name":"n"}{"module":"x"}`,
		`{"module":"m","name":"n"} x`,
		`{"module":"m"}`,
		`{"name":"n"}`,
		`{}`,
		`{"module":1,"name":"n"}`,
		`{"module":"m","name":null}`,
		`["m","n"]`,
		`null`,
		``,
		`{"module":"m","name":"n",`,
		"{\"module\":\"m\xff\",\"name\":\"n\"}",
		`{"module":"m","name":"n","args":{"a":1,"A":2}}`,
	} {
		_, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(payload)})
		require.ErrorIs(t, err, ErrUnknownTask, "%s", payload)
	}
	// Escapes are fine where they decode to the exact names.
	_, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference,
		Payload: json.RawMessage(` {"mod\u0075le" : "\u006d", "name":"n", "args":{"a":1}} `)})
	require.NoError(t, err)
}

func TestReferenceUnknownAndPathLikeReferences(t *testing.T) {
	t.Parallel()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "examples.tasks", "extract_data", func(context.Context, addArgs) error { return nil }))
	huge := strings.Repeat("a", 1<<20)
	for _, tc := range []struct{ module, name string }{
		{"os/exec", "Command"},
		{"os/exec.Command", "Run"},
		{"examples.tasks", "os/exec.Command"},
		{"../x", "extract_data"},
		{"examples/../tasks", "extract_data"},
		{"..", "x"},
		{"examples..tasks", "extract_data"},
		{".examples", "extract_data"},
		{"examples.", "extract_data"},
		{"examples.tasks", "../extract_data"},
		{"examples.tasks", "extract_data.x"},
		{"examples.tasks", "Extract_Data"},
		{"Examples.Tasks", "extract_data"},
		{"examples.tasks", "missing"},
		{"examples.tasks", ""},
		{"", "extract_data"},
		{" examples.tasks", "extract_data"},
		{"examples.tasks\n", "extract_data"},
		{"examples.tasks", "extract_data\x00"},
		{"exämples", "extract_data"},
		{"examples.tasks", "$(rm -rf /)"},
		{"1examples", "extract_data"},
		{huge, "extract_data"},
		{"examples.tasks", huge},
		{strings.Repeat("a.", 64) + "a", "x"},
	} {
		payload, err := json.Marshal(referencePayload{Module: tc.module, Name: tc.name})
		require.NoError(t, err)
		_, err = reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference, Payload: payload})
		require.ErrorIs(t, err, ErrUnknownTask, "%.80q %.80q", tc.module, tc.name)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		require.NotContains(t, err.Error(), strings.Repeat("a", 200))

		_, err = ref.Call(tc.module, tc.name, addArgs{})
		require.ErrorIs(t, err, ErrUnknownTask)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	}
}

func TestReferenceStrategies(t *testing.T) {
	t.Parallel()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "m", "n", func(context.Context, addArgs) error { return nil }))
	payload := json.RawMessage(`{"module":"m","name":"n"}`)
	for _, strategy := range []string{"pickle", "source", "cloudpickle", "dill", "marshal", "PICKLE", "Source", "Pickle"} {
		_, err := ref.Resolve(SerializedTask{Strategy: strategy, Payload: payload})
		require.ErrorIs(t, err, ErrUnsafeStrategy, strategy)
		_, err = reg.Resolve(DefaultResolverID, SerializedTask{Strategy: strategy, Payload: payload})
		require.ErrorIs(t, err, ErrUnsafeStrategy, strategy)
		// Refused before any resolver is looked up.
		_, err = reg.Resolve("no-such-resolver", SerializedTask{Strategy: strategy, Payload: payload})
		require.ErrorIs(t, err, ErrUnsafeStrategy, strategy)
	}
	for _, strategy := range []string{"", "Reference", "reference ", "python", "pickle5", "json", strings.Repeat("s", 1<<20)} {
		_, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: strategy, Payload: payload})
		require.ErrorIs(t, err, ErrUnknownStrategy, "%.40q", strategy)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	}
	_, err := reg.Resolve(DefaultResolverID, SerializedTask{Strategy: StrategyReference, Payload: payload})
	require.NoError(t, err)
}

func TestIsUnsafeStrategy(t *testing.T) {
	t.Parallel()
	for s, unsafe := range map[string]bool{
		"pickle": true, "source": true, "cloudpickle": true, "dill": true, "marshal": true, "PICKLE": true,
		"CloudPickle": true, "reference": false, "": false, "pickles": false, " pickle": false,
		strings.Repeat("pickle", 1000): false,
	} {
		require.Equal(t, unsafe, IsUnsafeStrategy(s), "%.20q", s)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, addArgs) error { return nil }
	var ref ReferenceResolver // the zero value is usable
	require.NoError(t, Register(&ref, "examples.tasks", "extract_data", noop))
	require.NoError(t, Register(&ref, "examples.tasks", "load_data", noop))
	require.NoError(t, Register(&ref, "examples", "tasks", noop), "a module and a dotted module-name are different keys")

	err := Register(&ref, "examples.tasks", "extract_data", func(context.Context, string) error { return nil })
	require.ErrorIs(t, err, ErrDuplicateTask)

	huge := strings.Repeat("x", 1<<20)
	for _, tc := range []struct{ module, name string }{
		{"", "n"}, {"m", ""}, {"os/exec", "Command"}, {"../x", "n"}, {"m", "a.b"}, {"m", "a b"}, {"m.", "n"},
		{huge, "n"}, {"m", huge}, {strings.Repeat("m", 129), "n"},
	} {
		err := Register(&ref, tc.module, tc.name, noop)
		require.ErrorIs(t, err, ErrInvalidConfig, "%.40q %.40q", tc.module, tc.name)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	}
	require.NoError(t, Register(&ref, strings.Repeat("m", 128), strings.Repeat("n", 128), noop))

	err = Register[addArgs](&ref, "m", "nil_fn", nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	err = Register[addArgs](&ref, huge, "nil_fn", nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	require.ErrorIs(t, Register(nil, "m", "n", noop), ErrInvalidConfig)

	require.PanicsWithError(t, errText(Register(&ref, "examples.tasks", "extract_data", noop)), func() {
		MustRegister(&ref, "examples.tasks", "extract_data", noop)
	})
	require.NotPanics(t, func() { MustRegister(&ref, "examples.tasks", "new_one", noop) })
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestReferenceResolverCall(t *testing.T) {
	t.Parallel()
	ref := NewReferenceResolver()
	var got addArgs
	require.NoError(t, Register(ref, "math", "add", func(_ context.Context, a addArgs) error { got = a; return nil }))

	exe, err := ref.Call("math", "add", addArgs{A: 1, B: 2})
	require.NoError(t, err)
	require.NoError(t, exe.Run(context.Background()))
	require.Equal(t, addArgs{A: 1, B: 2}, got)

	// A call serializes like a Ref of the same function.
	fromCall, err := ref.Serialize(exe)
	require.NoError(t, err)
	fromRef, err := ref.Serialize(Ref("math", "add", addArgs{A: 1, B: 2}))
	require.NoError(t, err)
	require.Equal(t, fromRef, fromCall)
	require.JSONEq(t, `{"module":"math","name":"add","args":{"a":1,"b":2}}`, string(fromRef.Payload))

	_, err = ref.Call("math", "add", &addArgs{})
	require.ErrorIs(t, err, ErrInvalidArgs)
	_, err = ref.Call("math", "add", "1+2")
	require.ErrorIs(t, err, ErrInvalidArgs)
	exe, err = ref.Call("math", "add", nil)
	require.NoError(t, err)
	require.NoError(t, exe.Run(context.Background()))
	require.Equal(t, addArgs{}, got)
	_, err = ref.Call("math", "sub", addArgs{})
	require.ErrorIs(t, err, ErrUnknownTask)

	// A resolved task serializes back to its payload.
	resolved, err := ref.Resolve(fromRef)
	require.NoError(t, err)
	again, err := ref.Serialize(resolved)
	require.NoError(t, err)
	require.Equal(t, fromRef, again)
}

func TestReferenceNotRunnable(t *testing.T) {
	t.Parallel()
	err := Ref("math", "add", nil).Run(context.Background())
	require.ErrorIs(t, err, ErrNotRunnable)
	err = Ref(strings.Repeat("m", 1<<20), strings.Repeat("n", 1<<20), nil).Run(context.Background())
	require.ErrorIs(t, err, ErrNotRunnable)
	require.LessOrEqual(t, len(err.Error()), maxErrorLen)
}

type badJSON struct{}

func (badJSON) MarshalJSON() ([]byte, error) {
	return nil, errors.New(strings.Repeat("very long failure ", 10000))
}

func TestReferenceResolverSerialize(t *testing.T) {
	t.Parallel()
	ref := NewReferenceResolver()
	for name, exe := range map[string]Executable{
		"closure":         Func(func(context.Context) error { return nil }),
		"invalid module":  Ref("os/exec", "Command", nil),
		"invalid name":    Ref("m", "../n", nil),
		"channel args":    Ref("m", "n", make(chan int)),
		"NaN args":        Ref("m", "n", math.NaN()),
		"failing marshal": Ref("m", "n", badJSON{}),
	} {
		_, err := ref.Serialize(exe)
		require.ErrorIs(t, err, ErrNotSerializable, name)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen, name)
	}
	st, err := ref.Serialize(Ref("m", "n", nil))
	require.NoError(t, err)
	require.Equal(t, SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(`{"module":"m","name":"n"}`)}, st)
	st, err = ref.Serialize(Ref("m", "n", map[string]string{"html": "<&>"}))
	require.NoError(t, err)
	require.Equal(t, `{"module":"m","name":"n","args":{"html":"<&>"}}`, string(st.Payload))
}

func TestReferenceResolverConcurrent(t *testing.T) {
	t.Parallel()
	reg, ref := testRegistry(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("f%d", i)
			if err := Register(ref, "conc", name, func(context.Context, addArgs) error { return nil }); err != nil {
				t.Error(err)
				return
			}
			for range 50 {
				st, err := ref.Serialize(Ref("conc", name, addArgs{A: int64(i)}))
				if err == nil {
					_, err = reg.Resolve(DefaultResolverID, st)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestResolveError(t *testing.T) {
	t.Parallel()
	cause := errors.New(strings.Repeat("c", 100_000))
	err := error(&ResolveError{Kind: ErrInvalidArgs, Detail: strings.Repeat("d", 100_000), Err: cause})
	require.ErrorIs(t, err, ErrInvalidArgs)
	require.ErrorIs(t, err, cause)
	require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	require.Equal(t, ErrUnknownTask.Error(), (&ResolveError{Kind: ErrUnknownTask}).Error())
	require.NotPanics(t, func() { _ = (&ResolveError{}).Error() })
	require.Contains(t, (&PanicError{Value: strings.Repeat("p", 100_000)}).Error(), "handler panicked")
	require.LessOrEqual(t, len((&PanicError{Value: strings.Repeat("p", 100_000)}).Error()), maxErrorLen)
}

func BenchmarkResolve(b *testing.B) {
	reg, ref := testRegistry(b)
	if err := Register(ref, "examples.tasks", "extract_data", func(context.Context, benchArgs) error { return nil }); err != nil {
		b.Fatal(err)
	}
	st := benchEnvelope(b).SerializedTask
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Resolve(DefaultResolverID, st); err != nil {
			b.Fatal(err)
		}
	}
}

// embedX1 and embedX2 name their fields by their Go names (tags would trip vet's duplicate-tag check).
type embedX1 struct {
	X int
}

type embedX2 struct {
	X int
}

// ambiguousArgs embeds two fields named X at the same depth: encoding/json drops both.
type ambiguousArgs struct {
	embedX1
	embedX2
	Y int `json:"y"`
}

// shadowingArgs has an X of its own, which hides the embedded one.
type shadowingArgs struct {
	embedX1
	X string
}

func TestReferenceArgsWithoutInterfaces(t *testing.T) {
	t.Parallel()
	// addArgs holds no interface, so it decodes through the plain path: the shape check alone keeps it strict.
	got, err := resolveTestArgs[addArgs](t, `{"a":1,"b":-2}`)
	require.NoError(t, err)
	require.Equal(t, addArgs{A: 1, B: -2}, got)
	for _, args := range []string{`{"A":1}`, `{"a":1,"B":2}`, `{"a":1,"c":2}`, `{"a":1.5}`, `{"a":"1"}`, `[1,2]`,
		`{"a":99999999999999999999}`} {
		_, err := resolveTestArgs[addArgs](t, args)
		require.ErrorIs(t, err, ErrInvalidArgs, args)
	}

	_, err = resolveTestArgs[ambiguousArgs](t, `{"X":1}`)
	require.ErrorIs(t, err, ErrInvalidArgs, "an ambiguous name is unknown to encoding/json")
	amb, err := resolveTestArgs[ambiguousArgs](t, `{"y":1}`)
	require.NoError(t, err)
	require.Equal(t, 1, amb.Y)

	sh, err := resolveTestArgs[shadowingArgs](t, `{"X":"outer"}`)
	require.NoError(t, err)
	require.Equal(t, "outer", sh.X)
	require.Zero(t, sh.embedX1.X)
}

func TestReferenceRoundTripThroughRedis(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	got := make(chan rtInner, 1)
	require.NoError(t, Register(s.ref, "tests.redis", "echo", func(_ context.Context, a rtInner) error { got <- a; return nil }))
	want := rtInner{Label: `<b>"héllo" & 😀</b>`, Tags: []string{"x", "日本"}, Score: -0.25,
		Attrs: map[string]int64{"max": math.MaxInt64, "min": math.MinInt64}}
	spec := NewTaskSpec("rt-1", Ref("tests.redis", "echo", want))
	spec.GroupID = "etl_batch"
	require.NoError(t, s.q.Enqueue(ctx, spec))

	stored, err := envelopeOf(ctx, s.q, "rt-1")
	require.NoError(t, err)
	require.NotContains(t, stored, `\u003c`)
	require.Contains(t, stored, `"label":"<b>\"héllo\" & 😀</b>"`)
	require.Contains(t, stored, `"max":9223372036854775807`)
	requireSeedRecord(t, s, "rt-1", stored)

	ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: time.Second})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, "etl_batch", ds[0].Spec.GroupID)
	require.NoError(t, ds[0].Spec.Executable.Run(ctx))
	require.Equal(t, want, <-got)
	require.NoError(t, s.q.Ack(ctx, ds[0]))
}

// TestReferencePayloadMatchesEncodingJSON checks that the hand-written reference payload is byte for byte what
// encoding/json writes for the same referencePayload (the wire format does not change).
func TestReferencePayloadMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	_, ref := testRegistry(t)
	for _, args := range []any{nil, addArgs{A: 1, B: -2}, map[string]any{"s": "<a&b> \u2028 \"q\"", "n": []int{1, 2}}, (*addArgs)(nil), json.RawMessage(`{ "x" : [ 1 , 2 ] }`), "text"} {
		st, err := ref.Serialize(Ref("mod.sub", "fn_1", args))
		require.NoError(t, err)
		p := referencePayload{Module: "mod.sub", Name: "fn_1"}
		if args != nil {
			raw, err := marshalNoEscape(args)
			require.NoError(t, err)
			if string(raw) != "null" {
				p.Args = raw
			}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(p))
		require.Equal(t, strings.TrimSuffix(buf.String(), "\n"), string(st.Payload), "args %#v", args)
	}
}
