// Package avrocodec converts Avro data to and from the JSON the compiled
// route policies work on, with github.com/linkedin/goavro/v2 doing the
// binary work. It knows the Confluent wire format (magic byte 0, a 4-byte
// big-endian schema id, the binary body), a schema registry client over the
// REST API, Avro object container files, and derives a route's output
// schema from its input schema and field rules.
//
// # Mapping between Avro and JSON
//
// A decoded record is plain JSON, so the field paths that address JSON
// address Avro by the same names:
//
//   - record: an object, members in schema field order; a nested record is a
//     nested object (invoice.amount).
//   - array: an array (attachments[].name).
//   - map: an object keyed by the map's keys, sorted (labels.cost_center).
//   - union: the branch's value alone, never goavro's {"type": value}
//     wrapper; null is null (a nullable field has the path of its value).
//   - enum: the symbol as a string.
//   - boolean, int, long, float, double: JSON literals and numbers. NaN and
//     infinities have no JSON form: a record holding one is refused.
//   - string: a JSON string; a string that is not valid UTF-8 is refused.
//   - bytes, fixed: a string whose code points 0-255 are the bytes, as in
//     Avro's own JSON encoding.
//   - logical types keep their underlying number: timestamp-millis is an
//     integer of milliseconds since the epoch (time_bucket truncates it and
//     keeps milliseconds), timestamp-micros microseconds, date days,
//     time-millis and time-micros since midnight; decimal is a JSON number
//     with the schema's scale.
//
// Encoding goes the other way under the output schema; a union takes the
// first branch that accepts the JSON value (null, then by JSON kind).
package avrocodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/linkedin/goavro/v2"
)

// Kind is an Avro type.
type Kind uint8

const (
	Null Kind = iota
	Boolean
	Int
	Long
	Float
	Double
	Bytes
	String
	Record
	Enum
	Array
	Map
	Union
	Fixed
)

var kindNames = [...]string{"null", "boolean", "int", "long", "float", "double", "bytes", "string", "record", "enum", "array", "map", "union", "fixed"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

var primitives = map[string]Kind{"null": Null, "boolean": Boolean, "int": Int, "long": Long, "float": Float, "double": Double, "bytes": Bytes, "string": String}

// Type is a parsed Avro type. Named types (record, enum, fixed) are shared
// by every reference to them, so a recursive record is a cycle.
type Type struct {
	Kind    Kind
	Logical string // logicalType, "" when none
	Name    string // full name of a record, enum or fixed
	Doc     string

	Fields   []*Field // record
	Items    *Type    // array
	Values   *Type    // map
	Branches []*Type  // union
	Symbols  []string // enum
	Default  *string  // enum default symbol
	Size     int      // fixed

	Precision, Scale int // decimal

	symJSON [][]byte // enum: each symbol as a JSON string

	// extra holds the schema attributes this package does not interpret
	// (aliases, custom properties), written back when the type is emitted.
	extra map[string]any
}

// Field is a record field.
type Field struct {
	Name       string
	Type       *Type
	Doc        string
	Default    any // the JSON default, valid when HasDefault
	HasDefault bool
	Aliases    []string

	jsonKey []byte // the name as a JSON object key: "name":
	// enc is the field's encoding when a record lacks it: its default,
	// else null for a nullable field; encErr when there is none.
	enc    []byte
	encErr error
}

// Nullable reports whether t is a union with a null branch, and returns its
// other branches.
func (t *Type) Nullable() (bool, []*Type) {
	if t.Kind != Union {
		return false, []*Type{t}
	}
	null := false
	var rest []*Type
	for _, b := range t.Branches {
		if b.Kind == Null {
			null = true
			continue
		}
		rest = append(rest, b)
	}
	return null, rest
}

// Field returns the record field named name, or nil.
func (t *Type) Field(name string) *Field {
	for _, f := range t.Fields {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// goavroName is the name goavro uses for t as a union branch.
func (t *Type) goavroName() string {
	switch t.Kind {
	case Record, Enum, Fixed:
		return t.Name
	}
	if t.Logical != "" && goavroLogical[t.Kind.String()+"."+t.Logical] {
		return t.Kind.String() + "." + t.Logical
	}
	return t.Kind.String()
}

// goavroLogical lists the logical types goavro turns into Go values; others
// stay their underlying type.
var goavroLogical = map[string]bool{
	"long.timestamp-millis": true, "long.timestamp-micros": true,
	"int.time-millis": true, "long.time-micros": true, "int.date": true,
	"bytes.decimal": true, "fixed.decimal": true,
}

// Schema is a parsed schema with its goavro codec. Immutable; safe for
// concurrent use.
type Schema struct {
	Root  *Type
	Codec *goavro.Codec
	// Text is the schema as given (or as derived).
	Text string
}

// ErrInvalidSchema is wrapped by every schema parse error.
var ErrInvalidSchema = errors.New("invalid avro schema")

// codecOptions: spec-compliant decimals, so other readers agree with us.
func codecOptions() *goavro.CodecOption {
	o := goavro.DefaultCodecOption()
	o.EnableDecimalBinarySpecCompliantEncoding = true
	return o
}

// ParseSchema parses an Avro schema (JSON text).
func ParseSchema(text string) (*Schema, error) {
	var raw any
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	p := &parser{named: map[string]*Type{}}
	root, err := p.parse(raw, "")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	codec, err := goavro.NewCodecWithOptions(text, codecOptions())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	prepare(root, map[*Type]bool{})
	return &Schema{Root: root, Codec: codec, Text: text}, nil
}

// prepare computes what the encoder writes for each record field a JSON
// record lacks.
func prepare(t *Type, seen map[*Type]bool) {
	if seen[t] {
		return
	}
	seen[t] = true
	switch t.Kind {
	case Record:
		for _, f := range t.Fields {
			switch null, _ := f.Type.Nullable(); {
			case f.HasDefault:
				f.enc, f.encErr = appendDefault(nil, f, "")
			case null:
				f.enc, f.encErr = appendBinary(nil, f.Type, nil, "")
			default:
				f.encErr = mismatch("", "missing, and the schema has no default")
			}
			prepare(f.Type, seen)
		}
	case Array:
		prepare(t.Items, seen)
	case Map:
		prepare(t.Values, seen)
	case Union:
		for _, b := range t.Branches {
			prepare(b, seen)
		}
	}
}

type parser struct {
	named map[string]*Type
}

func fullName(name, namespace string) string {
	if strings.Contains(name, ".") || namespace == "" {
		return name
	}
	return namespace + "." + name
}

func namespaceOf(full string) string {
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		return full[:i]
	}
	return ""
}

func (p *parser) parse(raw any, ns string) (*Type, error) {
	switch v := raw.(type) {
	case string:
		if k, ok := primitives[v]; ok {
			return &Type{Kind: k}, nil
		}
		if t, ok := p.named[fullName(v, ns)]; ok {
			return t, nil
		}
		if t, ok := p.named[v]; ok {
			return t, nil
		}
		return nil, fmt.Errorf("unknown type %q", v)
	case []any:
		t := &Type{Kind: Union}
		for i, b := range v {
			bt, err := p.parse(b, ns)
			if err != nil {
				return nil, fmt.Errorf("union branch %d: %w", i, err)
			}
			if bt.Kind == Union {
				return nil, fmt.Errorf("union branch %d: unions may not contain unions", i)
			}
			t.Branches = append(t.Branches, bt)
		}
		return t, nil
	case map[string]any:
		return p.parseObject(v, ns)
	}
	return nil, fmt.Errorf("a type must be a string, array or object, got %T", raw)
}

var known = map[string]bool{"type": true, "name": true, "namespace": true, "doc": true, "fields": true, "items": true, "values": true, "symbols": true, "size": true, "logicalType": true, "precision": true, "scale": true, "default": true}

func (p *parser) parseObject(m map[string]any, ns string) (*Type, error) {
	typ, _ := m["type"].(string)
	t := &Type{}
	if logical, ok := m["logicalType"].(string); ok {
		t.Logical = logical
	}
	for k, v := range m {
		if !known[k] {
			if t.extra == nil {
				t.extra = map[string]any{}
			}
			t.extra[k] = v
		}
	}
	t.Doc, _ = m["doc"].(string)
	if k, ok := primitives[typ]; ok {
		t.Kind = k
		if t.Logical == "decimal" {
			t.Precision, t.Scale = intAttr(m, "precision"), intAttr(m, "scale")
		}
		return t, nil
	}
	switch typ {
	case "record", "error", "enum", "fixed":
		name, _ := m["name"].(string)
		if name == "" {
			return nil, fmt.Errorf("%s without a name", typ)
		}
		if n, ok := m["namespace"].(string); ok && !strings.Contains(name, ".") {
			ns = n
		}
		t.Name = fullName(name, ns)
		if _, dup := p.named[t.Name]; dup {
			return nil, fmt.Errorf("%s is defined twice", t.Name)
		}
		p.named[t.Name] = t // before the fields: a record may refer to itself
		ns = namespaceOf(t.Name)
	}
	switch typ {
	case "record", "error":
		t.Kind = Record
		fields, _ := m["fields"].([]any)
		for i, fr := range fields {
			fm, ok := fr.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s field %d: not an object", t.Name, i)
			}
			f := &Field{}
			f.Name, _ = fm["name"].(string)
			if f.Name == "" {
				return nil, fmt.Errorf("%s field %d: no name", t.Name, i)
			}
			f.Doc, _ = fm["doc"].(string)
			f.Default, f.HasDefault = fm["default"]
			if al, ok := fm["aliases"].([]any); ok {
				for _, a := range al {
					if s, ok := a.(string); ok {
						f.Aliases = append(f.Aliases, s)
					}
				}
			}
			ft, err := p.parse(fm["type"], ns)
			if err != nil {
				return nil, fmt.Errorf("%s field %s: %w", t.Name, f.Name, err)
			}
			f.Type = ft
			f.jsonKey = append(appendJSONKey(nil, f.Name), ':')
			t.Fields = append(t.Fields, f)
		}
	case "enum":
		t.Kind = Enum
		syms, _ := m["symbols"].([]any)
		for _, s := range syms {
			str, _ := s.(string)
			t.Symbols = append(t.Symbols, str)
			q, _ := appendJSONString(nil, []byte(str))
			t.symJSON = append(t.symJSON, q)
		}
		if d, ok := m["default"].(string); ok {
			t.Default = &d
		}
	case "fixed":
		t.Kind = Fixed
		t.Size = intAttr(m, "size")
		if t.Logical == "decimal" {
			t.Precision, t.Scale = intAttr(m, "precision"), intAttr(m, "scale")
		}
	case "array":
		t.Kind = Array
		items, err := p.parse(m["items"], ns)
		if err != nil {
			return nil, fmt.Errorf("array items: %w", err)
		}
		t.Items = items
	case "map":
		t.Kind = Map
		values, err := p.parse(m["values"], ns)
		if err != nil {
			return nil, fmt.Errorf("map values: %w", err)
		}
		t.Values = values
	default:
		// {"type": "Name"} or {"type": {...}}: a wrapped reference.
		if m["type"] == nil {
			return nil, errors.New("object without a type")
		}
		return p.parse(m["type"], ns)
	}
	return t, nil
}

func appendJSONKey(dst []byte, name string) []byte {
	out, ok := appendJSONString(dst, []byte(name))
	if !ok {
		return appendCodePoints(dst, []byte(name))
	}
	return out
}

func intAttr(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}
