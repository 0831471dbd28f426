// Package generalize coarsens values: timestamps to buckets, numbers to
// ranges, categorical values up an ARX-style hierarchy or through a table.
// Each generalizer is compiled once and appends its output as JSON to a
// caller's buffer without allocating. Safe for concurrent use.
package generalize

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

// Sentinel errors for values a generalizer cannot read.
var (
	ErrNotTime   = errors.New("not an RFC 3339 timestamp or epoch number")
	ErrNotNumber = errors.New("not a number")
)

// str views b as a string without copying; the string must not outlive b.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// ParseTime reads an RFC 3339 string or an epoch number (seconds, or
// milliseconds when above 1e11). isNumber says which form val is in.
// Millis reports whether a number was in milliseconds.
func ParseTime(val []byte, isNumber bool) (t time.Time, millis bool, err error) {
	if isNumber {
		f, err := strconv.ParseFloat(str(val), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return time.Time{}, false, ErrNotTime
		}
		if math.Abs(f) > 1e11 {
			return time.UnixMilli(int64(f)).UTC(), true, nil
		}
		return time.Unix(int64(f), 0).UTC(), false, nil
	}
	t, err = time.Parse(time.RFC3339Nano, str(val))
	if err != nil {
		return time.Time{}, false, ErrNotTime
	}
	return t, false, nil
}

// TimeBucket truncates timestamps to a bucket (aligned to the Unix epoch, UTC).
type TimeBucket struct{ d time.Duration }

// NewTimeBucket returns a bucket of width d (at least one second).
func NewTimeBucket(d time.Duration) (*TimeBucket, error) {
	if d < time.Second {
		return nil, fmt.Errorf("time bucket must be at least 1s, got %s", d)
	}
	return &TimeBucket{d: d}, nil
}

// Truncate returns the start of t's bucket.
func (b *TimeBucket) Truncate(t time.Time) time.Time {
	sec := t.Unix()
	w := int64(b.d / time.Second)
	sec -= ((sec % w) + w) % w
	return time.Unix(sec, 0).UTC()
}

// Append writes the bucket start in the value's own form: an RFC 3339 string
// ("2026-11-27T13:00:00Z") or an epoch number in the same unit.
func (b *TimeBucket) Append(dst, val []byte, isNumber bool) ([]byte, error) {
	t, millis, err := ParseTime(val, isNumber)
	if err != nil {
		return dst, err
	}
	t = b.Truncate(t)
	switch {
	case isNumber && millis:
		return strconv.AppendInt(dst, t.UnixMilli(), 10), nil
	case isNumber:
		return strconv.AppendInt(dst, t.Unix(), 10), nil
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339)
	return append(dst, '"'), nil
}

// NumericBucket maps numbers to range labels: "[20,30)", or with edges
// "<18", "[18,30)", ">=65".
type NumericBucket struct {
	width float64
	edges []float64
	// labels[i] is the quoted label of the bucket left of edges[i]; the
	// last is ">=last edge". Precomputed so Append does not format.
	labels [][]byte
}

// NewNumericWidth buckets by fixed width from 0.
func NewNumericWidth(width float64) (*NumericBucket, error) {
	if !(width > 0) || math.IsInf(width, 0) {
		return nil, fmt.Errorf("numeric bucket width must be positive, got %v", width)
	}
	return &NumericBucket{width: width}, nil
}

// NewNumericEdges buckets by ascending edges.
func NewNumericEdges(edges []float64) (*NumericBucket, error) {
	if len(edges) == 0 {
		return nil, errors.New("numeric bucket needs at least one edge")
	}
	for i := 1; i < len(edges); i++ {
		if !(edges[i] > edges[i-1]) {
			return nil, fmt.Errorf("numeric bucket edges must be strictly ascending at %d", i)
		}
	}
	b := &NumericBucket{edges: append([]float64(nil), edges...)}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	b.labels = append(b.labels, []byte(`"<`+f(edges[0])+`"`))
	for i := 1; i < len(edges); i++ {
		b.labels = append(b.labels, []byte(`"[`+f(edges[i-1])+","+f(edges[i])+`)"`))
	}
	b.labels = append(b.labels, []byte(`">=`+f(edges[len(edges)-1])+`"`))
	return b, nil
}

// Append writes the label of the bucket holding the number val (JSON number
// text, or a numeric string).
func (b *NumericBucket) Append(dst, val []byte) ([]byte, error) {
	x, err := strconv.ParseFloat(str(val), 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return dst, ErrNotNumber
	}
	if b.edges != nil {
		i := 0
		for i < len(b.edges) && x >= b.edges[i] {
			i++
		}
		return append(dst, b.labels[i]...), nil
	}
	lo := math.Floor(x/b.width) * b.width
	dst = append(dst, `"[`...)
	dst = strconv.AppendFloat(dst, lo, 'f', -1, 64)
	dst = append(dst, ',')
	dst = strconv.AppendFloat(dst, lo+b.width, 'f', -1, 64)
	return append(dst, `)"`...), nil
}

// Table maps a value's text to a precomputed JSON string; it backs both
// Hierarchy and Map.
type Table struct {
	out   map[string][]byte // value -> quoted JSON output
	plain map[string]string // value -> output text, for Lookup
	def   []byte
	pdef  string
	Size  int
}

// Append writes the mapped value for val (the raw text of a string or number).
func (t *Table) Append(dst, val []byte) []byte {
	if o, ok := t.out[str(val)]; ok {
		return append(dst, o...)
	}
	return append(dst, t.def...)
}

// Lookup returns the mapped value as text, and whether val was listed.
func (t *Table) Lookup(val string) (string, bool) {
	if o, ok := t.plain[val]; ok {
		return o, true
	}
	return t.pdef, false
}

func newTable(def string) *Table {
	return &Table{out: map[string][]byte{}, plain: map[string]string{}, def: quote(def), pdef: def}
}

func (t *Table) add(from, to string) {
	t.out[from] = quote(to)
	t.plain[from] = to
	t.Size = len(t.out)
}

func quote(s string) []byte { return jsonscan.AppendQuoted(nil, []byte(s)) }

// NewMap compiles an explicit table; def is written for unlisted values.
func NewMap(from, to []string, def string) (*Table, error) {
	t := newTable(def)
	for i := range from {
		if _, dup := t.out[from[i]]; dup {
			return nil, fmt.Errorf("map entry %d: %q is listed twice", i, from[i])
		}
		t.add(from[i], to[i])
	}
	return t, nil
}

// ErrHierarchy wraps errors in hierarchy files.
var ErrHierarchy = errors.New("invalid hierarchy")

// ParseHierarchy reads an ARX-style hierarchy (one line per value, column 0
// the value, each further column a coarser level, usually "*" last) and
// returns the table for level (1 = first generalization). Every line must
// have the same number of columns; a value may appear once. Errors name the
// line, not its contents.
func ParseHierarchy(r io.Reader, sep byte, level int, def string) (*Table, error) {
	if level < 1 {
		return nil, fmt.Errorf("%w: level must be at least 1, got %d", ErrHierarchy, level)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	t := newTable(def)
	cols := 0
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text() // bufio.ScanLines has dropped one \r before the \n
		if strings.TrimSpace(text) == "" {
			continue
		}
		parts := strings.Split(text, string(sep))
		if cols == 0 {
			cols = len(parts)
			if cols < 2 {
				return nil, fmt.Errorf("%w: line %d has one column; a hierarchy needs a value and at least one level", ErrHierarchy, line)
			}
			if level >= cols {
				return nil, fmt.Errorf("%w: level %d asked, the file has levels 1 to %d", ErrHierarchy, level, cols-1)
			}
		}
		if len(parts) != cols {
			return nil, fmt.Errorf("%w: line %d has %d columns, line 1 has %d", ErrHierarchy, line, len(parts), cols)
		}
		if _, dup := t.out[parts[0]]; dup {
			return nil, fmt.Errorf("%w: line %d repeats a value listed earlier", ErrHierarchy, line)
		}
		t.add(parts[0], parts[level])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrHierarchy, line+1, err)
	}
	if cols == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrHierarchy)
	}
	return t, nil
}
