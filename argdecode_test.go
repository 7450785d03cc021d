package taskqueue

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
)

// wideArgs reaches every kind the direct argument decoder handles.
type wideArgs struct {
	B     bool                  `json:"b"`
	I8    int8                  `json:"i8"`
	I     int                   `json:"i"`
	U16   uint16                `json:"u16"`
	U     uint64                `json:"u"`
	F32   float32               `json:"f32"`
	F     float64               `json:"f"`
	S     string                `json:"s"`
	Named namedKey              `json:"named"`
	PP    **int                 `json:"pp"`
	Arr   [2]int                `json:"arr"`
	Grid  [][]float64           `json:"grid"`
	M     map[namedKey][]string `json:"m"`
	MP    map[string]*wideArgs  `json:"mp"`
	Kids  []wideArgs            `json:"kids"`
	Bad   string                `json:"bad tag!"` // an invalid tag name: the field keeps its Go name
	Dash  int                   `json:"-,"`       //nolint:staticcheck // named "-", on purpose
	Skip  int                   `json:"-"`
	Untag int
	priv  int //nolint:unused // left alone
}

type namedKey string

// argDecoderCases are arguments for wideArgs and fuzzArgs: each decodes through the direct decoder exactly as the
// shape check followed by json.Unmarshal does, or fails as it does.
var argDecoderCases = []string{
	`{"b":true,"i8":-128,"i":-0,"u16":65535,"u":18446744073709551615,"f32":1.5,"f":-2e-3,"s":"a\u00e9\ud83d\ude00\n","named":"n"}`,
	`{"pp":7,"arr":[1,2,3],"grid":[[1],[],[2.5,3]],"m":{"k":["x"],"K":null},"mp":{"a":{"s":"in"},"b":null},"kids":[]}`,
	`{"Bad":1,"-":2,"Untag":3}`, `{"bad tag!":1}`, `{"Skip":1}`, `{"priv":1}`, `{"untag":1}`, `{"B":true}`,
	`{"arr":[1]}`, `{"arr":null,"pp":null,"grid":null,"m":null,"s":null,"i":null,"b":null}`, `null`, `[]`, `1`,
	`{"i8":128}`, `{"i8":-129}`, `{"u16":-0}`, `{"u":-1}`, `{"i":1.0}`, `{"i":1e2}`, `{"f32":3.5e38}`, `{"f":1e400}`,
	`{"f":9007199254740993}`, `{"f":9007199254740993.0}`, `{"f32":16777217}`, `{"s":1}`, `{"b":"true"}`, `{"i":"1"}`,
	`{"arr":{}}`, `{"kids":{}}`, `{"m":[]}`, `{"kids":[{"kids":[{"i":1}]},{"I":1}]}`, `{"m":{"a":[1]}}`,
	`{"id":1,"score":2.5,"tags":["a"],"next":{"id":2,"next":null},"attrs":{"k":1},"Plain":3}`,
	`{"Plain":256}`, `{"attrs":{"k":1e39}}`, `{"tags":[null,"x"]}`, `{"next":{"next":{"next":{}}}}`,
}

func FuzzArgDecoder(f *testing.F) {
	for _, c := range argDecoderCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkArgDecoder[wideArgs](t, raw)
		checkArgDecoder[fuzzArgs](t, raw)
	})
}

func TestArgDecoderMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, c := range argDecoderCases {
		checkArgDecoder[wideArgs](t, c)
		checkArgDecoder[fuzzArgs](t, c)
	}
}

// checkArgDecoder decodes raw into T with the direct decoder and with the shape check and json.Unmarshal, and
// fails unless both accept with equal values or both refuse.
func checkArgDecoder[T any](t *testing.T, raw string) {
	t.Helper()
	if validateJSON([]byte(raw), maxSyntaxDepth) != nil {
		return // arguments reach the decoder validated
	}
	typ := reflect.TypeFor[T]()
	dec := newArgDecoder(typ)
	require.NotNil(t, dec, "%s decodes directly", typ)
	var got, want T
	gotErr := dec.decodeArgs([]byte(raw), reflect.ValueOf(&got).Elem())
	wantErr := shapeOf(typ, map[reflect.Type]*argShape{}).check([]byte(raw))
	if wantErr == nil {
		wantErr = json.Unmarshal([]byte(raw), &want)
	}
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s into %s: direct decoder says %v, encoding/json %v", raw, typ, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s into %s: direct decoder made %+v, encoding/json %+v", raw, typ, got, want)
	}
}

func TestArgDecoderLeavesSpecialTypesToEncodingJSON(t *testing.T) {
	t.Parallel()
	type embedding struct{ strictInner }
	type stringOpt struct {
		N int `json:"n,string"`
	}
	type dup struct {
		A int `json:"X"`
		X int // hidden by the tagged field
	}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[strictArgs](), reflect.TypeFor[any](), reflect.TypeFor[json.Number](), reflect.TypeFor[[]byte](),
		reflect.TypeFor[json.RawMessage](), reflect.TypeFor[map[int]string](), reflect.TypeFor[embedding](),
		reflect.TypeFor[stringOpt](), reflect.TypeFor[dup](), reflect.TypeFor[[]caseless](), reflect.TypeFor[chan int](),
	} {
		require.Nil(t, newArgDecoder(typ), "%s", typ)
	}
	require.NotNil(t, newArgDecoder(reflect.TypeFor[argNode]()), "a recursive type")
}
