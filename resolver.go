package taskqueue

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode"
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
	if len(strategy) > len("cloudpickle") {
		return false
	}
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
	return fmt.Errorf("%w: %s.%s", ErrNotRunnable, quote(r.Module), quote(r.Name))
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

const maxRefLen = 128

// validateRef checks a module, a dotted identifier such as "examples.tasks", and a name, an identifier such as
// "extract_data": ASCII letters, digits and '_', not starting with a digit, each at most 128 bytes. Nothing
// path-like ("os/exec", "../x") gets through.
func validateRef[S ~string | ~[]byte](module, name S) error {
	if len(module) > maxRefLen || !isDottedIdent(module) {
		return fmt.Errorf("module %s is not a dotted identifier", quote(string(module)))
	}
	if len(name) > maxRefLen || !isIdent(name) {
		return fmt.Errorf("name %s is not an identifier", quote(string(name)))
	}
	return nil
}

// isIdent reports whether s matches [A-Za-z_][A-Za-z0-9_]*.
func isIdent[S ~string | ~[]byte](s S) bool {
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return len(s) > 0
}

// isDottedIdent reports whether s is identifiers joined by single dots.
func isDottedIdent[S ~string | ~[]byte](s S) bool {
	start := 0
	for i := range len(s) + 1 {
		if i == len(s) || s[i] == '.' {
			if !isIdent(s[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return true
}

// ReferenceResolver is the built-in resolver for the "reference" strategy. Worker binaries register Go functions
// under a module and a name (the seed's payload{module, name}); a task names one and carries its arguments, which
// decode into the function's argument type. Nothing in a payload is ever executed: a task can only call what the
// binary registered. The zero value is an empty resolver, ready to use, like [NewReferenceResolver]'s.
type ReferenceResolver struct {
	mu    sync.RWMutex
	funcs map[string]*refFunc
}

type refFunc struct {
	module, name string
	argType      reflect.Type
	shape        *argShape // how raw arguments are checked before they are decoded
	// bind decodes raw arguments (nil for none) into the function's type and returns the bound call, its
	// Reference not yet filled in.
	bind func(raw json.RawMessage) (*boundCall, error)
	// bindValue binds an argument value that the caller already holds.
	bindValue func(args any) (*boundCall, error)
}

// NewReferenceResolver returns an empty reference resolver.
func NewReferenceResolver() *ReferenceResolver {
	return &ReferenceResolver{funcs: make(map[string]*refFunc)}
}

var _ TaskResolver = (*ReferenceResolver)(nil)

// Register registers fn under module and name. Tasks that reference it carry arguments of type T, decoded
// strictly before fn is called: object keys must name T's fields exactly (encoding/json alone would match them
// up to case) and unknown fields are an error; integers stay exact (one too large for an integer field, or one
// that a float field would round, is an error; json.Number, big.Int and interface values keep every digit).
// Module is a dotted identifier ("examples.tasks"), name an identifier ("extract_data"), each up to 128 bytes.
// Registering the same module and name twice returns [ErrDuplicateTask]; a nil resolver or function, or an
// invalid module or name, [ErrInvalidConfig].
func Register[T any](r *ReferenceResolver, module, name string, fn func(ctx context.Context, args T) error) error {
	if err := validateRef(module, name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if r == nil || fn == nil {
		return fmt.Errorf("%w: nil resolver or function for %s.%s", ErrInvalidConfig, module, name)
	}
	argType := reflect.TypeFor[T]()
	f := &refFunc{
		module:  module,
		name:    name,
		argType: argType,
		shape:   shapeOf(argType, map[reflect.Type]*argShape{}),
	}
	// Without interface values or ambiguous names anywhere, the shape check has already refused every key that
	// DisallowUnknownFields would, and UseNumber changes nothing: plain Unmarshal does, with fewer allocations.
	plain := !f.shape.loose(map[*argShape]bool{})
	// A type that holds nothing encoding/json treats specially decodes in one pass of our scanner (argdecode.go):
	// the shape check and encoding/json's validation and decoding, in one.
	var direct *argDec
	if plain {
		direct = newArgDecoder(argType)
	}
	f.bind = func(raw json.RawMessage) (*boundCall, error) {
		c := &typedCall[T]{fn: fn} // the call, its function and its arguments in one allocation
		c.runner = c
		if len(raw) == 0 || string(raw) == "null" {
			return &c.boundCall, nil
		}
		if direct != nil {
			if err := direct.decodeArgs(raw, reflect.ValueOf(&c.args).Elem()); err != nil {
				return nil, err
			}
			return &c.boundCall, nil
		}
		if err := f.shape.check(raw); err != nil {
			return nil, err
		}
		if plain {
			if err := json.Unmarshal(raw, &c.args); err != nil {
				return nil, err
			}
			return &c.boundCall, nil
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		dec.UseNumber()
		if err := dec.Decode(&c.args); err != nil {
			return nil, err
		}
		return &c.boundCall, nil
	}
	f.bindValue = func(v any) (*boundCall, error) {
		args, ok := v.(T)
		if !ok && v != nil {
			return nil, fmt.Errorf("arguments are %T, want %s", v, argType)
		}
		c := &typedCall[T]{fn: fn, args: args}
		c.runner = c
		return &c.boundCall, nil
	}
	key := module + "." + name
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.funcs[key]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateTask, key)
	}
	if r.funcs == nil {
		r.funcs = make(map[string]*refFunc)
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

// lookup finds the function registered under module and name, without allocating.
func lookup[S ~string | ~[]byte](r *ReferenceResolver, module, name S) (*refFunc, error) {
	if err := validateRef(module, name); err != nil {
		return nil, &ResolveError{Kind: ErrUnknownTask, Detail: err.Error()}
	}
	var f *refFunc
	if r != nil {
		var buf [2*maxRefLen + 1]byte
		key := append(append(append(buf[:0], module...), '.'), name...)
		r.mu.RLock()
		f = r.funcs[string(key)]
		r.mu.RUnlock()
	}
	if f == nil {
		return nil, &ResolveError{Kind: ErrUnknownTask, Detail: quote(string(module)) + "." + quote(string(name)) + " is not registered"}
	}
	return f, nil
}

// Call returns a runnable reference to a registered function: it runs locally (on a [MemoryQueue], say) and
// serializes like [Ref]. It fails if module and name are not registered or args has the wrong type.
func (r *ReferenceResolver) Call(module, name string, args any) (Executable, error) {
	f, err := lookup(r, module, name)
	if err != nil {
		return nil, err
	}
	call, err := f.bindValue(args)
	if err != nil {
		return nil, &ResolveError{Kind: ErrInvalidArgs, Detail: module + "." + name, Err: err}
	}
	call.Reference = Reference{Module: module, Name: name, Args: args}
	return call, nil
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
	payload, err := encodeReferencePayload(module, name, args)
	if err != nil {
		return SerializedTask{}, fmt.Errorf("%w: arguments of %s.%s: %s", ErrNotSerializable, module, name, truncate(err.Error(), 200))
	}
	return SerializedTask{Strategy: StrategyReference, Payload: payload}, nil
}

// payloadBuf is a buffer with an encoder writing into it, reused by encodeReferencePayload.
type payloadBuf struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var payloadBufs = sync.Pool{New: func() any {
	p := &payloadBuf{}
	p.enc = json.NewEncoder(&p.buf)
	p.enc.SetEscapeHTML(false)
	return p
}}

// maxPooledPayload is the largest buffer encodeReferencePayload keeps for reuse: a rare huge payload is not held.
const maxPooledPayload = 64 << 10

// encodeReferencePayload writes the payload json.Marshal(referencePayload{...}) would, HTML characters not
// escaped, byte for byte, with one allocation, the payload's own: module and name are identifiers (nothing to
// escape) and args are encoded by encoding/json into a reused buffer right after the payload's head, not scanned
// again. args that encode as null (nil, a typed nil) are left out, as no arguments.
func encodeReferencePayload(module, name string, args any) (json.RawMessage, error) {
	p := payloadBufs.Get().(*payloadBuf)
	defer func() {
		if p.buf.Cap() <= maxPooledPayload {
			payloadBufs.Put(p)
		}
	}()
	b := &p.buf
	b.Reset()
	b.WriteString(`{"module":"`)
	b.WriteString(module)
	b.WriteString(`","name":"`)
	b.WriteString(name)
	b.WriteByte('"')
	if args != nil {
		head := b.Len()
		b.WriteString(`,"args":`)
		start := b.Len()
		if err := p.enc.Encode(args); err != nil {
			return nil, err
		}
		b.Truncate(len(bytes.TrimRight(b.Bytes(), "\n")))
		if string(b.Bytes()[start:]) == "null" { // a typed nil is no arguments, as nil is
			b.Truncate(head)
		}
	}
	b.WriteByte('}')
	return bytes.Clone(b.Bytes()), nil
}

// Resolve implements [TaskResolver]: it finds the function the payload names and decodes its arguments. The
// payload is read strictly: a JSON object with exactly the keys "module", "name" and optionally "args", no
// duplicate or case-variant keys, nothing after it. Unsafe strategies return [ErrUnsafeStrategy].
func (r *ReferenceResolver) Resolve(st SerializedTask) (Executable, error) {
	if IsUnsafeStrategy(st.Strategy) {
		return nil, &ResolveError{Kind: ErrUnsafeStrategy, Detail: quote(st.Strategy)}
	}
	if st.Strategy != StrategyReference {
		return nil, &ResolveError{Kind: ErrUnknownStrategy, Detail: quote(st.Strategy) + " (the reference resolver reads \"reference\")"}
	}
	module, name, args, err := decodeReferencePayload(st.Payload)
	if err != nil {
		return nil, err
	}
	f, err := lookup(r, module, name)
	if err != nil {
		return nil, err
	}
	call, err := f.bind(args)
	if err != nil {
		return nil, &ResolveError{Kind: ErrInvalidArgs, Detail: f.module + "." + f.name + " takes " + f.argType.String(), Err: err}
	}
	call.Module, call.Name = f.module, f.name
	if len(args) > 0 {
		call.Args = args
	}
	return call, nil
}

// decodeReferencePayload reads {"module", "name", "args"} in one validating pass. Module and name alias the
// payload unless they were written with escapes; args keeps its exact bytes.
func decodeReferencePayload(payload json.RawMessage) (module, name []byte, args json.RawMessage, err error) {
	var p struct{ Module, Name []byte }
	bad := func(err error) ([]byte, []byte, json.RawMessage, error) {
		return nil, nil, nil, &ResolveError{Kind: ErrUnknownTask, Detail: "payload is not {module, name, args}", Err: err}
	}
	s := scanner{data: payload, maxDepth: maxSyntaxDepth}
	s.skipSpace()
	if s.peek() != '{' {
		return bad(errors.New("not a JSON object"))
	}
	var seen int
	err = s.members(1, func(key []byte) error {
		var dst *[]byte
		switch string(key) {
		case "module":
			seen |= 1
			dst = &p.Module
		case "name":
			seen |= 2
			dst = &p.Name
		case "args":
			start := s.pos
			err := s.value(1)
			if err == nil {
				args = payload[start:s.pos]
			}
			return err
		default:
			return fmt.Errorf("unknown field %s", quote(string(key)))
		}
		if s.peek() != '"' {
			return fmt.Errorf("%s is not a string", key)
		}
		raw, escaped, err := s.str()
		if err == nil && escaped {
			raw = unescape(nil, raw)
		}
		*dst = raw
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return bad(err)
	}
	if seen != 3 {
		return bad(errors.New("module and name are required"))
	}
	return p.Module, p.Name, args, nil
}

// boundCall is a reference resolved to its function.
type boundCall struct {
	Reference
	runner interface {
		call(ctx context.Context) error
	}
}

func (c *boundCall) Run(ctx context.Context) error { return c.runner.call(ctx) }

// typedCall is a bound call with its function and its decoded arguments.
type typedCall[T any] struct {
	boundCall
	fn   func(ctx context.Context, args T) error
	args T
}

func (c *typedCall[T]) call(ctx context.Context) error { return c.fn(ctx, c.args) }

func marshalNoEscape(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// argShape tells how the raw arguments of one Go type are checked before encoding/json decodes them: object
// keys must name struct fields exactly, and an integer bound for a float field must be held exactly.
type argShape struct {
	kind   reflect.Kind         // after pointers are followed
	opaque bool                 // decoded by custom code, or an interface: not checked further
	iface  bool                 // an interface, or a name encoding/json finds ambiguous: needs its Decoder's options
	fields map[string]*argShape // a struct's JSON field names
	elem   *argShape            // a slice's, array's or map's elements
}

var (
	opaqueShape         = &argShape{opaque: true}
	ambiguousShape      = &argShape{opaque: true, iface: true}
	jsonUnmarshaler     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler     = reflect.TypeFor[encoding.TextUnmarshaler]()
	validTagPunctuation = "!#$%&()*+-./:;<=>?@[]^_{|}~ "
)

// shapeOf returns the shape of t; seen breaks the cycles of recursive types.
func shapeOf(t reflect.Type, seen map[reflect.Type]*argShape) *argShape {
	if sh, ok := seen[t]; ok {
		return sh
	}
	if t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
		reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return opaqueShape
	}
	if t.Kind() == reflect.Pointer { // a pointer decodes as what it points to
		seen[t] = opaqueShape // until known: type P *P is legal
		seen[t] = shapeOf(t.Elem(), seen)
		return seen[t]
	}
	sh := &argShape{kind: t.Kind()}
	seen[t] = sh
	switch t.Kind() {
	case reflect.Interface:
		sh.opaque, sh.iface = true, true
	case reflect.Slice, reflect.Array, reflect.Map:
		sh.elem = shapeOf(t.Elem(), seen)
	case reflect.Struct:
		sh.fields = structFields(t, seen)
	}
	return sh
}

// structFields lists the JSON names of a struct's fields as encoding/json finds them: tags, exported fields,
// and the fields of embedded structs, where a shallower field hides a deeper one of the same name. Names that
// encoding/json would find ambiguous are kept but not checked further (encoding/json then refuses them).
func structFields(t reflect.Type, seen map[reflect.Type]*argShape) map[string]*argShape {
	out := make(map[string]*argShape)
	depthOf := make(map[string]int)
	visited := make(map[reflect.Type]bool)
	for depth, level := 0, []reflect.Type{t}; len(level) > 0; depth++ {
		var next []reflect.Type
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				sf := st.Field(i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if !sf.IsExported() && !(sf.Anonymous && ft.Kind() == reflect.Struct) {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !isValidTag(name) {
					name = ""
				}
				if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
					next = append(next, ft)
					continue
				}
				if name == "" {
					name = sf.Name
				}
				if d, ok := depthOf[name]; ok {
					if d == depth {
						out[name] = ambiguousShape
					}
					continue
				}
				depthOf[name] = depth
				out[name] = shapeOf(sf.Type, seen)
			}
		}
		level = next
	}
	return out
}

// isValidTag is encoding/json's test of a tag name.
func isValidTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune(validTagPunctuation, c) && !unicode.IsLetter(c) && !unicode.IsDigit(c) {
			return false
		}
	}
	return true
}

// loose reports whether an interface or an ambiguous name is reachable from sh.
func (sh *argShape) loose(visited map[*argShape]bool) bool {
	if sh == nil || visited[sh] {
		return false
	}
	visited[sh] = true
	if sh.iface || sh.elem.loose(visited) {
		return true
	}
	for _, f := range sh.fields {
		if f.loose(visited) {
			return true
		}
	}
	return false
}

// check walks raw arguments (valid JSON) along the shape.
func (sh *argShape) check(raw []byte) error {
	s := scanner{data: raw, maxDepth: maxSyntaxDepth}
	s.skipSpace()
	return sh.walk(&s, 0)
}

func (sh *argShape) walk(s *scanner, depth int) error {
	if sh.opaque {
		return s.value(depth)
	}
	switch c := s.peek(); {
	case c == '{' && (sh.kind == reflect.Struct || sh.kind == reflect.Map):
		empty, err := s.openObject(depth + 1)
		for more := !empty; more && err == nil; {
			var key []byte
			if key, err = s.key(); err != nil {
				break
			}
			next := sh.elem
			if sh.kind == reflect.Struct {
				if next = sh.fields[string(key)]; next == nil {
					return fmt.Errorf("unknown field %s (field names are case-sensitive)", quote(string(key)))
				}
			}
			if err = next.walk(s, depth+1); err == nil {
				more, err = s.more('}')
			}
		}
		return err
	case c == '[' && (sh.kind == reflect.Slice || sh.kind == reflect.Array):
		empty, err := s.openArray(depth + 1)
		for more := !empty; more && err == nil; {
			if err = sh.elem.walk(s, depth+1); err == nil {
				more, err = s.more(']')
			}
		}
		return err
	case (c == '-' || c >= '0' && c <= '9') && (sh.kind == reflect.Float64 || sh.kind == reflect.Float32):
		start := s.pos
		if err := s.number(); err != nil {
			return err
		}
		bits := 64
		if sh.kind == reflect.Float32 {
			bits = 32
		}
		if lit := s.data[start:s.pos]; !exactFloat(lit, bits) {
			return fmt.Errorf("integer %s cannot be held exactly by a float%d", truncate(string(lit), 40), bits)
		}
		return nil
	}
	return s.value(depth)
}

// exactFloat reports whether a number literal bound for a float of the given size keeps its value: integer
// literals must convert exactly (a fraction or exponent says the writer accepts rounding).
func exactFloat(lit []byte, bits int) bool {
	if bytes.ContainsAny(lit, ".eE") {
		return true
	}
	digits := len(lit)
	if lit[0] == '-' {
		digits--
	}
	if bits == 64 && digits <= 15 || bits == 32 && digits <= 7 {
		return true
	}
	f, err := strconv.ParseFloat(string(lit), bits)
	if err != nil {
		return true // out of range: encoding/json reports it
	}
	want, _ := new(big.Int).SetString(string(lit), 10)
	got, acc := new(big.Float).SetFloat64(f).Int(nil)
	return acc == big.Exact && got.Cmp(want) == 0
}
