package avrocodec

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/deident/deident/internal/jsonscan"
)

// Sentinel errors; test with errors.Is. None of the errors of this package
// carries a record value: they name a field path, a schema id or an offset.
var (
	// ErrSchemaMismatch: a body or a value does not match its schema.
	ErrSchemaMismatch = errors.New("does not match the schema")
	// ErrTruncated: a body ends before its schema says it does (or, read
	// with the wrong schema, seems to); it wraps ErrSchemaMismatch.
	ErrTruncated = fmt.Errorf("%w: the body ends early (truncated)", ErrSchemaMismatch)
	// ErrNotJSONable: a value has no JSON form (NaN, infinity, invalid UTF-8).
	ErrNotJSONable = errors.New("value has no JSON form")
)

// PathError names the field path at which a value failed; never the value.
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string {
	if e.Path == "" {
		return "(record): " + e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}
func (e *PathError) Unwrap() error { return e.Err }

func pathErr(path string, format string, err error, args ...any) error {
	return &PathError{Path: path, Err: fmt.Errorf(format+": %w", append(args, err)...)}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// AppendJSON appends the JSON form of native (a goavro native value of
// type t) to dst. On error dst is returned unchanged.
func AppendJSON(dst []byte, t *Type, native any) ([]byte, error) {
	start := len(dst)
	dst, err := appendJSON(dst, t, native, "")
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

func appendJSON(dst []byte, t *Type, v any, path string) ([]byte, error) {
	switch t.Kind {
	case Null:
		if v != nil {
			return dst, pathErr(path, "expected null, got %T", ErrSchemaMismatch, v)
		}
		return append(dst, "null"...), nil
	case Boolean:
		b, ok := v.(bool)
		if !ok {
			return dst, pathErr(path, "expected boolean, got %T", ErrSchemaMismatch, v)
		}
		return strconv.AppendBool(dst, b), nil
	case Int, Long:
		switch x := v.(type) {
		case int32:
			return strconv.AppendInt(dst, int64(x), 10), nil
		case int64:
			return strconv.AppendInt(dst, x, 10), nil
		case int:
			return strconv.AppendInt(dst, int64(x), 10), nil
		case time.Time:
			switch t.Logical {
			case "timestamp-millis":
				return strconv.AppendInt(dst, x.UnixMilli(), 10), nil
			case "timestamp-micros":
				return strconv.AppendInt(dst, x.UnixMicro(), 10), nil
			case "date":
				return strconv.AppendInt(dst, int64(math.Floor(float64(x.Unix())/86400)), 10), nil
			}
		case time.Duration:
			switch t.Logical {
			case "time-millis":
				return strconv.AppendInt(dst, x.Milliseconds(), 10), nil
			case "time-micros":
				return strconv.AppendInt(dst, x.Microseconds(), 10), nil
			}
		}
		return dst, pathErr(path, "expected %s, got %T", ErrSchemaMismatch, t.Kind, v)
	case Float, Double:
		var f float64
		switch x := v.(type) {
		case float32:
			f = float64(x)
		case float64:
			f = x
		default:
			return dst, pathErr(path, "expected %s, got %T", ErrSchemaMismatch, t.Kind, v)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, pathErr(path, "%s is NaN or infinite", ErrNotJSONable, t.Kind)
		}
		bits := 64
		if t.Kind == Float {
			bits = 32
		}
		return strconv.AppendFloat(dst, f, 'g', -1, bits), nil
	case String, Enum:
		s, ok := v.(string)
		if !ok {
			return dst, pathErr(path, "expected %s, got %T", ErrSchemaMismatch, t.Kind, v)
		}
		if !utf8.ValidString(s) {
			return dst, pathErr(path, "string is not valid UTF-8", ErrNotJSONable)
		}
		return jsonscan.AppendQuoted(dst, []byte(s)), nil
	case Bytes, Fixed:
		switch x := v.(type) {
		case []byte:
			dst = append(dst, '"')
			for _, c := range x {
				if c < utf8.RuneSelf {
					dst = jsonscan.AppendEscaped(dst, []byte{c})
				} else {
					dst = utf8.AppendRune(dst, rune(c))
				}
			}
			return append(dst, '"'), nil
		case *big.Rat:
			return append(dst, x.FloatString(t.Scale)...), nil
		}
		return dst, pathErr(path, "expected %s, got %T", ErrSchemaMismatch, t.Kind, v)
	case Record:
		m, ok := v.(map[string]any)
		if !ok {
			return dst, pathErr(path, "expected record %s, got %T", ErrSchemaMismatch, t.Name, v)
		}
		dst = append(dst, '{')
		for i, f := range t.Fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonscan.AppendQuoted(dst, []byte(f.Name))
			dst = append(dst, ':')
			var err error
			if dst, err = appendJSON(dst, f.Type, m[f.Name], join(path, f.Name)); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case Array:
		l, ok := v.([]any)
		if !ok {
			return dst, pathErr(path, "expected array, got %T", ErrSchemaMismatch, v)
		}
		dst = append(dst, '[')
		for i, e := range l {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendJSON(dst, t.Items, e, path+"[]"); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case Map:
		m, ok := v.(map[string]any)
		if !ok {
			return dst, pathErr(path, "expected map, got %T", ErrSchemaMismatch, v)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if !utf8.ValidString(k) {
				return dst, pathErr(path, "map key is not valid UTF-8", ErrNotJSONable)
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonscan.AppendQuoted(dst, []byte(k))
			dst = append(dst, ':')
			var err error
			// The key is data: the path names the map, not the key.
			if dst, err = appendJSON(dst, t.Values, m[k], path+".(value)"); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case Union:
		if v == nil {
			for _, b := range t.Branches {
				if b.Kind == Null {
					return append(dst, "null"...), nil
				}
			}
			return dst, pathErr(path, "null in a union without null", ErrSchemaMismatch)
		}
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			return dst, pathErr(path, "expected a union value, got %T", ErrSchemaMismatch, v)
		}
		for name, inner := range m {
			b := t.branch(name)
			if b == nil {
				return dst, pathErr(path, "union has no branch %q", ErrSchemaMismatch, name)
			}
			return appendJSON(dst, b, inner, path)
		}
	}
	return dst, pathErr(path, "unsupported type %s", ErrSchemaMismatch, t.Kind)
}

// branch finds the union branch goavro calls name.
func (t *Type) branch(name string) *Type {
	for _, b := range t.Branches {
		if b.goavroName() == name {
			return b
		}
	}
	return nil
}
