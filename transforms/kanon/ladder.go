package kanon

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/transforms/generalize"
)

// star is the JSON text of a suppressed quasi-identifier (the top level).
const star = `"*"`

// ladder generalizes one quasi-identifier. Level 0 is the value as the
// route outputs it (raw JSON text), levels 1..height-1 the configured
// generalizers, height the top ("*"). Values a generalizer cannot read
// go to "*"; JSON null (or a missing field) stays null at every level.
type ladder struct {
	path   string
	height int
	kind   ladderKind

	times  []*generalize.TimeBucket
	nums   []*generalize.NumericBucket
	hier   map[string][]string // value -> the configured columns, finest first
	hierQ  map[string][]string // the same, as JSON strings
	leaves []map[string]int    // per level, leaves under each node (for NCP)
	nLeaf  int
	ip4    []int
	ip6    []int

	// domain[l] is how many values the QI can take at level l: what makes
	// a QI "more specific" than another (see sequence).
	domain []float64
}

type ladderKind uint8

const (
	ladderNone ladderKind = iota
	ladderTime
	ladderNumeric
	ladderHierarchy
	ladderIP
)

func compileLadder(q config.QuasiIdentifier, dir string) (*ladder, error) {
	l := &ladder{path: q.Path}
	c := q.Ladder
	switch {
	case len(c.TimeBucket) > 0:
		l.kind = ladderTime
		l.domain = append(l.domain, 86400)
		for _, s := range c.TimeBucket {
			d, err := config.ParseBucket(s)
			if err != nil {
				return nil, err
			}
			tb, err := generalize.NewTimeBucket(d)
			if err != nil {
				return nil, err
			}
			l.times = append(l.times, tb)
			l.domain = append(l.domain, math.Max(1, float64(24*time.Hour/d)))
		}
	case len(c.NumericWidth) > 0:
		l.kind = ladderNumeric
		top := c.NumericWidth[len(c.NumericWidth)-1] * 10
		l.domain = append(l.domain, top/c.NumericWidth[0]*10)
		for _, w := range c.NumericWidth {
			nb, err := generalize.NewNumericWidth(w)
			if err != nil {
				return nil, err
			}
			l.nums = append(l.nums, nb)
			l.domain = append(l.domain, top/w)
		}
	case len(c.NumericEdges) > 0:
		l.kind = ladderNumeric
		l.domain = append(l.domain, float64(len(c.NumericEdges[0])+1)*10)
		for _, e := range c.NumericEdges {
			nb, err := generalize.NewNumericEdges(e)
			if err != nil {
				return nil, err
			}
			l.nums = append(l.nums, nb)
			l.domain = append(l.domain, float64(len(e)+1))
		}
	case c.Hierarchy != nil:
		l.kind = ladderHierarchy
		if err := l.loadHierarchy(c.Hierarchy, dir); err != nil {
			return nil, err
		}
	case len(c.IPPrefix) > 0:
		l.kind = ladderIP
		l.ip4, l.ip6 = c.IPPrefix, c.IPv6Prefix
		l.domain = append(l.domain, math.Exp2(32))
		for _, n := range c.IPPrefix {
			l.domain = append(l.domain, math.Exp2(float64(n)))
		}
	default:
		l.domain = []float64{math.Inf(1)} // unknown: step it to "*" first
	}
	l.height = len(l.domain)
	l.domain = append(l.domain, 1)
	return l, nil
}

func (l *ladder) loadHierarchy(h *config.LadderHierarchy, dir string) error {
	path := h.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sep := byte(';')
	if h.Separator != "" {
		sep = h.Separator[0]
	}
	return l.parseHierarchy(f, sep, h.Levels)
}

// parseHierarchy reads an ARX-style hierarchy and checks that it is a
// tree along the chosen levels (each value of a level has one parent in
// the next), which roll-ups rely on. Errors name lines, never values.
func (l *ladder) parseHierarchy(r io.Reader, sep byte, levels []int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var rows [][]string
	cols := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" {
			continue
		}
		parts := strings.Split(text, string(sep))
		if cols == 0 {
			cols = len(parts)
			if cols < 2 {
				return fmt.Errorf("%w: line %d has one column", generalize.ErrHierarchy, line)
			}
		}
		if len(parts) != cols {
			return fmt.Errorf("%w: line %d has %d columns, line 1 has %d", generalize.ErrHierarchy, line, len(parts), cols)
		}
		rows = append(rows, parts)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %v", generalize.ErrHierarchy, err)
	}
	if cols == 0 {
		return fmt.Errorf("%w: empty file", generalize.ErrHierarchy)
	}
	if len(levels) == 0 {
		last := cols - 1
		allStar := true
		for _, r := range rows {
			allStar = allStar && r[last] == "*"
		}
		if allStar {
			last--
		}
		for i := 1; i <= last; i++ {
			levels = append(levels, i)
		}
	}
	for _, lv := range levels {
		if lv >= cols {
			return fmt.Errorf("%w: level %d asked, the file has levels 1 to %d", generalize.ErrHierarchy, lv, cols-1)
		}
	}
	l.hier = make(map[string][]string, len(rows))
	l.hierQ = make(map[string][]string, len(rows))
	l.leaves = make([]map[string]int, len(levels)+1)
	parent := make([]map[string]string, len(levels))
	for i := range l.leaves {
		l.leaves[i] = map[string]int{}
	}
	for i := range parent {
		parent[i] = map[string]string{}
	}
	for n, r := range rows {
		if _, dup := l.hier[r[0]]; dup {
			return fmt.Errorf("%w: line %d repeats a value listed earlier", generalize.ErrHierarchy, n+1)
		}
		out := make([]string, len(levels))
		prev := r[0]
		for i, lv := range levels {
			out[i] = r[lv]
			if p, ok := parent[i][prev]; ok && p != r[lv] {
				return fmt.Errorf("%w: line %d: levels %d to %d are not a tree (a value has two parents)", generalize.ErrHierarchy, n+1, i, i+1)
			}
			parent[i][prev] = r[lv]
			prev = r[lv]
			l.leaves[i+1][r[lv]]++
		}
		l.hier[r[0]] = out
		q := make([]string, len(out))
		for i, v := range out {
			q[i] = string(jsonscan.AppendQuoted(nil, []byte(v)))
		}
		l.hierQ[r[0]] = q
		l.leaves[0][r[0]] = 1
	}
	l.nLeaf = len(rows)
	for i := range l.leaves {
		l.domain = append(l.domain, float64(len(l.leaves[i])))
	}
	return nil
}

// text returns the value's text: a string's unescaped body, or the JSON
// text of anything else; isStr says which.
func text(v string) (string, bool) {
	if len(v) >= 2 && v[0] == '"' {
		body := v[1 : len(v)-1]
		if strings.IndexByte(body, '\\') >= 0 {
			return string(jsonscan.AppendUnescaped(nil, []byte(body))), true
		}
		return body, true
	}
	return v, false
}

// gen appends the JSON value of v at level.
func (l *ladder) gen(dst []byte, v string, level int) []byte {
	if level == 0 || v == "null" || v == "" {
		if v == "" {
			v = "null"
		}
		return append(dst, v...)
	}
	if level >= l.height {
		return append(dst, star...)
	}
	t, isStr := text(v)
	n := len(dst)
	var err error
	switch l.kind {
	case ladderTime:
		dst, err = l.times[level-1].Append(dst, []byte(t), !isStr)
	case ladderNumeric:
		dst, err = l.nums[level-1].Append(dst, []byte(t))
	case ladderHierarchy:
		cols, ok := l.hierQ[t]
		if !ok {
			return append(dst, star...)
		}
		return append(dst, cols[level-1]...)
	case ladderIP:
		a, perr := netip.ParseAddr(t)
		bits := l.ip4
		if perr == nil && !a.Is4() {
			bits = l.ip6
		}
		if perr != nil || len(bits) == 0 {
			return append(dst, star...)
		}
		p, perr := a.Prefix(bits[level-1])
		if perr != nil {
			return append(dst, star...)
		}
		dst = append(dst, '"')
		dst = p.AppendTo(dst)
		return append(dst, '"')
	default:
		err = generalize.ErrNotNumber
	}
	if err != nil {
		return append(dst[:n], star...)
	}
	return dst
}

// ncp is the normalized certainty penalty of v at level: for hierarchies
// (leaves under the node - 1) / (all leaves - 1), for IP prefixes the
// share of the address space, otherwise level / height.
func (l *ladder) ncp(v string, level int) float64 {
	switch {
	case level == 0:
		return 0
	case level >= l.height:
		return 1
	}
	switch l.kind {
	case ladderHierarchy:
		t, _ := text(v)
		cols, ok := l.hier[t]
		if !ok || l.nLeaf < 2 {
			return 1
		}
		return float64(l.leaves[level][cols[level-1]]-1) / float64(l.nLeaf-1)
	case ladderIP:
		t, _ := text(v)
		if a, err := netip.ParseAddr(t); err == nil && a.Is4() {
			return (math.Exp2(float64(32-l.ip4[level-1])) - 1) / (math.Exp2(32) - 1)
		}
	}
	return float64(level) / float64(l.height)
}

// sequence returns the roll-up order: level vectors from all zeros to all
// tops, one QI stepping up one level at a time. The QI that steps is the
// most specific one: the one that can take the most values at its current
// level (its domain: hierarchy column cardinality, buckets per day, numeric
// buckets, IPv4 prefixes; a QI without a ladder is infinitely specific and
// goes to "*" first); ties go to the QI listed first. With caps (a level
// per QI, below its top) no QI steps beyond its cap and the sequence ends
// at the caps.
func sequence(ls []*ladder, caps []uint8) [][]uint8 {
	cur := make([]uint8, len(ls))
	seq := [][]uint8{append([]uint8(nil), cur...)}
	for {
		best := -1
		for i, l := range ls {
			if int(cur[i]) >= l.height || (caps != nil && cur[i] >= caps[i]) {
				continue
			}
			if best < 0 || l.domain[cur[i]] > ls[best].domain[cur[best]] {
				best = i
			}
		}
		if best < 0 {
			return seq
		}
		cur[best]++
		seq = append(seq, append([]uint8(nil), cur...))
	}
}

// appendKey appends the class key of raw QI values at level vector lv:
// the generalized JSON values separated by 0 bytes (which JSON text never
// holds raw, so keys are unambiguous).
func appendKey(dst []byte, ls []*ladder, qi []string, lv []uint8) []byte {
	for i, l := range ls {
		if i > 0 {
			dst = append(dst, 0)
		}
		dst = l.gen(dst, qiAt(qi, i), int(lv[i]))
	}
	return dst
}

func qiAt(qi []string, i int) string {
	if i < len(qi) {
		return qi[i]
	}
	return ""
}

// formatFloat writes a metric as JSON.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	// Counts, levels and most sums are small integers: AppendInt writes
	// the same text as 'g' below 1e6 (from there 'g' switches to an
	// exponent), at a fraction of the cost. -0 keeps its sign through 'g'.
	if i := int64(f); float64(i) == f && i > -1e6 && i < 1e6 && (i != 0 || !math.Signbit(f)) {
		return strconv.AppendInt(dst, i, 10)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}
