package gate

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

// Checker checks records for one worker. It owns scratch buffers and
// caches (about 290 KiB in all, and 12 KiB per run of a shape, shape.go):
// fingerprints of raw values it has recently put into the Bloom filter, a
// memo of the verdicts on short strings, and the shapes of records it has
// vetted in full, with their runs and recent values (shape.go); the filter,
// counters and fail-closed tracker are the Gate's. Not safe for concurrent
// use; no input or output slice is retained after a call (the memo and the
// shapes keep copies).
type Checker struct {
	// seen comes first: a Checker is over 32 KiB, so it has pages of its
	// own and seen's sets of four start on cache lines
	// (TestSeenSetsLineAligned).
	seen [seenSlots]uint64

	g        *Gate
	s        jsonscan.Scanner
	unesc    []byte
	fold     []byte
	skel     []byte
	findings []Finding
	reasons  Reasons
	k        int64 // value of the k field, -1 when absent or unreadable

	// version is the Bloom filter's version read at the start of a check,
	// before any lookup: a negative echo lookup made during the check is
	// still negative while the filter's version is unchanged. sigStamp is
	// its signature version (with sigStampBit, so the two never equal):
	// a negative echo test none of whose lookups got past its signature
	// is still negative while that is unchanged (stamp, valid). pastSig
	// says whether a lookup got past its signature since it was cleared.
	version  uint64
	sigStamp uint64
	pastSig  bool
	// memo remembers, per distinct string (compared in full, the hash only
	// picks the slot), the patterns it holds and the version at which its
	// echo test was last negative, so a repeated value costs one hash and
	// one compare.
	memo         [memoSlots]memoEntry
	memoText     [memoSlots * memoMax]byte
	memoLong     [memoLongSlots]memoEntry
	memoLongText [memoLongSlots * memoLongMax]byte

	// tsHead is the date and hour of a timestamp whose echo test of them
	// was negative at stamp tsVersion (echoTimestamp).
	tsHead    [13]byte
	tsHeadW   [2]uint64 // tsHead's words at 0 and tsLen-8
	tsLen     int
	tsVersion uint64

	// shapes are the record shapes this Checker has vetted in full (see
	// shape.go); rec records a full pass so that it can become one.
	shapes    [maxShapes]shape
	lastShape int
	tick      uint64
	rec       recorder
	pend      pendingRun // matches'

	// seen holds fingerprints of the raw identifiers this Checker has put
	// into generation seenSeq, so a repeated raw value costs a hash and a
	// few compares in one cache line instead of folding, deriving, hashing
	// and inserting its forms again. The fingerprint is 64 bits of a hash
	// seeded at random per Checker: a false match (a new value skipped)
	// takes a 2^-64 coincidence that nobody can aim at. (seen is the
	// struct's first field.)
	seenSeed uint64
	seenSeq  uint64
	gens     *generations
	now      time.Time
	// sinceRefresh counts identifiers remembered since the clock was read.
	sinceRefresh int
	// pending are the forms of raw identifiers remembered since the last
	// flush, which puts them into the filter together (insertAll): before
	// every check, at the start of every record (Generation), at the end
	// of Observe, and when full. A record's identifiers are told in a burst
	// at its end, so they go in as one batch.
	pending  [maxPending]form
	npending int

	// reference turns the shapes and the memo off (tests compare verdicts
	// with and without them).
	reference bool
}

// maxPending is how many remembered forms wait for a flush at most.
const maxPending = 32

// The text memo: direct-mapped tables of strings up to memoMax bytes and
// of those up to memoLongMax (command lines, URLs, user agents); longer
// ones are checked every time.
const (
	memoSlots     = 1 << 10
	memoMax       = 64
	memoLongSlots = 1 << 8
	memoLongMax   = 255
)

// The seen cache: sets of four fingerprints (one 32-byte group), 16384 in
// all (128 KiB); on the benchmark route about 98% of raw values hit.
const (
	seenSlots = 1 << 14
	seenWays  = 4
)

// seenFour fails to compile unless seenWays is 4, as remember assumes.
var _ [seenWays - 4]struct{}
var _ [4 - seenWays]struct{}

type memoEntry struct {
	h       uint64     // the string's prehash; any value with n == 0: empty slot
	version uint64     // stamp of the last negative echo test; 0: none
	pats    patternSet // patterns found, of all the route tests
	n       uint8      // the string's length
}

// NewChecker returns a Checker for g.
func (g *Gate) NewChecker() *Checker {
	return &Checker{
		g:        g,
		unesc:    make([]byte, 0, 256),
		fold:     make([]byte, 0, 256),
		skel:     make([]byte, 0, 64),
		findings: make([]Finding, 0, 8),
		seenSeed: rand.Uint64(),
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
	if g.echo != nil {
		c.flush()
		c.version = g.echo.version.Load()
		c.sigStamp = g.echo.sigVersion.Load() | sigStampBit
	}
	if !c.reference {
		// The kept shapes, the one that matched last first (shape.go).
		if sh := &c.shapes[c.lastShape]; sh.used != 0 && c.matches(sh, out, distinct) {
			c.tick++
			sh.used = c.tick
			return Verdict{}
		}
		if c.reasons == 0 && c.otherShapes(out, distinct) {
			return Verdict{}
		}
	}
	c.findings, c.reasons, c.k = c.findings[:0], 0, -1
	c.rec = recorder{on: len(out) > 0, ok: true, events: c.rec.events[:0]}
	if len(out) > 0 {
		c.rec.base = uintptr(unsafe.Pointer(unsafe.SliceData(out)))
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
	c.checkK(distinct)
	if c.reasons == 0 && c.rec.on && c.rec.ok && !c.reference {
		c.learn(out)
	}
	c.rec.on = false
	return Verdict{Reasons: c.reasons, Findings: c.findings}
}

// checkK runs the k check on the k field's value or the given count.
func (c *Checker) checkK(distinct int64) {
	if g := c.g; g.minK > 0 {
		k := c.k
		if distinct >= 0 {
			k = distinct
		}
		if k < int64(g.minK) {
			c.fail(ReasonK, g.kField)
		}
	}
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
		key, escaped, more, err := c.s.NextKey(first)
		if err != nil || !more {
			return err
		}
		name := c.name(key, escaped)
		if top && c.g.minK > 0 && string(name) == c.g.kField {
			if err := c.kValue(); err != nil {
				return err
			}
			continue
		}
		child := n.child(name)
		if child == nil {
			if c.g.schema {
				c.fail(ReasonSchema, n.anyPath)
			}
			if escaped {
				c.rec.abort() // the name is not the record's bytes
			} else {
				c.rec.name(name, n.anyPath)
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
	start := c.s.Pos()
	raw, err := c.s.Number()
	if err != nil {
		return err
	}
	c.rec.value(evKNumber, start, c.s.Pos(), nil, "")
	c.kNumber(raw)
	return nil
}

// kNumber reads the k field's number.
func (c *Checker) kNumber(raw []byte) {
	if v, perr := strconv.ParseInt(str(raw), 10, 64); perr == nil {
		c.k = v
	} else {
		c.fail(ReasonSchema, c.g.kField)
	}
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
		start := c.s.Pos()
		_, err := c.s.Number()
		c.rec.value(evTimeNumber, start, c.s.Pos(), nil, "")
		return err
	}
	if kind != jsonscan.String {
		return c.wrongShape(n)
	}
	start := c.s.Pos()
	raw, escaped, err := c.s.String()
	if err != nil {
		return err
	}
	c.rec.value(evLeafString, start, c.s.Pos(), n, "")
	val := raw
	if escaped {
		c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], raw)
		val = c.unesc
	}
	c.leafString(n, val, escaped)
	return nil
}

// leafString checks the string val at leaf n (escaped: it was written with
// escapes, which no action produces). It reports whether the leaf's own
// test accepted val, which then depends on val alone; otherwise val was
// tested as text.
func (c *Checker) leafString(n *gnode, val []byte, escaped bool) bool {
	l := n.leaf
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
		return false
	}
	if !ok {
		// Not what the action writes: the transform cannot be trusted
		// with this value, so it is tested like free text.
		if c.g.schema {
			c.fail(ReasonSchema, n.path)
		}
		c.text(val, n.path, true)
	}
	return ok
}

// free scans any value, testing every string, member name and (for cards)
// number; path is what findings report.
func (c *Checker) free(path string) error {
	switch c.s.Peek() {
	case jsonscan.String:
		start := c.s.Pos()
		raw, escaped, err := c.s.String()
		if err != nil {
			return err
		}
		c.rec.value(evFreeString, start, c.s.Pos(), nil, path)
		if escaped {
			c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], raw)
			raw = c.unesc
		}
		c.text(raw, path, true)
		return nil
	case jsonscan.Number:
		start := c.s.Pos()
		raw, err := c.s.Number()
		if err != nil {
			return err
		}
		c.rec.value(evFreeNumber, start, c.s.Pos(), nil, path)
		c.freeNumber(raw, path)
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
			if escaped {
				c.rec.abort()
			} else {
				c.rec.name(key, path)
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

// freeNumber tests a number in free text for a card number.
func (c *Checker) freeNumber(raw []byte, path string) {
	if c.g.patterns.has(patCard) && len(raw) >= 13 && hasCard(raw) {
		c.fail(ReasonPattern+Reason(patCard), path)
	}
}

// text runs the pattern and echo checks on one string, through the memo
// when the string is short enough to be kept there.
func (c *Checker) text(s []byte, path string, ipPatterns bool) {
	if len(s) == 0 {
		return
	}
	g := c.g
	want := g.patterns
	if !ipPatterns {
		want &^= 1<<patIPv4 | 1<<patIPv6
	}
	if len(s) >= 19 && s[4] == '-' && isTimestamp(s) && !c.reference {
		// Holds no pattern (scanPatterns), and is most often new: the
		// memo would only cost a hash, a copy and a slot.
		if g.echo != nil && c.echoTimestamp(s) {
			c.fail(ReasonEcho, path)
		}
		return
	}
	if len(s) > memoLongMax || c.reference {
		c.report(scanPatterns(s, want), path)
		if g.echo != nil && c.echoes(s) {
			c.fail(ReasonEcho, path)
		}
		return
	}
	h := prehash(s)
	var e *memoEntry
	var kept []byte
	if len(s) <= memoMax {
		i := h & (memoSlots - 1)
		e, kept = &c.memo[i], c.memoText[i*memoMax:i*memoMax+uint64(len(s))]
	} else {
		i := h & (memoLongSlots - 1)
		e, kept = &c.memoLong[i], c.memoLongText[i*memoLongMax:i*memoLongMax+uint64(len(s))]
	}
	if e.h != h || int(e.n) != len(s) || string(kept) != string(s) {
		// A miss: the patterns are a function of the string alone, so they
		// are found once, for every pattern the route tests.
		*e = memoEntry{h: h, n: uint8(len(s)), pats: scanPatterns(s, g.patterns)}
		copy(kept, s)
	}
	c.report(e.pats&want, path)
	if g.echo == nil || c.valid(e.version) {
		return
	}
	outer := c.pastSig
	c.pastSig = false
	if c.echoes(s) {
		c.fail(ReasonEcho, path)
		return
	}
	e.version = c.stamp()
	c.pastSig = c.pastSig || outer
}

// sigStampBit marks a signature stamp (Checker.sigStamp).
const sigStampBit = 1 << 63

// stamp is what a memo keeps with a negative echo test: the signature
// stamp when none of its lookups got past its signature (pastSig, cleared
// before the test), else the version; 0 outside a check.
func (c *Checker) stamp() uint64 {
	if c.pastSig || c.version == 0 {
		return c.version
	}
	return c.sigStamp
}

// valid reports whether a memo's stamp s still vouches for its negative
// echo test. One that holds by the version marks pastSig, so a memo made
// of it (a run) is stamped by the version too.
func (c *Checker) valid(s uint64) bool {
	switch s {
	case c.sigStamp:
		return true
	case c.version:
		c.pastSig = true
		return true
	}
	return false
}

// contains looks v up in the filter, noting in pastSig whether its
// signature was set.
func (c *Checker) contains(v []byte) bool {
	found, past := c.g.echo.lookup(v)
	c.pastSig = c.pastSig || past
	return found
}

// report fails path with every pattern in found.
func (c *Checker) report(found patternSet, path string) {
	if found == 0 {
		return
	}
	for p := range numPatterns {
		if found.has(p) {
			c.fail(ReasonPattern+Reason(p), path)
		}
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
	if bytes.IndexByte(s, '%') < 0 {
		return c.echoesPlain(s) // nothing to decode: the same lookups, lazily
	}
	return c.echoesDecoded(s)
}

// echoesDecoded is echoes for strings that may hold %XX escapes.
func (c *Checker) echoesDecoded(s []byte) bool {
	// One pass folds, decodes and cuts s into coarse tokens, each looked
	// up as soon as it ends; the whole folded string last.
	f := slices.Grow(c.fold[:0], len(s))[:len(s)]
	c.fold = f
	w, start := 0, 0
	var flags uint8 // of the current token: innerAny, innerAt, innerDot
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if foldSpecial[ch] {
			switch {
			case ch == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
				ch = unhex(s[i+1])<<4 | unhex(s[i+2])
				i += 2
			case ch == '+':
				ch = ' '
			}
		}
		ch = foldLower[ch]
		f[w] = ch
		w++
		if !coarse[ch] {
			flags |= innerFlags[ch]
			continue
		}
		if tok := f[start : w-1]; len(tok) > 0 && c.tokenEchoes(tok, true, flags) {
			return true
		}
		start, flags = w, 0
	}
	f = f[:w]
	// The last token is the whole string when nothing separated it.
	if tok := f[start:]; len(tok) > 0 && c.tokenEchoes(tok, start > 0, flags) {
		return true
	}
	return tokenOK(f) && c.contains(f)
}

// innerFlags marks the bytes that split a coarse token further.
const (
	innerAny = 1 << iota // . - _ @
	innerAt              // @
	innerDot             // .
)

var innerFlags = [256]uint8{'.': innerAny | innerDot, '-': innerAny, '_': innerAny, '@': innerAny | innerAt}

func (c *Checker) tokenEchoes(t []byte, test bool, flags uint8) bool {
	if test && tokenOK(t) && c.contains(t) {
		return true
	}
	if flags&innerAny == 0 {
		return false
	}
	if flags&(innerAt|innerDot) != 0 {
		// Parts around '@', then their dot-separated parts.
		for start, k := 0, 0; k <= len(t); k++ {
			if k < len(t) && t[k] != '@' {
				continue
			}
			if p := t[start:k]; len(p) > 0 {
				if len(p) != len(t) && tokenOK(p) && c.contains(p) {
					return true
				}
				if flags&innerDot != 0 {
					for qs, m := 0, 0; m <= len(p); m++ {
						if m < len(p) && p[m] != '.' {
							continue
						}
						if q := p[qs:m]; len(q) > 0 && len(q) != len(p) && tokenOK(q) && c.contains(q) {
							return true
						}
						qs = m + 1
					}
				}
			}
			start = k + 1
		}
	}
	c.skel = skeleton(c.skel[:0], t)
	return len(c.skel) != len(t) && len(c.skel) >= minSkel && tokenOK(c.skel) && c.contains(c.skel)
}

// skeleton appends t without '.', '-' and '_', so "Alice_17" and "alice.17"
// compare equal.
func skeleton(dst, t []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, len(t))[:n+len(t)]
	w := n
	for _, c := range t {
		dst[w] = c
		if c != '.' && c != '-' && c != '_' {
			w++
		}
	}
	return dst[:w]
}

// foldDecode appends s lower-cased (ASCII; other bytes as they are) with
// %XX escapes decoded and '+' read as a space, as in URL queries.
func foldDecode(dst, s []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, len(s))[:n+len(s)]
	out := dst[n:]
	w := 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !foldSpecial[ch] {
			out[w] = foldLower[ch]
			w++
			continue
		}
		switch {
		case ch == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			ch = foldLower[unhex(s[i+1])<<4|unhex(s[i+2])]
			i += 2
		case ch == '+':
			ch = ' '
		}
		out[w] = ch
		w++
	}
	return dst[:n+w]
}

// foldLower lower-cases ASCII letters; foldSpecial marks '%' and '+'.
var (
	foldLower = func() (t [256]byte) {
		for c := range t {
			t[c] = byte(c)
			if 'A' <= c && c <= 'Z' {
				t[c] += 'a' - 'A'
			}
		}
		return t
	}()
	foldSpecial = [256]bool{'%': true, '+': true}
)

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
	c.flush()
}

// ObserveIdentifier remembers one raw value of the route's field rule
// number rule (an index into the route's fields), as Observe would find it.
// The route's Applier calls it for every direct identifier it reads, which
// spares the gate a second pass over the input (route.Observer). The value
// reaches the filter the route's other Checkers share with the next record
// or check of this one (flush).
func (c *Checker) ObserveIdentifier(rule int, val []byte) {
	idents := c.g.idents
	if uint(rule) >= uint(len(idents)) || idents[rule] == nil {
		return
	}
	if c.sinceRefresh++; c.sinceRefresh >= refreshEvery || c.gens == nil {
		c.refresh()
	}
	c.remember(val, idents[rule])
}

// Generation is the Bloom filter generation this Checker puts raw
// identifiers into, plus one (route.GenerationObserver): a value it was
// told in it stays in the filter (current or previous generation) until
// the generation moves on, so the route's memos need not tell it again
// until then. The route calls it once per record; it reads the clock as
// often as ObserveIdentifier does.
func (c *Checker) Generation() uint64 {
	if c.g.echo == nil {
		return 1 // nothing is remembered: nothing needs telling again
	}
	c.flush() // the identifiers of the record before
	if c.sinceRefresh++; c.sinceRefresh >= refreshEvery || c.gens == nil {
		c.refresh()
	}
	return c.gens.seq + 1
}

// refreshEvery bounds how many identifiers (and records, Generation) the
// Checker takes between two reads of the clock (the Bloom filter's
// generation).
const refreshEvery = 64

// refresh reads the clock and moves to the filter's current generation.
func (c *Checker) refresh() {
	g := c.g
	c.sinceRefresh = 0
	c.now = g.now()
	c.gens = g.echo.current(c.now)
	if c.gens.seq != c.seenSeq {
		clear(c.seen[:])
		c.seenSeq = c.gens.seq
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
		child := n.child(c.name(key, escaped))
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

// remember puts a raw identifier and its derived forms into the filter,
// unless this Checker has already done so in the current generation.
func (c *Checker) remember(raw []byte, l *gleaf) {
	seed := c.seenSeed
	if l.hostish { // it also remembers the first label
		seed = ^seed
	}
	fp := prehashSeeded(raw, seed) | 1 // 0: empty
	set := (*[seenWays]uint64)(c.seen[fp&(seenSlots-1)&^(seenWays-1):])
	// Most recent first; the switch knows there are four ways (seenFour).
	switch fp {
	case set[0]:
		return
	case set[1]:
		set[0], set[1] = fp, set[0]
		return
	case set[2]:
		set[0], set[1], set[2] = fp, set[0], set[1]
		return
	case set[3]:
		set[0], set[1], set[2], set[3] = fp, set[0], set[1], set[2]
		return
	}
	c.rememberForms(raw, l)
	set[0], set[1], set[2], set[3] = fp, set[0], set[1], set[2]
}

func (c *Checker) rememberForms(raw []byte, l *gleaf) {
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

// add queues v's form for the filter.
func (c *Checker) add(v []byte) {
	if !tokenOK(v) {
		return
	}
	c.pending[c.npending] = formOf(v)
	if c.npending++; c.npending == maxPending {
		c.flush()
	}
}

// flush puts the pending forms into the filter's current generation.
func (c *Checker) flush() {
	if c.npending > 0 {
		c.g.echo.insertAll(c.gens, c.pending[:c.npending], c.now)
		c.npending = 0
	}
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
