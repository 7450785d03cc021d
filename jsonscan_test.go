package taskqueue

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestValidateJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		input  string
		ok     bool
		detail string // for refusals, a substring of the message
	}{
		// Accepted, as json.Valid accepts them.
		{`{}`, true, ""},
		{` [ ] `, true, ""},
		{`0`, true, ""},
		{`-0.0e+0`, true, ""},
		{`1E-7`, true, ""},
		{`123456789012345678901234567890`, true, ""},
		{`"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"`, true, ""},
		{`"é日本😀"`, true, ""},
		{`true`, true, ""},
		{`null`, true, ""},
		{`{"a":[1,{"b":null}],"c":"d"}`, true, ""},
		{"\t\n\r {\"a\" : 1 }\n", true, ""},
		{`{"a":1,"b":2,"ab":3,"ba":4}`, true, ""},
		{`{"ß":1,"ss":2}`, true, ""}, // no simple case folding maps ß to ss
		{`[{"a":1},{"a":1}]`, true, ""},
		{`{"a":{"a":{"a":1}}}`, true, ""},

		// Refused, as json.Valid refuses them.
		{``, false, "unexpected end"},
		{` `, false, "unexpected end"},
		{`{`, false, "unexpected end"},
		{`{"a"`, false, "expected :"},
		{`{"a":}`, false, "unexpected character"},
		{`{"a":1,}`, false, "expected object key"},
		{`{a:1}`, false, "expected object key"},
		{`[1,]`, false, "unexpected character"},
		{`[1 2]`, false, "expected , or ]"},
		{`{"a":1 "b":2}`, false, "expected , or }"},
		{`01`, false, "invalid number"},
		{`-`, false, "invalid number"},
		{`-01`, false, "invalid number"},
		{`1.`, false, "invalid number"},
		{`.5`, false, "unexpected character"},
		{`1e`, false, "invalid number"},
		{`1e+`, false, "invalid number"},
		{`+1`, false, "unexpected character"},
		{`NaN`, false, "unexpected character"},
		{`Infinity`, false, "unexpected character"},
		{`tru`, false, "invalid literal"},
		{`nul`, false, "invalid literal"},
		{`True`, false, "unexpected character"},
		{`"abc`, false, "unexpected end"},
		{`"\`, false, "unexpected end"},
		{`"\x"`, false, "invalid escape"},
		{`"\u00g0"`, false, `invalid \u escape`},
		{`"\u00"`, false, `invalid \u escape`},
		{"\"a\x00b\"", false, "control character"},
		{"\"a\nb\"", false, "control character"},
		{`{} {}`, false, "trailing data"},
		{`1 2`, false, "trailing data"},
		{"\xef\xbb\xbf{}", false, "unexpected character"}, // a byte order mark is not JSON

		// Refused, although json.Valid accepts them: the points where we are stricter.
		{`{"a":1,"a":2}`, false, `duplicate or case-variant key "a"`},
		{`{"a":1,"A":2}`, false, `case-variant key "A"`},
		{`{"a":1,"\u0061":2}`, false, `duplicate or case-variant key "a"`},
		{`{"k":1,"\u212a":2}`, false, "case-variant key \"\u212a\""}, // Kelvin sign
		{`{"s":1,"ſ":2}`, false, `case-variant key "ſ"`},             // long s
		{`{"σ":1,"ς":2}`, false, "case-variant key"},                 // final sigma
		{`[{"x":{"y":1,"Y":2}}]`, false, `"Y"`},
		{"\"\xff\"", false, "invalid UTF-8"},
		{"\"\xc3\"", false, "invalid UTF-8"},
		{"\"\xed\xa0\x80\"", false, "invalid UTF-8"},     // an encoded surrogate
		{"\"\xf4\x90\x80\x80\"", false, "invalid UTF-8"}, // above U+10FFFF
		{"{\"\xff\":1}", false, "invalid UTF-8"},
		{`"\ud800"`, false, "surrogate"},
		{`"\udfff"`, false, "surrogate"},
		{`"\ud800\u0041"`, false, "surrogate"},
		{`"\ud800\ud800"`, false, "surrogate"},
		{`"\ud800x\udc00"`, false, "surrogate"},
		{`"\ud800\`, false, "surrogate"},
		{nestedArrays(5), true, ""},
		{nestedArrays(6), false, "nested deeper than 5"},
		{`{"a":` + nestedArrays(5) + `}`, false, "nested deeper than 5"},
	} {
		err := validateJSON([]byte(tc.input), 5)
		if tc.ok {
			require.NoError(t, err, "%q", tc.input)
			require.True(t, json.Valid([]byte(tc.input)), "%q", tc.input)
			continue
		}
		require.Error(t, err, "%q", tc.input)
		require.Contains(t, err.Error(), tc.detail, "%q", tc.input)
	}
}

func TestValidateJSONLargeObjects(t *testing.T) {
	t.Parallel()
	// Past 16 keys duplicates are found through a map of folded keys: same verdicts as pairwise.
	keys := make([]string, 0, 40)
	for i := range 40 {
		keys = append(keys, `"key`+strings.Repeat("x", i)+`":1`)
	}
	obj := "{" + strings.Join(keys, ",") + "}"
	require.NoError(t, validateJSON([]byte(obj), 5))
	for _, dup := range []string{`"key":2`, `"KEY":2`, `"keyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX":2`, `"\u006bey":2`, `"\u212aey":2`} {
		bad := strings.TrimSuffix(obj, "}") + "," + dup + "}"
		require.ErrorContains(t, validateJSON([]byte(bad), 5), "duplicate or case-variant key", dup)
	}
	// A duplicate of a key seen before the switch to the map, found after it.
	bad := strings.TrimSuffix(obj, "}") + `,"KEYx":3}`
	require.Error(t, validateJSON([]byte(bad), 5))
}

func TestFoldKeyAgreesWithEqualFold(t *testing.T) {
	t.Parallel()
	runes := []rune{'a', 'A', 'k', 'K', '\u212a', 's', 'S', 'ſ', 'ß', 'ẞ', 'σ', 'ς', 'Σ', 'ǅ', 'ǆ', 'Ǆ', 'İ', 'i', 'ı',
		'I', 'Ω', 'ω', '\u2126', 'µ', 'μ', 'Μ', 'é', 'É', '0', '_', '\ufffd', '😀', 'Ꭰ', 'ꭰ'}
	for _, a := range runes {
		for _, b := range runes {
			x, y := []byte("k"+string(a)), []byte("k"+string(b))
			require.Equal(t, bytes.EqualFold(x, y), foldKey(x) == foldKey(y), "%q %q", a, b)
		}
	}
}

func TestUnescapeMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`""`, `"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u0041\u00e9\u65e5\uD83D\uDE00\uffff"`,
		`"mixed é \u00e9 😀 \ud83d\ude00 end"`, `"\u0000"`, `"` + strings.Repeat(`\u00fc`, 100) + `"`} {
		s := scanner{data: []byte(in), maxDepth: 5}
		raw, escaped, err := s.str()
		require.NoError(t, err, in)
		var want string
		require.NoError(t, json.Unmarshal([]byte(in), &want))
		require.Equal(t, want, stringValue(raw, escaped), in)
		require.True(t, utf8.ValidString(stringValue(raw, escaped)))
	}
}

func TestValidateJSONNoAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun counts every goroutine's allocations.
	payload := benchEnvelope(t).SerializedTask.Payload
	allocs := testing.AllocsPerRun(100, func() {
		if err := validateJSON(payload, DefaultMaxDepth); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

func BenchmarkValidateJSON(b *testing.B) {
	payload := benchEnvelope(b).SerializedTask.Payload
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := validateJSON(payload, DefaultMaxDepth); err != nil {
			b.Fatal(err)
		}
	}
}
