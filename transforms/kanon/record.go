package kanon

import (
	"container/heap"
	"slices"
	"time"
)

// Record mode. Every held record sits in its class at every level vector
// of the roll-up sequence at once (idx[j] maps the record's key at level
// vector j to the class entry), so "merge one level up" is a lookup:
//
//   - a record whose level-0 class reaches k distinct entities (and l
//     sensitive values) releases that class at once;
//   - a record matching a class released recently (live for max_delay, or
//     max_delay_records records) at some level is released at once with it,
//     at the most specific such level;
//   - when the oldest held record has waited max_delay (or
//     max_delay_records), its class climbs the sequence: the first level
//     vector at which it holds k entities releases the whole class there
//     (younger members included); if none below the top does, the record is
//     suppressed;
//   - over max_buffered_records or max_open_classes, the oldest held record
//     is expired early the same way.

type pending struct {
	rec    Record
	ent    uint64
	seq    uint64
	at     time.Time
	keys   []string // per level vector j < top
	done   bool
	capped bool
}

type entry struct {
	ents    map[uint64]int32
	sens    map[string]int32
	members []*pending
	live    int
}

type liveClass struct {
	until    time.Time
	untilSeq uint64
	entities int
	id       uint64
}

type liveRef struct {
	j   int
	key string
	c   *liveClass
}

type recState struct {
	idx     []map[string]*entry
	live    []map[string]*liveClass
	liveQ   []liveRef
	nLive   int
	queue   []*pending
	qhead   int
	held    map[part]*offHeap
	pending int
	seq     uint64
}

func newRecState(top int) *recState {
	r := &recState{held: map[part]*offHeap{}}
	for range top {
		r.idx = append(r.idx, map[string]*entry{})
		r.live = append(r.live, map[string]*liveClass{})
	}
	return r
}

func (s *Stage) ok(e *entry) bool {
	return e != nil && len(e.ents) >= s.k && (s.l == 0 || len(e.sens) >= s.l)
}

func (s *Stage) addRecord(dst []Output, rec Record, now time.Time) []Output {
	r := s.rec
	r.seq++
	p := &pending{ent: entityHash(rec.Entity), seq: r.seq, at: now}
	p.rec = rec
	p.rec.QI = slices.Clone(rec.QI)
	p.rec.Metrics = nil
	p.keys = make([]string, s.top)
	for j := range s.top {
		s.key = appendKey(s.key[:0], s.qis, p.rec.QI, s.seq[j])
		p.keys[j] = string(s.key)
	}
	dst = s.pruneLive(dst, now, false)
	switch {
	case s.liveAt(0, p, now) != nil:
		dst = s.releaseOne(dst, p, 0, s.liveAt(0, p, now))
	default:
		p.rec.Payload = slices.Clone(rec.Payload)
		s.insert(p)
		if e := r.idx[0][p.keys[0]]; s.ok(e) {
			dst = s.releaseEntry(dst, 0, p.keys[0], e, now)
			break
		}
		for j := 1; j < s.top; j++ {
			if c := s.liveAt(j, p, now); c != nil {
				s.remove(p)
				dst = s.releaseOne(dst, p, j, c)
				break
			}
		}
	}
	// Memory caps: expire the oldest held records early.
	for r.pending > s.cfg.MaxBufferedRecords || len(r.idx[0])+r.nLive > s.cfg.MaxOpenClasses {
		if len(r.idx[0])+r.nLive > s.cfg.MaxOpenClasses && r.nLive > 0 {
			dst = s.pruneLive(dst, now, true)
			continue
		}
		o := s.oldest()
		if o == nil {
			break
		}
		o.capped = true
		dst = s.expireOne(dst, o, now)
	}
	return s.expire(dst, now, false)
}

func (s *Stage) liveAt(j int, p *pending, now time.Time) *liveClass {
	if j >= s.top {
		return nil
	}
	c := s.rec.live[j][p.keys[j]]
	if c == nil || !s.alive(c, now) {
		return nil
	}
	return c
}

func (s *Stage) alive(c *liveClass, now time.Time) bool {
	return now.Before(c.until) && (s.cfg.MaxDelayRecords == 0 || s.rec.seq < c.untilSeq)
}

// pruneLive forgets released classes past their lifetime, or with force
// the oldest one.
func (s *Stage) pruneLive(dst []Output, now time.Time, force bool) []Output {
	r := s.rec
	for len(r.liveQ) > 0 {
		ref := r.liveQ[0]
		if r.live[ref.j][ref.key] != ref.c {
			r.liveQ = r.liveQ[1:]
			continue
		}
		if !force && s.alive(ref.c, now) {
			break
		}
		delete(r.live[ref.j], ref.key)
		r.nLive--
		r.liveQ = r.liveQ[1:]
		if force {
			break
		}
	}
	return dst
}

func (s *Stage) insert(p *pending) {
	r := s.rec
	r.pending++
	s.stats.Held++
	r.queue = append(r.queue, p)
	for j, key := range p.keys {
		e := r.idx[j][key]
		if e == nil {
			e = &entry{ents: map[uint64]int32{}}
			if s.l > 0 {
				e.sens = map[string]int32{}
			}
			r.idx[j][key] = e
		}
		e.ents[p.ent]++
		if s.l > 0 {
			e.sens[p.rec.Sensitive]++
		}
		e.members = append(e.members, p)
		e.live++
	}
	pk := part{p.rec.Topic, p.rec.Partition}
	h := r.held[pk]
	if h == nil {
		h = &offHeap{}
		r.held[pk] = h
	}
	heap.Push(h, p)
}

// remove takes a decided record out of every class.
func (s *Stage) remove(p *pending) {
	r := s.rec
	p.done = true
	r.pending--
	s.stats.Held--
	for j, key := range p.keys {
		e := r.idx[j][key]
		if e.ents[p.ent]--; e.ents[p.ent] == 0 {
			delete(e.ents, p.ent)
		}
		if s.l > 0 {
			if e.sens[p.rec.Sensitive]--; e.sens[p.rec.Sensitive] == 0 {
				delete(e.sens, p.rec.Sensitive)
			}
		}
		if e.live--; e.live == 0 {
			delete(r.idx[j], key)
		} else if len(e.members) > 2*e.live+8 {
			e.members = slices.DeleteFunc(e.members, func(m *pending) bool { return m.done })
		}
	}
}

// releaseEntry releases every held member of e at level vector j and keeps
// the class live for later members.
func (s *Stage) releaseEntry(dst []Output, j int, key string, e *entry, now time.Time) []Output {
	c := s.makeLive(j, key, len(e.ents), now)
	for _, m := range slices.Clone(e.members) {
		if !m.done {
			s.remove(m)
			dst = s.releaseOne(dst, m, j, c)
		}
	}
	return dst
}

// makeLive registers a class released at level vector j, live for later
// members for max_delay (and max_delay_records).
func (s *Stage) makeLive(j int, key string, entities int, now time.Time) *liveClass {
	r := s.rec
	c := &liveClass{
		until:    now.Add(s.cfg.MaxDelay),
		untilSeq: r.seq + uint64(s.cfg.MaxDelayRecords),
		entities: entities,
		id:       classID(j, []byte(key)),
	}
	if old := r.live[j][key]; old != nil && s.alive(old, now) {
		c.entities += old.entities // the same visible class grows
	}
	if r.live[j][key] == nil {
		r.nLive++
	}
	r.live[j][key] = c
	r.liveQ = append(r.liveQ, liveRef{j, key, c})
	s.stats.Classes++
	return c
}

// releaseOne emits p released at level vector j in class c. p is out of
// the indexes (or was never in them).
func (s *Stage) releaseOne(dst []Output, p *pending, j int, c *liveClass) []Output {
	p.done = true
	lv := s.seq[j]
	o := Output{Kind: Released, Levels: lv, Class: c.id, Entities: c.entities, Count: 1}
	if p.rec.Payload != nil {
		o.Payload = s.rewrite(nil, p.rec.Payload, p.rec.QI, lv)
	}
	o.Spans = []Span{{Topic: p.rec.Topic, Partition: p.rec.Partition, First: p.rec.Offset, Last: p.rec.Offset, Count: 1}}
	if s.list {
		o.Offsets = []Position{{p.rec.Topic, p.rec.Partition, p.rec.Offset}}
	}
	s.stats.Released++
	s.loss(p.rec.QI, lv, 1)
	return append(dst, o)
}

func (s *Stage) suppressOne(dst []Output, p *pending, reason Reason) []Output {
	s.remove(p)
	s.stats.Suppressed++
	if reason == Cap {
		s.stats.SuppressedCap++
	}
	o := Output{Kind: Suppressed, Reason: reason, Count: 1,
		Spans: []Span{{Topic: p.rec.Topic, Partition: p.rec.Partition, First: p.rec.Offset, Last: p.rec.Offset, Count: 1}}}
	if s.list {
		o.Offsets = []Position{{p.rec.Topic, p.rec.Partition, p.rec.Offset}}
	}
	return append(dst, o)
}

func (s *Stage) oldest() *pending {
	r := s.rec
	for r.qhead < len(r.queue) {
		p := r.queue[r.qhead]
		if !p.done {
			return p
		}
		r.queue[r.qhead] = nil
		r.qhead++
	}
	r.queue, r.qhead = r.queue[:0], 0
	return nil
}

// expire decides held records that have waited long enough (all with flush).
func (s *Stage) expire(dst []Output, now time.Time, flush bool) []Output {
	r := s.rec
	dst = s.pruneLive(dst, now, false)
	for {
		p := s.oldest()
		if p == nil {
			break
		}
		due := flush || !now.Before(p.at.Add(s.cfg.MaxDelay)) ||
			(s.cfg.MaxDelayRecords > 0 && r.seq-p.seq >= uint64(s.cfg.MaxDelayRecords))
		if !due {
			break
		}
		dst = s.expireOne(dst, p, now)
	}
	if r.qhead > 1024 && r.qhead*2 > len(r.queue) {
		r.queue = append(r.queue[:0], r.queue[r.qhead:]...)
		r.qhead = 0
	}
	return dst
}

// expireOne climbs p's class up the sequence to the first level vector
// where it holds k entities (and l values) and releases p there with the
// oldest members that make up k, or where a live released class takes p;
// if none below the top, p is suppressed.
func (s *Stage) expireOne(dst []Output, p *pending, now time.Time) []Output {
	for j := 0; j < s.top; j++ {
		if e := s.rec.idx[j][p.keys[j]]; s.ok(e) {
			return s.releaseOldest(dst, j, p.keys[j], e, p, now)
		}
		if c := s.liveAt(j, p, now); c != nil {
			s.remove(p)
			return s.releaseOne(dst, p, j, c)
		}
	}
	if p.capped {
		return s.suppressOne(dst, p, Cap)
	}
	return s.suppressOne(dst, p, Short)
}

// releaseOldest releases p and the oldest held members of e until they
// hold k distinct entities (and l values); younger members keep waiting
// for a more specific class, or join this one once it is live.
func (s *Stage) releaseOldest(dst []Output, j int, key string, e *entry, p *pending, now time.Time) []Output {
	take := []*pending{p}
	ents := map[uint64]bool{p.ent: true}
	sens := map[string]bool{p.rec.Sensitive: true}
	members := slices.Clone(e.members)
	slices.SortFunc(members, func(a, b *pending) int { return int(a.seq) - int(b.seq) })
	for _, m := range members {
		if len(ents) >= s.k && (s.l == 0 || len(sens) >= s.l) {
			break
		}
		if m.done || m == p {
			continue
		}
		take = append(take, m)
		ents[m.ent] = true
		sens[m.rec.Sensitive] = true
	}
	c := s.makeLive(j, key, len(ents), now)
	for _, m := range take {
		s.remove(m)
		dst = s.releaseOne(dst, m, j, c)
	}
	return dst
}

// flushRecords decides every held record the way aggregate mode closes a
// window: level vector by level vector, every class of k entities is
// released whole and members of classes released at that level join them;
// what is left at the top is suppressed.
func (s *Stage) flushRecords(dst []Output, now time.Time) []Output {
	r := s.rec
	for j := 0; j < s.top; j++ {
		keys := make([]string, 0, len(r.idx[j]))
		for k := range r.idx[j] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if e := r.idx[j][k]; e != nil && s.ok(e) {
				dst = s.releaseEntry(dst, j, k, e, now)
			}
		}
		for _, k := range keys {
			e := r.idx[j][k]
			c := r.live[j][k]
			if e == nil || c == nil || !s.alive(c, now) {
				continue
			}
			for _, m := range slices.Clone(e.members) {
				if !m.done {
					s.remove(m)
					dst = s.releaseOne(dst, m, j, c)
				}
			}
		}
	}
	for p := s.oldest(); p != nil; p = s.oldest() {
		dst = s.suppressOne(dst, p, Short)
	}
	return dst
}

func (r *recState) heldPositions() []Position {
	var out []Position
	for pk, h := range r.held {
		for h.Len() > 0 && (*h)[0].done {
			heap.Pop(h)
		}
		if h.Len() == 0 {
			delete(r.held, pk)
			continue
		}
		out = append(out, Position{pk.topic, pk.partition, (*h)[0].rec.Offset})
	}
	return out
}

// offHeap is a min-heap of held records by offset, with lazy deletion.
type offHeap []*pending

func (h offHeap) Len() int           { return len(h) }
func (h offHeap) Less(i, j int) bool { return h[i].rec.Offset < h[j].rec.Offset }
func (h offHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *offHeap) Push(x any)        { *h = append(*h, x.(*pending)) }
func (h *offHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
