package avrocodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/fieldpath"
)

// Derive returns the output schema of route applied to records of schema
// in, following what the compiled route writes for such records:
//
//   - a field no rule names, or a drop rule, is not in the output;
//   - keep: the field's type as it is (a whole subtree for a record);
//   - pseudonymize, email_split, ip_prefix_preserving, ip_truncate: string
//     (the field must be a string or an enum);
//   - generalize: time_bucket keeps the type (a timestamp-millis long stays
//     one; a string stays a string); numeric_bucket, hierarchy and map give
//     string labels;
//   - a nullable field stays nullable (["null", T'], default null);
//   - a field reached through a nullable record, and a map addressed by
//     key, may be absent from a record and so become nullable;
//   - an array stays an array (items "null" when no element can yield
//     anything: the route then always writes []).
//
// Derived records are named in the namespace deident.ROUTE. A rule whose
// path is not in the schema exports nothing: it is reported in warnings.
// A rule that would fail on every record (pseudonymize on a long, say) is
// an error, prefixed with the rule's key path.
func Derive(in *Schema, route string, rules []config.FieldRule) (out *Schema, warnings []string, err error) {
	d := &deriver{
		route:   route,
		ns:      "deident." + avroName(route),
		defined: map[string]string{},
		kept:    map[string]bool{},
	}
	root := &rnode{kids: map[string]*rnode{}}
	for i := range rules {
		r := &rules[i]
		if r.Action == config.Drop {
			continue
		}
		p, perr := fieldpath.Parse(r.Path)
		if perr != nil {
			d.errs = append(d.errs, fmt.Errorf("vendors.%s.fields[%d].path: %w", route, i, perr))
			continue
		}
		root.insert(p, r, i)
	}
	if in.Root.Kind != Record {
		return nil, nil, fmt.Errorf("input schema: the top level must be a record, got %s", in.Root.Kind)
	}
	schema, _ := d.record(in.Root, root, "", true)
	if err := errors.Join(d.errs...); err != nil {
		return nil, d.warnings, err
	}
	text, jerr := json.Marshal(schema)
	if jerr != nil {
		return nil, d.warnings, fmt.Errorf("output schema: %w", jerr)
	}
	out, err = ParseSchema(string(text))
	if err != nil {
		return nil, d.warnings, fmt.Errorf("derived output schema: %w", err)
	}
	return out, d.warnings, nil
}

// rnode is the rule tree: one node per path segment.
type rnode struct {
	kids   map[string]*rnode
	order  []string
	arrays int
	rule   *config.FieldRule
	index  int // of the rule in the route's fields
}

func (n *rnode) insert(p fieldpath.Path, r *config.FieldRule, index int) {
	for _, seg := range p {
		k, ok := n.kids[seg.Name]
		if !ok {
			k = &rnode{kids: map[string]*rnode{}, arrays: seg.Arrays}
			n.kids[seg.Name] = k
			n.order = append(n.order, seg.Name)
		}
		n = k
	}
	n.rule, n.index = r, index
}

type deriver struct {
	route    string
	ns       string
	defined  map[string]string // full name -> definition, for derived records
	kept     map[string]bool   // named input types already written in full
	errs     []error
	warnings []string
}

func (d *deriver) warn(path, format string, args ...any) {
	d.warnings = append(d.warnings, path+": "+fmt.Sprintf(format, args...))
}

func (d *deriver) fail(n *rnode, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("vendors.%s.fields[%d] (%s): "+format, append([]any{d.route, n.index, n.rule.Path}, args...)...))
}

// field derives the output type of the value a rule node addresses.
// absent reports that a record may lack the field.
func (d *deriver) field(t *Type, n *rnode, path string) (out any, ok, absent bool) {
	return d.arrays(t, n, n.arrays, path)
}

func (d *deriver) arrays(t *Type, n *rnode, levels int, path string) (out any, ok, absent bool) {
	if levels == 0 {
		return d.value(t, n, path)
	}
	null, rest := t.Nullable()
	var arr *Type
	for _, b := range rest {
		if b.Kind == Array {
			arr = b
			break
		}
	}
	if arr == nil {
		d.warn(path, "the rule expects an array, the schema has %s; nothing is exported", describe(t))
		return nil, false, false
	}
	items, ok, _ := d.arrays(arr.Items, n, levels-1, path+"[]")
	if !ok {
		items = "null" // no element yields anything: always []
	}
	var a any = map[string]any{"type": "array", "items": items}
	if null || len(rest) > 1 {
		return []any{"null", a}, true, true
	}
	return a, true, false
}

func (d *deriver) value(t *Type, n *rnode, path string) (out any, ok, absent bool) {
	if n.rule != nil {
		return d.leaf(t, n, path)
	}
	null, rest := t.Nullable()
	var outs []any
	absent = null
	for _, b := range rest {
		var o any
		var ok, abs bool
		switch b.Kind {
		case Record:
			o, ok = d.record(b, n, path, false)
			abs = !ok || d.recordMayBeAbsent(b, n)
		case Map:
			o, ok = d.mapByKey(b, n, path)
			abs = true
		default:
			absent = true // the route writes nothing for this branch
			continue
		}
		if ok {
			outs = append(outs, o)
		}
		absent = absent || abs
	}
	if len(outs) == 0 {
		if len(rest) > 0 && rest[0].Kind != Record && rest[0].Kind != Map {
			d.warn(path, "rules name fields inside it, the schema has %s; nothing is exported", describe(t))
		}
		return nil, false, false
	}
	if absent {
		return append([]any{"null"}, outs...), true, true
	}
	if len(outs) == 1 {
		return outs[0], true, false
	}
	return outs, true, false
}

// recordMayBeAbsent: the route omits a record none of whose members it
// writes, which happens only when every derived member may be absent.
func (d *deriver) recordMayBeAbsent(t *Type, n *rnode) bool {
	for _, f := range t.Fields {
		k := n.kids[f.Name]
		if k == nil {
			continue
		}
		if !d.mayBeAbsent(f.Type, k) {
			return false
		}
	}
	return true
}

func (d *deriver) mayBeAbsent(t *Type, n *rnode) bool {
	if n.arrays > 0 || n.rule != nil {
		null, _ := t.Nullable()
		return n.arrays > 0 && null
	}
	null, rest := t.Nullable()
	if null {
		return true
	}
	for _, b := range rest {
		if b.Kind == Map || (b.Kind == Record && d.recordMayBeAbsent(b, n)) {
			return true
		}
	}
	return false
}

// record derives a record with the fields n names, in schema order.
func (d *deriver) record(t *Type, n *rnode, path string, top bool) (any, bool) {
	var fields []any
	for _, name := range n.order {
		if t.Field(name) == nil {
			d.warn(join(path, name), "not in record %s; nothing is exported", t.Name)
		}
	}
	for _, f := range t.Fields {
		k := n.kids[f.Name]
		if k == nil {
			continue
		}
		o, ok, absent := d.field(f.Type, k, join(path, f.Name))
		if !ok {
			continue
		}
		fd := map[string]any{"name": f.Name, "type": o}
		if f.Doc != "" {
			fd["doc"] = f.Doc
		}
		if absent || isNullFirst(o) {
			fd["default"] = nil
		} else if k.rule != nil && k.rule.Action == config.Keep && f.HasDefault {
			fd["default"] = f.Default
		}
		fields = append(fields, fd)
	}
	if len(fields) == 0 && !top {
		return nil, false
	}
	if fields == nil {
		fields = []any{}
	}
	def, _ := json.Marshal(fields)
	base := d.ns + "." + simpleName(t.Name)
	name := base
	for i := 2; ; i++ {
		prev, taken := d.defined[name]
		if !taken {
			break
		}
		if prev == string(def) {
			return name, true // the same derivation again: refer to it
		}
		name = fmt.Sprintf("%s_%d", base, i)
	}
	d.defined[name] = string(def)
	rec := map[string]any{"type": "record", "name": name, "fields": fields}
	if top {
		rec["doc"] = "de-identified by deident, route " + d.route
	}
	return rec, true
}

// mapByKey derives a map whose keys the rules name: its values take the
// types the named keys derive to (a union when they differ).
func (d *deriver) mapByKey(t *Type, n *rnode, path string) (any, bool) {
	var types []any
	seen := map[string]bool{}
	add := func(o any) {
		if u, ok := o.([]any); ok {
			for _, b := range u {
				add1(&types, seen, b)
			}
			return
		}
		add1(&types, seen, o)
	}
	for _, key := range n.order {
		o, ok, absent := d.field(t.Values, n.kids[key], path+"."+key)
		if !ok {
			continue
		}
		if absent {
			add("null")
		}
		add(o)
	}
	if len(types) == 0 {
		return nil, false
	}
	var values any = types
	if len(types) == 1 {
		values = types[0]
	}
	return map[string]any{"type": "map", "values": values}, true
}

func add1(types *[]any, seen map[string]bool, o any) {
	key, _ := json.Marshal(o)
	if s, ok := o.(string); ok && seen[s] {
		return
	}
	if seen[string(key)] {
		return
	}
	seen[string(key)] = true
	if s, ok := o.(string); ok {
		seen[s] = true
	}
	if o == "null" {
		*types = append([]any{"null"}, *types...)
		return
	}
	*types = append(*types, o)
}

func isNullFirst(o any) bool {
	u, ok := o.([]any)
	return ok && len(u) > 0 && u[0] == "null"
}

// leaf derives the output type of a rule's action on t.
func (d *deriver) leaf(t *Type, n *rnode, path string) (any, bool, bool) {
	r := n.rule
	if r.Action == config.Keep {
		return d.emit(t), true, false
	}
	null, rest := t.Nullable()
	var outs []any
	seen := map[string]bool{}
	for _, b := range rest {
		o, err := d.actionType(b, r)
		if err != nil {
			d.fail(n, "%v", err)
			return nil, false, false
		}
		add1(&outs, seen, o)
	}
	if null {
		add1(&outs, seen, "null")
	}
	if len(outs) == 1 {
		return outs[0], true, false
	}
	return outs, true, false
}

func (d *deriver) actionType(b *Type, r *config.FieldRule) (any, error) {
	switch r.Action {
	case config.Pseudonymize, config.EmailSplit, config.IPPrefixPreserving, config.IPTruncate:
		if b.Kind == String || b.Kind == Enum {
			return "string", nil
		}
		return nil, fmt.Errorf("%s needs a string, the schema has %s", r.Action, describe(b))
	case config.Generalize:
		switch {
		case r.TimeBucket != "":
			switch {
			case b.Kind == String && b.Logical == "":
				return "string", nil
			case (b.Kind == Long || b.Kind == Int) && (b.Logical == "" || b.Logical == "timestamp-millis"):
				return d.emit(b), nil
			}
			return nil, fmt.Errorf("time_bucket needs an RFC 3339 string, epoch seconds or a timestamp-millis long, the schema has %s", describe(b))
		case r.NumericBucket != nil:
			switch b.Kind {
			case Int, Long, Float, Double, String:
				if b.Logical == "" {
					return "string", nil
				}
			}
			return nil, fmt.Errorf("numeric_bucket needs a number, the schema has %s", describe(b))
		default: // hierarchy, map
			switch b.Kind {
			case String, Enum, Int, Long, Float, Double:
				return "string", nil
			}
			return nil, fmt.Errorf("generalize needs a string or a number, the schema has %s", describe(b))
		}
	}
	return nil, fmt.Errorf("action %s has no avro output type", r.Action)
}

// emit writes t as it is, defining each named type the first time.
func (d *deriver) emit(t *Type) any {
	switch t.Kind {
	case Record, Enum, Fixed:
		if d.kept[t.Name] {
			return t.Name
		}
		d.kept[t.Name] = true
		m := map[string]any{"name": t.Name}
		if t.Doc != "" {
			m["doc"] = t.Doc
		}
		switch t.Kind {
		case Record:
			m["type"] = "record"
			fields := []any{}
			for _, f := range t.Fields {
				fd := map[string]any{"name": f.Name, "type": d.emit(f.Type)}
				if f.HasDefault {
					fd["default"] = f.Default
				}
				if f.Doc != "" {
					fd["doc"] = f.Doc
				}
				if len(f.Aliases) > 0 {
					fd["aliases"] = f.Aliases
				}
				fields = append(fields, fd)
			}
			m["fields"] = fields
		case Enum:
			m["type"] = "enum"
			m["symbols"] = t.Symbols
			if t.Default != nil {
				m["default"] = *t.Default
			}
		case Fixed:
			m["type"] = "fixed"
			m["size"] = t.Size
			d.logical(m, t)
		}
		return m
	case Array:
		return map[string]any{"type": "array", "items": d.emit(t.Items)}
	case Map:
		return map[string]any{"type": "map", "values": d.emit(t.Values)}
	case Union:
		u := make([]any, len(t.Branches))
		for i, b := range t.Branches {
			u[i] = d.emit(b)
		}
		return u
	}
	if t.Logical == "" {
		return t.Kind.String()
	}
	m := map[string]any{"type": t.Kind.String()}
	d.logical(m, t)
	return m
}

func (d *deriver) logical(m map[string]any, t *Type) {
	if t.Logical == "" {
		return
	}
	m["logicalType"] = t.Logical
	if t.Logical == "decimal" {
		m["precision"] = t.Precision
		m["scale"] = t.Scale
	}
}

func describe(t *Type) string {
	if t.Kind == Union {
		names := make([]string, len(t.Branches))
		for i, b := range t.Branches {
			names[i] = describe(b)
		}
		return "[" + strings.Join(names, ", ") + "]"
	}
	s := t.Kind.String()
	if t.Logical != "" {
		s += " (" + t.Logical + ")"
	}
	if t.Name != "" {
		s += " " + t.Name
	}
	return s
}

func simpleName(full string) string {
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		return full[i+1:]
	}
	return full
}

// avroName makes s a valid Avro name: letters, digits, underscores.
func avroName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || ('0' <= b[0] && b[0] <= '9') {
		b = append([]byte{'_'}, b...)
	}
	return string(b)
}
