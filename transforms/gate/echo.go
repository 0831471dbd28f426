package gate

import (
	"encoding/binary"
	"unsafe"
)

// The echo test of a string without '%' (echoes): its folded form has the
// same length as the string and every byte in the same place, so each
// string the test looks up (the whole, a coarse token, a part around '@'
// or '.', a skeleton) is known by its place in the raw string, and its
// signature in the filter (length, first and last byte, folded) by three
// table lookups. Only a string whose signature is set in a generation is
// folded into a buffer and looked up in full (rotatingBloom.contains,
// whose first test is that same signature), so the answer is the one the
// decoding path gives, without its copies: most strings stop at their
// signatures.

// plainFold folds a byte as foldDecode does outside a %XX escape: ASCII
// upper case to lower, '+' to a space.
var plainFold = func() (t [256]byte) {
	t = foldLower
	t['+'] = ' '
	return t
}()

// echoTab marks the raw bytes whose folded form ends or splits a token
// (echoesPlain); every other byte is skipped in a tight loop.
const (
	eDot     = 1 << iota // '.': ends a dot-separated part
	eAt                  // '@': ends a part around '@'
	eDashUnd             // '-' or '_': dropped by skeletons
	eSep                 // a coarse separator: ends a token
)

var echoTab = func() (t [256]uint8) {
	for c := range t {
		switch f := plainFold[c]; {
		case coarse[f]:
			t[c] = eSep
		case f == '.':
			t[c] = eDot
		case f == '-' || f == '_':
			t[c] = eDashUnd
		case f == '@':
			t[c] = eAt
		}
	}
	return t
}()

// echoesPlain is echoes for s without '%', in one pass: each coarse token
// t, its parts p around '@' (when t has an '@'), their dot-separated parts
// q (when p has a '.'), and its skeleton (when t has '.', '-' or '_') are
// looked up as they end, under the same conditions as in tokenEchoes.
func (c *Checker) echoesPlain(s []byte) bool {
	gens := c.g.echo.gens.Load()
	ts, ps, qs := 0, 0, 0 // where the token, part and dot-part start
	nSep := 0             // '.', '-', '_' in the token
	tAt, pDot := false, false
	for i := 0; ; i++ {
		for i < len(s) && echoTab[s[i]] == 0 {
			i++
		}
		k := uint8(eSep)
		if i < len(s) {
			k = echoTab[s[i]]
		}
		switch k {
		case eDashUnd:
			nSep++
			continue
		case eDot:
			// A dot-part of a part that has a dot, so shorter than it.
			if q := s[qs:i]; tokenOK(q) && c.lookupPlain(gens, q) {
				return true
			}
			pDot, qs = true, i+1
			nSep++
			continue
		}
		// An '@', a separator or the end closes the part: its last
		// dot-part when it has a dot, and itself when the token has an
		// '@' (this one or an earlier one).
		if pDot {
			if q := s[qs:i]; tokenOK(q) && c.lookupPlain(gens, q) {
				return true
			}
		}
		tAt = tAt || k == eAt
		if tAt {
			if p := s[ps:i]; tokenOK(p) && c.lookupPlain(gens, p) {
				return true
			}
		}
		pDot, ps, qs = false, i+1, i+1
		if k == eAt {
			continue
		}
		// A separator or the end closes the token.
		if t := s[ts:i]; len(t) > 0 {
			// The whole string is looked up below.
			if (i < len(s) || ts > 0) && tokenOK(t) && c.lookupPlain(gens, t) {
				return true
			}
			if nSep > 0 && c.skeletonEchoes(gens, t, len(t)-nSep) {
				return true
			}
		}
		if i >= len(s) {
			break
		}
		tAt, nSep, ts = false, 0, i+1
	}
	return tokenOK(s) && c.lookupPlain(gens, s)
}

// skeletonEchoes looks up the skeleton of the raw token t, n bytes long.
func (c *Checker) skeletonEchoes(gens *generations, t []byte, n int) bool {
	if n < minSkel {
		return false
	}
	if n < minDigits {
		digits := true
		for _, ch := range t {
			digits = digits && (isDigit(ch) || ch == '.' || ch == '-' || ch == '_')
		}
		if digits {
			return false // tokenOK of the skeleton
		}
	}
	i, j := 0, len(t)-1
	for t[i] == '.' || t[i] == '-' || t[i] == '_' {
		i++
	}
	for t[j] == '.' || t[j] == '-' || t[j] == '_' {
		j--
	}
	if !sigSet(gens, n, plainFold[t[i]], plainFold[t[j]]) {
		return false
	}
	c.pastSig = true
	f := c.skel[:0]
	for _, ch := range t {
		if ch != '.' && ch != '-' && ch != '_' {
			f = append(f, plainFold[ch])
		}
	}
	c.skel = f
	return c.g.echo.contains(f)
}

// sigSet reports whether the signature (n, first, last) is set in either
// generation.
func sigSet(gens *generations, n int, first, last byte) bool {
	i, bit := sigBitOf(n, first, last)
	return gens.cur.sig[i].Load()&bit != 0 || (gens.prev != nil && gens.prev.sig[i].Load()&bit != 0)
}

// lookupPlain looks up the folded form of v (not empty, no '%').
func (c *Checker) lookupPlain(gens *generations, v []byte) bool {
	if !sigSet(gens, len(v), plainFold[v[0]], plainFold[v[len(v)-1]]) {
		return false
	}
	c.pastSig = true
	f := c.fold[:0]
	for _, ch := range v {
		f = append(f, plainFold[ch])
	}
	c.fold = f
	return c.g.echo.contains(f)
}

// echoTimestamp is echoes for s that isTimestamp accepts: the strings the
// one-pass test would look up, found by their places in the layout
// (TestEchoTimestamp compares the two). Folded, ':' and a space (also a
// '+' of the offset) separate tokens; '-', '.', 't' and 'z' do not. So the
// tokens are the date and hour (one token with 'T', two with a space, the
// hour alone being too short), the minutes (too short), and C: the
// seconds, the fraction, and a 'Z' or the '-' and hours of an offset; then
// the offset's two-digit parts (too short). Each long enough is looked
// up, with its skeleton, and C's part after the '.'; then the whole.
func (c *Checker) echoTimestamp(s []byte) bool {
	gens := c.g.echo.gens.Load()
	return c.echoTimestampHead(gens, s) || c.echoTimestampTail(gens, s)
}

// echoTimestampHead is echoTimestamp's test of the date and hour.
func (c *Checker) echoTimestampHead(gens *generations, s []byte) bool {
	if a := tsHeadLen(s); !c.tsHeadHolds(s, a) {
		head := s[:a]
		outer := c.pastSig
		c.pastSig = false
		if c.lookupPlain(gens, head) || c.skeletonEchoes(gens, head, a-2) {
			return true
		}
		if c.version != 0 {
			c.tsLen = copy(c.tsHead[:], head)
			c.tsHeadW = [2]uint64{binary.LittleEndian.Uint64(head), binary.LittleEndian.Uint64(head[len(head)-8:])}
			c.tsVersion = c.stamp()
		}
		c.pastSig = c.pastSig || outer
	}
	return false
}

// tsHeadLen is the length of a timestamp's date and hour: 13, or 10 for
// the date alone when a space separates the time.
func tsHeadLen(s []byte) int {
	if s[10] == ' ' {
		return 10
	}
	return 13
}

// tsHeadHolds reports whether s's date and hour (its first a bytes) are
// the ones whose negative echo test is remembered, and its stamp holds.
// The date and hour are the same for an hour of records; the test is
// remembered with its stamp (version 0 outside a check, and then nothing
// is kept). a is 10 or 13: two overlapping words compare the head.
func (c *Checker) tsHeadHolds(s []byte, a int) bool {
	return c.version != 0 && c.tsLen == a && binary.LittleEndian.Uint64(s) == binary.LittleEndian.Uint64(c.tsHead[:]) &&
		binary.LittleEndian.Uint64(s[a-8:]) == binary.LittleEndian.Uint64(c.tsHead[a-8:]) && c.valid(c.tsVersion)
}

// tsHeadHoldsAt is tsHeadHolds for the timestamp at q, of at least 13
// bytes (a segment's, which fits: its bytes are in the record), by two
// word loads without slicing; the caller has checked c.version != 0.
// (Small enough to be inlined.)
func (c *Checker) tsHeadHoldsAt(q unsafe.Pointer) bool {
	a := 13
	if *(*byte)(unsafe.Add(q, 10)) == ' ' {
		a = 10
	}
	return c.tsLen == a && at64(q, 0) == c.tsHeadW[0] && at64(q, a-8) == c.tsHeadW[1] && c.valid(c.tsVersion)
}

// tsTail finds, in a timestamp s, the end of C (s[17:cEnd]), the
// separators C holds, and the end of the fraction's digits (s[20:frac]).
func tsTail(s []byte) (cEnd, nSep, frac int) {
	cEnd, frac = len(s), 19
	if len(s) > 19 && s[19] == '.' {
		nSep = 1
		for frac = 20; frac < len(s) && isDigit(s[frac]); frac++ {
		}
	}
	if zone := s[max(frac, 19):]; len(zone) == 6 {
		if zone[0] == '+' {
			cEnd = len(s) - 6 // the '+' is a space
		} else {
			cEnd = len(s) - 3 // the ':' of the offset
			nSep++
		}
	}
	return cEnd, nSep, frac
}

// tsSig is a signature echoTimestampTail tests: of n bytes, the first and
// last being s[first] and s[last].
type tsSig struct{ n, first, last int }

// tsTailSigs lists the signatures echoTimestampTail tests for s, whose
// parts tsTail found.
func tsTailSigs(s []byte, cEnd, nSep, frac int) (sigs [4]tsSig, k int) {
	sigs[0], sigs[1], sigs[2] = tsSig{cEnd - 17, 17, cEnd - 1}, tsSig{cEnd - 17 - nSep, 17, cEnd - 1}, tsSig{len(s), 0, len(s) - 1}
	k = 3
	if frac > 19 && cEnd > 20 {
		sigs[3], k = tsSig{cEnd - 20, 20, cEnd - 1}, 4
	}
	return sigs, k
}

// echoTimestampTail is echoTimestamp's test of the rest: C, its skeleton,
// the fraction and the whole string.
func (c *Checker) echoTimestampTail(gens *generations, s []byte) bool {
	cEnd, nSep, frac := tsTail(s)
	cTok := s[17:cEnd]
	// Every lookup below starts with its string's signature (length,
	// first and last byte, folded): while none of the four is set in
	// either generation, none can find anything. C starts with a digit
	// of the seconds and ends with one or a 'Z', so its skeleton has the
	// same first and last bytes.
	sigs, k := tsTailSigs(s, cEnd, nSep, frac)
	set := false
	for _, g := range sigs[:k] {
		set = set || sigSet(gens, g.n, plainFold[s[g.first]], plainFold[s[g.last]])
	}
	if !set {
		return false
	}
	if tokenOK(cTok) && c.lookupPlain(gens, cTok) {
		return true
	}
	if nSep > 0 && c.skeletonEchoes(gens, cTok, len(cTok)-nSep) {
		return true
	}
	if frac > 19 {
		if q := s[20:cEnd]; tokenOK(q) && c.lookupPlain(gens, q) {
			return true
		}
	}
	return c.lookupPlain(gens, s)
}

// echoSegTime is echoTimestamp for the timestamp t of a segment, whose
// layout is fixed: its tail's signatures, for any digits at its digits'
// places, are tested once per signature version, and while none is set
// the tail cannot echo. (The signature version soon stops moving, as the
// identifiers' signatures are few, and rotation only clears bits: the
// answer mostly holds for good.)
func (c *Checker) echoSegTime(t *segTime, s []byte) bool {
	gens := c.g.echo.gens.Load()
	if c.echoTimestampHead(gens, s) {
		return true
	}
	if t.clear == c.sigStamp && c.sigStamp != 0 {
		return false
	}
	if t.wait > 0 {
		t.wait--
	} else if c.sigStamp != 0 {
		if tsLayoutClear(gens, s) {
			t.clear = c.sigStamp
			return false
		}
		t.wait = 64 // a set signature: test record by record for a while
	}
	return c.echoTimestampTail(gens, s)
}

// tsLayoutClear reports whether no signature echoTimestampTail tests is
// set for any timestamp of s's layout: s with any digits where it has
// digits (tsTail reads the layout only, so all of them have the same
// signatures' places).
func tsLayoutClear(gens *generations, s []byte) bool {
	cEnd, nSep, frac := tsTail(s)
	sigs, k := tsTailSigs(s, cEnd, nSep, frac)
	choices := func(b byte) string {
		if isDigit(b) {
			return "0123456789"
		}
		return string(b)
	}
	for _, g := range sigs[:k] {
		for _, f := range []byte(choices(s[g.first])) {
			for _, l := range []byte(choices(s[g.last])) {
				if sigSet(gens, g.n, plainFold[f], plainFold[l]) {
					return false
				}
			}
		}
	}
	return true
}
