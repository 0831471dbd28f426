package kanon

import (
	"math"
	"slices"
	"strings"
	"time"

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

type group struct {
	rep     int32 // offset in the window's reps of the level-0 QI values of one member: every member shares its generalization
	first   int32 // insertion order within the window, for a deterministic output order
	ents    distinct
	sens    []string // up to l distinct sensitive values
	count   int
	last    uint64    // the last entity hash added: repeats skip the set
	acc     []float64 // per metric: sum, min, max
	spans   []Span
	offsets []Position
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
	keys     keyTable // level-0 class key -> index in groups
	reps     []string // level-0 QI values, len(qis) per group
	held     []heldPart
	lastHeld int // index in held of the last partition held
	n        int
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

	// closing scratch, reused
	cur, next []int32
	roll      []int32    // open addressing: a group per slot (-1 empty), keyed by its value IDs
	rollH     []uint64   // the slot's hash of the value IDs
	scratch   []uint64   // distinct.merge's
	ids       []int32    // per group, len(qis) level-0 value IDs
	cids      []int32    // per group, len(qis) value IDs at the current level vector
	vals      []valTable // per QI

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

// payload returns gr's JSON in the byte slab's spare capacity, capped;
// when it does not fit, append's own allocation is kept and the next call
// starts a new slab.
func (a *aggState) payload(gr *Group) []byte {
	free := a.byteSlab[len(a.byteSlab):]
	out := gr.AppendJSON(free)
	if cap(out) == cap(free) && cap(free) > 0 { // written in place
		a.byteSlab = a.byteSlab[:len(a.byteSlab)+len(out)]
		return out[:len(out):len(out)]
	}
	a.byteSlab = make([]byte, 0, 64*slabChunk)
	return out
}

// valTable interns one quasi-identifier's values while a window closes:
// level-0 values (raw JSON text) and, per level, their generalizations, so
// a roll-up generalizes each distinct value once and compares classes as
// tuples of small integers.
type valTable struct {
	raw  map[string]int32   // level-0 value -> ID
	gen  []map[string]int32 // per level >= 1: generalized value -> ID (kept across windows, up to maxInterned)
	gtxt [][]string         // per level >= 1: generalized ID -> value
	up   [][]int32          // per level >= 1: level-0 ID -> generalized ID (-1: not yet)
	text []string           // level-0 ID -> value
}

// maxInterned bounds the generalized values a valTable keeps across
// windows (per level); past it the table starts afresh with the next window.
const maxInterned = 1 << 14

func newAggState() *aggState {
	return &aggState{windows: map[int64]*window{}, late: map[int64]int{}, nextEnd: math.MaxInt64}
}

// keyTable maps class keys (byte strings) to int32 values through their
// 64-bit hashes, verifying the full key, so a hash collision never merges
// two classes: open addressing with linear probing over entry indexes.
// Reset keeps its memory.
type keyTable struct {
	slots []int32 // entry index, -1 empty; len a power of two, at most half full
	ents  []keyEntry
	arena []byte
}

type keyEntry struct {
	h        uint64
	off, end int32
	val      int32
}

func (t *keyTable) reset() {
	if len(t.slots) == 0 {
		t.slots = make([]int32, 64)
	}
	for i := range t.slots {
		t.slots[i] = -1
	}
	t.ents = t.ents[:0]
	t.arena = t.arena[:0]
}

// get returns the value of key (hash h), or -1.
func (t *keyTable) get(h uint64, key []byte) int32 {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		x := t.slots[i]
		if x < 0 {
			return -1
		}
		if e := &t.ents[x]; e.h == h && string(t.arena[e.off:e.end]) == string(key) {
			return e.val
		}
	}
}

// put adds key (hash h, not in t) with value v.
func (t *keyTable) put(h uint64, key []byte, v int32) {
	off := int32(len(t.arena))
	t.arena = append(t.arena, key...)
	t.ents = append(t.ents, keyEntry{h: h, off: off, end: int32(len(t.arena)), val: v})
	if 2*len(t.ents) > len(t.slots) {
		t.slots = make([]int32, 2*len(t.slots))
		for i := range t.slots {
			t.slots[i] = -1
		}
		for x := range t.ents {
			t.place(int32(x))
		}
		return
	}
	t.place(int32(len(t.ents) - 1))
}

func (t *keyTable) place(x int32) {
	mask := uint64(len(t.slots) - 1)
	i := t.ents[x].h & mask
	for t.slots[i] >= 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = x
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
}

// AppendJSON appends the aggregate as one JSON object:
// {"window_start","window_end","group":{path:value},"levels","count","entities","sum","min","max"}.
func (g *Group) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"window_start":"`...)
	dst = g.Start.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","window_end":"`...)
	dst = g.End.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","group":{`...)
	for i, p := range g.Paths {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonscan.AppendQuoted(dst, []byte(p))
		dst = append(dst, ':')
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
	obj := func(dst []byte, name string, fields []string, vals []float64) []byte {
		if len(fields) == 0 {
			return dst
		}
		dst = append(dst, `,"`+name+`":{`...)
		for i, f := range fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonscan.AppendQuoted(dst, []byte(f))
			dst = append(dst, ':')
			dst = appendFloat(dst, vals[i])
		}
		return append(dst, '}')
	}
	dst = obj(dst, "sum", g.SumFields, g.Sums)
	dst = obj(dst, "min", g.MinFields, g.Min)
	dst = obj(dst, "max", g.MaxFields, g.Max)
	return append(dst, '}')
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
	ws := s.windowStart(rec.EventTime)
	if a.seen && ws+int64(s.cfg.Window) <= s.watermark() {
		s.stats.Late++
		if s.cfg.Late == config.LateCount {
			a.late[ws]++
		}
		return append(dst, s.decidedOne(rec, Late, 0, ws))
	}
	if t := rec.EventTime.UnixNano(); !a.seen || t > a.maxEvent {
		a.maxEvent, a.seen = t, true
	}
	w := a.last
	if w == nil || w.start != ws {
		w = a.windows[ws]
		if w == nil {
			w = s.openWindow(ws)
		}
		a.last = w
	}
	s.key = appendKey(s.key[:0], s.qis, rec.QI, s.seq[0])
	h := xxhash.Sum64(s.key)
	gi := w.keys.get(h, s.key)
	if (gi < 0 && a.groups >= s.cfg.MaxOpenClasses) || a.records >= s.cfg.MaxBufferedRecords {
		s.stats.Suppressed++
		s.stats.SuppressedCap++
		dst = append(dst, s.decidedOne(rec, Suppressed, Cap, ws))
		return s.closeWindows(dst, s.watermark())
	}
	if gi < 0 {
		gi = s.newGroup(w, rec.QI)
		w.keys.put(h, s.key, gi)
	}
	g := &w.groups[gi]
	if eh := entityHash(rec.Entity); eh != g.last || g.count == 0 {
		g.ents.add(eh, s.m)
		g.last = eh
	}
	if s.l > 0 && len(g.sens) < s.l && !slices.Contains(g.sens, rec.Sensitive) {
		g.sens = append(g.sens, strings.Clone(rec.Sensitive))
	}
	g.count++
	for i, x := range rec.Metrics[:min(len(rec.Metrics), len(g.acc)/3)] {
		if !math.IsNaN(x) {
			acc := g.acc[3*i : 3*i+3]
			acc[0] += x
			acc[1] = min(acc[1], x)
			acc[2] = max(acc[2], x)
		}
	}
	g.spans = addSpan(g.spans, rec.Topic, rec.Partition, rec.Offset, rec.Offset, 1)
	if s.list {
		g.offsets = append(g.offsets, Position{rec.Topic, rec.Partition, rec.Offset})
	}
	w.hold(rec.Topic, rec.Partition, rec.Offset)
	w.n++
	a.records++
	s.stats.Held++
	if wm := s.watermark(); wm >= a.nextEnd {
		return s.closeWindows(dst, wm)
	}
	return dst
}

func (w *window) hold(topic string, partition int, off int64) {
	if i := w.lastHeld; i < len(w.held) && w.held[i].partition == partition && w.held[i].topic == topic {
		w.held[i].low = min(w.held[i].low, off) // the common case: one partition per stage
		return
	}
	for i := range w.held {
		hp := &w.held[i]
		if hp.partition == partition && hp.topic == topic {
			hp.low = min(hp.low, off)
			w.lastHeld = i
			return
		}
	}
	w.lastHeld = len(w.held)
	w.held = append(w.held, heldPart{topic, partition, off})
}

// openWindow opens (or reuses a closed) window starting at ws.
func (s *Stage) openWindow(ws int64) *window {
	a := s.agg
	var w *window
	if n := len(a.free); n > 0 {
		w, a.free = a.free[n-1], a.free[:n-1]
	} else {
		w = &window{}
		w.keys.reset()
	}
	w.start = ws
	a.windows[ws] = w
	a.nextEnd = min(a.nextEnd, ws+int64(s.cfg.Window))
	return w
}

// recycle empties a closed window for reuse, keeping its memory.
func (s *Stage) recycle(w *window) {
	w.groups = w.groups[:0]
	w.keys.reset()
	clear(w.reps)
	w.reps = w.reps[:0]
	w.held = w.held[:0]
	w.n = 0
	s.agg.free = append(s.agg.free, w)
}

// newGroup appends a group for qi to w, reusing a recycled group's memory.
func (s *Stage) newGroup(w *window, qi []string) int32 {
	a := s.agg
	n := len(w.groups)
	if n < cap(w.groups) {
		w.groups = w.groups[:n+1]
	} else {
		w.groups = append(w.groups, group{})
	}
	g := &w.groups[n]
	rep := int32(len(w.reps))
	for i := range s.qis {
		w.reps = append(w.reps, a.own(qiAt(qi, i))) // rec's strings may alias its payload
	}
	*g = group{rep: rep, first: int32(n),
		ents: distinct{h: g.ents.h[:0]}, sens: g.sens[:0],
		acc: g.acc[:0], spans: g.spans[:0], offsets: g.offsets[:0]}
	if g.ents.h == nil {
		// A slot's first group: room for the usual entity counts and
		// partitions at once, rather than growing step by step while the
		// slot's capacity settles.
		g.ents.h = make([]uint64, 0, min(s.m, 16))
		g.spans = make([]Span, 0, 4)
	}
	for range s.metrics {
		g.acc = append(g.acc, 0, math.Inf(1), math.Inf(-1))
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

func (s *Stage) merge(into, g *group) {
	s.agg.scratch = into.ents.merge(&g.ents, s.m, s.agg.scratch)
	for _, v := range g.sens {
		if len(into.sens) < s.l && !slices.Contains(into.sens, v) {
			into.sens = append(into.sens, v)
		}
	}
	into.count += g.count
	for i := 0; i < len(into.acc); i += 3 {
		into.acc[i] += g.acc[i]
		into.acc[i+1] = min(into.acc[i+1], g.acc[i+1])
		into.acc[i+2] = max(into.acc[i+2], g.acc[i+2])
	}
	for _, sp := range g.spans {
		into.spans = addSpan(into.spans, sp.Topic, sp.Partition, sp.First, sp.Last, sp.Count)
	}
	into.offsets = append(into.offsets, g.offsets...)
}

func (s *Stage) okGroup(g *group) bool {
	return len(g.ents.h) >= s.k && (s.l == 0 || len(g.sens) >= s.l)
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
	nq := int32(len(s.qis))
	cur := a.cur[:0]
	for i := range w.groups {
		if g := &w.groups[i]; s.okGroup(g) {
			dst = append(dst, s.publish(w, int32(i), 0, start))
			continue
		}
		cur = append(cur, int32(i))
	}
	if len(cur) > 0 && s.top > 1 {
		s.internReps(w, cur)
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
			ids[q] = s.upID(q, int(lv[q]), a.ids[int(gi)*int(nq)+q])
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
				s.merge(&w.groups[m], &w.groups[gi])
				continue
			}
			a.roll[slot], a.rollH[slot] = gi, h
			next = append(next, gi)
		}
		cur, a.next = next, cur
		next = cur[:0]
		for _, gi := range cur {
			if g := &w.groups[gi]; s.okGroup(g) {
				dst = append(dst, s.publish(w, gi, j, start))
				continue
			}
			next = append(next, gi)
		}
		cur = next
	}
	if len(cur) > 0 {
		o := Output{Kind: Suppressed, Reason: Short, Window: start}
		for _, gi := range cur {
			g := &w.groups[gi]
			o.Count += g.count
			for _, sp := range g.spans {
				o.Spans = addSpan(o.Spans, sp.Topic, sp.Partition, sp.First, sp.Last, sp.Count)
			}
			o.Offsets = append(o.Offsets, g.offsets...)
		}
		s.stats.Suppressed += uint64(o.Count)
		s.stats.Classes += uint64(len(cur))
		dst = append(dst, o)
	}
	a.cur = cur[:0]
	return dst
}

// internReps sets, for the groups in cur, their level-0 value IDs.
func (s *Stage) internReps(w *window, cur []int32) {
	a := s.agg
	nq := len(s.qis)
	if a.vals == nil {
		a.vals = make([]valTable, nq)
		for i, l := range s.qis {
			v := &a.vals[i]
			v.raw = map[string]int32{}
			v.gen = make([]map[string]int32, l.height+1)
			v.gtxt = make([][]string, l.height+1)
			v.up = make([][]int32, l.height+1)
			for lv := 1; lv <= l.height; lv++ {
				v.gen[lv] = map[string]int32{}
			}
		}
	}
	for i := range a.vals {
		v := &a.vals[i]
		clear(v.raw)
		clear(v.text)
		v.text = v.text[:0]
		for lv := 1; lv < len(v.gen); lv++ {
			if len(v.gen[lv]) > maxInterned {
				clear(v.gen[lv])
				clear(v.gtxt[lv])
				v.gtxt[lv] = v.gtxt[lv][:0]
			}
			v.up[lv] = v.up[lv][:0]
		}
	}
	a.ids = slices.Grow(a.ids[:0], len(w.groups)*nq)[:len(w.groups)*nq]
	a.cids = slices.Grow(a.cids[:0], len(w.groups)*nq)[:len(w.groups)*nq]
	for i := range nq {
		v := &a.vals[i]
		last, lastID := "", int32(-1) // groups open in time order: neighbours often share a value
		for _, gi := range cur {
			x := w.reps[int(w.groups[gi].rep)+i]
			id := lastID
			if id < 0 || x != last {
				var ok bool
				if id, ok = v.raw[x]; !ok {
					id = int32(len(v.text))
					v.raw[x] = id
					v.text = append(v.text, x)
					for lv := 1; lv < len(v.up); lv++ {
						v.up[lv] = append(v.up[lv], -1)
					}
				}
				last, lastID = x, id
			}
			a.ids[int(gi)*nq+i] = id
			a.cids[int(gi)*nq+i] = id
		}
	}
}

// upID maps a level-0 value ID of QI i to its ID at level lv,
// generalizing each distinct value once per window.
func (s *Stage) upID(i, lv int, id int32) int32 {
	if lv == 0 {
		return id
	}
	v := &s.agg.vals[i]
	if u := v.up[lv][id]; u >= 0 {
		return u
	}
	s.key = s.qis[i].gen(s.key[:0], v.text[id], lv)
	u, ok := v.gen[lv][string(s.key)]
	if !ok {
		u = int32(len(v.gtxt[lv]))
		txt := string(s.key)
		v.gen[lv][txt] = u
		v.gtxt[lv] = append(v.gtxt[lv], txt)
	}
	v.up[lv][id] = u
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
		Count: g.count, Entities: g.ents.count(s.m),
		SumFields: s.cfg.Sums, MinFields: s.cfg.Min, MaxFields: s.cfg.Max,
	}
	rep := w.reps[g.rep : int(g.rep)+nq]
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
			gr.Values[i] = a.vals[i].gtxt[lv[i]][a.cids[int(gi)*nq+i]]
		}
	}
	vals := carve(&a.numSlab, len(s.sumIdx)+len(s.minIdx)+len(s.maxIdx))[:0]
	pick := func(idx []int, which int) []float64 {
		n := len(vals)
		for _, x := range idx {
			v := g.acc[3*x+which]
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
	s.loss(rep, lv, g.count)
	if s.cfg.Noise != nil {
		b := 2 / s.cfg.Noise.Epsilon
		gr.Entities = s.noisy(gr.Entities, b, s.k)
		gr.Count = s.noisy(gr.Count, b, gr.Entities)
	}
	// The group's memory is recycled with its window: the output gets copies.
	spans := carve(&a.spanSlab, len(g.spans))
	copy(spans, g.spans)
	return Output{Kind: Aggregate, Payload: a.payload(gr), Levels: lv, Entities: gr.Entities,
		Count: g.count, Window: start, Spans: spans, Offsets: slices.Clone(g.offsets), Group: gr}
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
