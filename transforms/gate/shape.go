package gate

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

// The outputs of one route are mostly the same bytes with different
// values: the same members in the same order, the same punctuation. A
// Checker that has vetted a record in full keeps its shape, the bytes
// between the scalar values (member names, braces, commas, and the
// literals true, false and null) and, for every value, which check the full
// pass ran on it. A later record whose bytes between values are the same
// parses the same way, so checking it is comparing those bytes, scanning
// each value as the full pass would and running the same per-value checks.
// Anything else (a different byte, an escape, a failed check) sends the
// record through the full pass, which decides the verdict and its
// findings.

// maxShapes is how many shapes a Checker keeps.
const maxShapes = 4

type eventKind uint8

const (
	evLeafString eventKind = iota // a string at a rule's leaf: leafString
	evTimeNumber                  // a number at a time-bucket leaf: nothing to test
	evFreeString                  // a string in free text: text
	evFreeNumber                  // a number in free text: freeNumber
	evKNumber                     // the k field: kNumber
	evName                        // a member name in free text: text, no value
)

// shapeEvent is one value of a shape. The literal before it ends at lit in
// the shape's text and starts where the previous event's ends.
//
// Each event also remembers the last value that passed its checks there
// (its bytes in the record, quotes included, in the shape's vals): the
// same bytes at the same place pass again without being scanned, for a
// pure check (numbers, and pseudonym, e-mail and IP leaves, whose tests
// depend on the bytes alone) at once, and for one that tests text (the
// echo test depends on the filter too) while its stamp holds (Checker.stamp
// and valid: the filter's version, or its signature version when no lookup
// got past a signature). A value ends where the remembered bytes do: a
// string at its closing quote; a number because the literal after it
// starts with a byte no number holds (the record it was learnt from was
// scanned there). A member name tested as text (evName) is part of the
// literal, so only its version is kept.
type shapeEvent struct {
	lit     uint32
	litLen  uint32 // the literal's length
	nameLen uint32 // evName: the name is the last nameLen bytes of the literal
	kind    eventKind
	op      valueOp // what matches does with the value inline
	// The literal's first 32 bytes as words, zero past its end: a literal
	// of up to 32 bytes is compared by masked word loads.
	lw      [4]uint64
	recent  *recentVals  // values of up to 16 bytes that passed here
	tsLen   int          // opTime: the timestamp's length
	tsForm  *[4]template // opTime: the learnt timestamp's layout, quotes included, when it fits 32 bytes
	zeros   int8         // opIP: the trailing fields the leaf needs 0 (quadLeaf); -1: quadAt
	run     int16        // the run that starts here (shape.runs), -1: none
	seg     int16        // the segment that starts with this literal (shape.segs), -1: none
	join    int16        // the joined segment that starts here (tried before seg), -1: none
	pure    bool         // the remembered value's checks depended on its bytes alone
	valLen  uint8        // bytes of the remembered value; 0: none
	misses  uint8        // values in a row that were not the remembered one
	version uint64       // the stamp of the value's (or name's) echo test; 0: not yet
	node    *gnode       // evLeafString
	path    string       // the path findings would report
}

// maxVal is the longest value an event remembers.
const maxVal = 64

// recentVals are the last values of up to 16 bytes that passed at one
// place, in sets of two picked by their first eight bytes (with what
// follows a shorter value in the record: another value there only costs
// a miss). They are what the remembered value is for longer ones, for a
// few distinct values at once (a process name, a disposition). Two ways,
// not one: the benchmark route's 15 process names missed 9% of the time
// in 32 direct-mapped slots, each miss a full check of the value, as two
// names sharing a slot evicted each other (with the run tables' misses,
// 16% of records had a value fully checked; 2% in sets of two).
type recentVals [recentSets]recentSet

type recentSet [2]recentVal

type recentVal struct {
	w0, w1  uint64 // the value's bytes, zero past n
	version uint64 // as shapeEvent.version
	n       uint8  // its length; 0: empty
	pure    bool
}

const recentSets = 32

func recentSetOf(w0 uint64) uint64 { return (w0 * 0x9E3779B97F4A7C15) >> (64 - 5) }

// find returns the way that holds the value whose first 16 bytes in the
// record are w0 and w1 (zero past its end), or nil.
func (s *recentSet) find(w0, w1 uint64) *recentVal {
	for k := range s {
		if v := &s[k]; v.n > 0 && w0&masks[v.n][0] == v.w0 && w1&masks[v.n][1] == v.w1 {
			return v
		}
	}
	return nil
}

// put remembers a value that passed, first in its set: the first way
// moves to the second unless it held the same bytes (with an older
// stamp), and the second way's value is dropped unless that was it.
func (s *recentSet) put(v recentVal) {
	if s[0].n != v.n || s[0].w0 != v.w0 || s[0].w1 != v.w1 {
		s[1] = s[0]
	}
	s[0] = v
}

// valueOp is what matches does inline with an event's value before
// shapeValue: the common values need no call.
type valueOp uint8

const (
	opValue  valueOp = iota // shapeValue
	opNumber                // a short integer
	opHex                   // a hex pseudonym of plain bytes
	opIP                    // a dotted quad at an IP leaf
	opTime                  // a timestamp tested as text, of the learnt length
)

// masks[n] are the masks of the first n bytes of four words (n <= 32).
var masks = func() (m [33][4]uint64) {
	for n := range uint(33) {
		for w := range uint(4) {
			switch {
			case n >= 8*(w+1):
				m[n][w] = ^uint64(0)
			case n > 8*w:
				m[n][w] = 1<<(8*(n-8*w)) - 1
			}
		}
	}
	return m
}()

// words returns the first 32 bytes of b as four little-endian words, zero
// past its end.
func words(b []byte) (w [4]uint64) {
	var buf [32]byte
	copy(buf[:], b)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(buf[8*i:])
	}
	return w
}

// load64 reads the eight bytes at d[i]; one unsigned compare guards it.
func load64(d []byte, i int) uint64 {
	if uint(i) > uint(len(d)-8) || len(d) < 8 {
		panic("gate: load64 out of range")
	}
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(d)), i))[:])
}

type shape struct {
	text   []byte
	tailAt int // where the literal after the last value starts in text
	// tailW is that literal as a word, for one of 1 to 8 bytes (tailN):
	// compared with the record's last eight bytes, shifted.
	tailW  uint64
	tailN  int
	events []shapeEvent
	vals   []byte // maxVal bytes per event
	runs   []run
	segs   []segment
	used   uint64 // when last matched, for eviction
}

// Runs. Most values of a record take few distinct values (an event's class
// and type, its product, a port, a disposition): a run is a sequence of two
// or more such values in a row, and its table remembers recent byte strings
// of the whole sequence, literals between the values included, that passed
// their checks. The same bytes at the run's start in a record that has
// matched the shape up to there parse the same way into the same values
// (the stored string ends after the run's last value, and the loop then
// compares the literal after it, which ends a number there as it did), so
// they pass again: at once when every check in the run depends on the
// bytes alone (numbers), and otherwise while the stamp of their echo tests
// holds. Values that are new in most records (pseudonyms, IP
// addresses, timestamps) are not put into runs: they would only make the
// strings miss.
type run struct {
	last   int  // its last event
	pure   bool // its checks depend on its bytes alone
	window int  // how many bytes at its start index the table: 8 to 64, a multiple of 8
	t      *runTable
}

const (
	runBits     = 6
	runEntries  = 1 << runBits // per run, in sets of two (see recentVals)
	maxRunBytes = 192          // longest string remembered
)

type runTable struct {
	e    [runEntries]runEntry
	text [runEntries * maxRunBytes]byte
}

type runEntry struct {
	h       uint64 // the hash of the window at its start; n == 0: empty
	version uint64 // the stamp of its values' echo tests
	n       int    // its length
	// w is a string of 16 to 32 bytes as the words at 0, 8, n-16 and
	// n-8 (overlapping): compared by four loads in the entry's line
	// instead of with the text. (A run often ends a record, so loads may
	// not go past its end.)
	w [4]uint64
}

// runHashAt indexes a run's table by the window bytes at p (a multiple
// of 8, which the caller has checked lie in the record; small enough to
// be inlined in matches). A window as long as the run's usual
// length, rather than a fixed one, lets runs that start with the same
// bytes (a constant class number) spread over the table; bytes past the
// run's end in the window only cost hits, never correctness: a hit
// compares the whole stored string.
func runHashAt(p unsafe.Pointer, window int) uint64 {
	// Each word is multiplied by a constant of its own and the products
	// are combined by xor: the multiplies are independent, so the hash
	// waits for one of them and the final mix whatever the window, not
	// for a chain of two per pair of words.
	h := uint64(window)
	for k := 0; k < window; k += 8 {
		h ^= at64(p, k) * runHashMul[k>>3&7]
	}
	h = (h ^ h>>29) * 0xBF58476D1CE4E5B9
	return h ^ h>>32
}

// runHashMul holds odd constants, one per word of a window.
var runHashMul = [8]uint64{
	0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
	0x94D049BB133111EB, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0xD6E8FEB86659FD93,
}

// pendingRun is a run whose values matches is checking one by one: its
// string is stored when they pass.
type pendingRun struct {
	r     *run
	start int
	h     uint64
}

// storeRun remembers b, which passed as run r's values, hashed as h.
func (c *Checker) storeRun(r *run, h uint64, b []byte) {
	if len(b) > maxRunBytes {
		return
	}
	if r.t == nil {
		r.t = new(runTable)
	}
	// In place of the same hash, or else first in its set, the first way
	// moving to the second.
	slot := h >> (64 - runBits) &^ 1
	if t := r.t; t.e[slot].h != h {
		if t.e[slot+1].h == h {
			slot++
		} else {
			t.e[slot+1] = t.e[slot]
			n := uint64(t.e[slot].n)
			copy(t.text[(slot+1)*maxRunBytes:(slot+1)*maxRunBytes+n], t.text[slot*maxRunBytes:slot*maxRunBytes+n])
		}
	}
	e := &r.t.e[slot]
	e.h, e.version, e.n = h, c.stamp(), len(b)
	copy(r.t.text[slot*maxRunBytes:], b)
	if n := len(b); n >= 16 && n <= 32 {
		e.w = [4]uint64{load64(b, 0), load64(b, 8), load64(b, n-16), load64(b, n-8)}
	}
}

// findRuns marks the runs of sh's events, outside its segments; rec says
// where each value was in the record the shape was learnt from.
func (sh *shape) findRuns(rec []recEvent) {
	sh.runs = sh.runs[:0]
	inSeg := make([]bool, len(sh.events))
	for i := range sh.events {
		if s := sh.events[i].seg; s >= 0 {
			for k := i; k < sh.segs[s].last; k++ {
				inSeg[k] = true
			}
		}
	}
	volatile := func(i int) bool {
		e := &sh.events[i]
		switch {
		case inSeg[i]:
			return true
		case e.kind == evName || e.kind == evKNumber:
			return true
		case e.kind == evLeafString && e.node.leaf.identifier():
			return true
		}
		return e.op == opTime
	}
	for i := 0; i < len(sh.events); {
		j := i
		for j < len(sh.events) && !volatile(j) {
			j++
		}
		if j-i >= 2 && len(sh.runs) < 1<<15 {
			r := run{last: j - 1, pure: true, window: min(max((rec[j-1].end-rec[i].start)&^7, 8), 64)}
			for k := i; k < j; k++ {
				r.pure = r.pure && (sh.events[k].kind == evFreeNumber || sh.events[k].kind == evTimeNumber)
			}
			sh.events[i].run = int16(len(sh.runs))
			sh.runs = append(sh.runs, r)
		}
		i = j + 1
	}
}

// recorder notes, during a full pass, where each value was and what was
// done with it, so that a passing record can become a shape.
type recorder struct {
	on, ok bool
	base   uintptr // address of the record's first byte
	events []recEvent
}

type recEvent struct {
	start, end int // the value's bytes in the record; a name: end of the name
	nameLen    int
	kind       eventKind
	node       *gnode
	path       string
}

// value notes a scalar at out[start:end] (a string with its quotes).
func (r *recorder) value(kind eventKind, start, end int, n *gnode, path string) {
	if r.on {
		r.events = append(r.events, recEvent{start: start, end: end, kind: kind, node: n, path: path})
	}
}

// name notes a member name tested as text; name must lie in the record
// (unescaped).
func (r *recorder) name(name []byte, path string) {
	if !r.on || len(name) == 0 {
		return
	}
	end := int(uintptr(unsafe.Pointer(unsafe.SliceData(name)))-r.base) + len(name)
	r.events = append(r.events, recEvent{start: end, end: end, nameLen: len(name), kind: evName, path: path})
}

// abort gives up on making a shape of this record.
func (r *recorder) abort() { r.ok = false }

// learn turns the recorded pass over out into a shape, replacing the one
// used least recently.
func (c *Checker) learn(out []byte) {
	victim := &c.shapes[0]
	for i := range c.shapes {
		if s := &c.shapes[i]; s.used < victim.used {
			victim = s
		}
	}
	sh := victim
	sh.text, sh.events = sh.text[:0], sh.events[:0]
	prev := 0
	for _, e := range c.rec.events {
		if e.start < prev || e.end < e.start || e.end > len(out) {
			sh.used = 0
			sh.events = sh.events[:0]
			return // not in order: no shape (cannot happen with a sound recorder)
		}
		lit := out[prev:e.start]
		sh.text = append(sh.text, lit...)
		ev := shapeEvent{lit: uint32(len(sh.text)), litLen: uint32(len(lit)), nameLen: uint32(e.nameLen), kind: e.kind, node: e.node, path: e.path}
		ev.lw, ev.run, ev.seg, ev.join = words(lit), -1, -1, -1
		switch e.kind {
		case evFreeNumber, evTimeNumber:
			ev.op = opNumber
		case evLeafString:
			if l := e.node.leaf; l.kind == kindIPTruncate || l.kind == kindIPPrefix {
				ev.op, ev.zeros = opIP, int8(quadZeros(l))
			} else if l.hexPlain {
				ev.op = opHex
			}
		}
		// A timestamp where text is tested (free text, time and label
		// leaves) is most often new: opTime tests it without the memo.
		text := e.kind == evFreeString || (e.kind == evLeafString && !e.node.leaf.identifier())
		if text && e.end-e.start >= 2 && isTimestamp(out[e.start+1:e.end-1]) {
			ev.op, ev.tsLen = opTime, e.end-e.start-2
			if q := out[e.start:e.end]; len(q) <= 32 {
				ev.tsForm = new([4]template)
				for w := range ev.tsForm {
					for k := 8 * w; k < 8*w+8 && k < len(q); k++ {
						ev.tsForm[w].set(k-8*w, q[k])
					}
				}
			}
		}
		sh.events = append(sh.events, ev)
		prev = e.end
	}
	sh.tailAt = len(sh.text)
	sh.text = append(sh.text, out[prev:]...)
	sh.tailN, sh.tailW = 0, 0
	if n := len(out) - prev; n >= 1 && n <= 8 && len(out) >= 8 {
		sh.tailN, sh.tailW = n, load64(out, len(out)-8)>>(64-8*n)
	}
	sh.findSegments(out, c.rec.events)
	sh.findRuns(c.rec.events)
	if n := len(sh.events) * maxVal; cap(sh.vals) < n {
		sh.vals = make([]byte, n)
	} else {
		sh.vals = sh.vals[:n]
	}
	c.tick++
	sh.used = c.tick
}

// otherShapes checks out against the kept shapes but the one that matched
// last (check tries that one first, inline). It reports false, with the
// Checker's findings in any state, when none matches or a check fails.
func (c *Checker) otherShapes(out []byte, distinct int64) bool {
	for i := range c.shapes {
		sh := &c.shapes[i]
		if i == c.lastShape || sh.used == 0 {
			continue
		}
		if c.matches(sh, out, distinct) {
			c.tick++
			sh.used = c.tick
			c.lastShape = i
			return true
		}
		if c.reasons != 0 {
			return false // the shape matched far enough to find a problem
		}
	}
	return false
}

func (c *Checker) matches(sh *shape, out []byte, distinct int64) bool {
	// The run being checked value by value, if any, is kept in c: it is
	// rare, and the loop's live values outnumber the registers already
	// (every one more was a store per event).
	c.pend.r = nil
	// The loop does what most values need inline (literals and remembered
	// values of up to 16 bytes as two masked word loads, short numbers,
	// hex pseudonyms, dotted quads); shapeValue does the rest. Word loads
	// need 16 bytes left in the record; nearer its end the loop compares
	// slices.
	pos, evs := 0, sh.events
	p := unsafe.Pointer(unsafe.SliceData(out)) // for word loads the loop has guarded
	for i := 0; i < len(evs); i++ {
		if r := c.pend.r; r != nil && r.last == i-1 {
			c.storeRun(r, c.pend.h, out[c.pend.start:pos])
			c.pend.r = nil
		}
		e := &evs[i]
		// A segment: its words, then its timestamps' echo tests. When a
		// word does not fit, the stretch is taken value by value.
		inSeg := false
		if e.join >= 0 && c.tryJoined(sh, &sh.segs[e.join], out, pos) {
			s := &sh.segs[e.join]
			pos += s.n
			if i = s.last; i == len(evs) {
				break
			}
			e, inSeg = &evs[i], true
		} else if c.reasons != 0 {
			return false
		} else if e.seg >= 0 && fitsSegment(&sh.segs[e.seg], out, pos, c.tick) {
			s := &sh.segs[e.seg]
			if !c.segmentEchoes(s, out, pos) {
				return false
			}
			pos += s.n
			if i = s.last; i == len(evs) {
				break
			}
			e, inSeg = &evs[i], true
		}
		switch n := int(e.litLen); {
		case inSeg:
			// The segment ended with event i's literal.
		case n <= 16 && pos <= len(out)-16:
			m := &masks[n]
			if at64(p, pos)&m[0] != e.lw[0] || at64(p, pos+8)&m[1] != e.lw[1] {
				return false
			}
			pos += n
		case n <= 32 && pos <= len(out)-32:
			m := &masks[n]
			if at64(p, pos) != e.lw[0] || at64(p, pos+8) != e.lw[1] ||
				at64(p, pos+16)&m[2] != e.lw[2] || at64(p, pos+24)&m[3] != e.lw[3] {
				return false
			}
			pos += n
		default:
			if text, lit := sh.text, e.lit; int(lit) > len(text) || n > int(lit) || len(out)-pos < n || !equal(out[pos:pos+n], text[int(lit)-n:lit]) {
				return false
			}
			pos += n
		}
		if e.run >= 0 && pos <= len(out)-sh.runs[e.run].window {
			r := &sh.runs[e.run]
			h := runHashAt(unsafe.Add(p, pos), r.window) // (pos <= len(out)-window)
			if t := r.t; t != nil {
				slot := h >> (64 - runBits) &^ 1
				if t.e[slot].h != h {
					slot++ // the set's second way
				}
				re := &t.e[slot]
				if n := re.n; re.h == h && n > 0 && n <= len(out)-pos &&
					(n >= 16 && n <= 32 && at64(p, pos) == re.w[0] && at64(p, pos+8) == re.w[1] &&
						at64(p, pos+n-16) == re.w[2] && at64(p, pos+n-8) == re.w[3] ||
						(n < 16 || n > 32) && equal(out[pos:pos+n], t.text[slot*maxRunBytes:slot*maxRunBytes+uint64(n)])) &&
					(r.pure || c.valid(re.version)) {
					pos += re.n
					i = r.last
					continue
				}
			}
			// The run's stamp is made of its values' lookups.
			c.pend = pendingRun{r: r, start: pos, h: h}
			c.pastSig = false
		}
		// A value that passed here recently (strings only).
		if rv := e.recent; rv != nil && pos <= len(out)-16 {
			w0 := at64(p, pos)
			if v := rv[recentSetOf(w0)].find(w0, at64(p, pos+8)); v != nil && (v.pure || c.valid(v.version)) {
				pos += int(v.n)
				continue
			}
		}
		switch e.op {
		case opNumber:
			// An integer of up to 7 digits without a leading zero, then a
			// byte no number holds: where the scanner ends it, and far
			// from a card number's 13 digits.
			if pos <= len(out)-8 {
				if k := jsonscan.DigitRun(at64(p, pos)); k > 0 && k < 8 && (k == 1 || out[pos] != '0') && !numberMore[out[pos+k]] {
					pos += k
					continue
				}
			}
		case opHex:
			// A hex pseudonym: its bytes are all plain, so where the
			// scanner would end the string and whether the leaf accepts
			// it are one test. New every time: not remembered.
			l := e.node.leaf
			if n := 1 + len(l.prefix) + l.chars; pos+n < len(out) && out[pos] == '"' && out[pos+n] == '"' &&
				(len(l.prefix) == 0 || string(out[pos+1:pos+1+len(l.prefix)]) == l.prefix) && hexAt(out, pos+1+len(l.prefix), pos+n) {
				pos += n + 1
				continue
			}
		case opTime:
			// isTimestamp's bytes are plain (digits, '-', ':', '.', 'T',
			// 'Z', '+', ' '), so the string ends at the quote after them;
			// and a timestamp holds no pattern (text): the echo test is
			// all it needs. isTimestamp reads the layout only (which
			// bytes are digits, and the others), so a string of the
			// learnt timestamp's layout is one: four word tests.
			if f, n := e.tsForm, e.tsLen; f != nil && pos <= len(out)-32 &&
				f[0].match(at64(p, pos)) && f[1].match(at64(p, pos+8)) && f[2].match(at64(p, pos+16)) && f[3].match(at64(p, pos+24)) {
				if c.g.echo != nil && c.echoTimestamp(out[pos+1:pos+1+n]) {
					c.fail(ReasonEcho, e.path)
					return false
				}
				pos += n + 2
				continue
			}
			if n := e.tsLen; pos+n+1 < len(out) && out[pos] == '"' && out[pos+n+1] == '"' && isTimestamp(out[pos+1:pos+1+n]) {
				if c.g.echo != nil && c.echoTimestamp(out[pos+1:pos+1+n]) {
					c.fail(ReasonEcho, e.path)
					return false
				}
				pos += n + 2
				continue
			}
		case opIP:
			// A dotted quad: digits and dots end at the closing quote, so
			// the scanner and ipLeafOK agree with this. It does not join
			// the recent values: on the benchmark route 40% of addresses
			// would be found there, yet looking them up cost more time
			// than quadAt spares (about 15 ns per record, interleaved).
			if pos <= len(out)-quadRoom {
				b := (*[quadRoom]byte)(out[pos:])
				if z := int(e.zeros); z >= 0 {
					if n := quadLeaf(b, z); n > 0 {
						pos += n
						continue
					}
				} else if a, n := quadAt(b); n > 0 {
					if v4 := e.node.leaf.v4; 0 <= v4 && v4 < 32 && a&(1<<(32-v4)-1) == 0 {
						pos += n
						continue
					}
				}
			}
		}
		if pos = c.shapeValue(sh, i, out, pos); pos < 0 {
			return false
		}
	}
	if r := c.pend.r; r != nil {
		c.storeRun(r, c.pend.h, out[c.pend.start:pos])
	}
	if n := sh.tailN; n > 0 && len(out)-pos == n && len(out) >= 8 {
		if at64(p, len(out)-8)>>(64-8*n) != sh.tailW {
			return false
		}
	} else if !equal(out[pos:], sh.text[sh.tailAt:]) {
		return false
	}
	c.checkK(distinct)
	return c.reasons == 0
}

// segmentEchoes runs the echo test of segment s's timestamps, which lies
// at out[pos:] and fits; it reports false, with the finding, on an echo.
func (c *Checker) segmentEchoes(s *segment, out []byte, pos int) bool {
	p := unsafe.Add(unsafe.Pointer(unsafe.SliceData(out)), pos) // the segment's bytes: out[pos:pos+s.n]
	for k := range s.ts {
		t := &s.ts[k]
		// Most records: the date and hour are remembered and the tail's
		// signatures are clear (echoSegTime's first two answers).
		if t.clear == c.sigStamp && c.version != 0 && c.tsHeadHoldsAt(unsafe.Add(p, t.off)) {
			continue
		}
		ts := out[pos+t.off : pos+t.off+t.n]
		if c.g.echo != nil && c.echoSegTime(t, ts) {
			c.fail(ReasonEcho, t.path)
			return false
		}
	}
	return true
}

// quadRoom is what quadAt reads: a quoted dotted quad of up to 15 bytes.
const quadRoom = 17

// quadAt reads a quoted dotted quad at b[0] as parseIPv4 reads one (four
// decimal fields up to 255, no leading zeros) and returns it and its
// length with the quotes; n is 0 for anything else (ipLeafOK decides).
// Digits and dots end at the closing quote, so the scanner ends the
// string where this does.
func quadAt(b *[quadRoom]byte) (addr uint32, n int) {
	if b[0] != '"' {
		return 0, 0
	}
	i := 1
	for f := range 4 {
		if f > 0 {
			if b[i] != '.' {
				return 0, 0
			}
			i++
		}
		v := uint32(b[i] - '0')
		if v > 9 {
			return 0, 0
		}
		i++
		if v != 0 { // a field that starts with 0 is 0
			for k := 0; k < 2 && b[i]-'0' <= 9; k++ {
				v = v*10 + uint32(b[i]-'0')
				i++
			}
		}
		if v > 255 {
			return 0, 0
		}
		addr = addr<<8 | v
	}
	if b[i] != '"' {
		return 0, 0
	}
	return addr, i + 1
}

// hexAt reports whether out[i:j] is lower-case hex: eight bytes at a time,
// hexLower8's test with one branch at the end; the usual 32 digits
// unrolled.
func hexAt(out []byte, i, j int) bool {
	if j-i == 32 {
		return (nonHex(load64(out, i))|nonHex(load64(out, i+8))|nonHex(load64(out, i+16))|nonHex(load64(out, i+24)))&msb == 0
	}
	var bad uint64
	for ; i+8 <= j; i += 8 {
		bad |= nonHex(load64(out, i))
	}
	return bad&msb == 0 && hexLower(out[i:j])
}

// nonHex has the top bit of each byte of x set that is not 0-9 or a-f
// (hexLower8's test, without its branch).
func nonHex(x uint64) uint64 {
	digit := (x + lsb*(0x80-'0')) &^ (x + lsb*(0x80-'9'-1))
	letter := (x + lsb*(0x80-'a')) &^ (x + lsb*(0x80-'f'-1))
	return x | ^(digit | letter)
}

// numberMore marks the bytes that can continue a JSON number after its
// integer digits.
var numberMore = [256]bool{'.': true, 'e': true, 'E': true}

// shapeValue checks the value of event i at out[pos:] and returns where
// it ends, or -1 when the record does not fit the shape or fails a check.
func (c *Checker) shapeValue(sh *shape, i int, out []byte, pos int) int {
	e := &sh.events[i]
	switch e.kind {
	case evName:
		if e.version == 0 || !c.valid(e.version) {
			outer := c.pastSig
			c.pastSig = false
			c.text(sh.text[e.lit-e.nameLen:e.lit], e.path, true)
			if c.reasons != 0 {
				return -1
			}
			e.version = c.stamp()
			c.pastSig = c.pastSig || outer
		}
		return pos
	case evFreeNumber, evTimeNumber, evKNumber:
		end := jsonscan.NumberEnd(out, pos)
		if end < 0 {
			return -1
		}
		switch e.kind {
		case evFreeNumber:
			c.freeNumber(out[pos:end], e.path)
		case evKNumber:
			c.kNumber(out[pos:end])
		}
		if c.reasons != 0 {
			return -1
		}
		return end
	}
	// A value that is not often the remembered one is not compared with
	// it (nor remembered), but for one record in 64. (Values of up to 16
	// bytes are matches' recentVals.)
	try := e.misses < 4 || c.tick&63 == 0
	if n := int(e.valLen); try && n > 16 && len(out)-pos >= n &&
		equal(out[pos:pos+n], sh.vals[i*maxVal:i*maxVal+n]) && (e.pure || c.valid(e.version)) {
		e.misses = 0
		return pos + n // the value that passed here last time
	}
	end, escaped, ok := scanString(out, pos)
	if !ok {
		return -1
	}
	val := out[pos+1 : end-1]
	if escaped {
		c.unesc = jsonscan.AppendUnescaped(c.unesc[:0], val)
		val = c.unesc
	}
	st, pure, ok := c.valueChecks(e, val, escaped)
	if !ok {
		return -1
	}
	switch n := end - pos; {
	case n <= 16 && pos <= len(out)-16:
		if e.recent == nil {
			e.recent = new(recentVals)
		}
		w := words(out[pos:end])
		e.recent[recentSetOf(load64(out, pos))].put(recentVal{w0: w[0], w1: w[1], version: st, n: uint8(n), pure: pure})
	case n > 16 && try && n <= maxVal:
		copy(sh.vals[i*maxVal:], out[pos:end])
		e.valLen, e.version, e.pure = uint8(n), st, pure
		e.misses = min(e.misses+1, 255)
	}
	return end
}

// valueChecks runs the checks the full pass runs on a string value at
// event e (its leaf's, or the text's) and returns the stamp they leave
// and whether they depend on the value's bytes alone; ok is false when
// one failed (c.reasons says which).
func (c *Checker) valueChecks(e *shapeEvent, val []byte, escaped bool) (st uint64, pure, ok bool) {
	outer := c.pastSig
	c.pastSig = false
	if e.kind == evLeafString {
		pure = c.leafString(e.node, val, escaped)
	} else {
		c.text(val, e.path, true)
	}
	if c.reasons != 0 {
		return 0, false, false
	}
	st = c.stamp()
	c.pastSig = c.pastSig || outer
	return st, pure, true
}

// equal reports whether a and b, of the same length, are equal: inline,
// eight bytes at a time, for the short literals of a shape.
func equal(a, b []byte) bool {
	n := len(b)
	if len(a) != n {
		return false
	}
	if n < 8 {
		if n < 4 { // (a shape's tail is often 2 bytes: no call for it)
			return n == 0 || (a[0] == b[0] && (n == 1 || (a[1] == b[1] && (n == 2 || a[2] == b[2]))))
		}
		return binary.LittleEndian.Uint32(a) == binary.LittleEndian.Uint32(b) &&
			binary.LittleEndian.Uint32(a[n-4:]) == binary.LittleEndian.Uint32(b[n-4:])
	}
	// The last eight bytes first (overlapping what follows), then the
	// rest eight at a time.
	if binary.LittleEndian.Uint64(a[n-8:]) != binary.LittleEndian.Uint64(b[n-8:]) {
		return false
	}
	for len(b) > 8 {
		if binary.LittleEndian.Uint64(a) != binary.LittleEndian.Uint64(b) {
			return false
		}
		a, b = a[8:], b[8:]
	}
	return true
}

// scanString scans the string starting with the quote at d[i] as the
// scanner does and returns the index after its closing quote and whether
// it holds escapes. ok is false where the scanner would fail (a bad escape,
// a control byte, invalid UTF-8, the end of the record) or there is no
// string.
func scanString(d []byte, i int) (end int, escaped, ok bool) {
	if i >= len(d) || d[i] != '"' {
		return 0, false, false
	}
	j, high := i+1, false
	for {
		// Eight bytes at a time: find the first '"', '\\', control or
		// non-ASCII byte, as jsonscan does.
		for j+8 <= len(d) {
			x := binary.LittleEndian.Uint64(d[j:])
			q := x ^ (lsb * '"')
			b := x ^ (lsb * '\\')
			t := (((x - lsb*0x20) &^ x) | ((q - lsb) &^ q) | ((b - lsb) &^ b) | x) & msb
			if t != 0 {
				j += bits.TrailingZeros64(t) / 8
				goto found
			}
			j += 8
		}
		for j < len(d) && d[j] >= 0x20 && d[j] != '"' && d[j] != '\\' && d[j] < 0x80 {
			j++
		}
	found:
		if j >= len(d) {
			return 0, false, false
		}
		switch c := d[j]; {
		case c == '"':
			if high && !utf8.Valid(d[i+1:j]) {
				return 0, false, false
			}
			return j + 1, escaped, true
		case c >= 0x80:
			high = true
			j++
		case c == '\\':
			escaped = true
			if j+1 >= len(d) {
				return 0, false, false
			}
			switch d[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(d) || !isHex(d[j+2]) || !isHex(d[j+3]) || !isHex(d[j+4]) || !isHex(d[j+5]) {
					return 0, false, false
				}
				j += 6
			default:
				return 0, false, false
			}
		default: // a control byte
			return 0, false, false
		}
	}
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)
