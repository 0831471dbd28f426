package kanon

import (
	"container/heap"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Record mode, in the spirit of CASTLE (Cao, Carminati, Ferrari and Tan,
// IEEE TDSC 2011). Every held record sits in its class at every level
// vector of the roll-up sequence at once (idx[j] maps the record's key at
// level vector j to the class entry), which finds candidates quickly:
//
//   - a record whose level-0 class reaches k distinct entities (and l
//     sensitive values) releases that class at once;
//   - a record covered by a class released recently (live for max_delay,
//     or max_delay_records records) is released at once with it when that
//     costs it no more information than the running average of released
//     clusters (CASTLE's tau);
//   - when the oldest held record p has waited max_delay (or
//     max_delay_records), a cluster is built around it from the held
//     records of its smallest class of k entities along the sequence
//     (widened while it stays small): greedily, the record whose addition
//     raises the normalized certainty penalty (NCP) least, counting also
//     how much worse off the taken record is than its own prospect (see
//     prospect), then every record that costs nothing more, oldest first,
//     until k entities (and l values). The cluster is released at its
//     least common generalization, any level vector, not only the
//     sequence's; if a live class covers p at no more than the cluster's
//     cost including that toll on its other members (regretCost), p joins
//     it instead; if neither exists below the top, p is suppressed;
//   - over max_buffered_records or max_open_classes, the oldest held record
//     is expired early the same way.
//
// A released class is identified by its level vector and its generalized
// values: all it ever releases share them and hold at least k entities.

type pending struct {
	rec    Record
	ent    uint64
	seq    uint64
	at     time.Time
	keys   []string  // per level vector j < top
	es     []*entry  // per level vector j < top: its class while held
	gh     []uint64  // per QI i and level l (at Stage.off[i]+l): hash of the generalized value
	gncp   []float32 // the same: NCP of the value at that level
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
	h        uint64  // hash of lv and the generalized values (see classHash)
	lv       []uint8 // level vector; shared by its outputs
	key      string  // generalized values (appendKey at lv)
}

type recState struct {
	idx     []map[string]*entry
	live    map[uint64]*liveClass // by classHash
	lvs     map[string]int        // level vectors of live classes, with how many
	liveQ   []*liveClass
	nLive   int
	tau     float64 // running mean NCP of recently released records (CASTLE's tau)
	nTau    int
	queue   []*pending
	qhead   int
	held    map[part]*offHeap
	pending int
	seq     uint64
}

func newRecState(top int) *recState {
	r := &recState{held: map[part]*offHeap{}, live: map[uint64]*liveClass{}, lvs: map[string]int{}}
	for range top {
		r.idx = append(r.idx, map[string]*entry{})
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
	p.rec.QI = make([]string, len(rec.QI)) // rec's strings may alias its payload: own them
	for i, v := range rec.QI {
		p.rec.QI[i] = strings.Clone(v)
	}
	p.rec.Entity, p.rec.Sensitive = strings.Clone(rec.Entity), strings.Clone(rec.Sensitive)
	p.rec.Metrics = nil
	p.keys = make([]string, s.top)
	for j := range s.top {
		s.key = appendKey(s.key[:0], s.qis, p.rec.QI, s.seq[j])
		p.keys[j] = string(s.key)
	}
	s.generalizations(p)
	dst = s.pruneLive(dst, now, false)
	if c := s.liveAt(s.seq[0], p, now); c != nil {
		return s.expire(s.releaseOne(dst, p, c), now, false)
	}
	p.rec.Payload = slices.Clone(rec.Payload)
	s.insert(p)
	if e := r.idx[0][p.keys[0]]; s.ok(e) {
		dst = s.releaseEntry(dst, 0, p.keys[0], e, now)
	} else if c, cost := s.bestLive(p, now); c != nil && (r.nTau == 0 || cost <= r.tau+1e-9) {
		s.remove(p)
		dst = s.releaseOne(dst, p, c)
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

// generalizations fills p.gh and p.gncp.
func (s *Stage) generalizations(p *pending) {
	p.gh = make([]uint64, s.offN)
	p.gncp = make([]float32, s.offN)
	for i, l := range s.qis {
		v := qiAt(p.rec.QI, i)
		for lv := 0; lv <= l.height; lv++ {
			s.key = l.gen(s.key[:0], v, lv)
			p.gh[s.off[i]+lv] = xxhash.Sum64(s.key)
			p.gncp[s.off[i]+lv] = float32(l.ncp(v, lv))
		}
	}
}

// classHash hashes p's generalized values at lv, with lv.
func (s *Stage) classHash(p *pending, lv []uint8) uint64 {
	h := uint64(14695981039346656037)
	for i := range s.qis {
		h = (h ^ p.gh[s.off[i]+int(lv[i])]) * 1099511628211
		h = (h ^ uint64(lv[i])) * 1099511628211
	}
	return h
}

// cost is p's mean NCP over the quasi-identifiers at lv.
func (s *Stage) cost(p *pending, lv []uint8) float64 {
	var c float64
	for i := range s.qis {
		c += float64(p.gncp[s.off[i]+int(lv[i])])
	}
	return c / float64(len(s.qis))
}

// liveAt returns the live class at level vector lv covering p, if any.
func (s *Stage) liveAt(lv []uint8, p *pending, now time.Time) *liveClass {
	c := s.rec.live[s.classHash(p, lv)]
	if c == nil || !s.alive(c, now) || string(c.lv) != string(lv) {
		return nil
	}
	s.key = appendKey(s.key[:0], s.qis, p.rec.QI, lv)
	if string(s.key) != c.key {
		return nil
	}
	return c
}

// bestLive returns the live class covering p at the least cost to p.
func (s *Stage) bestLive(p *pending, now time.Time) (*liveClass, float64) {
	var best *liveClass
	bestCost := math.Inf(1)
	for lvs := range s.rec.lvs {
		lv := []uint8(lvs)
		cost := s.cost(p, lv)
		if cost > bestCost || (cost == bestCost && best != nil && lvs > string(best.lv)) {
			continue
		}
		if c := s.liveAt(lv, p, now); c != nil {
			best, bestCost = c, cost
		}
	}
	return best, bestCost
}

func (s *Stage) alive(c *liveClass, now time.Time) bool {
	return now.Before(c.until) && (s.cfg.MaxDelayRecords == 0 || s.rec.seq < c.untilSeq)
}

// pruneLive forgets released classes past their lifetime, or with force
// the oldest one.
func (s *Stage) pruneLive(dst []Output, now time.Time, force bool) []Output {
	r := s.rec
	for len(r.liveQ) > 0 {
		c := r.liveQ[0]
		if r.live[c.h] != c {
			r.liveQ = r.liveQ[1:]
			continue
		}
		if !force && s.alive(c, now) {
			break
		}
		s.forget(c)
		r.liveQ = r.liveQ[1:]
		if force {
			break
		}
	}
	return dst
}

func (s *Stage) forget(c *liveClass) {
	r := s.rec
	delete(r.live, c.h)
	r.nLive--
	if r.lvs[string(c.lv)]--; r.lvs[string(c.lv)] == 0 {
		delete(r.lvs, string(c.lv))
	}
}

func (s *Stage) insert(p *pending) {
	r := s.rec
	r.pending++
	s.stats.Held++
	r.queue = append(r.queue, p)
	p.es = make([]*entry, 0, len(p.keys))
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
		p.es = append(p.es, e)
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
		e := p.es[j]
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
	var first *pending
	for _, m := range e.members {
		if !m.done {
			first = m
			break
		}
	}
	c := s.makeLive(s.seq[j], first, key, len(e.ents), now)
	for _, m := range slices.Clone(e.members) {
		if !m.done {
			s.remove(m)
			dst = s.releaseOne(dst, m, c)
		}
	}
	return dst
}

// makeLive registers a class released at level vector lv with generalized
// values key (those of p), live for later members for max_delay (and
// max_delay_records).
func (s *Stage) makeLive(lv []uint8, p *pending, key string, entities int, now time.Time) *liveClass {
	r := s.rec
	h := s.classHash(p, lv)
	c := &liveClass{
		until:    now.Add(s.cfg.MaxDelay),
		untilSeq: r.seq + uint64(s.cfg.MaxDelayRecords),
		entities: entities,
		id:       classID(lv, []byte(key)),
		h:        h,
		lv:       lv,
		key:      key,
	}
	if old := r.live[h]; old != nil {
		if s.alive(old, now) && string(old.lv) == string(lv) && old.key == key {
			c.entities += old.entities // the same visible class grows
		}
		s.forget(old)
	}
	r.nLive++
	r.live[h] = c
	r.lvs[string(lv)]++
	r.liveQ = append(r.liveQ, c)
	s.stats.Classes++
	return c
}

// releaseOne emits p released in class c. p is out of the indexes (or was
// never in them).
func (s *Stage) releaseOne(dst []Output, p *pending, c *liveClass) []Output {
	p.done = true
	lv := c.lv
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
	r := s.rec
	r.nTau++
	r.tau += (s.cost(p, lv) - r.tau) / float64(min(r.nTau, tauWindow))
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

// expireOne decides p, which waited long enough: released in the cluster
// built around it or in the live class covering it, whichever costs p
// less; suppressed when there is neither below the top.
func (s *Stage) expireOne(dst []Output, p *pending, now time.Time) []Output {
	live, liveCost := s.bestLive(p, now)
	for j := 0; j < s.top; j++ {
		if e := s.rec.idx[j][p.keys[j]]; s.ok(e) {
			take, lv := s.cluster(p, j)
			if take == nil {
				break
			}
			if live != nil && liveCost <= s.regretCost(take, lv) {
				break
			}
			c := s.makeLive(lv, p, string(s.key), s.entities(take), now)
			for _, m := range take {
				s.remove(m)
				dst = s.releaseOne(dst, m, c)
			}
			return dst
		}
	}
	if live != nil {
		s.remove(p)
		return s.releaseOne(dst, p, live)
	}
	if p.capped {
		return s.suppressOne(dst, p, Cap)
	}
	return s.suppressOne(dst, p, Short)
}

// tauWindow is about how many recent releases tau averages over.
var tauWindow = 1000

// candCap bounds the held records a cluster is chosen from: the candidate
// class widens along the sequence while it holds at most this many.
const candCap = 2048

// cluster builds the cluster of p from the members of its class at level
// vector j (which holds k entities) or a wider one, and returns it with
// its level vector, leaving the cluster's generalized values in s.key; nil
// if the members do not generalize as the ladders promise (never for
// valid ladders).
func (s *Stage) cluster(p *pending, j int) ([]*pending, []uint8) {
	r := s.rec
	jc := j
	for jc+1 < s.top && r.idx[jc+1][p.keys[jc+1]].live <= candCap {
		jc++
	}
	nq := len(s.qis)
	var cands []*pending
	var lcas []uint8 // per candidate, nq least common levels with p
	for _, m := range r.idx[jc][p.keys[jc]].members {
		if m.done || m == p {
			continue
		}
		n := len(lcas)
		ok := true
		for i, l := range s.qis {
			lv := 0
			for lv <= l.height && m.gh[s.off[i]+lv] != p.gh[s.off[i]+lv] {
				lv++
			}
			if lv > l.height {
				ok = false
				break
			}
			lcas = append(lcas, uint8(lv))
		}
		if !ok {
			lcas = lcas[:n]
			continue
		}
		cands = append(cands, m)
	}
	lv := make([]uint8, nq)
	taken := make([]bool, len(cands))
	take := []*pending{p}
	ents := map[uint64]bool{p.ent: true}
	sens := map[string]bool{p.rec.Sensitive: true}
	done := func() bool { return len(ents) >= s.k && (s.l == 0 || len(sens) >= s.l) }
	within := func(c int) bool {
		for i := range nq {
			if lcas[c*nq+i] > lv[i] {
				return false
			}
		}
		return true
	}
	scratch := make([]uint8, nq)
	prospects := make([]float64, len(cands)) // computed when needed; -1: not yet
	for i := range prospects {
		prospects[i] = -1
	}
	for !done() {
		// Every candidate already within lv costs nothing more: oldest first.
		for c, m := range cands {
			if !taken[c] && within(c) {
				taken[c] = true
				take = append(take, m)
				ents[m.ent] = true
				sens[m.rec.Sensitive] = true
				if done() {
					break
				}
			}
		}
		if done() {
			break
		}
		// Then the one that raises p's NCP least, counting what taking it
		// costs the candidate beyond its own prospect.
		best, bestCost := -1, math.Inf(1)
		for c, m := range cands {
			if taken[c] {
				continue
			}
			for i := range nq {
				scratch[i] = max(lv[i], lcas[c*nq+i])
			}
			cost := s.cost(p, scratch)
			if cost >= bestCost {
				continue // the regret only adds
			}
			if prospects[c] < 0 {
				prospects[c] = s.prospect(m)
			}
			if cost += max(0, cost-prospects[c]); cost < bestCost {
				best, bestCost = c, cost
			}
		}
		if best < 0 {
			return nil, nil
		}
		for i := range nq {
			lv[i] = max(lv[i], lcas[best*nq+i])
		}
	}
	// Verify: every member shares p's generalized values at lv.
	var keyBuf []byte
	keyBuf = appendKey(keyBuf, s.qis, p.rec.QI, lv)
	for _, m := range take[1:] {
		s.key = appendKey(s.key[:0], s.qis, m.rec.QI, lv)
		if string(s.key) != string(keyBuf) {
			return nil, nil
		}
	}
	s.key = append(s.key[:0], keyBuf...)
	return take, lv
}

// prospect estimates the NCP m would get if left to wait: the cost of its
// smallest class along the sequence that already holds k entities (and l
// values), 1 when none does. It is an upper bound of what m can get from
// the records held now (cluster builds within such a class), so
// cost-prospect, when positive, is a lower bound of the loss a cluster
// inflicts on m by taking it early.
func (s *Stage) prospect(m *pending) float64 {
	for j, e := range m.es {
		if s.ok(e) {
			return s.cost(m, s.seq[j])
		}
	}
	return 1
}

// regretCost is what releasing cluster take (take[0] the expiring record)
// at level vector lv costs beyond the expiring record's own NCP: its NCP
// plus, for every other member, how much worse lv is than its prospect.
// Comparing it with the NCP of joining a live class counts the cluster's
// toll on the records it takes early; without it, clusters take the
// buffer's best-placed records and leave later ones to costlier classes
// (on UCI Adult, k=10: NCP 0.237 without, 0.222 with, see RESULTS.md).
func (s *Stage) regretCost(take []*pending, lv []uint8) float64 {
	c := s.cost(take[0], lv)
	total := c
	for _, m := range take[1:] {
		total += max(0, c-s.prospect(m))
	}
	return total
}

func (s *Stage) entities(ps []*pending) int {
	ents := map[uint64]bool{}
	for _, m := range ps {
		ents[m.ent] = true
	}
	return len(ents)
}

// flushRecords decides every held record as if it expired now, oldest
// first.
func (s *Stage) flushRecords(dst []Output, now time.Time) []Output {
	for p := s.oldest(); p != nil; p = s.oldest() {
		dst = s.expireOne(dst, p, now)
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
