package taskqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixedStrategyResolver is a custom resolver with its own strategy.
type fixedStrategyResolver struct{ strategy string }

func (s fixedStrategyResolver) Serialize(Executable) (SerializedTask, error) {
	return SerializedTask{Strategy: s.strategy, Payload: json.RawMessage(`{}`)}, nil
}

func (s fixedStrategyResolver) Resolve(st SerializedTask) (Executable, error) {
	if st.Strategy != s.strategy {
		return nil, &ResolveError{Kind: ErrUnknownStrategy, Detail: quote(st.Strategy)}
	}
	return Func(func(context.Context) error { return nil }), nil
}

func TestResolverRegistryRegisterAndLookup(t *testing.T) {
	t.Parallel()
	reg := NewResolverRegistry()
	ref := NewReferenceResolver()
	custom := fixedStrategyResolver{strategy: "custom"}
	require.NoError(t, reg.Register(DefaultResolverID, ref))
	require.NoError(t, reg.Register("billing.v2", custom))
	require.NoError(t, reg.Register("A-1_b.c", custom), "one resolver may serve several ids")

	got, err := reg.Lookup(DefaultResolverID)
	require.NoError(t, err)
	require.Same(t, ref, got)
	got, err = reg.Lookup("billing.v2")
	require.NoError(t, err)
	require.Equal(t, custom, got)
	require.Equal(t, []string{"A-1_b.c", "billing.v2", "default"}, reg.IDs())

	// Resolve goes to the resolver registered under the task's id.
	exe, err := reg.Resolve("billing.v2", SerializedTask{Strategy: "custom", Payload: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.NoError(t, exe.Run(context.Background()))
	_, err = reg.Resolve(DefaultResolverID, SerializedTask{Strategy: "custom", Payload: json.RawMessage(`{}`)})
	require.ErrorIs(t, err, ErrUnknownStrategy)
}

func TestResolverRegistryRefusesDuplicates(t *testing.T) {
	t.Parallel()
	reg := NewResolverRegistry()
	first := NewReferenceResolver()
	require.NoError(t, reg.Register("default", first))
	err := reg.Register("default", NewReferenceResolver())
	require.ErrorIs(t, err, ErrDuplicateResolver)
	err = reg.Register("default", first)
	require.ErrorIs(t, err, ErrDuplicateResolver, "even the same resolver")
	got, err := reg.Lookup("default")
	require.NoError(t, err)
	require.Same(t, first, got, "the first registration stays")
	require.Panics(t, func() { reg.MustRegister("default", first) })
	require.NotPanics(t, func() { reg.MustRegister("other", first) })
}

func TestResolverRegistryRefusesBadIDs(t *testing.T) {
	t.Parallel()
	reg := NewResolverRegistry()
	huge := strings.Repeat("r", 1<<20)
	for _, id := range []string{
		"", " ", "default ", " default", "../x", "..", ".hidden", "-flag", "_x", "a/b", `a\b`, "os/exec.Command",
		"a:b", "a b", "a\nb", "a\x00", "{tag}", "x*", "défault", "😀", strings.Repeat("r", 65), huge,
	} {
		err := reg.Register(id, NewReferenceResolver())
		require.ErrorIs(t, err, ErrInvalidConfig, "%.40q", id)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)

		_, err = reg.Lookup(id)
		require.ErrorIs(t, err, ErrUnknownResolver, "%.40q", id)
		require.LessOrEqual(t, len(err.Error()), maxErrorLen)
		_, err = reg.Resolve(id, SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(`{}`)})
		require.ErrorIs(t, err, ErrUnknownResolver)
		var re *ResolveError
		require.ErrorAs(t, err, &re)
	}
	require.Empty(t, reg.IDs())
	for _, id := range []string{"a", "0", "default", "A.b-c_d", strings.Repeat("r", 64)} {
		require.NoError(t, reg.Register(id, NewReferenceResolver()), id)
	}
}

func TestResolverRegistryRefusesNilResolvers(t *testing.T) {
	t.Parallel()
	reg := NewResolverRegistry()
	require.ErrorIs(t, reg.Register("a", nil), ErrInvalidConfig)
	require.ErrorIs(t, reg.Register("b", (*ReferenceResolver)(nil)), ErrInvalidConfig)
	require.Empty(t, reg.IDs())
}

func TestResolverRegistryUnknownResolver(t *testing.T) {
	t.Parallel()
	reg, _ := testRegistry(t)
	_, err := reg.Lookup("missing")
	require.ErrorIs(t, err, ErrUnknownResolver)
	require.Contains(t, err.Error(), `"missing" is not registered`)
	_, err = reg.Resolve("missing", SerializedTask{Strategy: StrategyReference, Payload: json.RawMessage(`{}`)})
	require.ErrorIs(t, err, ErrUnknownResolver)
	_, err = reg.Resolve("missing", SerializedTask{Strategy: "pickle"})
	require.ErrorIs(t, err, ErrUnsafeStrategy, "unsafe strategies are refused before the lookup")
}

func TestResolverRegistryZeroAndNil(t *testing.T) {
	t.Parallel()
	var zero ResolverRegistry
	require.NoError(t, zero.Register("default", NewReferenceResolver()))
	require.Equal(t, []string{"default"}, zero.IDs())

	var none *ResolverRegistry
	_, err := none.Lookup("default")
	require.ErrorIs(t, err, ErrUnknownResolver)
	_, err = none.Resolve("default", SerializedTask{Strategy: StrategyReference})
	require.ErrorIs(t, err, ErrUnknownResolver)
	require.Nil(t, none.IDs())
	require.ErrorIs(t, none.Register("default", NewReferenceResolver()), ErrInvalidConfig)
}

func TestResolverRegistryConcurrent(t *testing.T) {
	t.Parallel()
	reg := NewResolverRegistry()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("r%d", i%8) // each id registered twice: exactly one wins
			errs <- reg.Register(id, NewReferenceResolver())
			for range 20 {
				_, _ = reg.Lookup(id)
				_ = reg.IDs()
			}
		}()
	}
	wg.Wait()
	close(errs)
	dups := 0
	for err := range errs {
		if err != nil {
			require.ErrorIs(t, err, ErrDuplicateResolver)
			dups++
		}
	}
	require.Equal(t, 8, dups)
	require.Len(t, reg.IDs(), 8)
}
