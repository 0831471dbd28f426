package kanon

import (
	"math"
	"slices"
	"sort"
	"time"

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
	rep     []string // level-0 QI values of one member: every member shares its generalization
	ents    distinct
	sens    []string // up to l distinct sensitive values
	count   int
	sums    []float64
	mins    []float64
	maxs    []float64
	spans   []Span
	offsets []Position
}

type window struct {
	start  int64 // Unix nanoseconds
	groups map[string]*group
	held   map[part]int64
	n      int
}

type aggState struct {
	windows  map[int64]*window
	maxEvent int64
	seen     bool
	groups   int
	records  int
	late     map[int64]int
}

func newAggState() *aggState {
	return &aggState{windows: map[int64]*window{}, late: map[int64]int{}}
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

func (s *Stage) addAggregate(dst []Output, rec Record) []Output {
	a := s.agg
	ws := s.windowStart(rec.EventTime)
	if a.seen && ws+int64(s.cfg.Window) <= s.watermark() {
		s.stats.Late++
		if s.cfg.Late == config.LateCount {
			a.late[ws]++
		}
		return append(dst, s.decidedOne(&rec, Late, 0, ws))
	}
	if t := rec.EventTime.UnixNano(); !a.seen || t > a.maxEvent {
		a.maxEvent, a.seen = t, true
	}
	w := a.windows[ws]
	if w == nil {
		w = &window{start: ws, groups: map[string]*group{}, held: map[part]int64{}}
		a.windows[ws] = w
	}
	s.key = appendKey(s.key[:0], s.qis, rec.QI, s.seq[0])
	g := w.groups[string(s.key)]
	if (g == nil && a.groups >= s.cfg.MaxOpenClasses) || a.records >= s.cfg.MaxBufferedRecords {
		s.stats.Suppressed++
		s.stats.SuppressedCap++
		dst = append(dst, s.decidedOne(&rec, Suppressed, Cap, ws))
		return s.closeWindows(dst, s.watermark())
	}
	if g == nil {
		g = &group{rep: slices.Clone(rec.QI)}
		for range s.metrics {
			g.sums = append(g.sums, 0)
			g.mins = append(g.mins, math.Inf(1))
			g.maxs = append(g.maxs, math.Inf(-1))
		}
		w.groups[string(s.key)] = g
		a.groups++
	}
	g.ents.add(entityHash(rec.Entity), s.m)
	if s.l > 0 && len(g.sens) < s.l && !slices.Contains(g.sens, rec.Sensitive) {
		g.sens = append(g.sens, rec.Sensitive)
	}
	g.count++
	for i := range s.metrics {
		if i < len(rec.Metrics) && !math.IsNaN(rec.Metrics[i]) {
			x := rec.Metrics[i]
			g.sums[i] += x
			g.mins[i] = min(g.mins[i], x)
			g.maxs[i] = max(g.maxs[i], x)
		}
	}
	g.spans = addSpan(g.spans, rec.Topic, rec.Partition, rec.Offset, rec.Offset, 1)
	if s.list {
		g.offsets = append(g.offsets, Position{rec.Topic, rec.Partition, rec.Offset})
	}
	pk := part{rec.Topic, rec.Partition}
	if o, ok := w.held[pk]; !ok || rec.Offset < o {
		w.held[pk] = rec.Offset
	}
	w.n++
	a.records++
	s.stats.Held++
	return s.closeWindows(dst, s.watermark())
}

// closeWindows closes, oldest first, every window ending at or before wm.
func (s *Stage) closeWindows(dst []Output, wm int64) []Output {
	a := s.agg
	var due []int64
	for ws := range a.windows {
		if ws+int64(s.cfg.Window) <= wm {
			due = append(due, ws)
		}
	}
	if len(due) == 0 {
		return dst
	}
	slices.Sort(due)
	for _, ws := range due {
		dst = s.closeWindow(dst, a.windows[ws])
		delete(a.windows, ws)
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

type keyed struct {
	key string
	g   *group
}

func (s *Stage) merge(into, g *group) {
	into.ents.merge(&g.ents, s.m)
	for _, v := range g.sens {
		if len(into.sens) < s.l && !slices.Contains(into.sens, v) {
			into.sens = append(into.sens, v)
		}
	}
	into.count += g.count
	for i := range into.sums {
		into.sums[i] += g.sums[i]
		into.mins[i] = min(into.mins[i], g.mins[i])
		into.maxs[i] = max(into.maxs[i], g.maxs[i])
	}
	for _, sp := range g.spans {
		into.spans = addSpan(into.spans, sp.Topic, sp.Partition, sp.First, sp.Last, sp.Count)
	}
	into.offsets = append(into.offsets, g.offsets...)
}

func (s *Stage) okGroup(g *group) bool {
	return len(g.ents.h) >= s.k && (s.l == 0 || len(g.sens) >= s.l)
}

// closeWindow publishes, rolls up and suppresses one window's groups.
func (s *Stage) closeWindow(dst []Output, w *window) []Output {
	a := s.agg
	a.groups -= len(w.groups)
	a.records -= w.n
	s.stats.Held -= uint64(w.n)
	cur := make([]keyed, 0, len(w.groups))
	for k, g := range w.groups {
		cur = append(cur, keyed{k, g})
	}
	sort.Slice(cur, func(i, j int) bool { return cur[i].key < cur[j].key })
	start := time.Unix(0, w.start).UTC()
	for j := 0; j < s.top && len(cur) > 0; j++ {
		if j > 0 {
			merged := map[string]*group{}
			var order []keyed
			for _, kg := range cur {
				s.key = appendKey(s.key[:0], s.qis, kg.g.rep, s.seq[j])
				if m := merged[string(s.key)]; m != nil {
					s.merge(m, kg.g)
					continue
				}
				merged[string(s.key)] = kg.g
				order = append(order, keyed{string(s.key), kg.g})
			}
			sort.Slice(order, func(i, j int) bool { return order[i].key < order[j].key })
			cur = order
		}
		next := cur[:0]
		for _, kg := range cur {
			if s.okGroup(kg.g) {
				dst = append(dst, s.publish(kg.g, j, start))
				continue
			}
			next = append(next, kg)
		}
		cur = next
	}
	if len(cur) > 0 {
		o := Output{Kind: Suppressed, Reason: Short, Window: start}
		for _, kg := range cur {
			o.Count += kg.g.count
			for _, sp := range kg.g.spans {
				o.Spans = addSpan(o.Spans, sp.Topic, sp.Partition, sp.First, sp.Last, sp.Count)
			}
			o.Offsets = append(o.Offsets, kg.g.offsets...)
		}
		s.stats.Suppressed += uint64(o.Count)
		s.stats.Classes += uint64(len(cur))
		dst = append(dst, o)
	}
	return dst
}

func (s *Stage) publish(g *group, j int, start time.Time) Output {
	lv := s.seq[j]
	gr := &Group{
		Start: start, End: start.Add(s.cfg.Window),
		Paths: s.QuasiIdentifiers(), Levels: lv,
		Count: g.count, Entities: g.ents.count(s.m),
		SumFields: s.cfg.Sums, MinFields: s.cfg.Min, MaxFields: s.cfg.Max,
	}
	for i, l := range s.qis {
		gr.Values = append(gr.Values, string(l.gen(nil, g.rep[i], int(lv[i]))))
	}
	pick := func(idx []int, vals []float64) []float64 {
		out := make([]float64, len(idx))
		for i, x := range idx {
			out[i] = vals[x]
			if math.IsInf(out[i], 0) {
				out[i] = math.NaN()
			}
		}
		return out
	}
	gr.Sums, gr.Min, gr.Max = pick(s.sumIdx, g.sums), pick(s.minIdx, g.mins), pick(s.maxIdx, g.maxs)
	s.stats.Released += uint64(g.count)
	s.stats.Groups++
	s.loss(g.rep, lv, g.count)
	if s.cfg.Noise != nil {
		b := 2 / s.cfg.Noise.Epsilon
		gr.Entities = s.noisy(gr.Entities, b, s.k)
		gr.Count = s.noisy(gr.Count, b, gr.Entities)
	}
	return Output{Kind: Aggregate, Payload: gr.AppendJSON(nil), Levels: lv, Entities: gr.Entities,
		Count: g.count, Window: start, Spans: g.spans, Offsets: g.offsets, Group: gr}
}

func (a *aggState) heldPositions() []Position {
	low := map[part]int64{}
	for _, w := range a.windows {
		for pk, o := range w.held {
			if cur, ok := low[pk]; !ok || o < cur {
				low[pk] = o
			}
		}
	}
	out := make([]Position, 0, len(low))
	for pk, o := range low {
		out = append(out, Position{pk.topic, pk.partition, o})
	}
	return out
}
