package avrocodec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The encoder is ours, not goavro's: goavro writes map entries in Go's
// random map order, and deident promises that the same input, policy and
// key give the same bytes. Map entries are written sorted by key; all else
// follows the Avro specification and matches goavro byte for byte (the
// tests compare them).

// AppendBinary encodes the JSON object rec under s and appends the binary
// body to dst. Errors are *PathError wrapping ErrSchemaMismatch and name no
// value. On error dst is returned unchanged.
func (s *Schema) AppendBinary(dst, rec []byte) ([]byte, error) {
	return encodeJSON(dst, s.Root, rec)
}

// appendBinaryGeneric is AppendBinary through encoding/json and Go values:
// slower, kept as the reference the tests compare AppendBinary with.
func (s *Schema) appendBinaryGeneric(dst, rec []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(rec))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return dst, &PathError{Err: fmt.Errorf("%w: record is not JSON", ErrSchemaMismatch)}
	}
	if d.More() {
		return dst, &PathError{Err: fmt.Errorf("%w: more than one JSON value", ErrSchemaMismatch)}
	}
	start := len(dst)
	dst, err := appendBinary(dst, s.Root, v, "")
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

func mismatch(path, format string, args ...any) error {
	return &PathError{Path: path, Err: fmt.Errorf("%w: "+format, append([]any{ErrSchemaMismatch}, args...)...)}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func appendLong(dst []byte, i int64) []byte {
	return binary.AppendUvarint(dst, uint64(i<<1)^uint64(i>>63))
}

func appendString(dst []byte, s string) []byte {
	dst = appendLong(dst, int64(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, t *Type, v any, path string) ([]byte, error) {
	switch t.Kind {
	case Null:
		if v == nil {
			return dst, nil
		}
	case Boolean:
		if b, ok := v.(bool); ok {
			if b {
				return append(dst, 1), nil
			}
			return append(dst, 0), nil
		}
	case Int, Long:
		n, ok := v.(json.Number)
		if !ok {
			break
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return dst, mismatch(path, "expected an integer for %s", t.Kind)
		}
		if t.Kind == Int && (i < math.MinInt32 || i > math.MaxInt32) {
			return dst, mismatch(path, "integer out of range for int")
		}
		return appendLong(dst, i), nil
	case Float, Double:
		n, ok := v.(json.Number)
		if !ok {
			break
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return dst, mismatch(path, "expected a number for %s", t.Kind)
		}
		if t.Kind == Float {
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case String:
		if s, ok := v.(string); ok {
			return appendString(dst, s), nil
		}
	case Enum:
		s, ok := v.(string)
		if !ok {
			break
		}
		i := slices.Index(t.Symbols, s)
		if i < 0 {
			return dst, mismatch(path, "not a symbol of enum %s", t.Name)
		}
		return appendLong(dst, int64(i)), nil
	case Bytes, Fixed:
		var b []byte
		if t.Logical == "decimal" {
			n, ok := v.(json.Number)
			if !ok {
				break
			}
			var err error
			if b, err = decimalBytes(string(n), t); err != nil {
				return dst, mismatch(path, "%v", err)
			}
		} else {
			s, ok := v.(string)
			if !ok {
				break
			}
			b = make([]byte, 0, len(s))
			for _, r := range s {
				if r > 255 || r == utf8.RuneError {
					return dst, mismatch(path, "%s must be a string of code points 0-255", t.Kind)
				}
				b = append(b, byte(r))
			}
		}
		if t.Kind == Fixed {
			if len(b) != t.Size {
				return dst, mismatch(path, "fixed %s needs %d bytes, got %d", t.Name, t.Size, len(b))
			}
			return append(dst, b...), nil
		}
		dst = appendLong(dst, int64(len(b)))
		return append(dst, b...), nil
	case Record:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		for _, f := range t.Fields {
			fv, present := m[f.Name]
			var err error
			switch {
			case present:
				dst, err = appendBinary(dst, f.Type, fv, join(path, f.Name))
			case f.HasDefault:
				dst, err = appendDefault(dst, f, join(path, f.Name))
			default:
				if null, _ := f.Type.Nullable(); null {
					dst, err = appendBinary(dst, f.Type, nil, join(path, f.Name))
				} else {
					err = mismatch(join(path, f.Name), "missing, and the schema has no default")
				}
			}
			if err != nil {
				return dst, err
			}
		}
		if len(m) > len(t.Fields) {
			return dst, mismatch(path, "has members record %s does not", t.Name)
		}
		for k := range m {
			if t.Field(k) == nil {
				return dst, mismatch(join(path, k), "not in record %s", t.Name)
			}
		}
		return dst, nil
	case Array:
		l, ok := v.([]any)
		if !ok {
			break
		}
		if len(l) > 0 {
			dst = appendLong(dst, int64(len(l)))
			for _, e := range l {
				var err error
				if dst, err = appendBinary(dst, t.Items, e, path+"[]"); err != nil {
					return dst, err
				}
			}
		}
		return append(dst, 0), nil
	case Map:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		if len(m) > 0 {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			dst = appendLong(dst, int64(len(keys)))
			for _, k := range keys {
				dst = appendString(dst, k)
				var err error
				if dst, err = appendBinary(dst, t.Values, m[k], path+".(value)"); err != nil {
					return dst, err
				}
			}
		}
		return append(dst, 0), nil
	case Union:
		for i, b := range t.Branches {
			if (v == nil) != (b.Kind == Null) || (v != nil && !accepts(b, v)) {
				continue
			}
			mark := len(dst)
			out, err := appendBinary(appendLong(dst, int64(i)), b, v, path)
			if err != nil {
				dst = dst[:mark]
				continue // try the next branch that takes this JSON kind
			}
			return out, nil
		}
		return dst, mismatch(path, "no union branch takes a JSON %s", jsonKind(v))
	}
	return dst, mismatch(path, "expected %s, got JSON %s", t.Kind, jsonKind(v))
}

// appendDefault writes a field's default, which is JSON for the field's
// type (for a union, its first branch).
func appendDefault(dst []byte, f *Field, path string) ([]byte, error) {
	raw, err := json.Marshal(f.Default)
	if err != nil {
		return dst, mismatch(path, "unusable default")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	_ = d.Decode(&v)
	t := f.Type
	if t.Kind == Union {
		return appendBinary(appendLong(dst, 0), t.Branches[0], v, path)
	}
	return appendBinary(dst, t, v, path)
}

// decimalBytes is the big-endian two's complement of the unscaled value.
func decimalBytes(num string, t *Type) ([]byte, error) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return nil, fmt.Errorf("expected a decimal number")
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(t.Scale)), nil)))
	if !r.IsInt() {
		return nil, fmt.Errorf("more digits than scale %d", t.Scale)
	}
	n := r.Num()
	var b []byte
	switch n.Sign() {
	case 0:
		b = []byte{0}
	case 1:
		b = n.Bytes()
		if b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
	default:
		// Two's complement: 2^(8*len) + n, with room for the sign bit.
		size := len(n.Bytes()) + 1
		m := new(big.Int).Lsh(big.NewInt(1), uint(8*size))
		b = m.Add(m, n).Bytes()
		for len(b) > 1 && b[0] == 0xff && b[1]&0x80 != 0 {
			b = b[1:]
		}
	}
	if t.Kind == Fixed && len(b) < t.Size {
		pad := byte(0)
		if n.Sign() < 0 {
			pad = 0xff
		}
		b = append(bytes.Repeat([]byte{pad}, t.Size-len(b)), b...)
	}
	return b, nil
}

// accepts reports whether the JSON value v has the kind branch b encodes.
func accepts(b *Type, v any) bool {
	switch v.(type) {
	case bool:
		return b.Kind == Boolean
	case json.Number:
		switch b.Kind {
		case Int, Long, Float, Double:
			return true
		case Bytes, Fixed:
			return b.Logical == "decimal"
		}
	case string:
		return b.Kind == String || b.Kind == Enum || ((b.Kind == Bytes || b.Kind == Fixed) && b.Logical != "decimal")
	case []any:
		return b.Kind == Array
	case map[string]any:
		return b.Kind == Record || b.Kind == Map
	}
	return false
}
