package taskqueue

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTaskSpecSerialized(t *testing.T) {
	t.Parallel()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "examples.tasks", "extract_data", func(context.Context, addArgs) error { return nil }))

	spec := &TaskSpec{TaskID: "extract_data", Executable: Ref("examples.tasks", "extract_data", addArgs{A: 1}), GroupID: "etl_batch", MaxRetries: 3}
	out, err := spec.Serialized(reg)
	require.NoError(t, err)
	require.Nil(t, out.Executable)
	require.Equal(t, DefaultResolverID, out.ResolverID)
	require.Equal(t, StrategyReference, out.SerializedTask.Strategy)
	require.JSONEq(t, `{"module":"examples.tasks","name":"extract_data","args":{"a":1,"b":0}}`, string(out.SerializedTask.Payload))
	require.Equal(t, "etl_batch", out.GroupID)
	require.Equal(t, 3, out.MaxRetries)
	require.NotNil(t, spec.Executable, "the original is untouched")
	require.Nil(t, spec.SerializedTask)
	require.Empty(t, spec.ResolverID)

	// An already serialized spec is copied, deeply, without the registry.
	again, err := out.Serialized(nil)
	require.NoError(t, err)
	require.Equal(t, out, again)
	require.NotSame(t, out.SerializedTask, again.SerializedTask)
	again.SerializedTask.Payload[2] = 'X'
	require.JSONEq(t, `{"module":"examples.tasks","name":"extract_data","args":{"a":1,"b":0}}`, string(out.SerializedTask.Payload))

	// A spec holding both keeps its serialized form and drops the executable.
	both := &TaskSpec{TaskID: "t", Executable: Func(func(context.Context) error { return nil }), ResolverID: "custom",
		SerializedTask: &SerializedTask{Strategy: "custom", Payload: json.RawMessage(`{"x":1}`)}}
	out, err = both.Serialized(reg)
	require.NoError(t, err)
	require.Nil(t, out.Executable)
	require.Equal(t, "custom", out.ResolverID)
}

func TestTaskSpecSerializedRefuses(t *testing.T) {
	t.Parallel()
	reg, _ := testRegistry(t)
	require.NoError(t, reg.Register("pickler", fixedStrategyResolver{strategy: "pickle"}))
	require.NoError(t, reg.Register("blank", fixedStrategyResolver{strategy: ""}))
	serialized := func(strategy, payload string) *SerializedTask {
		return &SerializedTask{Strategy: strategy, Payload: json.RawMessage(payload)}
	}
	huge := strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name string
		spec *TaskSpec
		reg  *ResolverRegistry
		err  error
	}{
		{"nil spec", nil, reg, ErrInvalidConfig},
		{"nothing to serialize", &TaskSpec{TaskID: "t"}, reg, ErrInvalidConfig},
		{"closure", &TaskSpec{Executable: Func(func(context.Context) error { return nil })}, reg, ErrNotSerializable},
		{"invalid reference", &TaskSpec{Executable: Ref("os/exec", "Command", nil)}, reg, ErrNotSerializable},
		{"unknown resolver", &TaskSpec{Executable: Ref("m", "n", nil), ResolverID: "missing"}, reg, ErrUnknownResolver},
		{"path-like resolver", &TaskSpec{Executable: Ref("m", "n", nil), ResolverID: "../default"}, reg, ErrUnknownResolver},
		{"huge resolver id", &TaskSpec{SerializedTask: serialized("reference", `{}`), ResolverID: huge}, reg, ErrUnknownResolver},
		{"nil registry", &TaskSpec{Executable: Ref("m", "n", nil)}, nil, ErrUnknownResolver},
		{"resolver writes pickle", &TaskSpec{Executable: Ref("m", "n", nil), ResolverID: "pickler"}, reg, ErrUnsafeStrategy},
		{"resolver writes no strategy", &TaskSpec{Executable: Ref("m", "n", nil), ResolverID: "blank"}, reg, ErrNotSerializable},
		{"pre-serialized pickle", &TaskSpec{SerializedTask: serialized("pickle", `{"data":"gASV"}`)}, reg, ErrUnsafeStrategy},
		{"pre-serialized source", &TaskSpec{SerializedTask: serialized("SOURCE", `{"code":"import os"}`)}, nil, ErrUnsafeStrategy},
		{"empty strategy", &TaskSpec{SerializedTask: serialized("", `{}`)}, reg, ErrNotSerializable},
		{"payload array", &TaskSpec{SerializedTask: serialized("reference", `[]`)}, reg, ErrNotSerializable},
		{"payload invalid", &TaskSpec{SerializedTask: serialized("reference", `{"a":`)}, reg, ErrNotSerializable},
		{"payload duplicate keys", &TaskSpec{SerializedTask: serialized("reference", `{"a":1,"a":2}`)}, reg, ErrNotSerializable},
		{"payload invalid UTF-8", &TaskSpec{SerializedTask: serialized("reference", "{\"a\":\"\xff\"}")}, reg, ErrNotSerializable},
		{"payload trailing data", &TaskSpec{SerializedTask: serialized("reference", `{} {}`)}, reg, ErrNotSerializable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := tc.spec.Serialized(tc.reg)
			require.Nil(t, out)
			require.ErrorIs(t, err, tc.err)
			require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		})
	}
	// An empty payload is fine: it is written as {}.
	out, err := (&TaskSpec{SerializedTask: &SerializedTask{Strategy: "custom"}}).Serialized(nil)
	require.NoError(t, err)
	require.Empty(t, out.SerializedTask.Payload)
}

func TestTaskSpecNew(t *testing.T) {
	t.Parallel()
	exe := Ref("m", "n", nil)
	require.Equal(t, &TaskSpec{TaskID: "id", Executable: exe}, NewTaskSpec("id", exe))
}

func TestTaskSpecFuncAdapter(t *testing.T) {
	t.Parallel()
	called := false
	require.NoError(t, Func(func(context.Context) error { called = true; return nil }).Run(context.Background()))
	require.True(t, called)
}

func TestValidateTaskID(t *testing.T) {
	t.Parallel()
	for id, ok := range map[string]bool{
		"extract_data": true, "a": true, "ünïcode-日本": true, "with:colons/and.dots{}": true,
		strings.Repeat("x", MaxTaskIDLen):     true,
		"":                                    false,
		strings.Repeat("x", MaxTaskIDLen+1):   false,
		"a b":                                 false,
		"a\tb":                                false,
		"a\nb":                                false,
		"a\x00b":                              false,
		"a\u00a0b":                            false, // no-break space
		"a\u200bb":                            false, // zero-width space is not printable
		"bad\xffutf8":                         false,
		"\ufffd":                              false,
		strings.Repeat("é", MaxTaskIDLen/2+1): false, // the limit counts bytes
	} {
		err := validateTaskID(id)
		if ok {
			require.NoError(t, err, "%q", id)
			continue
		}
		require.ErrorIs(t, err, ErrInvalidTaskID, "%.40q", id)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
	}
}
