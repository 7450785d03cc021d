package taskqueue

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// validateJSON checks that data is exactly one JSON value, nested at most maxDepth deep, whose objects hold no
// duplicate keys and no keys that differ only in case (Go's decoder would otherwise pick one of them silently).
// It allocates only for escaped keys and large objects.
func validateJSON(data []byte, maxDepth int) error {
	s := scanner{data: data, maxDepth: maxDepth}
	s.skipSpace()
	if err := s.value(0); err != nil {
		return err
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return s.errorf("trailing data")
	}
	return nil
}

type scanner struct {
	data     []byte
	pos      int
	maxDepth int
}

var errEOF = errors.New("unexpected end of JSON")

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: "+format, append([]any{s.pos}, args...)...)
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

func (s *scanner) number() error {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	intStart := s.pos
	if n := digits(); n == 0 || (n > 1 && s.data[intStart] == '0') {
		s.pos = start
		return s.errorf("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	return nil
}

// str scans a string and returns its raw contents (without quotes) and whether it holds escapes.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	s.pos++ // opening quote
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			s.pos++
			if s.pos >= len(s.data) {
				return nil, false, errEOF
			}
			switch s.data[s.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if len(s.data)-s.pos < 5 || !isHex4(s.data[s.pos+1:s.pos+5]) {
					return nil, false, s.errorf("invalid \\u escape")
				}
				s.pos += 5
			default:
				return nil, false, s.errorf("invalid escape")
			}
		case c < 0x20:
			return nil, false, s.errorf("control character in string")
		default:
			s.pos++
		}
	}
	return nil, false, errEOF
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *scanner) array(depth int) error {
	if depth > s.maxDepth {
		return s.errorf("nested deeper than %d", s.maxDepth)
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEOF
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.errorf("expected , or ]")
		}
	}
}

// smallObject is the key count up to which duplicates are found by pairwise comparison, without allocating.
const smallObject = 16

func (s *scanner) object(depth int) error {
	if depth > s.maxDepth {
		return s.errorf("nested deeper than %d", s.maxDepth)
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	var small [smallObject]string
	keys := small[:0]
	var folded map[string]struct{}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEOF
		}
		if s.data[s.pos] != '"' {
			return s.errorf("expected object key")
		}
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		key := string(raw) // does not escape to the heap for the comparisons below
		if escaped {
			if err := json.Unmarshal(s.data[s.pos-len(raw)-2:s.pos], &key); err != nil {
				return s.errorf("invalid key")
			}
		}
		if folded == nil && len(keys) < smallObject {
			for _, k := range keys {
				if strings.EqualFold(k, key) {
					return s.errorf("duplicate or case-variant key %s", quote(key))
				}
			}
			keys = append(keys, strings.Clone(key))
		} else {
			if folded == nil {
				folded = make(map[string]struct{}, 2*smallObject)
				for _, k := range keys {
					folded[foldKey(k)] = struct{}{}
				}
			}
			lk := foldKey(key)
			if _, dup := folded[lk]; dup {
				return s.errorf("duplicate or case-variant key %s", quote(key))
			}
			folded[lk] = struct{}{}
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.errorf("expected :")
		}
		s.pos++
		s.skipSpace()
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEOF
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.errorf("expected , or }")
		}
	}
}

// foldKey maps keys that differ only in case to one string.
func foldKey(k string) string { return strings.ToLower(strings.ToUpper(k)) }
