// Package fieldpath parses the field paths that rules use to address values
// in nested records: names separated by dots, "[]" after a name for every
// element of an array (e.g. "file.hashes[].value", "matrix[][]").
package fieldpath

import (
	"errors"
	"fmt"
	"strings"
)

// Segment is one step of a path: a member name, then Arrays levels of "[]".
type Segment struct {
	Name   string
	Arrays int
}

// Path is a parsed field path.
type Path []Segment

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid field path")

// Parse parses s.
func Parse(s string) (Path, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalid)
	}
	var p Path
	for i, part := range strings.Split(s, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name == "" {
			return nil, fmt.Errorf("%w %q: segment %d has no name", ErrInvalid, s, i+1)
		}
		if strings.ContainsAny(name, "]*\"") {
			return nil, fmt.Errorf("%w %q: segment %d: unexpected character in name", ErrInvalid, s, i+1)
		}
		seg := Segment{Name: name}
		if len(part) > len(name) {
			rest = "[" + rest
			for rest != "" {
				if !strings.HasPrefix(rest, "[]") {
					return nil, fmt.Errorf("%w %q: segment %d: only \"[]\" may follow a name", ErrInvalid, s, i+1)
				}
				seg.Arrays++
				rest = rest[2:]
			}
		}
		p = append(p, seg)
	}
	return p, nil
}

// String formats p in the syntax Parse reads.
func (p Path) String() string {
	var b strings.Builder
	for i, s := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Name)
		for range s.Arrays {
			b.WriteString("[]")
		}
	}
	return b.String()
}
