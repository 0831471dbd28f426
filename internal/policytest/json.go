package policytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/deident/deident/internal/fieldpath"
)

// decode parses one JSON value, numbers kept as json.Number.
func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// leafDiff is one path at which two records differ.
type leafDiff struct {
	path      string
	got, want string // JSON text; "" when absent
}

// diffJSON compares got with want as JSON values, leaf by leaf. Paths index
// arrays ("attachments[0].size_bytes"); member order is ignored; numbers
// compare by value.
func diffJSON(got, want any) []leafDiff {
	g, w := map[string]any{}, map[string]any{}
	flatten("", got, g)
	flatten("", want, w)
	var out []leafDiff
	for p, wv := range w {
		gv, ok := g[p]
		switch {
		case !ok:
			out = append(out, leafDiff{p, "", show(wv)})
		case !sameLeaf(gv, wv):
			out = append(out, leafDiff{p, show(gv), show(wv)})
		}
	}
	for p, gv := range g {
		if _, ok := w[p]; !ok {
			out = append(out, leafDiff{p, show(gv), ""})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// flatten maps every leaf (scalar, empty object, empty array) to its path.
func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			out[orRoot(prefix)] = x
		}
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, e, out)
		}
	case []any:
		if len(x) == 0 {
			out[orRoot(prefix)] = x
		}
		for i, e := range x {
			flatten(prefix+"["+strconv.Itoa(i)+"]", e, out)
		}
	default:
		out[orRoot(prefix)] = x
	}
}

func orRoot(p string) string {
	if p == "" {
		return "(record)"
	}
	return p
}

func sameLeaf(a, b any) bool {
	an, aok := a.(json.Number)
	bn, bok := b.(json.Number)
	if aok && bok {
		if an == bn {
			return true
		}
		af, err1 := an.Float64()
		bf, err2 := bn.Float64()
		return err1 == nil && err2 == nil && af == bf
	}
	return show(a) == show(b)
}

// show renders a leaf as JSON text.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// formatDiff renders a diff as aligned lines.
func formatDiff(ds []leafDiff, indent string) string {
	w := 0
	for _, d := range ds {
		w = max(w, len(d.path))
	}
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s%-*s  ", indent, w, d.path)
		switch {
		case d.got == "":
			fmt.Fprintf(&b, "missing, want %s\n", d.want)
		case d.want == "":
			fmt.Fprintf(&b, "got %s, want no such field\n", d.got)
		default:
			fmt.Fprintf(&b, "got %s, want %s\n", d.got, d.want)
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// valuesAt collects the values at path p in v, walking every element of
// the arrays p marks with "[]"; missing members yield nothing.
func valuesAt(v any, p fieldpath.Path) []any {
	cur := []any{v}
	for _, seg := range p {
		var next []any
		for _, c := range cur {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			e, ok := m[seg.Name]
			if !ok {
				continue
			}
			level := []any{e}
			for range seg.Arrays {
				var inner []any
				for _, x := range level {
					if a, ok := x.([]any); ok {
						inner = append(inner, a...)
					}
				}
				level = inner
			}
			next = append(next, level...)
		}
		cur = next
	}
	return cur
}
