package taskqueue

import (
	"bytes"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// validateJSON checks that data is exactly one JSON value, nested at most maxDepth deep, in valid UTF-8 with no
// unpaired UTF-16 surrogate escapes, whose objects hold no duplicate keys and no keys that differ only in case
// (Go's decoder would otherwise pick one of them silently). It is stricter than [json.Valid] on exactly those
// points and never accepts what json.Valid refuses. It allocates only for escaped keys and large objects.
func validateJSON(data []byte, maxDepth int) error {
	s := scanner{data: data, maxDepth: maxDepth}
	s.skipSpace()
	if err := s.value(0); err != nil {
		return err
	}
	return s.end()
}

// scanner walks JSON text, validating as it goes. Its primitives (openObject, key, more, ...) also serve the
// decoders that read a document in a single pass, such as the envelope's.
type scanner struct {
	data     []byte
	pos      int
	maxDepth int
}

var errEOF = errors.New("unexpected end of JSON")

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: "+format, append([]any{s.pos}, args...)...)
}

// peek returns the byte at the cursor, or 0 at the end.
func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// end checks that only white space follows the value just read.
func (s *scanner) end() error {
	s.skipSpace()
	if s.pos != len(s.data) {
		return s.errorf("trailing data")
	}
	return nil
}

// value scans one value; depth counts the objects and arrays around it.
func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return errEOF
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.errorf("unexpected character %q", c)
	}
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.errorf("invalid literal")
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

func (s *scanner) number() error {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	intStart := s.pos
	if n := s.digits(); n == 0 || (n > 1 && s.data[intStart] == '0') {
		s.pos = start
		return s.errorf("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	return nil
}

// plainByte marks the bytes that stand for themselves inside a JSON string: printable ASCII but '"' and '\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans a string and returns its raw contents (without quotes) and whether it holds escapes.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	s.pos++ // opening quote
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case plainByte[c]:
			s.pos++
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, false, err
			}
		case c < 0x20:
			return nil, false, s.errorf("control character in string")
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return nil, false, s.errorf("invalid UTF-8")
			}
			s.pos += size
		}
	}
	return nil, false, errEOF
}

// escape scans one escape sequence at the backslash under the cursor. A \u escape of a UTF-16 surrogate must be
// the high half of a pair whose low half follows at once: a lone surrogate is not a character.
func (s *scanner) escape() error {
	s.pos++
	if s.pos >= len(s.data) {
		return errEOF
	}
	switch s.data[s.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos++
		return nil
	case 'u':
	default:
		return s.errorf("invalid escape")
	}
	r, ok := hex4(s.data, s.pos+1)
	if !ok {
		return s.errorf("invalid \\u escape")
	}
	s.pos += 5
	if r < 0xD800 || r > 0xDFFF {
		return nil
	}
	if r <= 0xDBFF && len(s.data)-s.pos >= 6 && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
		if lo, ok := hex4(s.data, s.pos+2); ok && lo >= 0xDC00 && lo <= 0xDFFF {
			s.pos += 6
			return nil
		}
	}
	return s.errorf("unpaired UTF-16 surrogate escape")
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// unescape appends the decoded contents of a string that [scanner.str] accepted.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			i += 6
			if r >= 0xD800 && r <= 0xDBFF { // validated: the low half follows
				lo, _ := hex4(raw, i+2)
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

// stringValue returns the decoded contents of a string that [scanner.str] accepted.
func stringValue(raw []byte, escaped bool) string {
	if !escaped {
		return string(raw)
	}
	return string(unescape(make([]byte, 0, len(raw)), raw))
}

func (s *scanner) array(depth int) error {
	empty, err := s.openArray(depth)
	for more := !empty; more && err == nil; {
		if err = s.value(depth); err == nil {
			more, err = s.more(']')
		}
	}
	return err
}

func (s *scanner) object(depth int) error {
	return s.members(depth, func([]byte) error { return s.value(depth) })
}

// members reads an object nested depth deep, its '{' included. It refuses a key that repeats an earlier one,
// exactly or but for case, and calls readValue with each key to read the value that follows it.
func (s *scanner) members(depth int, readValue func(key []byte) error) error {
	empty, err := s.openObject(depth)
	var keys seenKeys
	for more := !empty; more && err == nil; {
		var key []byte
		if key, err = s.key(); err != nil {
			break
		}
		if !keys.add(key) {
			return s.duplicate(key)
		}
		if err = readValue(key); err == nil {
			more, err = s.more('}')
		}
	}
	return err
}

// openArray consumes the '[' of an array nested depth deep and reports whether the array is empty (its ']'
// consumed too).
func (s *scanner) openArray(depth int) (empty bool, err error) {
	return s.open(depth, ']')
}

// openObject consumes the '{' of an object nested depth deep and reports whether the object is empty (its '}'
// consumed too). Members follow as [scanner.key], a value, then [scanner.more].
func (s *scanner) openObject(depth int) (empty bool, err error) {
	return s.open(depth, '}')
}

func (s *scanner) open(depth int, closing byte) (bool, error) {
	if depth > s.maxDepth {
		return false, s.errorf("nested deeper than %d", s.maxDepth)
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == closing {
		s.pos++
		return true, nil
	}
	return false, nil
}

// key reads an object key and the colon after it, and returns the key decoded. An unescaped key aliases the
// scanned data.
func (s *scanner) key() ([]byte, error) {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return nil, errEOF
	}
	if s.data[s.pos] != '"' {
		return nil, s.errorf("expected object key")
	}
	raw, escaped, err := s.str()
	if err != nil {
		return nil, err
	}
	if escaped {
		raw = unescape(nil, raw)
	}
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return nil, s.errorf("expected :")
	}
	s.pos++
	s.skipSpace()
	return raw, nil
}

// more consumes what follows a member or element: true after ',', false after the closing bracket.
func (s *scanner) more(closing byte) (bool, error) {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return false, errEOF
	}
	switch s.data[s.pos] {
	case ',':
		s.pos++
		s.skipSpace()
		return true, nil
	case closing:
		s.pos++
		return false, nil
	}
	return false, s.errorf("expected , or %c", closing)
}

func (s *scanner) duplicate(key []byte) error {
	return s.errorf("duplicate or case-variant key %s", quote(string(key)))
}

// smallObject is the key count up to which duplicates are found by pairwise comparison, without allocating.
const smallObject = 16

// seenKeys finds the keys of one object that repeat an earlier key, up to case (as [strings.EqualFold] sees it).
type seenKeys struct {
	small  [smallObject][]byte
	n      int
	folded map[string]struct{}
}

// add records key and reports false if an equal or case-variant key was recorded before.
func (k *seenKeys) add(key []byte) bool {
	if k.folded == nil {
		for _, prev := range k.small[:k.n] {
			if bytes.EqualFold(prev, key) {
				return false
			}
		}
		if k.n < smallObject {
			k.small[k.n] = key
			k.n++
			return true
		}
		k.folded = make(map[string]struct{}, 4*smallObject)
		for _, prev := range k.small[:k.n] {
			k.folded[foldKey(prev)] = struct{}{}
		}
	}
	f := foldKey(key)
	if _, dup := k.folded[f]; dup {
		return false
	}
	k.folded[f] = struct{}{}
	return true
}

// foldKey maps keys to one string exactly when [bytes.EqualFold] holds them equal: each rune becomes the least
// rune of its case-folding orbit.
func foldKey(k []byte) string {
	out := make([]byte, 0, len(k))
	for _, r := range string(k) {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		out = utf8.AppendRune(out, least)
	}
	return string(out)
}
