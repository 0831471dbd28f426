package gate

import (
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/jsonscan"
)

// Checker checks records for one worker. It owns scratch buffers and a
// small cache of raw values it has recently put into the Bloom filter; the
// filter, counters and fail-closed tracker are the Gate's. Not safe for
// concurrent use; no input or output slice is retained after a call.
type Checker struct {
	g        *Gate
	s        jsonscan.Scanner
	unesc    []byte
	fold     []byte
	skel     []byte
	findings []Finding
	reasons  Reasons
	k        int64 // value of the k field, -1 when absent or unreadable

	// recent caches hashes this Checker inserted into generation recentSeq,
	// so a repeated raw value costs one hash instead of k probes.
	recent    [1 << 15]uint64
	recentSeq uint64
	gens      *generations
	now       time.Time
	// sinceRefresh counts identifiers remembered since the clock was read.
	sinceRefresh int
}

// NewChecker returns a Checker for g.
func (g *Gate) NewChecker() *Checker {
	return &Checker{
		g:        g,
		unesc:    make([]byte, 0, 256),
		fold:     make([]byte, 0, 256),
		skel:     make([]byte, 0, 64),
		findings: make([]Finding, 0, 8),
	}
}

// CheckRecord observes the raw input record in, then checks its output out.
func (c *Checker) CheckRecord(in, out []byte) Verdict {
	c.Observe(in)
	return c.Check(out)
}

// Check checks one outgoing JSON record; the k check reads the record's
// k_field. The Verdict's Findings are valid until the next call.
func (c *Checker) Check(out []byte) Verdict { return c.check(out, -1) }

// CheckClass is Check with the distinct-entity count of the record's class
// (record mode) or aggregate given by the k-anonymity stage, for outputs
// that do not carry k_field.
func (c *Checker) CheckClass(out []byte, distinct int) Verdict {
	return c.check(out, int64(max(distinct, 0)))
}

func (c *Checker) fail(r Reason, path string) {
	c.reasons |= 1 << r
	for _, f := range c.findings {
		if f.Reason == r && f.Path == path {
			return
		}
	}
	c.findings = append(c.findings, Finding{r, path})
}

func (c *Checker) check(out []byte, distinct int64) Verdict {
	c.findings, c.reasons, c.k = c.findings[:0], 0, -1
	g := c.g
	if !g.on {
		return Verdict{}
	}
	c.s.Reset(out)
	var err error
	if c.s.Peek() != jsonscan.Object {
		c.fail(ReasonSchema, "(record)")
	} else if err = c.object(g.root, true); err == nil {
		err = c.s.End()
	}
	if err != nil {
		c.fail(ReasonSchema, "(record)") // unreadable output is never vetted
	}
	if g.minK > 0 {
		k := c.k
		if distinct >= 0 {
			k = distinct
		}
		if k < int64(g.minK) {
			c.fail(ReasonK, g.kField)
		}
	}
	return Verdict{Reasons: c.reasons, Findings: c.findings}
}

// name returns a member name, unescaped if need be (into c.unesc).
func (c *Checker) name(key []byte, escaped bool) []byte {
	if !escaped {
		return key
	}
	c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], key)
	return c.unesc
}

func (c *Checker) object(n *gnode, top bool) error {
	if err := c.s.BeginObject(); err != nil {
		return err
	}
	var seen uint64
	for first := true; ; first = false {
		more, err := c.s.NextMember(first)
		if err != nil || !more {
			return err
		}
		key, escaped, err := c.s.Key()
		if err != nil {
			return err
		}
		name := c.name(key, escaped)
		if top && c.g.minK > 0 && string(name) == c.g.kField {
			if err := c.kValue(); err != nil {
				return err
			}
			continue
		}
		child := n.kids[string(name)]
		if child == nil {
			if c.g.schema {
				c.fail(ReasonSchema, n.anyPath)
			}
			c.text(name, n.anyPath, true)
			if err := c.free(n.anyPath); err != nil {
				return err
			}
			continue
		}
		if seen&child.bit != 0 && c.g.schema {
			c.fail(ReasonSchema, child.path) // a repeated member: parsers disagree on which wins
		}
		seen |= child.bit
		if err := c.value(child, child.arrays); err != nil {
			return err
		}
	}
}

func (c *Checker) kValue() error {
	if c.s.Peek() != jsonscan.Number {
		c.fail(ReasonSchema, c.g.kField)
		_, err := c.s.Skip()
		return err
	}
	raw, err := c.s.Number()
	if err != nil {
		return err
	}
	if v, perr := strconv.ParseInt(str(raw), 10, 64); perr == nil {
		c.k = v
	} else {
		c.fail(ReasonSchema, c.g.kField)
	}
	return nil
}

func (c *Checker) value(n *gnode, arrays int) error {
	kind := c.s.Peek()
	if arrays > 0 {
		if kind != jsonscan.Array {
			return c.wrongShape(n)
		}
		if err := c.s.BeginArray(); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := c.s.NextElement(first)
			if err != nil || !more {
				return err
			}
			if err := c.value(n, arrays-1); err != nil {
				return err
			}
		}
	}
	if n.leaf != nil {
		return c.leaf(n, kind)
	}
	if kind != jsonscan.Object {
		return c.wrongShape(n)
	}
	return c.object(n, false)
}

// wrongShape fails the schema at n and still scans the value's text.
func (c *Checker) wrongShape(n *gnode) error {
	if c.g.schema {
		c.fail(ReasonSchema, n.path)
	}
	return c.free(n.path)
}

func (c *Checker) leaf(n *gnode, kind jsonscan.Kind) error {
	l := n.leaf
	if l.kind == kindKeep {
		return c.free(n.path)
	}
	if kind == jsonscan.Null {
		_, err := c.s.Skip()
		return err
	}
	if kind == jsonscan.Number && l.kind == kindTime {
		_, err := c.s.Number()
		return err
	}
	if kind != jsonscan.String {
		return c.wrongShape(n)
	}
	raw, escaped, err := c.s.String()
	if err != nil {
		return err
	}
	val := raw
	if escaped {
		c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], raw)
		val = c.unesc
	}
	ok := true
	switch l.kind {
	case kindPseudonym:
		ok = !escaped && pseudonymOK(l, val)
	case kindEmail:
		ok = !escaped && emailOK(l, val)
	case kindIPPrefix, kindIPTruncate:
		ok = !escaped && ipLeafOK(l, val)
	default: // generalized labels and times: free text to the other checks
		c.text(val, n.path, true)
		return nil
	}
	if !ok {
		// Not what the action writes: the transform cannot be trusted
		// with this value, so it is tested like free text.
		if c.g.schema {
			c.fail(ReasonSchema, n.path)
		}
		c.text(val, n.path, true)
	}
	return nil
}

// free scans any value, testing every string, member name and (for cards)
// number; path is what findings report.
func (c *Checker) free(path string) error {
	switch c.s.Peek() {
	case jsonscan.String:
		raw, escaped, err := c.s.String()
		if err != nil {
			return err
		}
		if escaped {
			c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], raw)
			raw = c.unesc
		}
		c.text(raw, path, true)
		return nil
	case jsonscan.Number:
		raw, err := c.s.Number()
		if err != nil {
			return err
		}
		if c.g.patterns.has(patCard) && len(raw) >= 13 && hasCard(raw) {
			c.fail(ReasonPattern+Reason(patCard), path)
		}
		return nil
	case jsonscan.Object:
		if err := c.s.BeginObject(); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := c.s.NextMember(first)
			if err != nil || !more {
				return err
			}
			key, escaped, err := c.s.Key()
			if err != nil {
				return err
			}
			c.text(c.name(key, escaped), path, true)
			if err := c.free(path); err != nil {
				return err
			}
		}
	case jsonscan.Array:
		if err := c.s.BeginArray(); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := c.s.NextElement(first)
			if err != nil || !more {
				return err
			}
			if err := c.free(path); err != nil {
				return err
			}
		}
	}
	_, err := c.s.Skip()
	return err
}

// text runs the pattern and echo checks on one string.
func (c *Checker) text(s []byte, path string, ipPatterns bool) {
	if len(s) == 0 {
		return
	}
	if want := c.g.patterns; want != 0 {
		if !ipPatterns {
			want &^= 1<<patIPv4 | 1<<patIPv6
		}
		if found := scanPatterns(s, want); found != 0 {
			for p := range numPatterns {
				if found.has(p) {
					c.fail(ReasonPattern+Reason(p), path)
				}
			}
		}
	}
	if c.g.echo != nil && c.echoes(s) {
		c.fail(ReasonEcho, path)
	}
}

// Token rules shared by Observe and Check. A token is looked up only when
// it is at least minToken bytes, and at least minDigits when all digits,
// so short numbers and words are not compared.
const (
	minToken  = 3
	minDigits = 6
	minSkel   = 4
)

func tokenOK(t []byte) bool {
	if len(t) < minToken {
		return false
	}
	if len(t) >= minDigits {
		return true
	}
	for _, c := range t {
		if !isDigit(c) {
			return true
		}
	}
	return false
}

// coarseSep reports whether c separates coarse tokens: everything but
// letters, digits, '.', '-', '_', '@' and non-ASCII bytes.
func coarseSep(c byte) bool { return coarse[c] }

var coarse = func() (t [256]bool) {
	for c := range 0x80 {
		t[c] = !isAlnum(byte(c)) && c != '.' && c != '-' && c != '_' && c != '@'
	}
	return t
}()

// echoes reports whether s, or a token of it, is a raw identifier the
// route has recently seen. s is case-folded and percent-decoded; then the
// whole string, its coarse tokens (split on spaces and punctuation such as
// / \ = & ? : ,), their parts around '@', the dot-separated parts of those,
// and each coarse token's skeleton (without . - _) are looked up.
func (c *Checker) echoes(s []byte) bool {
	b := c.g.echo
	c.fold = foldDecode(c.fold[:0], s)
	f := c.fold
	if tokenOK(f) && b.has(xxhash.Sum64(f)) {
		return true
	}
	for i := 0; i < len(f); {
		for i < len(f) && coarseSep(f[i]) {
			i++
		}
		j := i
		inner := false
		for j < len(f) && !coarseSep(f[j]) {
			if ch := f[j]; ch == '.' || ch == '-' || ch == '_' || ch == '@' {
				inner = true
			}
			j++
		}
		if j > i && c.tokenEchoes(f[i:j], len(f[i:j]) != len(f), inner) {
			return true
		}
		i = j
	}
	return false
}

func (c *Checker) tokenEchoes(t []byte, test, inner bool) bool {
	b := c.g.echo
	if test && tokenOK(t) && b.has(xxhash.Sum64(t)) {
		return true
	}
	if !inner {
		return false
	}
	// Parts around '@', then their dot-separated parts.
	for p := range splitAny(t, '@', '@') {
		if len(p) != len(t) && tokenOK(p) && b.has(xxhash.Sum64(p)) {
			return true
		}
		for q := range splitAny(p, '.', '@') {
			if len(q) != len(p) && tokenOK(q) && b.has(xxhash.Sum64(q)) {
				return true
			}
		}
	}
	c.skel = skeleton(c.skel[:0], t)
	return len(c.skel) != len(t) && len(c.skel) >= minSkel && tokenOK(c.skel) && b.has(xxhash.Sum64(c.skel))
}

// splitAny yields the non-empty parts of t between bytes a or b.
func splitAny(t []byte, a, b byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		start := 0
		for i := 0; i <= len(t); i++ {
			if i == len(t) || t[i] == a || t[i] == b {
				if i > start && !yield(t[start:i]) {
					return
				}
				start = i + 1
			}
		}
	}
}

// skeleton appends t without '.', '-' and '_', so "Alice_17" and "alice.17"
// compare equal.
func skeleton(dst, t []byte) []byte {
	for _, c := range t {
		if c != '.' && c != '-' && c != '_' {
			dst = append(dst, c)
		}
	}
	return dst
}

// foldDecode appends s lower-cased (ASCII; other bytes as they are) with
// %XX escapes decoded and '+' read as a space, as in URL queries.
func foldDecode(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case 'A' <= ch && ch <= 'Z':
			ch += 'a' - 'A'
		case ch == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			ch = unhex(s[i+1])<<4 | unhex(s[i+2])
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			i += 2
		case ch == '+':
			ch = ' '
		}
		dst = append(dst, ch)
	}
	return dst
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// Observe records the raw values of the route's direct-identifier fields
// (pseudonymize, email_split, ip_prefix_preserving, ip_truncate) of the
// input record in, so that Check can recognise them if they reappear
// elsewhere. For each value it remembers the case-folded value, its
// skeleton (without . - _), for e-mail addresses the local part, and for
// host names (rule paths naming host or domain, with two dots or more) the
// first label. Malformed input is observed up to the first error; in is
// not retained. Call it before checking the record's output.
func (c *Checker) Observe(in []byte) {
	g := c.g
	if g.echo == nil || !g.root.ident {
		return
	}
	c.refresh()
	c.s.Reset(in)
	if c.s.Peek() == jsonscan.Object {
		_ = c.observeObject(g.root)
	}
}

// ObserveIdentifier remembers one raw value of the route's field rule
// number rule (an index into the route's fields), as Observe would find it.
// The route's Applier calls it for every direct identifier it reads, which
// spares the gate a second pass over the input (route.Observer).
func (c *Checker) ObserveIdentifier(rule int, val []byte) {
	g := c.g
	if g.echo == nil || rule >= len(g.byRule) || g.byRule[rule] == nil || !g.byRule[rule].identifier() {
		return
	}
	if c.sinceRefresh++; c.sinceRefresh >= refreshEvery || c.gens == nil {
		c.refresh()
	}
	c.remember(val, g.byRule[rule])
}

// refreshEvery bounds how many identifiers ObserveIdentifier remembers
// between two reads of the clock (the Bloom filter's generation).
const refreshEvery = 64

// refresh reads the clock and moves to the filter's current generation.
func (c *Checker) refresh() {
	g := c.g
	c.sinceRefresh = 0
	c.now = g.now()
	c.gens = g.echo.current(c.now)
	if c.gens.seq != c.recentSeq {
		clear(c.recent[:])
		c.recentSeq = c.gens.seq
	}
}

func (c *Checker) observeObject(n *gnode) error {
	if err := c.s.BeginObject(); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := c.s.NextMember(first)
		if err != nil || !more {
			return err
		}
		key, escaped, err := c.s.Key()
		if err != nil {
			return err
		}
		child := n.kids[string(c.name(key, escaped))]
		if child == nil || !child.ident {
			if _, err := c.s.Skip(); err != nil {
				return err
			}
			continue
		}
		if err := c.observeValue(child, child.arrays); err != nil {
			return err
		}
	}
}

func (c *Checker) observeValue(n *gnode, arrays int) error {
	kind := c.s.Peek()
	switch {
	case arrays > 0 && kind == jsonscan.Array:
		if err := c.s.BeginArray(); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := c.s.NextElement(first)
			if err != nil || !more {
				return err
			}
			if err := c.observeValue(n, arrays-1); err != nil {
				return err
			}
		}
	case arrays == 0 && n.leaf != nil && kind == jsonscan.String:
		raw, escaped, err := c.s.String()
		if err != nil {
			return err
		}
		if escaped {
			c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], raw)
			raw = c.unesc
		}
		c.remember(raw, n.leaf)
		return nil
	case arrays == 0 && n.leaf != nil && kind == jsonscan.Number:
		raw, err := c.s.Number()
		if err == nil {
			c.remember(raw, n.leaf)
		}
		return err
	case arrays == 0 && n.leaf == nil && kind == jsonscan.Object:
		return c.observeObject(n)
	}
	_, err := c.s.Skip()
	return err
}

// remember puts a raw identifier and its derived forms into the filter.
func (c *Checker) remember(raw []byte, l *gleaf) {
	c.fold = foldDecode(c.fold[:0], trimSpace(raw))
	v := c.fold
	c.addWithSkeleton(v)
	if at := lastIndex(v, '@'); at > 0 {
		c.addWithSkeleton(v[:at])
	} else if l.hostish {
		if dot := indexByte(v, '.'); dot > 0 && countByte(v, '.') >= 2 && !isDigit(v[len(v)-1]) {
			c.addWithSkeleton(v[:dot])
		}
	}
}

func (c *Checker) addWithSkeleton(v []byte) {
	c.add(v)
	c.skel = skeleton(c.skel[:0], v)
	if len(c.skel) != len(v) && len(c.skel) >= minSkel && tokenOK(c.skel) {
		c.add(c.skel)
	}
}

func (c *Checker) add(v []byte) {
	if !tokenOK(v) {
		return
	}
	h := xxhash.Sum64(v)
	slot := &c.recent[h&(uint64(len(c.recent))-1)]
	if *slot == h|1 {
		return
	}
	*slot = h | 1
	c.g.echo.add(c.gens, h, c.now)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func lastIndex(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func countByte(b []byte, c byte) int {
	n := 0
	for _, x := range b {
		if x == c {
			n++
		}
	}
	return n
}
