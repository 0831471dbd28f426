package kanon

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
)

// Aggregate mode: tumbling event-time windows of groups keyed by the
// quasi-identifiers at level 0. When the watermark (max event time seen -
// allowed_lateness) passes a window's end, groups of at least k distinct
// entities (and l sensitive values) are published; the rest are regrouped
// one step up the roll-up sequence, again and again, and what is still
// short below the top is suppressed.

// A group's level-0 QI values (those of one member: every member shares
// its generalization) are at len(qis)*index in its window's ids, as IDs
// in the window's dictionary.
// A window holds tens of thousands of groups of a few records each
// (skewed telemetry at level 0), and every record and every roll-up
// touches one at random: a group is one cache line (64 bytes), what most
// groups hold is inline, and the rest (more entities, other partitions,
// sensitive values, listed offsets) lies in the window's side tables.
// Its metrics' sums, minima and maxima are at 3*len(metrics)*index in the
// window's acc.
type group struct {
	count int32 // records (at most max_buffered_records, capped at MaxInt32)
	ne    int32 // entity hashes inline in e (0 to 2), or -n: n of them spilled to the window's hpool
	// e holds up to two entity hashes, ascending; once spilled, e[0] is the
	// last hash added, so a repeated entity skips the set.
	e    [2]uint64
	span gspan // the records of the group's first partition
	more int32 // 1 + index in the window's spans of its next partition's (0: none)
	ext  int32 // 1 + index in the window's ext (0: none)
	// Spilled entity hashes: ascending at hpool[off:off-ne], room for hcap.
	off, hcap int32
}

// gspan is a group's run of records of one partition: part indexes the
// window's held, which names the topic and partition, so adding a record
// compares one integer instead of a topic and a partition.
type gspan struct {
	first, last int64
	count       int32
	part        int32
}

// spanNode is a group's span of another partition than its first, linked
// in order of appearance (a worker's stage sees one partition: none).
type spanNode struct {
	gspan
	next int32 // 1 + index of the next in the window's spans (0: none)
}

// spanLog is a record of a group's partition other than its first, noted
// by Add and folded into the group's spans when its window closes
// (closeWindow, sorted by sortSpanLog). Sixteen bytes, appended in record
// order: Add writes the log sequentially instead of reading the group's
// span nodes, which lie outside its cache line (a miss in the middle of
// each such record's dependent chain: about 40 ns per record with six
// partitions). The log holds at most one entry per buffered record, so
// max_buffered_records bounds it.
type spanLog struct {
	g    int32 // the group's index in the window
	part int32 // index in the window's held
	off  int64
}

// groupExt is what few groups hold: up to l distinct sensitive values and
// the listed offsets (Options.ListOffsets).
type groupExt struct {
	sens    []string
	offsets []Position
}

// ents returns g's entity hashes: ascending, the m smallest seen.
func (w *window) ents(g *group) []uint64 {
	if g.ne < 0 {
		return w.hpool[g.off : g.off-g.ne : g.off+g.hcap]
	}
	return g.e[:g.ne]
}

// entLen returns how many entity hashes g holds (its exact distinct count
// below m).
func (w *window) entLen(g *group) int {
	if g.ne < 0 {
		return int(-g.ne)
	}
	return int(g.ne)
}

// addEnt adds entity hash x to g.
func (w *window) addEnt(g *group, x uint64, m int) {
	switch g.ne {
	case 0:
		g.e[0], g.ne = x, 1
		return
	case 1:
		switch {
		case x == g.e[0]:
		case x > g.e[0]:
			g.e[1], g.ne = x, 2
		default:
			g.e[1], g.e[0], g.ne = g.e[0], x, 2
		}
		return
	case 2:
		if x == g.e[0] || x == g.e[1] {
			return
		}
		w.room(g, 3, m)
	default:
		if x == g.e[0] {
			return // the last one added: skewed telemetry repeats its users
		}
		n := int(-g.ne)
		if n >= m && x >= w.hpool[int(g.off)+n-1] {
			return // full, and not among the m smallest
		}
		if n == int(g.hcap) {
			w.room(g, n+1, m)
		}
	}
	d := distinct{w.ents(g)}
	d.add(x, m)
	g.ne, g.e[0] = -int32(len(d.h)), x
}

// room makes g's entity hashes spilled, with room for n of them (at most
// m): a run of the window's hpool, moved to its end (doubling) when
// short. Runs are not reused until the window is recycled.
func (w *window) room(g *group, n, m int) {
	n = min(n, m)
	if g.ne < 0 && int(g.hcap) >= n {
		return
	}
	c := min(m, max(8, 2*n))
	if g.ne < 0 {
		c = min(m, max(c, 2*int(g.hcap)))
	}
	hs := w.ents(g)
	off := len(w.hpool)
	w.hpool = slices.Grow(w.hpool, c)[:off+c]
	copy(w.hpool[off:], hs) // hs may lie in hpool's old array: still intact
	g.off, g.hcap, g.ne = int32(off), int32(c), -int32(len(hs))
}

// mergeEnts adds g's entity hashes to into's.
func (w *window) mergeEnts(into, g *group, m int, scratch []uint64) []uint64 {
	if g.ne >= -4 {
		// A few: inserting them one by one skips a pass over into's.
		for _, x := range w.ents(g) {
			w.addEnt(into, x, m)
		}
		return scratch
	}
	w.room(into, m, m)
	d := distinct{w.ents(into)}
	scratch = d.merge(&distinct{w.ents(g)}, m, scratch)
	into.ne = -int32(len(d.h))
	return scratch
}

// addSpan adds sp (count > 0) to g's spans.
func (w *window) addSpan(g *group, sp gspan) {
	if g.span.part == sp.part || g.span.count == 0 {
		if g.span.count == 0 {
			g.span = sp
			return
		}
		g.span.first = min(g.span.first, sp.first)
		g.span.last = max(g.span.last, sp.last)
		g.span.count += sp.count
		return
	}
	if g.more == 0 {
		w.spans = append(w.spans, spanNode{gspan: sp})
		g.more = int32(len(w.spans))
		return
	}
	n := g.more
	for {
		m := &w.spans[n-1]
		if m.part == sp.part {
			m.first, m.last, m.count = min(m.first, sp.first), max(m.last, sp.last), m.count+sp.count
			return
		}
		if m.next == 0 {
			break
		}
		n = m.next
	}
	// Append, then link: the append may move the nodes.
	w.spans = append(w.spans, spanNode{gspan: sp})
	w.spans[n-1].next = int32(len(w.spans))
}

// sortSpanLog returns the window's span log sorted by group, in record
// order within each group (a stable counting sort into a's scratch), and
// empties the log. Folded in that order (closeWindow), each group lists
// its partitions in order of appearance as if Add had added them one by
// one, and the fold reads the groups forwards and appends each group's
// nodes together, instead of reading a group line and its nodes at random
// in megabytes for every entry, one dependent miss after another.
func (w *window) sortSpanLog(a *aggState) []spanLog {
	log := w.spanLog
	w.spanLog = log[:0]
	if len(log) == 0 {
		return nil
	}
	ng := len(w.groups)
	// at[g+1] counts g's entries, then at[g] is where g's start.
	at := slices.Grow(a.foldAt[:0], ng+1)[:ng+1]
	clear(at)
	for _, e := range log {
		at[e.g+1]++
	}
	for g := 1; g <= ng; g++ {
		at[g] += at[g-1]
	}
	sorted := slices.Grow(a.foldLog[:0], len(log))[:len(log)]
	for _, e := range log {
		sorted[at[e.g]] = e
		at[e.g]++
	}
	a.foldAt, a.foldLog = at, sorted
	return sorted
}

// extOf returns g's side record, making one when it has none.
func (w *window) extOf(g *group) *groupExt {
	if g.ext == 0 {
		n := len(w.ext)
		if n < cap(w.ext) {
			w.ext = w.ext[:n+1]
		} else {
			w.ext = append(w.ext, groupExt{})
		}
		e := &w.ext[n]
		e.sens, e.offsets = e.sens[:0], e.offsets[:0]
		g.ext = int32(n + 1)
	}
	return &w.ext[g.ext-1]
}

// sens returns g's distinct sensitive values.
func (w *window) sens(g *group) []string {
	if g.ext == 0 {
		return nil
	}
	return w.ext[g.ext-1].sens
}

// offsets returns g's listed offsets.
func (w *window) offsets(g *group) []Position {
	if g.ext == 0 {
		return nil
	}
	return w.ext[g.ext-1].offsets
}

// heldPart is the lowest offset a window holds of one partition.
type heldPart struct {
	topic     string
	partition int
	low       int64
}

// A window and its groups are recycled when it closes: group slices keep
// their capacity, so a stream in the steady state adds records without
// allocating.
type window struct {
	start    int64 // Unix nanoseconds
	groups   []group
	table    []tslot // open addressing over groups by their level-0 value IDs; len a power of two, at most 7/8 full
	ids      []int32 // level-0 QI value IDs in dict, len(qis) per group
	dict     *dict   // the stage's current dictionary when the window opened
	held     []heldPart
	lastHeld int     // index in held of the last partition held
	byPart   []int32 // partition of held[0]'s topic -> index in held + 1 (0: none)
	n        int
	acc      []float64  // per group, per metric: sum, min, max
	hpool    []uint64   // groups' spilled entity hashes
	spans    []spanNode // groups' spans of other partitions than their first
	spanLog  []spanLog  // records of other partitions than their group's first, not yet in spans
	ext      []groupExt
}

// tslot is a window table slot: a group (index + 1; 0 empty) and the
// high half of the hash of its values, which settles most mismatches
// without reading them. Eight bytes: the table of a window's tens of
// thousands of groups is read at random by every record, so it is kept
// small.
type tslot struct {
	tag uint32
	g   int32
}

// tupleHash adds the hash x of a tuple's next value (strHash) to h, the
// hash of the values before it: the group's hash picks a window table
// slot with its low bits and is the slot's tag with its high half.
func tupleHash(h, x uint64) uint64 { return (bits.RotateLeft64(h, 23) ^ x) * 0x9e3779b97f4a7c15 }

// gslot is a dictionary slot: a value's ID + 1 (0 empty) and its hash.
type gslot struct {
	h uint64
	g int32
}

// dict gives each quasi-identifier's level-0 values small integer IDs,
// once per stage rather than per window: windows opened while it is
// current share it, so a group holds its values as a tuple of integers,
// a value seen in an earlier window (skewed telemetry repeats its hosts
// and users) is neither copied nor generalized again, and closing a
// window compares classes as tuples of integers. It is bounded: a window
// opening when it holds more than maxInterned values of a QI starts a new
// one, and the old one is emptied for reuse when its last window closes.
type dict struct {
	vals []valDict // per QI
	refs int       // open windows using it
}

// valDict is one quasi-identifier's part of a dict.
type valDict struct {
	slots  []gslot  // an ID + 1 per slot (0 empty), with the value's hash; len a power of two, at most half full
	text   []string // ID -> value (owned, never overwritten: published values alias it)
	hs     []uint64 // ID -> its hash (strHash)
	stride int      // the ladder's height + 1
	ups    []int32  // ID*stride + level >= 1 -> its generalized value's ID at that level (-1: not yet)
	gen    []map[string]int32
	gtxt   [][]string // per level >= 1: generalized ID -> value
}

func newDict(qis []*ladder) *dict {
	d := &dict{vals: make([]valDict, len(qis))}
	for i, l := range qis {
		v := &d.vals[i]
		v.stride = l.height + 1
		v.gen = make([]map[string]int32, l.height+1)
		v.gtxt = make([][]string, l.height+1)
		for lv := 1; lv <= l.height; lv++ {
			v.gen[lv] = map[string]int32{}
		}
	}
	return d
}

// full reports whether a new window should start a new dictionary.
func (d *dict) full() bool {
	for i := range d.vals {
		if len(d.vals[i].text) > maxInterned {
			return true
		}
	}
	return false
}

// reset empties d for reuse, keeping its memory.
func (d *dict) reset() {
	for i := range d.vals {
		v := &d.vals[i]
		clear(v.slots)
		clear(v.text)
		v.text, v.hs, v.ups = v.text[:0], v.hs[:0], v.ups[:0]
		for lv := 1; lv < len(v.gen); lv++ {
			clear(v.gen[lv])
			clear(v.gtxt[lv])
			v.gtxt[lv] = v.gtxt[lv][:0]
		}
	}
}

// intern returns v's ID (h its hash), adding it, owned, when new.
func (t *valDict) intern(a *aggState, h uint64, v string) int32 {
	if 2*(len(t.text)+1) > len(t.slots) {
		t.slots = rehash(t.slots, max(64, 2*len(t.slots)))
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.g == 0 {
			id := int32(len(t.text))
			t.text = append(t.text, a.own(v))
			t.hs = append(t.hs, h)
			for range t.stride {
				t.ups = append(t.ups, -1)
			}
			*sl = gslot{h, id + 1}
			return id
		}
		if sl.h == h && eqStr(t.text[sl.g-1], v) {
			return sl.g - 1
		}
	}
}

// rehash returns a table of n slots (a power of two) holding old's
// occupied slots, placed by linear probing on their hashes.
func rehash(old []gslot, n int) []gslot {
	table := make([]gslot, n)
	mask := uint64(n - 1)
	for _, sl := range old {
		if sl.g != 0 {
			i := sl.h & mask
			for table[i].g != 0 {
				i = (i + 1) & mask
			}
			table[i] = sl
		}
	}
	return table
}

type aggState struct {
	windows  map[int64]*window
	last     *window // the window the last record went to
	nextEnd  int64   // the earliest end of an open window
	free     []*window
	maxEvent int64
	seen     bool
	groups   int
	records  int
	late     map[int64]int

	hv    []uint64 // Add's scratch: per QI, the hash of the record's value
	ids   []int32  // and its ID
	dict  *dict    // the current dictionary (nil until a window opens)
	dfree []*dict
	rep   []string // publish's scratch: a group's level-0 values

	// closing scratch, reused
	cur, next []int32
	roll      []int32  // open addressing: a group per slot (-1 empty), keyed by its value IDs
	rollH     []uint64 // the slot's hash of the value IDs
	scratch   []uint64 // distinct.merge's
	cids      []int32  // per group, len(qis) value IDs at the current level vector
	spans     []gspan  // per part of the closing window: the suppressed records' span
	head      []byte   // the closing window's aggregates' JSON head (Group.appendHead)
	keys      *groupKeys
	order     []int32   // the parts in spans, in order of appearance
	foldAt    []int32   // sortSpanLog's: per group, where its entries start
	foldLog   []spanLog // and the log sorted by group

	// Published aggregates carve their memory from slabs: the caller owns
	// what it gets, and a full slab is left to the garbage collector, not
	// reused, so publishing allocates once per many aggregates.
	byteSlab  []byte
	repSlab   []byte // group representatives' values (own)
	spanSlab  []Span
	groupSlab []Group
	strSlab   []string
	numSlab   []float64
}

// own copies v into the representatives' byte slab: written once, never
// overwritten (published values may alias it), left to the garbage
// collector when full, so groups own their values without an allocation
// each.
func (a *aggState) own(v string) string {
	if v == "" {
		return v
	}
	if cap(a.repSlab)-len(a.repSlab) < len(v) {
		a.repSlab = make([]byte, 0, max(64*slabChunk, len(v)))
	}
	n := len(a.repSlab)
	a.repSlab = append(a.repSlab, v...)
	return alias(a.repSlab[n:])
}

// slabChunk is how many elements a new slab holds.
const slabChunk = 1024

// carve returns n elements of *slab's spare capacity (capacity capped at
// n, so an append by the owner never reaches the next carving), starting
// a new slab when it is full.
func carve[T any](slab *[]T, n int) []T {
	if cap(*slab)-len(*slab) < n {
		*slab = make([]T, 0, max(slabChunk, n))
	}
	l := len(*slab)
	*slab = (*slab)[:l+n]
	return (*slab)[l : l+n : l+n]
}

// payload returns gr's JSON (head: its window's appendHead) in the byte
// slab's spare capacity, capped; when it does not fit, append's own
// allocation is kept and the next call starts a new slab.
func (a *aggState) payload(gr *Group, head []byte) []byte {
	free := a.byteSlab[len(a.byteSlab):]
	out := gr.appendBody(append(free, head...))
	if cap(out) == cap(free) && cap(free) > 0 { // written in place
		a.byteSlab = a.byteSlab[:len(a.byteSlab)+len(out)]
		return out[:len(out):len(out)]
	}
	a.byteSlab = make([]byte, 0, 64*slabChunk)
	return out
}

// maxInterned bounds the level-0 values of a QI a dictionary keeps for
// new windows (its generalized values are fewer); past it the next window
// starts a new one.
const maxInterned = 1 << 14

func newAggState(nq int) *aggState {
	return &aggState{windows: map[int64]*window{}, late: map[int64]int{}, nextEnd: math.MaxInt64, hv: make([]uint64, nq), ids: make([]int32, nq)}
}

// Group is a published aggregate.
type Group struct {
	// Start and End bound the window.
	Start, End time.Time
	// Paths and Values are the quasi-identifiers and their generalized
	// values (JSON text).
	Paths  []string
	Values []string
	// Levels per quasi-identifier.
	Levels []uint8
	// Count is the number of records; Entities the distinct entities
	// (exact below 64 or k, whichever is larger; then an estimate). Both
	// noisy when noise is configured.
	Count, Entities int
	// Sums, Min and Max per configured field (NaN when no record had it).
	SumFields, MinFields, MaxFields []string
	Sums, Min, Max                  []float64

	keys *groupKeys // the stage's, when it made the Group
}

// AppendJSON appends the aggregate as one JSON object:
// {"window_start","window_end","group":{path:value},"levels","count","entities","sum","min","max"}.
func (g *Group) AppendJSON(dst []byte) []byte {
	return g.appendBody(g.appendHead(dst))
}

// appendHead appends the part of the JSON every group of a window shares.
func (g *Group) appendHead(dst []byte) []byte {
	dst = append(dst, `{"window_start":"`...)
	dst = g.Start.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","window_end":"`...)
	dst = g.End.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `","group":{`...)
}

// appendBody appends the rest, from the group's values on.
func (g *Group) appendBody(dst []byte) []byte {
	keys := g.keys
	if keys == nil {
		keys = newGroupKeys(g.Paths, g.SumFields, g.MinFields, g.MaxFields)
	}
	for i := range g.Paths {
		dst = append(dst, keys.qi[i]...)
		dst = append(dst, g.Values[i]...)
	}
	dst = append(dst, `},"levels":[`...)
	for i, l := range g.Levels {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendFloat(dst, float64(l))
	}
	dst = append(dst, `],"count":`...)
	dst = appendFloat(dst, float64(g.Count))
	dst = append(dst, `,"entities":`...)
	dst = appendFloat(dst, float64(g.Entities))
	for o, vals := range [3][]float64{g.Sums, g.Min, g.Max} {
		for i, k := range keys.obj[o] {
			dst = append(dst, k...)
			dst = appendFloat(dst, vals[i])
		}
		if len(keys.obj[o]) > 0 {
			dst = append(dst, '}')
		}
	}
	return append(dst, '}')
}

// groupKeys is the JSON text before each value of a Group: quoted once
// per stage, not per aggregate.
type groupKeys struct {
	qi  [][]byte    // `"path":`, after the first with a leading comma
	obj [3][][]byte // sum, min, max: `,"sum":{"field":`, then `,"field":`
}

func newGroupKeys(paths, sums, mins, maxs []string) *groupKeys {
	k := &groupKeys{}
	for i, p := range paths {
		var b []byte
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonscan.AppendQuoted(b, []byte(p))
		k.qi = append(k.qi, append(b, ':'))
	}
	for o, fields := range [3][]string{sums, mins, maxs} {
		for i, f := range fields {
			b := []byte{','}
			if i == 0 {
				b = append(b, `"`+[3]string{"sum", "min", "max"}[o]+`":{`...)
			}
			b = jsonscan.AppendQuoted(b, []byte(f))
			k.obj[o] = append(k.obj[o], append(b, ':'))
		}
	}
	return k
}

func (s *Stage) windowStart(t time.Time) int64 {
	w := int64(s.cfg.Window)
	ns := t.UnixNano()
	return ns - ((ns%w)+w)%w
}

func (s *Stage) watermark() int64 {
	return s.agg.maxEvent - int64(s.cfg.AllowedLateness)
}

func (s *Stage) decidedOne(rec *Record, kind Kind, reason Reason, ws int64) Output {
	o := Output{Kind: kind, Reason: reason, Count: 1, Window: time.Unix(0, ws).UTC(),
		Spans: []Span{{Topic: rec.Topic, Partition: rec.Partition, First: rec.Offset, Last: rec.Offset, Count: 1}}}
	if s.list {
		o.Offsets = []Position{{rec.Topic, rec.Partition, rec.Offset}}
	}
	return o
}

func (s *Stage) addAggregate(dst []Output, rec *Record) []Output {
	a := s.agg
	t := rec.EventTime.UnixNano()
	w := a.last
	var ws int64
	if w != nil && t >= w.start && t-w.start < int64(s.cfg.Window) {
		ws = w.start // the common case: the last record's window, no division
	} else {
		ws = s.windowStart(rec.EventTime)
	}
	if a.seen && ws+int64(s.cfg.Window) <= s.watermark() {
		s.stats.Late++
		if s.cfg.Late == config.LateCount {
			a.late[ws]++
		}
		return append(dst, s.decidedOne(rec, Late, 0, ws))
	}
	if !a.seen || t > a.maxEvent {
		a.maxEvent, a.seen = t, true
	}
	if w == nil || w.start != ws {
		w = a.windows[ws]
		if w == nil {
			w = s.openWindow(ws)
		}
		a.last = w
	}
	// The group: hash the values where they lie, then compare them with
	// the candidate's (a hash collision never merges two classes).
	nq := len(s.qis)
	hv := a.hv[:nq]
	h := uint64(0)
	for i := range hv {
		v := qiValue(rec.QI, i)
		var x uint64
		if n := len(v); n >= 8 && n <= 16 {
			x = hashWords(unsafe.Pointer(unsafe.StringData(v)), n) // strHash's case, inline
		} else {
			x = strHash(v)
		}
		hv[i] = x
		h = tupleHash(h, x)
	}
	tag := uint32(h >> 32)
	mask := uint64(len(w.table) - 1)
	slot := h & mask
	gi := int32(-1)
	for ; w.table[slot].g != 0; slot = (slot + 1) & mask {
		if sl := w.table[slot]; sl.tag == tag && w.sameValues(sl.g-1, nq, rec.QI) {
			gi = sl.g - 1
			break
		}
	}
	if (gi < 0 && a.groups >= s.cfg.MaxOpenClasses) || a.records >= min(s.cfg.MaxBufferedRecords, math.MaxInt32) {
		s.stats.Suppressed++
		s.stats.SuppressedCap++
		dst = append(dst, s.decidedOne(rec, Suppressed, Cap, ws))
		return s.closeWindows(dst, s.watermark())
	}
	if gi < 0 {
		// A new group: its values' IDs in the window's dictionary (which
		// owns a copy of each: rec's strings may alias its payload).
		ids := a.ids[:nq]
		for i := range ids {
			ids[i] = w.dict.vals[i].intern(a, hv[i], qiValue(rec.QI, i))
		}
		gi = s.newGroup(w, ids)
		w.table[slot] = tslot{tag, gi + 1}
		// Up to 7/8 full, not half: every record reads the table at
		// random, and a smaller one is more often in cache (a window of
		// 26,000 groups: 256 KB instead of 512 KB, under the 512 KB L2);
		// eight slots share a cache line, so the longer probes of a
		// fuller table mostly stay in the line already read.
		if 8*len(w.groups) > 7*len(w.table) {
			w.growTable(nq)
		}
	}
	g := &w.groups[gi]
	w.addEnt(g, entityHash(rec.Entity), s.m)
	if s.l > 0 {
		if e := w.extOf(g); len(e.sens) < s.l && !slices.Contains(e.sens, rec.Sensitive) {
			e.sens = append(e.sens, strings.Clone(rec.Sensitive))
		}
	}
	g.count++
	nm := len(s.metrics)
	gacc := w.acc[int(gi)*3*nm : int(gi+1)*3*nm]
	for i, x := range rec.Metrics[:min(len(rec.Metrics), nm)] {
		if !math.IsNaN(x) {
			acc := gacc[3*i : 3*i+3]
			acc[0] += x
			acc[1] = min(acc[1], x)
			acc[2] = max(acc[2], x)
		}
	}
	sp := gspan{first: rec.Offset, last: rec.Offset, count: 1, part: w.hold(rec.Topic, rec.Partition, rec.Offset)}
	if g.span.part == sp.part && g.span.count > 0 {
		g.span.last = max(g.span.last, sp.last) // the common case: one partition, offsets rising
		g.span.first = min(g.span.first, sp.first)
		g.span.count++
	} else if g.span.count == 0 {
		g.span = sp // a new group
	} else {
		w.spanLog = append(w.spanLog, spanLog{gi, sp.part, rec.Offset}) // folded at close
	}
	if s.list {
		e := w.extOf(g)
		e.offsets = append(e.offsets, Position{rec.Topic, rec.Partition, rec.Offset})
	}
	w.n++
	a.records++
	s.stats.Held++
	if wm := s.watermark(); wm >= a.nextEnd {
		return s.closeWindows(dst, wm)
	}
	return dst
}

// strHash hashes a value for the window's tables: what slot it probes
// first, nothing more (a match is always verified, and no output depends
// on it; never for pseudonyms). Quasi-identifier values are mostly short
// (a timestamp, an address, a name): up to 32 bytes they are read as a
// few overlapping words and mixed by 128-bit multiplication, as wyhash
// does, in a fraction of xxhash's instructions; longer ones use xxhash.
const k0, k1, k2 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db, 0x8ebc6af09c88c6e3

func strHash(v string) uint64 {
	n := len(v)
	p := unsafe.Pointer(unsafe.StringData(v))
	var a, b uint64
	switch {
	case n > 32:
		return xxhash.Sum64String(v)
	case n > 16:
		a = mix(ld64(p, 0)^k0, ld64(p, 8)^k1) ^ ld64(p, n-16)
		b = ld64(p, n-8)
	case n >= 8:
		return hashWords(p, n)
	case n >= 4:
		a, b = uint64(ld32(p, 0)), uint64(ld32(p, n-4))
	case n > 0:
		a = uint64(v[0])<<16 | uint64(v[n>>1])<<8 | uint64(v[n-1])
	}
	return mix(a^k1, b^k2^uint64(n))
}

// eqStr is a == b, comparing values of 4 to 32 bytes as a few
// overlapping words inline instead of calling the runtime's memequal:
// every record compares its values with its group's.
func eqStr(a, b string) bool {
	n := len(a)
	if n != len(b) {
		return false
	}
	pa, pb := unsafe.Pointer(unsafe.StringData(a)), unsafe.Pointer(unsafe.StringData(b))
	switch {
	case n > 32 || n < 4:
		return a == b
	case n > 16:
		return ld64(pa, 0) == ld64(pb, 0) && ld64(pa, 8) == ld64(pb, 8) &&
			ld64(pa, n-16) == ld64(pb, n-16) && ld64(pa, n-8) == ld64(pb, n-8)
	case n >= 8:
		return ld64(pa, 0) == ld64(pb, 0) && ld64(pa, n-8) == ld64(pb, n-8)
	default:
		return ld32(pa, 0) == ld32(pb, 0) && ld32(pa, n-4) == ld32(pb, n-4)
	}
}

// hashWords is strHash of the n bytes at p, 8 <= n <= 16: small enough
// to inline where every record hashes its values.
func hashWords(p unsafe.Pointer, n int) uint64 {
	return mix(ld64(p, 0)^k1, ld64(p, n-8)^k2^uint64(n))
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func ld64(p unsafe.Pointer, off int) uint64 {
	return binary.LittleEndian.Uint64(unsafe.Slice((*byte)(unsafe.Add(p, off)), 8))
}

func ld32(p unsafe.Pointer, off int) uint32 {
	return binary.LittleEndian.Uint32(unsafe.Slice((*byte)(unsafe.Add(p, off)), 4))
}

// qiValue is QI i's level-0 value as classes key it: a missing one is null.
func qiValue(qi []string, i int) string {
	if v := qiAt(qi, i); v != "" {
		return v
	}
	return "null"
}

// sameValues reports whether group gi's level-0 values are qi's (nq of
// them): byte for byte, whatever their hashes.
func (w *window) sameValues(gi int32, nq int, qi []string) bool {
	ids := w.ids[int(gi)*nq : int(gi+1)*nq]
	if len(qi) < nq {
		for i, id := range ids {
			if w.dict.vals[i].text[id] != qiValue(qi, i) {
				return false
			}
		}
		return true
	}
	for i, id := range ids {
		v := w.dict.vals[i].text[id]
		x := qi[i]
		if x == "" {
			x = "null" // as qiValue
		}
		n := len(v)
		if n != len(x) {
			return false
		}
		// Up to 32 bytes (timestamps, addresses, names): overlapping
		// words, inline.
		pv, px := unsafe.Pointer(unsafe.StringData(v)), unsafe.Pointer(unsafe.StringData(x))
		switch {
		case n > 32:
			if v != x {
				return false
			}
		case n > 16:
			if ld64(pv, 0) != ld64(px, 0) || ld64(pv, 8) != ld64(px, 8) ||
				ld64(pv, n-16) != ld64(px, n-16) || ld64(pv, n-8) != ld64(px, n-8) {
				return false
			}
		case n >= 8:
			if ld64(pv, 0) != ld64(px, 0) || ld64(pv, n-8) != ld64(px, n-8) {
				return false
			}
		case n >= 4:
			if ld32(pv, 0) != ld32(px, 0) || ld32(pv, n-4) != ld32(px, n-4) {
				return false
			}
		default:
			if v != x {
				return false
			}
		}
	}
	return true
}

// growTable doubles the window's group table (nq QIs).
func (w *window) growTable(nq int) {
	n := 2 * len(w.table)
	w.table = make([]tslot, n)
	mask := uint64(n - 1)
	for gi := range w.groups {
		h := uint64(0)
		for q, id := range w.ids[gi*nq : (gi+1)*nq] {
			h = tupleHash(h, w.dict.vals[q].hs[id])
		}
		i := h & mask
		for w.table[i].g != 0 {
			i = (i + 1) & mask
		}
		w.table[i] = tslot{uint32(h >> 32), int32(gi + 1)}
	}
}

// hold notes that w holds off of topic/partition and returns the
// partition's index in w.held.
func (w *window) hold(topic string, partition int, off int64) int32 {
	if i := w.lastHeld; i < len(w.held) && w.held[i].partition == partition && w.held[i].topic == topic {
		w.held[i].low = min(w.held[i].low, off) // the common case: one partition per stage
		return int32(i)
	}
	if len(w.held) > 0 && sameStr(topic, w.held[0].topic) && partition >= 0 && partition < len(w.byPart) {
		if i := w.byPart[partition] - 1; i >= 0 { // a stage fed several partitions of one topic
			w.held[i].low = min(w.held[i].low, off)
			w.lastHeld = int(i)
			return i
		}
	}
	for i := range w.held {
		hp := &w.held[i]
		if hp.partition == partition && hp.topic == topic {
			hp.low = min(hp.low, off)
			w.lastHeld = i
			return int32(i)
		}
	}
	w.lastHeld = len(w.held)
	w.held = append(w.held, heldPart{topic, partition, off})
	if topic == w.held[0].topic && partition >= 0 && partition < 1024 {
		if partition >= len(w.byPart) {
			w.byPart = append(w.byPart, make([]int32, partition+1-len(w.byPart))...)
		}
		w.byPart[partition] = int32(w.lastHeld) + 1
	}
	return int32(w.lastHeld)
}

// sameStr is a == b, without a call when both are the same string (a
// consumer's records name their topic with one string).
func sameStr(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// openWindow opens (or reuses a closed) window starting at ws.
func (s *Stage) openWindow(ws int64) *window {
	a := s.agg
	var w *window
	if n := len(a.free); n > 0 {
		w, a.free = a.free[n-1], a.free[:n-1]
	} else {
		w = &window{table: make([]tslot, 64)}
	}
	if a.dict == nil || a.dict.full() {
		switch {
		case a.dict != nil && a.dict.refs == 0:
			a.dict.reset()
		case len(a.dfree) > 0:
			a.dict, a.dfree = a.dfree[len(a.dfree)-1], a.dfree[:len(a.dfree)-1]
		default:
			a.dict = newDict(s.qis)
		}
	}
	w.dict = a.dict
	w.dict.refs++
	w.start = ws
	a.windows[ws] = w
	a.nextEnd = min(a.nextEnd, ws+int64(s.cfg.Window))
	return w
}

// recycle empties a closed window for reuse, keeping its memory.
func (s *Stage) recycle(w *window) {
	w.groups = w.groups[:0]
	clear(w.table)
	w.ids = w.ids[:0]
	d := w.dict
	if d.refs--; d.refs == 0 && d != s.agg.dict {
		d.reset()
		s.agg.dfree = append(s.agg.dfree, d)
	}
	w.dict = nil
	w.held = w.held[:0]
	clear(w.byPart)
	w.acc = w.acc[:0]
	w.hpool = w.hpool[:0]
	w.spans = w.spans[:0]
	w.spanLog = w.spanLog[:0]
	w.ext = w.ext[:0] // each keeps its slices' memory: extOf empties them
	w.n = 0
	s.agg.free = append(s.agg.free, w)
}

// newGroup appends a group of level-0 value IDs ids to w (a recycled
// window's slices keep their capacity).
func (s *Stage) newGroup(w *window, ids []int32) int32 {
	a := s.agg
	n := len(w.groups)
	w.groups = append(w.groups, group{})
	w.ids = append(w.ids, ids...)
	for range s.metrics {
		w.acc = append(w.acc, 0, math.Inf(1), math.Inf(-1))
	}
	a.groups++
	return int32(n)
}

// closeWindows closes, oldest first, every window ending at or before wm.
func (s *Stage) closeWindows(dst []Output, wm int64) []Output {
	a := s.agg
	if wm < a.nextEnd {
		return dst
	}
	var due []int64
	a.nextEnd = math.MaxInt64
	for ws := range a.windows {
		if end := ws + int64(s.cfg.Window); end <= wm {
			due = append(due, ws)
		} else {
			a.nextEnd = min(a.nextEnd, end)
		}
	}
	if len(due) == 0 {
		return dst
	}
	slices.Sort(due)
	for _, ws := range due {
		w := a.windows[ws]
		dst = s.closeWindow(dst, w)
		delete(a.windows, ws)
		if a.last == w {
			a.last = nil
		}
		s.recycle(w)
	}
	return s.lateCounts(dst)
}

func (s *Stage) flushAggregate(dst []Output) []Output {
	dst = s.closeWindows(dst, math.MaxInt64)
	return s.lateCounts(dst)
}

func (s *Stage) lateCounts(dst []Output) []Output {
	a := s.agg
	if len(a.late) == 0 {
		return dst
	}
	starts := make([]int64, 0, len(a.late))
	for ws := range a.late {
		starts = append(starts, ws)
	}
	slices.Sort(starts)
	for _, ws := range starts {
		n := a.late[ws]
		if s.cfg.Noise != nil {
			n = s.noisy(n, 1/s.cfg.Noise.Epsilon, 0)
		}
		start := time.Unix(0, ws).UTC()
		p := append([]byte(`{"window_start":"`), start.AppendFormat(nil, time.RFC3339Nano)...)
		p = append(p, `","window_end":"`...)
		p = start.Add(s.cfg.Window).AppendFormat(p, time.RFC3339Nano)
		p = append(p, `","late":`...)
		p = appendFloat(p, float64(n))
		p = append(p, '}')
		dst = append(dst, Output{Kind: LateCount, Count: n, Window: start, Payload: p})
		delete(a.late, ws)
	}
	return dst
}

// merge merges group gi of w into group mi.
func (s *Stage) merge(w *window, mi, gi int32) {
	into, g := &w.groups[mi], &w.groups[gi]
	s.agg.scratch = w.mergeEnts(into, g, s.m, s.agg.scratch)
	if g.ext != 0 {
		ge := w.ext[g.ext-1]
		ie := w.extOf(into)
		for _, v := range ge.sens {
			if len(ie.sens) < s.l && !slices.Contains(ie.sens, v) {
				ie.sens = append(ie.sens, v)
			}
		}
		ie.offsets = append(ie.offsets, ge.offsets...)
	}
	into.count += g.count
	nm3 := 3 * len(s.metrics)
	ia, ga := w.acc[int(mi)*nm3:int(mi+1)*nm3], w.acc[int(gi)*nm3:int(gi+1)*nm3]
	for i := 0; i < len(ia); i += 3 {
		ia[i] += ga[i]
		ia[i+1] = min(ia[i+1], ga[i+1])
		ia[i+2] = max(ia[i+2], ga[i+2])
	}
	w.addSpan(into, g.span)
	for n := g.more; n != 0; n = w.spans[n-1].next {
		w.addSpan(into, w.spans[n-1].gspan)
	}
}

func (s *Stage) okGroup(w *window, g *group) bool {
	return w.entLen(g) >= s.k && (s.l == 0 || len(w.sens(g)) >= s.l)
}

// closeWindow publishes, rolls up and suppresses one window's groups, in
// the order the groups opened (at roll-ups, the order of each merged
// class's first group).
func (s *Stage) closeWindow(dst []Output, w *window) []Output {
	a := s.agg
	a.groups -= len(w.groups)
	a.records -= w.n
	s.stats.Held -= uint64(w.n)
	start := time.Unix(0, w.start).UTC()
	a.head = a.head[:0]
	// The logged spans, folded group by group in this first pass over
	// the groups (which reads their lines forwards anyway), before
	// anything reads a group's spans.
	log := w.sortSpanLog(a)
	nq := int32(len(s.qis))
	cur := a.cur[:0]
	for i := range w.groups {
		g := &w.groups[i]
		for ; len(log) > 0 && log[0].g == int32(i); log = log[1:] {
			w.addSpan(g, gspan{first: log[0].off, last: log[0].off, count: 1, part: log[0].part})
		}
		if s.okGroup(w, g) {
			dst = append(dst, s.publish(w, int32(i), 0, start))
			continue
		}
		cur = append(cur, int32(i))
	}
	if len(cur) > 0 && s.top > 1 {
		a.cids = append(a.cids[:0], w.ids...)
	}
	for j := 1; j < s.top && len(cur) > 0; j++ {
		lv := s.seq[j]
		q := s.steps[j] // the one QI that steps up from s.seq[j-1]
		size := 1
		for size < 2*len(cur) {
			size <<= 1
		}
		a.roll = slices.Grow(a.roll[:0], size)[:size]
		a.rollH = slices.Grow(a.rollH[:0], size)[:size]
		for i := range a.roll {
			a.roll[i] = -1
		}
		mask := uint64(size - 1)
		next := a.next[:0]
		for _, gi := range cur {
			ids := a.cids[int(gi)*int(nq) : int(gi+1)*int(nq)]
			ids[q] = w.dict.vals[q].up(s.qis[q], &s.key, int(lv[q]), w.ids[int(gi)*int(nq)+q])
			h := uint64(14695981039346656037)
			for i := range ids {
				h = (h ^ uint64(uint32(ids[i]))) * 1099511628211
			}
			slot := (h ^ h>>29) & mask
			for a.roll[slot] >= 0 && (a.rollH[slot] != h ||
				!slices.Equal(a.cids[int(a.roll[slot])*int(nq):int(a.roll[slot]+1)*int(nq)], ids)) {
				slot = (slot + 1) & mask
			}
			if m := a.roll[slot]; m >= 0 {
				s.merge(w, m, gi)
				continue
			}
			a.roll[slot], a.rollH[slot] = gi, h
			next = append(next, gi)
		}
		cur, a.next = next, cur
		next = cur[:0]
		for _, gi := range cur {
			if g := &w.groups[gi]; s.okGroup(w, g) {
				dst = append(dst, s.publish(w, gi, j, start))
				continue
			}
			next = append(next, gi)
		}
		cur = next
	}
	if len(cur) > 0 {
		o := Output{Kind: Suppressed, Reason: Short, Window: start}
		a.spans = slices.Grow(a.spans[:0], len(w.held))[:len(w.held)]
		clear(a.spans)
		order := a.order[:0]
		add := func(sp gspan) {
			t := &a.spans[sp.part]
			if t.count == 0 {
				*t = sp
				order = append(order, sp.part)
				return
			}
			t.first, t.last, t.count = min(t.first, sp.first), max(t.last, sp.last), t.count+sp.count
		}
		for _, gi := range cur {
			g := &w.groups[gi]
			o.Count += int(g.count)
			add(g.span)
			for n := g.more; n != 0; n = w.spans[n-1].next {
				add(w.spans[n-1].gspan)
			}
			o.Offsets = append(o.Offsets, w.offsets(g)...)
		}
		o.Spans = make([]Span, len(order))
		for i, p := range order {
			o.Spans[i] = w.span(a.spans[p])
		}
		a.order = order
		s.stats.Suppressed += uint64(o.Count)
		s.stats.Classes += uint64(len(cur))
		dst = append(dst, o)
	}
	a.cur = cur[:0]
	return dst
}

// up maps a level-0 value ID to its ID at level lv, generalizing each
// distinct value once while the dictionary lasts.
// l is the QI's ladder, key scratch.
func (t *valDict) up(l *ladder, key *[]byte, lv int, id int32) int32 {
	if lv == 0 {
		return id
	}
	if u := t.ups[int(id)*t.stride+lv]; u >= 0 {
		return u
	}
	*key = l.gen((*key)[:0], t.text[id], lv)
	u, ok := t.gen[lv][string(*key)]
	if !ok {
		u = int32(len(t.gtxt[lv]))
		txt := string(*key)
		t.gen[lv][txt] = u
		t.gtxt[lv] = append(t.gtxt[lv], txt)
	}
	t.ups[int(id)*t.stride+lv] = u
	return u
}

// publish publishes group gi of a closing window at roll-up step j: its
// values are the level-0 representatives (j == 0) or the interned
// generalizations of its value IDs at s.seq[j] (a.cids).
func (s *Stage) publish(w *window, gi int32, j int, start time.Time) Output {
	a := s.agg
	g := &w.groups[gi]
	nq := len(s.qis)
	lv := s.seq[j]
	gr := &carve(&a.groupSlab, 1)[0]
	*gr = Group{
		Start: start, End: start.Add(s.cfg.Window),
		Paths: s.qiPaths, Levels: lv,
		Count: int(g.count), Entities: (&distinct{w.ents(g)}).count(s.m),
		SumFields: s.cfg.Sums, MinFields: s.cfg.Min, MaxFields: s.cfg.Max,
		keys: a.keys,
	}
	if a.keys == nil {
		a.keys = newGroupKeys(s.qiPaths, s.cfg.Sums, s.cfg.Min, s.cfg.Max)
		gr.keys = a.keys
	}
	rep := a.rep[:0]
	for i, id := range w.ids[int(gi)*nq : int(gi+1)*nq] {
		rep = append(rep, w.dict.vals[i].text[id])
	}
	a.rep = rep
	gr.Values = carve(&a.strSlab, nq)
	for i := range nq {
		switch {
		case lv[i] == 0:
			gr.Values[i] = rep[i]
			if rep[i] == "" {
				gr.Values[i] = "null"
			}
		case rep[i] == "null" || rep[i] == "":
			gr.Values[i] = "null" // null stays null at every level (ladder.gen)
		default:
			gr.Values[i] = w.dict.vals[i].gtxt[lv[i]][a.cids[int(gi)*nq+i]]
		}
	}
	vals := carve(&a.numSlab, len(s.sumIdx)+len(s.minIdx)+len(s.maxIdx))[:0]
	pick := func(idx []int, which int) []float64 {
		n := len(vals)
		for _, x := range idx {
			v := w.acc[int(gi)*3*len(s.metrics)+3*x+which]
			if math.IsInf(v, 0) {
				v = math.NaN()
			}
			vals = append(vals, v)
		}
		return vals[n:len(vals):len(vals)]
	}
	gr.Sums, gr.Min, gr.Max = pick(s.sumIdx, 0), pick(s.minIdx, 1), pick(s.maxIdx, 2)
	s.stats.Released += uint64(g.count)
	s.stats.Groups++
	s.loss(rep, lv, int(g.count))
	if s.cfg.Noise != nil {
		b := 2 / s.cfg.Noise.Epsilon
		gr.Entities = s.noisy(gr.Entities, b, s.k)
		gr.Count = s.noisy(gr.Count, b, gr.Entities)
	}
	// The group's memory is recycled with its window: the output gets copies.
	nsp := 1
	for n := g.more; n != 0; n = w.spans[n-1].next {
		nsp++
	}
	spans := carve(&a.spanSlab, nsp)
	spans[0] = w.span(g.span)
	for i, n := 1, g.more; n != 0; i, n = i+1, w.spans[n-1].next {
		spans[i] = w.span(w.spans[n-1].gspan)
	}
	if len(a.head) == 0 { // the window's first: its head is formatted once
		a.head = gr.appendHead(a.head)
	}
	return Output{Kind: Aggregate, Payload: a.payload(gr, a.head), Levels: lv, Entities: gr.Entities,
		Count: int(g.count), Window: start, Spans: spans, Offsets: slices.Clone(w.offsets(g)), Group: gr}
}

// span names sp's partition.
func (w *window) span(sp gspan) Span {
	hp := &w.held[sp.part]
	return Span{Topic: hp.topic, Partition: hp.partition, First: sp.first, Last: sp.last, Count: int(sp.count)}
}

func (a *aggState) heldPositions() []Position {
	low := map[part]int64{}
	for _, w := range a.windows {
		for _, hp := range w.held {
			pk := part{hp.topic, hp.partition}
			if cur, ok := low[pk]; !ok || hp.low < cur {
				low[pk] = hp.low
			}
		}
	}
	out := make([]Position, 0, len(low))
	for pk, o := range low {
		out = append(out, Position{pk.topic, pk.partition, o})
	}
	return out
}
