// Package strictjson decodes JSON that comes from outside the server
// strictly: no unknown fields, nothing after the value, and no object that
// names a key twice.
//
// encoding/json keeps the last of two equal keys and matches struct fields
// case-insensitively, so {"audience":{...},"Audience":"all"} decodes as a
// broadcast while a proxy, a log reader or another JSON library sees the
// first audience. CheckKeys refuses such a body before it is decoded: keys
// are compared after unescaping, in each object separately, and
// case-insensitively (as encoding/json matches them) in the objects that
// decode into a struct. Objects that stay opaque (json.RawMessage, maps,
// interfaces: a provider's own data) are compared exactly, so that a
// payload may hold "id" and "ID".
//
// The package is a leaf below the leaves: push and apierr use it, and it
// imports nothing internal.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Errors of Decode and CheckKeys.
var (
	// ErrDuplicateKey means one object names a key twice. The error
	// returned is a *DuplicateKeyError, which says which key.
	ErrDuplicateKey = errors.New("strictjson: duplicate key")
	// ErrTrailingData means something follows the JSON value.
	ErrTrailingData = errors.New("strictjson: data after the JSON value")
)

// DuplicateKeyError names the key an object has twice. It matches
// ErrDuplicateKey with errors.Is.
type DuplicateKeyError struct {
	Key string // unescaped, cut to 64 bytes
}

func (e *DuplicateKeyError) Error() string {
	return "strictjson: duplicate key " + strconv.Quote(e.Key) + " in an object"
}

// Is makes errors.Is(err, ErrDuplicateKey) hold.
func (e *DuplicateKeyError) Is(target error) bool { return target == ErrDuplicateKey }

// Decode decodes data into v: keys are checked with CheckKeys against v's
// type, unknown fields are errors, and so is anything after the value.
// Errors from encoding/json are returned as they are.
func Decode(data []byte, v any) error {
	if err := CheckKeys(data, SchemaOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}

// Schema says, for each object of a JSON document, how its keys compare:
// case-insensitively where the object decodes into a struct, exactly
// elsewhere. A nil *Schema compares exactly everywhere below it.
type Schema struct {
	skip   bool               // not checked here: the caller checks it on its own (Unchecked)
	fold   bool               // keys are struct fields: compared as encoding/json matches them
	fields map[string]*Schema // a struct's fields by folded name; nil for other kinds
	elem   *Schema            // the elements of an array, the values of a map
}

// child returns the schema of the value under key (normalized as the
// object compares it).
func (s *Schema) child(key []byte) *Schema {
	if s == nil {
		return nil
	}
	if s.skip {
		return s
	}
	if s.fields != nil {
		return s.fields[string(key)]
	}
	return s.elem
}

// Unchecked is a json.RawMessage whose keys CheckKeys and Decode leave
// alone, for a value the caller checks itself: a batch whose items are
// each checked, and refused, on their own.
type Unchecked []byte

// UnmarshalJSON keeps a copy of b.
func (u *Unchecked) UnmarshalJSON(b []byte) error {
	*u = append((*u)[:0], b...)
	return nil
}

var (
	schemas         sync.Map // reflect.Type -> *Schema
	uncheckedType   = reflect.TypeFor[Unchecked]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// SchemaOf returns the schema of the type v decodes into (a pointer, as
// passed to json.Unmarshal, or the value's own type). Schemas are built
// once per type.
func SchemaOf(v any) *Schema {
	if v == nil {
		return nil
	}
	return schemaOf(reflect.TypeOf(v))
}

func schemaOf(t reflect.Type) *Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := schemas.Load(t); ok {
		return s.(*Schema)
	}
	s := &Schema{}
	// Stored before the fields are filled in, so a recursive type finds
	// itself; a concurrent builder of the same type may see it unfinished
	// and build its own, which LoadOrStore then drops.
	actual, loaded := schemas.LoadOrStore(t, s)
	if loaded {
		return actual.(*Schema)
	}
	build(s, t)
	return s
}

func build(s *Schema, t reflect.Type) {
	switch {
	case t == uncheckedType:
		s.skip = true
		return
	case t == rawMessageType:
		// Opaque: exact comparison below. An empty schema does that too,
		// since it folds nothing and has no children.
		return
	case reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType):
		// Its own UnmarshalJSON decides what the object means; whatever
		// it decodes into, a struct matches keys by folding, so this
		// level folds (stricter, never looser). Below it: exact.
		s.fold = true
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		s.fold = true
		s.fields = map[string]*Schema{}
		addFields(s, t)
	case reflect.Slice, reflect.Array:
		s.elem = schemaOf(t.Elem())
	case reflect.Map:
		s.elem = schemaOf(t.Elem())
	}
}

// addFields adds t's JSON fields to s, those of embedded structs
// included, as encoding/json promotes them.
func addFields(s *Schema, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := cutComma(tag)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			addFields(s, ft)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.fields[string(appendFolded(nil, []byte(name)))] = schemaOf(f.Type)
	}
}

func cutComma(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// maxDepth is encoding/json's nesting limit: deeper documents are refused
// by the decoder, so the check need not (and does not) recurse further.
const maxDepth = 10000

// smallObject is how many keys an object may have before its keys go into
// a map rather than being compared one by one.
const smallObject = 16

// CheckKeys returns an error wrapping ErrDuplicateKey if an object of data
// names a key twice, comparing as s says. It checks only keys: data that
// is not JSON passes (at least up to where it stops being JSON), and the
// decoder that follows reports it.
func CheckKeys(data []byte, s *Schema) error {
	c := checkers.Get().(*checker)
	c.data, c.pos = data, 0
	c.space()
	err := c.value(s, 0)
	// Buffers grown by a huge document are not kept for the next one.
	if cap(c.arena) <= 4<<10 && cap(c.keys) <= 256 {
		c.data, c.arena, c.keys = nil, c.arena[:0], c.keys[:0]
		checkers.Put(c)
	}
	if errors.Is(err, errSyntax) {
		return nil
	}
	return err
}

// checkers keeps checkers and their buffers between calls: the push path
// checks every request.
var checkers = sync.Pool{New: func() any {
	return &checker{arena: make([]byte, 0, 256), keys: make([]keyRef, 0, 32)}
}}

// errSyntax stops the check at the first byte that is not JSON.
var errSyntax = errors.New("strictjson: syntax")

// checker walks one document.
type checker struct {
	data  []byte
	pos   int
	arena []byte   // the normalized keys of the objects being walked
	keys  []keyRef // their places in arena, objects one after another
}

type keyRef struct{ off, end int }

func (c *checker) space() {
	for c.pos < len(c.data) {
		switch c.data[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *checker) value(s *Schema, depth int) error {
	if c.pos >= len(c.data) || depth > maxDepth {
		return errSyntax
	}
	switch c.data[c.pos] {
	case '{':
		return c.object(s, depth+1)
	case '[':
		return c.array(s, depth+1)
	case '"':
		_, _, err := c.str()
		return err
	default:
		// A number, true, false or null: skipped to the next delimiter.
		// Whether it is one is the decoder's question.
		start := c.pos
		for c.pos < len(c.data) {
			switch c.data[c.pos] {
			case ',', ']', '}', ':', ' ', '\t', '\n', '\r', '"', '{', '[':
				if c.pos == start {
					return errSyntax
				}
				return nil
			}
			c.pos++
		}
		return nil
	}
}

func (c *checker) array(s *Schema, depth int) error {
	c.pos++ // [
	c.space()
	if c.pos < len(c.data) && c.data[c.pos] == ']' {
		c.pos++
		return nil
	}
	elem := s.child(nil)
	for {
		c.space()
		if err := c.value(elem, depth); err != nil {
			return err
		}
		c.space()
		if c.pos >= len(c.data) {
			return errSyntax
		}
		switch c.data[c.pos] {
		case ',':
			c.pos++
		case ']':
			c.pos++
			return nil
		default:
			return errSyntax
		}
	}
}

func (c *checker) object(s *Schema, depth int) error {
	c.pos++ // {
	first, arenaStart := len(c.keys), len(c.arena)
	defer func() { c.keys, c.arena = c.keys[:first], c.arena[:arenaStart] }()
	var big map[string]struct{} // once the object has more than smallObject keys
	fold := s != nil && s.fold
	skip := s != nil && s.skip
	c.space()
	if c.pos < len(c.data) && c.data[c.pos] == '}' {
		c.pos++
		return nil
	}
	for {
		c.space()
		if c.pos >= len(c.data) || c.data[c.pos] != '"' {
			return errSyntax
		}
		start, raw, err := c.str()
		if err != nil {
			return err
		}
		if skip {
			if err := c.member(s, depth); err != nil || c.data[c.pos-1] == '}' {
				return err
			}
			continue
		}
		off := len(c.arena)
		c.arena = normalize(c.arena, raw, fold)
		k := c.arena[off:]
		n := len(c.keys) - first
		switch {
		case big != nil:
			if _, dup := big[string(k)]; dup {
				return c.duplicate(start)
			}
			big[string(k)] = struct{}{}
		default:
			for _, r := range c.keys[first:] {
				if bytes.Equal(c.arena[r.off:r.end], k) {
					return c.duplicate(start)
				}
			}
			if n+1 > smallObject {
				big = make(map[string]struct{}, 2*smallObject)
				for _, r := range c.keys[first:] {
					big[string(c.arena[r.off:r.end])] = struct{}{}
				}
				big[string(k)] = struct{}{}
			}
		}
		c.keys = append(c.keys, keyRef{off, len(c.arena)})
		if err := c.member(s.child(k), depth); err != nil || c.data[c.pos-1] == '}' {
			return err
		}
	}
}

// member walks the rest of an object member after its key: the colon, the
// value (of schema s) and the comma or closing brace after it.
func (c *checker) member(s *Schema, depth int) error {
	c.space()
	if c.pos >= len(c.data) || c.data[c.pos] != ':' {
		return errSyntax
	}
	c.pos++
	c.space()
	if err := c.value(s, depth); err != nil {
		return err
	}
	c.space()
	if c.pos >= len(c.data) {
		return errSyntax
	}
	switch c.data[c.pos] {
	case ',', '}':
		c.pos++
		return nil
	}
	return errSyntax
}

// duplicate names the key that starts at start (its opening quote).
func (c *checker) duplicate(start int) error {
	raw := c.data[start+1 : c.pos-1]
	name := normalize(nil, raw, false)
	if len(name) > 64 {
		n := 64
		for n > 0 && !utf8.RuneStart(name[n]) {
			n--
		}
		name = append(name[:n], "…"...)
	}
	return &DuplicateKeyError{Key: string(name)}
}

// str skips the string at c.pos and returns where it started and its raw
// contents (between the quotes, escapes as written).
func (c *checker) str() (int, []byte, error) {
	start := c.pos
	c.pos++ // "
	// Keys and most values are short: a byte loop beats a call. Longer
	// strings (a base64 body) go to IndexByte.
	for end := min(c.pos+32, len(c.data)); c.pos < end; c.pos++ {
		switch c.data[c.pos] {
		case '"':
			c.pos++
			return start, c.data[start+1 : c.pos-1], nil
		case '\\':
			c.pos++
			if c.pos >= end {
				return c.longStr(start)
			}
		}
	}
	return c.longStr(start)
}

// longStr finishes str from c.pos, which is inside the string and not
// right after a backslash that escapes it.
func (c *checker) longStr(start int) (int, []byte, error) {
	for {
		i := bytes.IndexByte(c.data[c.pos:], '"')
		if i < 0 {
			return 0, nil, errSyntax
		}
		end := c.pos + i
		// The quote ends the string unless an odd number of backslashes
		// comes right before it.
		bs := 0
		for j := end - 1; j > start && c.data[j] == '\\'; j-- {
			bs++
		}
		c.pos = end + 1
		if bs%2 == 0 {
			return start, c.data[start+1 : end], nil
		}
	}
}

// normalize appends raw (a string's contents as written) unescaped to dst,
// the way encoding/json unquotes it: invalid UTF-8 and lone surrogates
// become U+FFFD. With fold it also folds the result as encoding/json
// matches field names (bytes.EqualFold).
func normalize(dst, raw []byte, fold bool) []byte {
	simple := true
	for _, b := range raw {
		if b == '\\' || b >= utf8.RuneSelf {
			simple = false
			break
		}
	}
	if simple {
		if !fold {
			return append(dst, raw...)
		}
		for _, b := range raw {
			if 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			}
			dst = append(dst, b)
		}
		return dst
	}
	start := len(dst)
	dst = unescape(dst, raw)
	if !fold {
		return dst
	}
	var tmp [64]byte
	u := append(tmp[:0], dst[start:]...)
	return appendFolded(dst[:start], u)
}

func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		b := raw[i]
		if b >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(raw[i:])
			dst = utf8.AppendRune(dst, r) // RuneError for an invalid byte, as encoding/json
			i += n
			continue
		}
		if b != '\\' {
			dst = append(dst, b)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return append(dst, raw[i:]...)
		}
		switch e := raw[i+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
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
			r := hex4(raw[i+2:])
			if r < 0 {
				// Not JSON; the decoder refuses it. Kept as written.
				return append(dst, raw[i:]...)
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw[i+2:])
				}
				if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
					dst = utf8.AppendRune(dst, d)
					i += 6
					continue
				}
				r = unicode.ReplacementChar
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return append(dst, raw[i:]...)
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendFolded appends in folded so that two names fold alike exactly when
// bytes.EqualFold says they are equal: ASCII letters upper-cased, every
// other rune replaced by the smallest rune of its case-folding orbit
// (which is how encoding/json matches keys to field names).
func appendFolded(dst, in []byte) []byte {
	for i := 0; i < len(in); {
		if b := in[i]; b < utf8.RuneSelf {
			if 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			}
			dst = append(dst, b)
			i++
			continue
		}
		r, n := utf8.DecodeRune(in[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
