package gate

import (
	"encoding/binary"
	"unsafe"
)

// Segments. Hex pseudonyms and timestamps of a learnt layout have a fixed
// width, so from the literal before such a value to the literal after the
// last of a row of them (a user's name, e-mail and uid, with the member
// names between) every byte of a matching record is at a fixed offset and
// is of one of three classes: a literal byte (the shape's text, the
// quotes and prefix of a pseudonym, the separators of a timestamp), a hex
// digit, or a decimal digit. A segment tests the whole stretch as 8-byte
// words at fixed offsets, sorted by what they hold, instead of value by
// value through the loop: the same tests at the same places (matches'
// opHex, opTime and literal comparisons), without the loop's dispatch per
// value. When a word fails, matches takes the stretch value by value, as
// it would without the segment, and decides there.

type segment struct {
	last int // the event whose literal ends it (its value is not in it); len(events): it ends with a value
	n    int // its length in bytes, at least 8
	lits []litWord
	hex  []int // offsets of words of hex digits only
	mix  []mixWord
	ts   []segTime // timestamps, echo-tested once every word passes
}

type litWord struct {
	off  int
	want uint64
}

// mixWord is a word of several classes: the fixed bytes of the template
// equal, its digit bytes decimal, and the bytes of hex (their top bits) hex.
type mixWord struct {
	off int
	t   template
	hex uint64
}

type segTime struct {
	off, n int // the timestamp's bytes, quotes excluded
	path   string
}

// Byte classes of a segment.
const (
	clLit = iota
	clHex
	clDigit
)

// fixedWidth reports whether event i's value has a fixed width and is
// tested by its bytes' classes alone (a timestamp also by the echo test):
// a hex pseudonym, or a timestamp of a layout that fits a template.
func (sh *shape) fixedWidth(i int) bool {
	e := &sh.events[i]
	return e.run < 0 && (e.op == opHex || (e.op == opTime && e.tsForm != nil))
}

// findSegments marks the segments of sh, learnt from out; rec says where
// each value was in it.
func (sh *shape) findSegments(out []byte, rec []recEvent) {
	sh.segs = sh.segs[:0]
	for i := 0; i < len(sh.events); {
		if !sh.fixedWidth(i) {
			i++
			continue
		}
		j := i
		for j < len(sh.events) && sh.fixedWidth(j) {
			j++
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
	// Each byte's class, and its kind: its class, but clDigit for every
	// byte of a timestamp.
	cls, kind := make([]uint8, s.n), make([]uint8, s.n)
	for k := i; k < j; k++ {
		e, r := &sh.events[k], rec[k]
		v := out[r.start:r.end]
		switch e.op {
		case opHex:
			l := e.node.leaf
			if len(v) != 2+len(l.prefix)+l.chars {
				return s, false
			}
			for b := r.start + 1 + len(l.prefix); b < r.end-1; b++ {
				cls[b-start], kind[b-start] = clHex, clHex
			}
		case opTime:
			if len(v) != e.tsLen+2 {
				return s, false
			}
			for b := r.start + 1; b < r.end-1; b++ {
				kind[b-start] = clDigit
				if isDigit(out[b]) {
					cls[b-start] = clDigit
				}
			}
			s.ts = append(s.ts, segTime{off: r.start + 1 - start, n: e.tsLen, path: e.path})
		}
	}
	// Words inside each run of one kind (literal bytes, hex digits, a
	// timestamp), the last one of a run ending where the run does, so that
	// most words are of one class; a run shorter than a word gets a mixed
	// word over it and its neighbours.
	for r := 0; r < s.n; {
		q := r + 1
		for q < s.n && kind[q] == kind[r] {
			q++
		}
		if q-r < 8 {
			s.addWord(out[start:end], cls, min(r, s.n-8), true)
		}
		for off := r; q-r >= 8 && off < q; off += 8 {
			s.addWord(out[start:end], cls, min(off, q-8), kind[r] == clDigit)
		}
		r = q
	}
	return s, true
}

// addWord adds the word at off of the segment seg, whose bytes have the
// classes cls: a mixed word when mixed is set or it holds several classes.
func (s *segment) addWord(seg []byte, cls []uint8, off int, mixed bool) {
	var seen [3]bool
	for b := off; b < off+8; b++ {
		seen[cls[b]] = true
	}
	switch {
	case !mixed && !seen[clHex] && !seen[clDigit]:
		s.lits = append(s.lits, litWord{off: off, want: load64(seg, off)})
	case !mixed && !seen[clLit] && !seen[clDigit]:
		s.hex = append(s.hex, off)
	default:
		w := mixWord{off: off}
		for b := range 8 {
			switch c := seg[off+b]; cls[off+b] {
			case clLit:
				w.t.fixed |= 0xff << (8 * b)
				w.t.want |= uint64(c) << (8 * b)
			case clDigit:
				w.t.digits |= 0xff << (8 * b)
			case clHex:
				w.hex |= 0x80 << (8 * b)
			}
		}
		s.mix = append(s.mix, w)
	}
}

// segmentFits reports whether the words of s fit at out[pos:]; it does
// not run the echo test. The caller has checked that s.n bytes are left,
// and every word lies inside the segment (addWord's offsets are at most
// s.n-8), so the loads need no guard of their own.
func segmentFits(s *segment, out []byte, pos int) bool {
	p := unsafe.Pointer(unsafe.SliceData(out[pos : pos+s.n]))
	var diff, bad uint64
	for k := range s.lits {
		w := &s.lits[k]
		diff |= at64(p, w.off) ^ w.want
	}
	for _, off := range s.hex {
		bad |= nonHex(at64(p, off))
	}
	if diff != 0 || bad&msb != 0 {
		return false
	}
	for k := range s.mix {
		w := &s.mix[k]
		if x := at64(p, w.off); !w.t.match(x) || nonHex(x)&w.hex != 0 {
			return false
		}
	}
	return true
}

// at64 reads the eight bytes at p+off, which the caller has checked lie
// in one slice.
func at64(p unsafe.Pointer, off int) uint64 {
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(p, off))[:])
}
