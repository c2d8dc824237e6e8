package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
)

type inner struct {
	Name string `json:"name"`
}

type target struct {
	Audience json.RawMessage   `json:"audience"`
	Inner    *inner            `json:"inner"`
	List     []inner           `json:"list"`
	Data     json.RawMessage   `json:"data"`
	Map      map[string]inner  `json:"map"`
	Any      any               `json:"any"`
	Labels   map[string]string `json:"labels"`
	embedded
}

type embedded struct {
	Promoted string `json:"promoted"`
}

func TestCheckKeys(t *testing.T) {
	s := SchemaOf(&target{})
	cases := []struct {
		name, body string
		dup        bool
	}{
		{"the issue's broadcast", `{"audience":{"registration_id":["nobody"]},"audience":"all"}`, true},
		{"a case variant of a field", `{"audience":1,"AUDIENCE":2}`, true},
		{"an escaped variant", `{"audience":1,"\u0061udience":2}`, true},
		{"kelvin sign folds to k", `{"inner":{"name":"a","NAME":"b"}}`, true},
		{"nested struct", `{"inner":{"name":"a","name":"b"}}`, true},
		{"in a list of structs", `{"list":[{"name":"a"},{"name":"a","Name":"b"}]}`, true},
		{"promoted field", `{"promoted":"a","Promoted":"b"}`, true},
		{"opaque data, exact", `{"data":{"id":1,"id":2}}`, true},
		{"opaque data, case differs", `{"data":{"id":1,"ID":2}}`, false},
		{"deep in opaque data", `{"data":[{"a":{"b":1,"b":2}}]}`, true},
		{"map keys, exact", `{"labels":{"a":"x","a":"y"}}`, true},
		{"map keys, case differs", `{"labels":{"a":"x","A":"y"}}`, false},
		{"struct in a map folds", `{"map":{"k":{"name":"a","NAME":"b"}}}`, true},
		{"interface: exact", `{"any":{"k":1,"K":2}}`, false},
		{"same key in two objects", `{"inner":{"name":"a"},"list":[{"name":"a"},{"name":"a"}]}`, false},
		{"same key at two levels", `{"data":{"data":{"data":1}}}`, false},
		{"invalid UTF-8 keys both become U+FFFD", "{\"data\":{\"\xff\":1,\"\xfe\":2}}", true},
		{"a lone surrogate is U+FFFD", `{"data":{"\ud800":1,"\ufffd":2}}`, true},
		{"a surrogate pair is its rune", `{"data":{"\ud83d\ude00":1,"😀":2}}`, true},
		{"escaped quote in a key", `{"data":{"a\"b":1,"a\"c":2}}`, false},
		{"backslash before the closing quote", `{"data":{"a\\":1,"a\\\\":2,"a\\":3}}`, true},
		{"many keys", `{"data":{` + keys(40, "") + `,"k7":0}}`, true},
		{"many distinct keys", `{"data":{` + keys(40, "") + `}}`, false},
		{"many keys folded", `{"inner":{` + keys(40, "") + `,"K7":0}}`, true},
		{"not JSON", `{"audience":`, false},
		{"whitespace", " {\n\t\"audience\" : 1 ,\r\"audience\":2 } ", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckKeys([]byte(c.body), s)
			if got := errors.Is(err, ErrDuplicateKey); got != c.dup {
				t.Errorf("CheckKeys(%s) = %v, want duplicate %v", c.body, err, c.dup)
			}
		})
	}
	// The Kelvin sign K (U+212A) folds to k, as encoding/json matches it.
	if err := CheckKeys([]byte(`{"inner":{"kname":1,"\u212Aname":2}}`), SchemaOf(&struct {
		Inner struct {
			KName int `json:"kname"`
		} `json:"inner"`
	}{})); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("kelvin sign: %v", err)
	}
}

func keys(n int, prefix string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + prefix + "k" + strconv.Itoa(i) + `":0`)
	}
	return b.String()
}

func TestUnchecked(t *testing.T) {
	var batch struct {
		Items []Unchecked `json:"items"`
	}
	if err := Decode([]byte(`{"items":[{"a":1,"a":2},[{"b":{}}]]}`), &batch); err != nil {
		t.Fatalf("Decode: %v; the items are the caller's to check", err)
	}
	if len(batch.Items) != 2 || string(batch.Items[0]) != `{"a":1,"a":2}` {
		t.Errorf("items %q", batch.Items)
	}
	if err := Decode([]byte(`{"items":[],"items":[]}`), &batch); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("the batch's own keys are checked: %v", err)
	}
}

func TestDecode(t *testing.T) {
	var v struct {
		A int `json:"a"`
	}
	for body, want := range map[string]error{
		`{"a":1}`:       nil,
		`{"a":1,"A":2}`: ErrDuplicateKey,
		`{"a":1} 2`:     ErrTrailingData,
	} {
		if err := Decode([]byte(body), &v); !errors.Is(err, want) {
			t.Errorf("Decode(%s) = %v, want %v", body, err, want)
		}
	}
	if err := Decode([]byte(`{"b":1}`), &v); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
	err := Decode([]byte(`{"a":1,"a":2}`), &v)
	if err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("the error should name the key: %v", err)
	}
}

// allFold compares every object's keys as struct fields.
var allFold = func() *Schema { s := &Schema{fold: true}; s.elem = s; return s }()

// reference is the slow, obviously right check: encoding/json's own
// tokenizer, a set of keys per open object. ok is false when data does not
// hold one JSON value.
func reference(data []byte, fold bool) (dup, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false, false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, isDelim := tok.(json.Delim); isDelim && d == '}' {
				stack = stack[:len(stack)-1]
			} else {
				k := tok.(string)
				if fold {
					k = string(appendFolded(nil, []byte(k)))
				}
				if top.keys[k] {
					return true, true
				}
				top.keys[k] = true
				top.key = false
				continue
			}
		} else if d, isDelim := tok.(json.Delim); isDelim {
			switch d {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default: // ] (} of an object is handled above)
				stack = stack[:len(stack)-1]
			}
		}
		// A value ended: its object expects a key next.
		if len(stack) == 0 {
			return false, true
		}
		if top := stack[len(stack)-1]; top.object {
			top.key = true
		}
	}
}

// check compares CheckKeys with the reference, exactly and folded.
func check(t *testing.T, data []byte) {
	t.Helper()
	for _, mode := range []struct {
		fold   bool
		schema *Schema
	}{{false, nil}, {true, allFold}} {
		err := CheckKeys(data, mode.schema)
		if err != nil && !errors.Is(err, ErrDuplicateKey) {
			t.Fatalf("CheckKeys(%q) = %v: only ErrDuplicateKey may come back", data, err)
		}
		dup, ok := reference(data, mode.fold)
		if !ok {
			continue
		}
		if got := err != nil; got != dup {
			t.Fatalf("CheckKeys(%q, fold %v) = %v; the reference says duplicate %v", data, mode.fold, err, dup)
		}
	}
}

// FuzzCheckKeys: no input panics the check, and it agrees with the
// reference on every input that is one JSON value, comparing exactly and
// folded. The seeds are in testdata/fuzz/FuzzCheckKeys, which go test runs.
func FuzzCheckKeys(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, data)
		// What Decode takes has no duplicate key.
		var v any
		if err := Decode(data, &v); err == nil {
			if dup, ok := reference(data, false); !ok || dup {
				t.Fatalf("Decode took %q (the reference: duplicate %v, one value %v)", data, dup, ok)
			}
		}
	})
}

func BenchmarkCheckKeys(b *testing.B) {
	type request struct {
		Audience struct {
			RegistrationID []string `json:"registration_id"`
		} `json:"audience"`
		Notification struct {
			Title string `json:"title"`
			Body  string `json:"body"`
			Badge int    `json:"badge"`
		} `json:"notification"`
		Message json.RawMessage `json:"message"`
		Options struct {
			TTL        int    `json:"ttl"`
			Priority   string `json:"priority"`
			CollapseID string `json:"collapse_id"`
		} `json:"options"`
	}
	body := []byte(`{"audience":{"registration_id":["5J8p2bX0qg7aP1rLk3nQ4w9t"]},` +
		`"notification":{"title":"Your order shipped","body":"It arrives on Tuesday","badge":1},` +
		`"options":{"ttl":3600,"priority":"high","collapse_id":"order-1234"}}`)
	s := SchemaOf(&request{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckKeys(body, s); err != nil {
			b.Fatal(err)
		}
	}
}
