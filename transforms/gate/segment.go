package gate

import (
	"encoding/binary"
	"unsafe"
)

// Segments. Hex pseudonyms, timestamps of a learnt layout and short
// integers have a fixed width, so from the literal before such a value to
// the literal after the last of a row of them (a timestamp and the event's
// class numbers; a user's name, e-mail and uid with the member names
// between) every byte of a matching record is at a fixed offset and must
// lie in one or two ranges: a literal byte (the shape's text, the quotes
// and prefix of a pseudonym, the separators of a timestamp) in [c, c], a
// hex digit in [0-9] or [a-f], a decimal digit in [0-9], and the first
// digit of an integer of two or more digits in [1-9]. A segment tests the
// whole stretch at once, 32 bytes per AVX2 step where the CPU has it and
// 8 bytes per word otherwise, instead of value by value through the loop:
// the same tests at the same places (matches' opHex, opTime, opNumber and
// literal comparisons), without the loop's dispatch per value. When the
// stretch does not fit, matches takes it value by value, as it would
// without the segment, and decides there.

type segment struct {
	last   int // the event whose literal ends it (its value is not in it); len(events): it ends with a value
	n      int // its length in bytes, at least 8
	words  []rangeWord
	chunks []rangeChunk // the AVX2 test; nil: the words'
	ts     []segTime    // timestamps, echo-tested once every byte fits
	misses uint8        // records in a row that did not fit
	bridge *bridge      // a joined segment's value between its two halves
}

// Joined segments. Two segments with one string value between them (a
// product name between an event's timestamp and class numbers and its
// host and user pseudonyms) are tried first as one segment with that
// value's learnt bytes as literals: one test instead of two and a value.
// The value still needs its checks (the echo test, the patterns): they are
// run on the learnt bytes and stamped, as a remembered value's are. Where
// the value is often another one, the joined segment mostly misses; its
// score then drops and it is tried once in 64 records only, the two
// segments and the value taken as before.
type bridge struct {
	off, n  int // the value's bytes in the segment, quotes excluded
	ev      int // its event
	pure    bool
	version uint64 // the stamp of its checks; 0: not yet
	score   int8   // +1 per fit, -4 per miss
}

// rangeWord tests the eight bytes at off of a segment: byte b fits when
// it lies in [lo1, hi1] or [lo2, hi2], held as 0x80-lo and 0x7f-hi so that
// adding the byte sets its top bit when it is at least lo, and above hi.
// Every bound is below 0x80, so no byte that fits carries into the next.
type rangeWord struct {
	off            int
	a1, b1, a2, b2 uint64
}

// rangeChunk is the same test for 32 bytes: byte b fits when
// b-lo1 <= span1 or b-lo2 <= span2, unsigned, as fitsAVX2 computes it.
// Its layout is fitsAVX2's: off at 0, the vectors at 32, 64, 96 and 128,
// 160 bytes a chunk.
type rangeChunk struct {
	off                    int64
	_                      [24]byte
	lo1, span1, lo2, span2 [32]byte
}

type segTime struct {
	off, n int // the timestamp's bytes, quotes excluded
	path   string
	clear  uint64 // the signature stamp at which echoSegTime found its tail's signatures clear
	wait   uint8  // records to test before looking at the signatures again
}

// byteRange is what one byte of a segment may be: [lo1, hi1] or [lo2, hi2].
type byteRange struct{ lo1, hi1, lo2, hi2 byte }

var (
	hexRange    = byteRange{'0', '9', 'a', 'f'}
	digitRange  = byteRange{'0', '9', '0', '9'}
	digit1Range = byteRange{'1', '9', '1', '9'}
)

func litRange(c byte) byteRange { return byteRange{c, c, c, c} }

// maxSegNumber is the widest integer a segment takes: far from a card
// number's 13 digits, so the full pass runs no check on it but the scan.
const maxSegNumber = 7

// fixedWidth reports whether event i's value, at rec[i] in out, has a
// fixed width and is tested by its bytes alone (a timestamp also by the
// echo test): a hex pseudonym, a timestamp of a layout that fits a
// template, or an integer of up to maxSegNumber digits without a leading
// zero; strong says it is one of the first two, which a segment needs
// (integers alone the loop tests as cheaply).
func (sh *shape) fixedWidth(out []byte, rec []recEvent, i int) (fixed, strong bool) {
	e := &sh.events[i]
	switch {
	case e.op == opHex || (e.op == opTime && e.tsForm != nil):
		return true, true
	case e.op == opNumber:
		v := out[rec[i].start:rec[i].end]
		if len(v) == 0 || len(v) > maxSegNumber || (len(v) > 1 && v[0] == '0') {
			return false, false
		}
		for _, c := range v {
			if !isDigit(c) {
				return false, false
			}
		}
		return true, false
	}
	return false, false
}

// findSegments marks the segments of sh, learnt from out; rec says where
// each value was in it; then the joined ones.
func (sh *shape) findSegments(out []byte, rec []recEvent) {
	sh.segs = sh.segs[:0]
	defer sh.joinSegments(out, rec)
	for i := 0; i < len(sh.events); {
		j, strong := i, false
		for ; j < len(sh.events); j++ {
			f, s := sh.fixedWidth(out, rec, j)
			if !f {
				break
			}
			strong = strong || s
		}
		if !strong {
			i = j + 1
			continue
		}
		if s, ok := sh.segment(out, rec, i, j); ok && len(sh.segs) < 1<<15 {
			sh.events[i].seg = int16(len(sh.segs))
			sh.segs = append(sh.segs, s)
		}
		i = j
	}
}

// segment builds the segment from event i's literal to event j's (or the
// end of event j-1's value when j is the last), the values of i..j-1 all
// of a fixed width.
func (sh *shape) segment(out []byte, rec []recEvent, i, j int) (segment, bool) {
	start := 0
	if i > 0 {
		start = rec[i-1].end
	}
	end := rec[j-1].end
	if j < len(rec) {
		end = rec[j].start
	}
	s := segment{last: j, n: end - start}
	if s.n < 8 || s.n > len(out)-start {
		return s, false
	}
	seg := out[start:end]
	rs := make([]byteRange, s.n)
	for k, c := range seg {
		if c >= 0x80 {
			return s, false // the words' bounds must stay below 0x80
		}
		rs[k] = litRange(c)
	}
	for k := i; k < j; k++ {
		e, r := &sh.events[k], rec[k]
		switch e.op {
		case opHex:
			l := e.node.leaf
			if r.end-r.start != 2+len(l.prefix)+l.chars {
				return s, false
			}
			for b := r.start + 1 + len(l.prefix); b < r.end-1; b++ {
				rs[b-start] = hexRange
			}
		case opTime:
			if r.end-r.start != e.tsLen+2 {
				return s, false
			}
			for b := r.start + 1; b < r.end-1; b++ {
				if isDigit(out[b]) {
					rs[b-start] = digitRange
				}
			}
			s.ts = append(s.ts, segTime{off: r.start + 1 - start, n: e.tsLen, path: e.path})
		case opNumber:
			for b := r.start; b < r.end; b++ {
				rs[b-start] = digitRange
			}
			if r.end-r.start > 1 {
				rs[r.start-start] = digit1Range
			}
		}
	}
	for off := 0; off < s.n; off += 8 {
		s.words = append(s.words, newRangeWord(rs, min(off, s.n-8)))
	}
	if haveAVX2 && s.n >= 32 {
		for off := 0; off < s.n; off += 32 {
			s.chunks = append(s.chunks, newRangeChunk(rs, min(off, s.n-32)))
		}
	}
	return s, true
}

func newRangeWord(rs []byteRange, off int) rangeWord {
	w := rangeWord{off: off}
	for b, r := range rs[off : off+8] {
		sh := 8 * uint(b)
		w.a1 |= uint64(0x80-r.lo1) << sh
		w.b1 |= uint64(0x7f-r.hi1) << sh
		w.a2 |= uint64(0x80-r.lo2) << sh
		w.b2 |= uint64(0x7f-r.hi2) << sh
	}
	return w
}

func newRangeChunk(rs []byteRange, off int) rangeChunk {
	c := rangeChunk{off: int64(off)}
	for b, r := range rs[off : off+32] {
		c.lo1[b], c.span1[b] = r.lo1, r.hi1-r.lo1
		c.lo2[b], c.span2[b] = r.lo2, r.hi2-r.lo2
	}
	return c
}

// segmentFitsWords is fitsSegment's test eight bytes at a time. The caller
// has checked that s.n bytes are left, and every word lies inside the
// segment, so the loads need no guard of their own.
//
//go:noinline
func segmentFitsWords(s *segment, out []byte, pos int) bool {
	p := unsafe.Pointer(unsafe.SliceData(out[pos : pos+s.n]))
	ok := uint64(msb)
	for k := range s.words {
		w := &s.words[k]
		x := at64(p, w.off)
		ok &= ((x+w.a1)&^(x+w.b1) | (x+w.a2)&^(x+w.b2)) &^ x
	}
	return ok == msb
}

// at64 reads the eight bytes at p+off, which the caller has checked lie
// in one slice.
func at64(p unsafe.Pointer, off int) uint64 {
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(p, off))[:])
}

// fitsSegment reports whether out[pos:] fits s, for the record numbered
// tick; it does not run the echo test. A segment that has not fit several
// records in a row (an integer whose width changes) is tried once in 16
// records only: the loop tests those values anyway. Every chunk lies
// inside the segment, so fitsAVX2's loads need no guard of their own.
func fitsSegment(s *segment, out []byte, pos int, tick uint64) bool {
	if len(out)-pos < s.n || (s.misses >= 8 && tick&15 != 0) {
		return false
	}
	var ok bool
	if len(s.chunks) > 0 {
		ok = fitsAVX2(unsafe.Pointer(unsafe.SliceData(out[pos:])), &s.chunks[0], len(s.chunks))
	} else {
		ok = segmentFitsWords(s, out, pos)
	}
	if !ok {
		s.misses = min(s.misses+1, 255)
		return false
	}
	s.misses = 0
	return true
}

// joinSegments adds a joined segment (bridge) for each two segments with
// one plain string value of up to 32 bytes between them, and marks it on
// the first's event.
func (sh *shape) joinSegments(out []byte, rec []recEvent) {
	for i := range sh.events {
		e := &sh.events[i]
		e.join = -1
		if e.seg < 0 {
			continue
		}
		a := &sh.segs[e.seg]
		k := a.last // the value between
		if k+1 >= len(sh.events) || sh.events[k+1].seg < 0 {
			continue
		}
		v := &sh.events[k]
		text := v.kind == evFreeString || (v.kind == evLeafString && !v.node.leaf.identifier())
		r := rec[k]
		if !text || v.op != opValue || r.end-r.start < 2 || r.end-r.start > 34 || out[r.start] != '"' || !plainASCII(out[r.start+1:r.end-1]) {
			continue
		}
		b := &sh.segs[sh.events[k+1].seg]
		j, ok := sh.segment(out, rec, i, b.last)
		if !ok || len(sh.segs) >= 1<<15 {
			continue
		}
		start := 0
		if i > 0 {
			start = rec[i-1].end
		}
		j.bridge = &bridge{off: r.start + 1 - start, n: r.end - r.start - 2, ev: k}
		e.join = int16(len(sh.segs))
		sh.segs = append(sh.segs, j)
	}
}

// plainASCII reports whether b is printable ASCII without a quote or a
// backslash: the string's bytes are its value.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// tryJoined reports whether the joined segment s fits at out[pos:], its
// timestamps and its bridged value pass; it reports false, with the
// finding, when a check fails (c.reasons says which).
//
// It is fitsSegment and segmentEchoes without their calls for the usual
// record (a joined segment runs the whole width of a record, and each
// call level spills the caller's registers): the chunks' test is called
// directly (the bridge's score stands in for the segment's misses), and
// a single timestamp whose date and hour are remembered and whose tail's
// signatures are clear (segmentEchoes' first answer) is passed inline.
func (c *Checker) tryJoined(sh *shape, s *segment, out []byte, pos int) bool {
	b := s.bridge
	if b.score < -16 && c.tick&63 != 0 || len(out)-pos < s.n {
		return false
	}
	var fits bool
	if len(s.chunks) > 0 {
		fits = fitsAVX2(unsafe.Pointer(unsafe.SliceData(out[pos:])), &s.chunks[0], len(s.chunks))
	} else {
		fits = segmentFitsWords(s, out, pos)
	}
	if !fits {
		b.score = max(b.score-4, -64)
		return false
	}
	b.score = min(b.score+1, 32)
	quick := len(s.ts) == 1 && s.ts[0].clear == c.sigStamp && c.version != 0 &&
		c.tsHeadHoldsAt(unsafe.Add(unsafe.Pointer(unsafe.SliceData(out)), pos+s.ts[0].off))
	if !quick && !c.segmentEchoes(s, out, pos) {
		return false
	}
	if b.pure || (b.version != 0 && c.valid(b.version)) {
		return true
	}
	// The value's checks, on its learnt bytes (the segment fits, so they
	// are in the record), as shapeValue runs them.
	st, pure, ok := c.valueChecks(&sh.events[b.ev], out[pos+b.off:pos+b.off+b.n], false)
	if ok {
		b.version, b.pure = st, pure
	}
	return ok
}
