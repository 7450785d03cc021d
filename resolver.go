package taskqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
)

// TaskResolver turns executables into portable [SerializedTask] envelopes and back. A resolver is registered in a
// [ResolverRegistry] under a resolver id, which every stored task names; custom strategies are custom resolvers.
// Implementations must be safe for concurrent use, and Resolve must never execute code taken from the payload.
type TaskResolver interface {
	// Serialize returns the portable form of exe, or an error wrapping [ErrNotSerializable].
	Serialize(exe Executable) (SerializedTask, error)
	// Resolve returns the executable that st describes, or an error wrapping [ErrUnknownStrategy],
	// [ErrUnknownTask] or [ErrInvalidArgs].
	Resolve(st SerializedTask) (Executable, error)
}

// StrategyReference is the strategy of the built-in [ReferenceResolver]: payload {"module", "name", "args"}.
const StrategyReference = "reference"

// IsUnsafeStrategy reports whether a strategy is one of those refused by design because it would run code that
// travels in the payload: Python's "pickle", "cloudpickle", "dill", "marshal" and "source".
func IsUnsafeStrategy(strategy string) bool {
	switch strings.ToLower(strategy) {
	case "pickle", "cloudpickle", "dill", "marshal", "source":
		return true
	}
	return false
}

// Referencer is implemented by executables that the [ReferenceResolver] can serialize: they name a registered
// function and carry its arguments.
type Referencer interface {
	TaskReference() (module, name string, args any)
}

// Reference is a producer's handle on a registered function: it names the function and carries its arguments,
// and serializes to {"module", "name", "args"}. It cannot run by itself (its Run returns [ErrNotRunnable]): a
// worker resolves it to the function registered under the same module and name. Build one with [Ref].
type Reference struct {
	Module string
	Name   string
	Args   any
}

// Ref returns a [Reference] to the function registered under module and name, with its arguments. Producers use
// it to enqueue work without importing the workers' code.
func Ref(module, name string, args any) *Reference {
	return &Reference{Module: module, Name: name, Args: args}
}

// Run returns [ErrNotRunnable]: a reference runs only once a registry resolves it.
func (r *Reference) Run(context.Context) error {
	return fmt.Errorf("%w: %s.%s", ErrNotRunnable, r.Module, r.Name)
}

// TaskReference implements [Referencer].
func (r *Reference) TaskReference() (string, string, any) { return r.Module, r.Name, r.Args }

var (
	_ Executable = (*Reference)(nil)
	_ Referencer = (*Reference)(nil)
)

// referencePayload is the payload of the reference strategy.
type referencePayload struct {
	Module string          `json:"module"`
	Name   string          `json:"name"`
	Args   json.RawMessage `json:"args,omitempty"`
}

var (
	modulePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	namePattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

const maxRefLen = 128

func validateRef(module, name string) error {
	if len(module) > maxRefLen || !modulePattern.MatchString(module) {
		return fmt.Errorf("module %s is not a dotted identifier", quote(module))
	}
	if len(name) > maxRefLen || !namePattern.MatchString(name) {
		return fmt.Errorf("name %s is not an identifier", quote(name))
	}
	return nil
}

// ReferenceResolver is the built-in resolver for the "reference" strategy. Worker binaries register Go functions
// under a module and a name (the seed's payload{module, name}); a task names one and carries its arguments, which
// decode into the function's argument type. Nothing in a payload is ever executed: a task can only call what the
// binary registered. The zero value is not usable: call [NewReferenceResolver].
type ReferenceResolver struct {
	mu    sync.RWMutex
	funcs map[string]*refFunc
}

type refFunc struct {
	module, name string
	argType      reflect.Type
	// bind decodes raw arguments (nil for none) into the function's type and returns the bound call.
	bind func(raw json.RawMessage) (func(ctx context.Context) error, error)
	// bindValue binds an argument value that the caller already holds.
	bindValue func(args any) (func(ctx context.Context) error, error)
}

// NewReferenceResolver returns an empty reference resolver.
func NewReferenceResolver() *ReferenceResolver {
	return &ReferenceResolver{funcs: make(map[string]*refFunc)}
}

var _ TaskResolver = (*ReferenceResolver)(nil)

// Register registers fn under module and name. Tasks that reference it carry arguments of type T, decoded
// strictly (unknown fields are an error, numbers stay exact) before fn is called. Module is a dotted identifier
// ("examples.tasks"), name an identifier ("extract_data"). Registering the same module and name twice returns
// [ErrDuplicateTask].
func Register[T any](r *ReferenceResolver, module, name string, fn func(ctx context.Context, args T) error) error {
	if fn == nil {
		return fmt.Errorf("%w: nil function for %s.%s", ErrInvalidConfig, module, name)
	}
	if err := validateRef(module, name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	f := &refFunc{
		module:  module,
		name:    name,
		argType: reflect.TypeFor[T](),
		bind: func(raw json.RawMessage) (func(context.Context) error, error) {
			var args T
			if len(raw) > 0 && string(raw) != "null" {
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				dec.UseNumber()
				if err := dec.Decode(&args); err != nil {
					return nil, err
				}
			}
			return func(ctx context.Context) error { return fn(ctx, args) }, nil
		},
		bindValue: func(v any) (func(context.Context) error, error) {
			args, ok := v.(T)
			if !ok && v != nil {
				return nil, fmt.Errorf("arguments are %T, want %s", v, reflect.TypeFor[T]())
			}
			return func(ctx context.Context) error { return fn(ctx, args) }, nil
		},
	}
	key := module + "." + name
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.funcs[key]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateTask, key)
	}
	r.funcs[key] = f
	return nil
}

// MustRegister is [Register] for static set-up in a worker's main: it panics on error.
func MustRegister[T any](r *ReferenceResolver, module, name string, fn func(ctx context.Context, args T) error) {
	if err := Register(r, module, name, fn); err != nil {
		panic(err)
	}
}

func (r *ReferenceResolver) lookup(module, name string) (*refFunc, error) {
	if err := validateRef(module, name); err != nil {
		return nil, &ResolveError{Kind: ErrUnknownTask, Detail: err.Error()}
	}
	r.mu.RLock()
	f := r.funcs[module+"."+name]
	r.mu.RUnlock()
	if f == nil {
		return nil, &ResolveError{Kind: ErrUnknownTask, Detail: quote(module) + "." + quote(name) + " is not registered"}
	}
	return f, nil
}

// Call returns a runnable reference to a registered function: it runs locally (on a [MemoryQueue], say) and
// serializes like [Ref]. It fails if module and name are not registered or args has the wrong type.
func (r *ReferenceResolver) Call(module, name string, args any) (Executable, error) {
	f, err := r.lookup(module, name)
	if err != nil {
		return nil, err
	}
	run, err := f.bindValue(args)
	if err != nil {
		return nil, &ResolveError{Kind: ErrInvalidArgs, Detail: module + "." + name, Err: err}
	}
	return &boundCall{Reference: Reference{Module: module, Name: name, Args: args}, run: run}, nil
}

// Serialize implements [TaskResolver] for executables that implement [Referencer], such as [Ref] and the
// executables this resolver returns.
func (r *ReferenceResolver) Serialize(exe Executable) (SerializedTask, error) {
	ref, ok := exe.(Referencer)
	if !ok {
		return SerializedTask{}, fmt.Errorf("%w: %T is not a reference (use taskqueue.Ref)", ErrNotSerializable, exe)
	}
	module, name, args := ref.TaskReference()
	if err := validateRef(module, name); err != nil {
		return SerializedTask{}, fmt.Errorf("%w: %v", ErrNotSerializable, err)
	}
	p := referencePayload{Module: module, Name: name}
	if args != nil {
		raw, err := marshalNoEscape(args)
		if err != nil {
			return SerializedTask{}, fmt.Errorf("%w: arguments of %s.%s: %v", ErrNotSerializable, module, name, err)
		}
		p.Args = raw
	}
	payload, err := marshalNoEscape(p)
	if err != nil {
		return SerializedTask{}, fmt.Errorf("%w: %v", ErrNotSerializable, err)
	}
	return SerializedTask{Strategy: StrategyReference, Payload: payload}, nil
}

// Resolve implements [TaskResolver]: it finds the function the payload names and decodes its arguments.
func (r *ReferenceResolver) Resolve(st SerializedTask) (Executable, error) {
	if st.Strategy != StrategyReference {
		return nil, &ResolveError{Kind: ErrUnknownStrategy, Detail: quote(st.Strategy) + " (the reference resolver reads \"reference\")"}
	}
	p, err := decodeReferencePayload(st.Payload)
	if err != nil {
		return nil, err
	}
	f, err := r.lookup(p.Module, p.Name)
	if err != nil {
		return nil, err
	}
	run, err := f.bind(p.Args)
	if err != nil {
		return nil, &ResolveError{Kind: ErrInvalidArgs, Detail: p.Module + "." + p.Name + " takes " + f.argType.String(), Err: err}
	}
	return &boundCall{Reference: Reference{Module: p.Module, Name: p.Name, Args: p.Args}, run: run}, nil
}

func decodeReferencePayload(payload json.RawMessage) (referencePayload, error) {
	var p referencePayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, &ResolveError{Kind: ErrUnknownTask, Detail: "payload is not {module, name, args}", Err: err}
	}
	return p, nil
}

// boundCall is a reference resolved to its function.
type boundCall struct {
	Reference
	run func(ctx context.Context) error
}

func (c *boundCall) Run(ctx context.Context) error { return c.run(ctx) }

func marshalNoEscape(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
