package taskqueue

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// The direct argument decoder: for argument types that hold nothing encoding/json treats specially (no interface,
// custom unmarshaler, json.Number, []byte, ",string" option, embedded struct or ambiguous name, map key other than
// a string), raw arguments are checked and decoded in one pass of the scanner, with the results encoding/json would
// give: exact field names, no unknown field, integers that must fit exactly, integer literals a float must hold
// exactly. It replaces the shape check followed by json.Unmarshal, which validates the whole text again before it
// decodes it. Other types keep that path (see [Register]).

// argDec decodes one JSON value into a value of one Go type.
type argDec struct {
	t      reflect.Type
	decode func(s *scanner, v reflect.Value, depth int) error
}

var jsonNumberType = reflect.TypeFor[json.Number]()

// newArgDecoder returns the direct decoder of t, or nil when t holds a type it leaves to encoding/json.
func newArgDecoder(t reflect.Type) *argDec {
	ok := true
	d := buildArgDec(t, map[reflect.Type]*argDec{}, &ok)
	if !ok {
		return nil
	}
	return d
}

// decodeArgs decodes raw, one JSON value, into v (addressable, the zero value of d's type).
func (d *argDec) decodeArgs(raw []byte, v reflect.Value) error {
	s := scanner{data: raw, maxDepth: maxSyntaxDepth}
	s.skipSpace()
	if err := d.decode(&s, v, 0); err != nil {
		return err
	}
	return s.end()
}

func buildArgDec(t reflect.Type, seen map[reflect.Type]*argDec, ok *bool) *argDec {
	if d, found := seen[t]; found {
		return d
	}
	d := &argDec{t: t}
	seen[t] = d
	if t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
		reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) || t == jsonNumberType {
		*ok = false
		return d
	}
	switch t.Kind() {
	case reflect.Bool:
		d.decode = decodeBool
	case reflect.String:
		d.decode = decodeString
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		d.decode = decodeInt
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		d.decode = decodeUint
	case reflect.Float32, reflect.Float64:
		d.decode = decodeFloat
	case reflect.Pointer:
		d.decode = pointerDec(buildArgDec(t.Elem(), seen, ok))
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 { // []byte is base64 text to encoding/json
			*ok = false
			return d
		}
		d.decode = sliceDec(buildArgDec(t.Elem(), seen, ok))
	case reflect.Array:
		d.decode = arrayDec(buildArgDec(t.Elem(), seen, ok))
	case reflect.Map:
		kt := t.Key()
		if kt.Kind() != reflect.String || reflect.PointerTo(kt).Implements(textUnmarshaler) {
			*ok = false
			return d
		}
		d.decode = mapDec(t, buildArgDec(t.Elem(), seen, ok))
	case reflect.Struct:
		d.decode = structDec(t, seen, ok)
	default: // interfaces, and what encoding/json cannot decode into
		*ok = false
	}
	return d
}

// typeError is the error for a JSON value of the wrong kind for t.
func typeError(s *scanner, t reflect.Type) error {
	what := "a value"
	switch c := s.peek(); {
	case c == '{':
		what = "an object"
	case c == '[':
		what = "an array"
	case c == '"':
		what = "a string"
	case c == 't' || c == 'f':
		what = "a boolean"
	case c == '-' || c >= '0' && c <= '9':
		what = "a number"
	}
	return s.errorf("cannot decode %s into %s", what, truncate(t.String(), 200))
}

// null reads a null literal under the cursor, if there is one.
func null(s *scanner) (bool, error) {
	if s.peek() != 'n' {
		return false, nil
	}
	return true, s.literal("null")
}

func decodeBool(s *scanner, v reflect.Value, _ int) error {
	switch s.peek() {
	case 't':
		if err := s.literal("true"); err != nil {
			return err
		}
		v.SetBool(true)
		return nil
	case 'f':
		if err := s.literal("false"); err != nil {
			return err
		}
		v.SetBool(false)
		return nil
	}
	if isNull, err := null(s); isNull || err != nil {
		return err
	}
	return typeError(s, v.Type())
}

func decodeString(s *scanner, v reflect.Value, _ int) error {
	if s.peek() == '"' {
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		v.SetString(stringValue(raw, escaped))
		return nil
	}
	if isNull, err := null(s); isNull || err != nil {
		return err
	}
	return typeError(s, v.Type())
}

// numberLit reads a number literal, or reports false for null (nothing to store).
func numberLit(s *scanner, v reflect.Value) (lit []byte, isNum bool, err error) {
	if c := s.peek(); c == '-' || c >= '0' && c <= '9' {
		start := s.pos
		if err := s.number(); err != nil {
			return nil, false, err
		}
		return s.data[start:s.pos], true, nil
	}
	if isNull, err := null(s); isNull || err != nil {
		return nil, false, err
	}
	return nil, false, typeError(s, v.Type())
}

func decodeInt(s *scanner, v reflect.Value, _ int) error {
	lit, isNum, err := numberLit(s, v)
	if !isNum {
		return err
	}
	n, isInt, fits := parseInt(lit)
	if !isInt || !fits || v.OverflowInt(n) {
		return fmt.Errorf("number %s does not fit %s", truncate(string(lit), 40), v.Type())
	}
	v.SetInt(n)
	return nil
}

func decodeUint(s *scanner, v reflect.Value, _ int) error {
	lit, isNum, err := numberLit(s, v)
	if !isNum {
		return err
	}
	n, perr := strconv.ParseUint(string(lit), 10, 64)
	if perr != nil || v.OverflowUint(n) {
		return fmt.Errorf("number %s does not fit %s", truncate(string(lit), 40), v.Type())
	}
	v.SetUint(n)
	return nil
}

func decodeFloat(s *scanner, v reflect.Value, _ int) error {
	lit, isNum, err := numberLit(s, v)
	if !isNum {
		return err
	}
	bits := v.Type().Bits()
	if !exactFloat(lit, bits) {
		return fmt.Errorf("integer %s cannot be held exactly by a float%d", truncate(string(lit), 40), bits)
	}
	f, perr := strconv.ParseFloat(string(lit), bits)
	if perr != nil || v.OverflowFloat(f) {
		return fmt.Errorf("number %s does not fit %s", truncate(string(lit), 40), v.Type())
	}
	v.SetFloat(f)
	return nil
}

func pointerDec(elem *argDec) func(s *scanner, v reflect.Value, depth int) error {
	return func(s *scanner, v reflect.Value, depth int) error {
		if isNull, err := null(s); isNull || err != nil {
			if err == nil {
				v.SetZero()
			}
			return err
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return elem.decode(s, v.Elem(), depth)
	}
}

func sliceDec(elem *argDec) func(s *scanner, v reflect.Value, depth int) error {
	return func(s *scanner, v reflect.Value, depth int) error {
		if s.peek() != '[' {
			if isNull, err := null(s); isNull || err != nil {
				if err == nil {
					v.SetZero()
				}
				return err
			}
			return typeError(s, v.Type())
		}
		empty, err := s.openArray(depth + 1)
		if err != nil {
			return err
		}
		i := 0
		for more := !empty; more; i++ {
			if i >= v.Cap() {
				v.Grow(max(4, v.Cap()))
			}
			v.SetLen(i + 1)
			if err := elem.decode(s, v.Index(i), depth+1); err != nil {
				return err
			}
			if more, err = s.more(']'); err != nil {
				return err
			}
		}
		if i == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // [] is an empty slice, not nil
		}
		return nil
	}
}

func arrayDec(elem *argDec) func(s *scanner, v reflect.Value, depth int) error {
	return func(s *scanner, v reflect.Value, depth int) error {
		if s.peek() != '[' {
			isNull, err := null(s)
			if isNull || err != nil {
				return err // null leaves an array as it is
			}
			return typeError(s, v.Type())
		}
		empty, err := s.openArray(depth + 1)
		if err != nil {
			return err
		}
		i := 0
		for more := !empty; more; i++ {
			if i < v.Len() {
				err = elem.decode(s, v.Index(i), depth+1)
			} else {
				err = s.value(depth + 1) // encoding/json drops what does not fit
			}
			if err != nil {
				return err
			}
			if more, err = s.more(']'); err != nil {
				return err
			}
		}
		for ; i < v.Len(); i++ {
			v.Index(i).SetZero()
		}
		return nil
	}
}

func mapDec(t reflect.Type, elem *argDec) func(s *scanner, v reflect.Value, depth int) error {
	kt := t.Key()
	return func(s *scanner, v reflect.Value, depth int) error {
		if s.peek() != '{' {
			if isNull, err := null(s); isNull || err != nil {
				if err == nil {
					v.SetZero()
				}
				return err
			}
			return typeError(s, v.Type())
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(t))
		}
		var ev reflect.Value
		return s.members(depth+1, func(key []byte) error {
			if !ev.IsValid() {
				ev = reflect.New(t.Elem()).Elem()
			} else {
				ev.SetZero()
			}
			if err := elem.decode(s, ev, depth+1); err != nil {
				return err
			}
			kv := reflect.New(kt).Elem()
			kv.SetString(string(key))
			v.SetMapIndex(kv, ev)
			return nil
		})
	}
}

// structField is a field of a struct that the direct decoder fills.
type structField struct {
	index int
	dec   *argDec
}

func structDec(t reflect.Type, seen map[reflect.Type]*argDec, ok *bool) func(s *scanner, v reflect.Value, depth int) error {
	fields := make(map[string]structField)
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous { // promoted fields: left to encoding/json
			*ok = false
			return nil
		}
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := cutTag(tag)
		if opts != "" && containsOption(opts, "string") {
			*ok = false
			return nil
		}
		if !isValidTag(name) {
			name = ""
		}
		if name == "" {
			name = sf.Name
		}
		if _, dup := fields[name]; dup { // ambiguous to encoding/json
			*ok = false
			return nil
		}
		fields[name] = structField{index: i, dec: buildArgDec(sf.Type, seen, ok)}
	}
	return func(s *scanner, v reflect.Value, depth int) error {
		if s.peek() != '{' {
			isNull, err := null(s)
			if isNull || err != nil {
				return err // null leaves a struct as it is
			}
			return typeError(s, v.Type())
		}
		// The text was validated (no duplicate key) before the arguments were bound: no need to look for
		// duplicates again, and keys are matched exactly.
		empty, err := s.openObject(depth + 1)
		for more := !empty; more && err == nil; {
			var key []byte
			if key, err = s.key(); err != nil {
				break
			}
			f, found := fields[string(key)]
			if !found {
				return fmt.Errorf("unknown field %s (field names are case-sensitive)", quote(string(key)))
			}
			if err = f.dec.decode(s, v.Field(f.index), depth+1); err == nil {
				more, err = s.more('}')
			}
		}
		return err
	}
}

// cutTag splits a json tag into its name and options.
func cutTag(tag string) (name, opts string, found bool) {
	for i := range len(tag) {
		if tag[i] == ',' {
			return tag[:i], tag[i+1:], true
		}
	}
	return tag, "", false
}

// containsOption reports whether a tag's comma-separated options hold opt.
func containsOption(opts, opt string) bool {
	for opts != "" {
		var o string
		o, opts, _ = cutTag(opts)
		if o == opt {
			return true
		}
	}
	return false
}
