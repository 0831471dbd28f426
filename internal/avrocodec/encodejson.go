package avrocodec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

// The JSON encoder reads the record with the allocation-free scanner the
// routes use and writes Avro binary as it goes, walking the parsed schema.
// It writes the bytes appendBinary writes for the same JSON decoded into
// Go values (the tests compare the two): record members in schema order
// whatever their order in the JSON (in order, the common case, they are
// encoded in one pass), map entries sorted by key.

// jsonEncoder holds a record's scanner.
type jsonEncoder struct {
	s jsonscan.Scanner
}

// encodeJSON appends the binary body of the JSON document rec under t.
func encodeJSON(dst []byte, t *Type, rec []byte) ([]byte, error) {
	var e jsonEncoder
	e.s.Reset(rec)
	start := len(dst)
	if e.s.Peek() == jsonscan.Invalid {
		return dst, &PathError{Err: fmt.Errorf("%w: record is not JSON", ErrSchemaMismatch)}
	}
	dst, err := e.value(dst, t)
	if err != nil {
		return dst[:start], err
	}
	if e.s.End() != nil {
		return dst[:start], &PathError{Err: fmt.Errorf("%w: more than one JSON value", ErrSchemaMismatch)}
	}
	return dst, nil
}

// syntax is the error for JSON the scanner refuses.
func syntax(err error) error {
	return &PathError{Err: fmt.Errorf("%w: record is not JSON (%v)", ErrSchemaMismatch, err)}
}

func expected(t *Type, k jsonscan.Kind) error {
	return &PathError{Err: fmt.Errorf("%w: expected %s, got JSON %s", ErrSchemaMismatch, t.Kind, jsonKindName(k))}
}

func jsonKindName(k jsonscan.Kind) string {
	switch k {
	case jsonscan.True, jsonscan.False:
		return "boolean"
	case jsonscan.Object:
		return "object"
	case jsonscan.Invalid:
		return "nothing"
	}
	return k.String()
}

func (e *jsonEncoder) value(dst []byte, t *Type) ([]byte, error) {
	k := e.s.Peek()
	switch t.Kind {
	case Null:
		if k == jsonscan.Null {
			if _, err := e.s.Skip(); err != nil {
				return dst, syntax(err)
			}
			return dst, nil
		}
	case Boolean:
		if k == jsonscan.True || k == jsonscan.False {
			if _, err := e.s.Skip(); err != nil {
				return dst, syntax(err)
			}
			if k == jsonscan.True {
				return append(dst, 1), nil
			}
			return append(dst, 0), nil
		}
	case Int, Long:
		if k != jsonscan.Number {
			break
		}
		num, err := e.s.Number()
		if err != nil {
			return dst, syntax(err)
		}
		i, ok := parseInt(num)
		if !ok {
			return dst, mismatch("", "expected an integer for %s", t.Kind)
		}
		if t.Kind == Int && (i < math.MinInt32 || i > math.MaxInt32) {
			return dst, mismatch("", "integer out of range for int")
		}
		return appendLong(dst, i), nil
	case Float, Double:
		if k != jsonscan.Number {
			break
		}
		num, err := e.s.Number()
		if err != nil {
			return dst, syntax(err)
		}
		// The scanner validated the literal; the string is not retained.
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 64)
		if err != nil {
			return dst, mismatch("", "expected a number for %s", t.Kind)
		}
		if t.Kind == Float {
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case String:
		if k != jsonscan.String {
			break
		}
		raw, escaped, err := e.s.String()
		if err != nil {
			return dst, syntax(err)
		}
		if !escaped {
			dst = appendLong(dst, int64(len(raw)))
			return append(dst, raw...), nil
		}
		return appendPrefixed(dst, raw), nil
	case Enum:
		if k != jsonscan.String {
			break
		}
		raw, escaped, err := e.s.String()
		if err != nil {
			return dst, syntax(err)
		}
		var buf [64]byte
		if escaped {
			raw = jsonscan.AppendUnescaped(buf[:0], raw)
		}
		for i, sym := range t.Symbols {
			if sym == string(raw) {
				return appendLong(dst, int64(i)), nil
			}
		}
		return dst, mismatch("", "not a symbol of enum %s", t.Name)
	case Bytes, Fixed:
		if t.Logical == "decimal" || k != jsonscan.String {
			// Decimals (numbers) are rare: the generic path.
			return e.generic(dst, t)
		}
		raw, escaped, err := e.s.String()
		if err != nil {
			return dst, syntax(err)
		}
		var buf [64]byte
		if escaped {
			raw = jsonscan.AppendUnescaped(buf[:0], raw)
		}
		mark := len(dst)
		if t.Kind == Bytes {
			dst = appendLong(dst, int64(utf8.RuneCount(raw)))
		}
		body := len(dst)
		for len(raw) > 0 {
			r, n := utf8.DecodeRune(raw)
			if r > 255 || r == utf8.RuneError {
				return dst[:mark], mismatch("", "%s must be a string of code points 0-255", t.Kind)
			}
			dst = append(dst, byte(r))
			raw = raw[n:]
		}
		if t.Kind == Fixed && len(dst)-body != t.Size {
			return dst[:mark], mismatch("", "fixed %s needs %d bytes, got %d", t.Name, t.Size, len(dst)-body)
		}
		return dst, nil
	case Record:
		if k == jsonscan.Object {
			return e.record(dst, t)
		}
	case Array:
		if k != jsonscan.Array {
			break
		}
		if err := e.s.BeginArray(); err != nil {
			return dst, syntax(err)
		}
		mark := len(dst)
		var n int64
		for first := true; ; first = false {
			more, err := e.s.NextElement(first)
			if err != nil {
				return dst, syntax(err)
			}
			if !more {
				break
			}
			if dst, err = e.value(dst, t.Items); err != nil {
				return dst, under("[]", err)
			}
			n++
		}
		if n > 0 {
			dst = insertLong(dst, mark, n)
		}
		return append(dst, 0), nil
	case Map:
		if k == jsonscan.Object {
			return e.mapValue(dst, t)
		}
	case Union:
		return e.union(dst, t, k)
	}
	if k == jsonscan.Invalid {
		_, err := e.s.Skip()
		return dst, syntax(err)
	}
	return dst, expected(t, k)
}

// parseInt parses a JSON number that is an integer (no fraction, no
// exponent) into an int64.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if u > (math.MaxUint64-9)/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// appendPrefixed appends the unescaped JSON string body raw, preceded by
// its length.
func appendPrefixed(dst, raw []byte) []byte {
	mark := len(dst)
	dst = jsonscan.AppendUnescaped(dst, raw)
	return insertLong(dst, mark, int64(len(dst)-mark))
}

// insertLong inserts the varint of n at dst[mark].
func insertLong(dst []byte, mark int, n int64) []byte {
	var buf [binary.MaxVarintLen64]byte
	v := appendLong(buf[:0], n)
	dst = append(dst, v...)
	copy(dst[mark+len(v):], dst[mark:len(dst)-len(v)])
	copy(dst[mark:], v)
	return dst
}

// record encodes an object under a record schema. Members in schema order
// (some possibly absent) are encoded as they come; on the first member out
// of order the record is encoded again from the members' positions.
func (e *jsonEncoder) record(dst []byte, t *Type) ([]byte, error) {
	mark := len(dst)
	obj := e.s // to start again from the object
	if err := e.s.BeginObject(); err != nil {
		return dst, syntax(err)
	}
	next := 0 // the next field expected
	for first := true; ; first = false {
		key, escaped, more, err := e.s.NextKey(first)
		if err != nil {
			return dst, syntax(err)
		}
		if !more {
			break
		}
		i := t.fieldIndex(key, escaped)
		if i < 0 {
			return dst, unknownMember(t, key, escaped)
		}
		if i < next {
			// Out of order (or twice): start again the slow way.
			e.s = obj
			return e.recordUnordered(dst[:mark], t)
		}
		for ; next < i; next++ {
			f := t.Fields[next]
			if f.encErr != nil {
				// It may still come later: the slow way decides.
				e.s = obj
				return e.recordUnordered(dst[:mark], t)
			}
			dst = append(dst, f.enc...)
		}
		f := t.Fields[i]
		if dst, err = e.value(dst, f.Type); err != nil {
			return dst, under(f.Name, err)
		}
		next = i + 1
	}
	for ; next < len(t.Fields); next++ {
		f := t.Fields[next]
		if f.encErr != nil {
			return dst, under(f.Name, f.encErr)
		}
		dst = append(dst, f.enc...)
	}
	return dst, nil
}

// recordUnordered encodes an object whose members are not in schema order:
// it notes where each member's value is, then encodes them in order.
func (e *jsonEncoder) recordUnordered(dst []byte, t *Type) ([]byte, error) {
	var small [16][]byte
	vals := small[:0]
	if len(t.Fields) > len(small) {
		vals = make([][]byte, 0, len(t.Fields))
	}
	vals = vals[:len(t.Fields)]
	if err := e.s.BeginObject(); err != nil {
		return dst, syntax(err)
	}
	for first := true; ; first = false {
		key, escaped, more, err := e.s.NextKey(first)
		if err != nil {
			return dst, syntax(err)
		}
		if !more {
			break
		}
		i := t.fieldIndex(key, escaped)
		if i < 0 {
			return dst, unknownMember(t, key, escaped)
		}
		if vals[i] != nil {
			return dst, mismatch(t.Fields[i].Name, "member appears twice")
		}
		if vals[i], err = e.s.Skip(); err != nil {
			return dst, syntax(err)
		}
	}
	for i, f := range t.Fields {
		if vals[i] == nil {
			if f.encErr != nil {
				return dst, under(f.Name, f.encErr)
			}
			dst = append(dst, f.enc...)
			continue
		}
		sub := jsonEncoder{}
		sub.s.Reset(vals[i])
		var err error
		if dst, err = sub.value(dst, f.Type); err != nil {
			return dst, under(f.Name, err)
		}
	}
	return dst, nil
}

// fieldIndex returns the index of the field named by a JSON key, or -1.
func (t *Type) fieldIndex(key []byte, escaped bool) int {
	var buf [64]byte
	if escaped {
		key = jsonscan.AppendUnescaped(buf[:0], key)
	}
	for i, f := range t.Fields {
		if f.Name == string(key) {
			return i
		}
	}
	return -1
}

// unknownMember names a member the record does not have (a member name is
// schema vocabulary, not a value, as in the other path errors).
func unknownMember(t *Type, key []byte, escaped bool) error {
	if escaped {
		key = jsonscan.AppendUnescaped(nil, key)
	}
	return mismatch(string(key), "not in record %s", t.Name)
}

// mapValue encodes an object under a map schema, entries sorted by key.
func (e *jsonEncoder) mapValue(dst []byte, t *Type) ([]byte, error) {
	if err := e.s.BeginObject(); err != nil {
		return dst, syntax(err)
	}
	mark := len(dst)
	var small [8]entry // start: the key's length; colon: its bytes; end: after the value
	ents := small[:0]
	sorted := true
	for first := true; ; first = false {
		key, escaped, more, err := e.s.NextKey(first)
		if err != nil {
			return dst, syntax(err)
		}
		if !more {
			break
		}
		en := entry{start: len(dst)}
		if escaped {
			dst = appendPrefixed(dst, key)
		} else {
			dst = append(appendLong(dst, int64(len(key))), key...)
		}
		en.colon = en.start + varintLen(dst[en.start:])
		if dst, err = e.value(dst, t.Values); err != nil {
			return dst, under("(value)", err)
		}
		en.end = len(dst)
		if len(ents) > 0 && sorted {
			sorted = binKeyCmp(dst, ents[len(ents)-1], en) < 0
		}
		ents = append(ents, en)
	}
	if len(ents) == 0 {
		return append(dst, 0), nil
	}
	if !sorted {
		var err error
		if dst, err = sortBinEntries(dst, mark, ents); err != nil {
			return dst, err
		}
	}
	dst = insertLong(dst, mark, int64(len(ents)))
	return append(dst, 0), nil
}

// varintLen is the length of the varint at the start of b.
func varintLen(b []byte) int {
	for i, c := range b {
		if c < 0x80 {
			return i + 1
		}
	}
	return len(b)
}

// keyOf returns an encoded map entry's key bytes.
func keyOf(dst []byte, en entry) []byte {
	n, _ := binary.Uvarint(dst[en.start:])
	l := int(n>>1) ^ -int(n&1)
	return dst[en.colon : en.colon+l]
}

func binKeyCmp(dst []byte, a, b entry) int { return bytes.Compare(keyOf(dst, a), keyOf(dst, b)) }

// sortBinEntries rewrites the encoded entries from mark on in key order;
// a key given twice is an error.
func sortBinEntries(dst []byte, mark int, ents []entry) ([]byte, error) {
	for i := 1; i < len(ents); i++ {
		for j := i; j > 0 && binKeyCmp(dst, ents[j-1], ents[j]) > 0; j-- {
			ents[j-1], ents[j] = ents[j], ents[j-1]
		}
	}
	for i := 1; i < len(ents); i++ {
		if binKeyCmp(dst, ents[i-1], ents[i]) == 0 {
			return dst, mismatch("", "map key appears twice")
		}
	}
	end := len(dst)
	dst = append(dst, dst[mark:end]...)
	shift := end - mark
	w := mark
	for _, en := range ents {
		w += copy(dst[w:], dst[en.start+shift:en.end+shift])
	}
	return dst[:w], nil
}

// union encodes a value under the first branch that takes its JSON kind
// (null, then by kind) and encodes it; with several candidates a failing
// one gives way to the next.
func (e *jsonEncoder) union(dst []byte, t *Type, k jsonscan.Kind) ([]byte, error) {
	cand, n := -1, 0
	for i, b := range t.Branches {
		if takes(b, k) {
			if cand < 0 {
				cand = i
			}
			n++
		}
	}
	switch {
	case n == 0:
		if k == jsonscan.Invalid {
			_, err := e.s.Skip()
			return dst, syntax(err)
		}
		return dst, mismatch("", "no union branch takes a JSON %s", jsonKindName(k))
	case n == 1:
		return e.value(appendLong(dst, int64(cand)), t.Branches[cand])
	}
	raw, err := e.s.Skip()
	if err != nil {
		return dst, syntax(err)
	}
	for i, b := range t.Branches {
		if !takes(b, k) {
			continue
		}
		sub := jsonEncoder{}
		sub.s.Reset(raw)
		mark := len(dst)
		out, err := sub.value(appendLong(dst, int64(i)), b)
		if err == nil {
			return out, nil
		}
		dst = dst[:mark]
	}
	return dst, mismatch("", "no union branch takes a JSON %s", jsonKindName(k))
}

// takes reports whether a union branch may encode a JSON value of kind k
// (as accepts does for decoded values).
func takes(b *Type, k jsonscan.Kind) bool {
	switch k {
	case jsonscan.Null:
		return b.Kind == Null
	case jsonscan.True, jsonscan.False:
		return b.Kind == Boolean
	case jsonscan.Number:
		switch b.Kind {
		case Int, Long, Float, Double:
			return true
		case Bytes, Fixed:
			return b.Logical == "decimal"
		}
	case jsonscan.String:
		return b.Kind == String || b.Kind == Enum || ((b.Kind == Bytes || b.Kind == Fixed) && b.Logical != "decimal")
	case jsonscan.Array:
		return b.Kind == Array
	case jsonscan.Object:
		return b.Kind == Record || b.Kind == Map
	}
	return false
}

// generic encodes one value through encoding/json and appendBinary (the
// rare types: decimals).
func (e *jsonEncoder) generic(dst []byte, t *Type) ([]byte, error) {
	raw, err := e.s.Skip()
	if err != nil {
		return dst, syntax(err)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return dst, syntax(err)
	}
	return appendBinary(dst, t, v, "")
}
