// Package kanon is the k-anonymity stage of a vendor route (design section
// 4). It runs on de-identified records (the route's output) and publishes
// either per-window aggregates of groups holding at least k distinct
// entities (aggregate mode) or the records themselves, delayed until their
// generalized class holds at least k distinct entities (record mode, in the
// spirit of CASTLE by Cao, Carminati, Ferrari and Tan). k counts distinct
// values of the route's entity field, never events.
//
// Every record added is decided exactly once: released (in a record or a
// published aggregate), suppressed (its class fell short at the top of the
// ladder, or a memory cap was hit), or late (aggregate mode). Outputs say
// which source positions they decide, and Held names the lowest undecided
// offset per partition, so a caller commits offsets only once every held
// record's fate is decided. Accounting: Stats.In = Released + Suppressed +
// Late + Held, always.
//
// Generalization: each quasi-identifier has a ladder; level 0 is the value
// as the route outputs it, the top is "*". Short classes roll up along one
// fixed sequence of level vectors (see sequence for which quasi-identifier
// steps first). Suppression is not failure: it is counted, not logged.
//
// A Stage is not safe for concurrent use.
package kanon

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
)

// Kind is what an Output is.
type Kind uint8

const (
	// Released is one record, its quasi-identifiers generalized, from a
	// class of at least k distinct entities (record mode).
	Released Kind = iota + 1
	// Aggregate is a published group of at least k distinct entities (aggregate mode).
	Aggregate
	// Suppressed withholds records: their class or group fell short of k at
	// the top of the ladder, or a memory cap was hit (see Reason).
	Suppressed
	// Late decides records whose window had closed (aggregate mode).
	Late
	// LateCount publishes how many records of a closed window came late
	// (aggregate mode with late: count). It decides no offsets.
	LateCount
)

func (k Kind) String() string {
	return [...]string{"invalid", "released", "aggregate", "suppressed", "late", "late_count"}[k]
}

// Reason says why records were suppressed.
type Reason uint8

const (
	// Short: the class or group held fewer than k entities (or l values) at the top.
	Short Reason = iota + 1
	// Cap: max_open_classes or max_buffered_records was reached.
	Cap
)

// Position is a source record's place.
type Position struct {
	Topic     string
	Partition int
	Offset    int64
}

// Span is a run of decided source records of one partition: Count records
// with offsets from First to Last (not necessarily contiguous).
type Span struct {
	Topic       string
	Partition   int
	First, Last int64
	Count       int
}

// Record is one de-identified record as the stage sees it; Extract fills
// it from the route's output (its strings alias the output). Add copies
// what it keeps.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	// EventTime places the record in a window (aggregate mode).
	EventTime time.Time
	// Entity identifies whom the record is about (e.g. the user pseudonym).
	Entity string
	// QI holds the raw JSON text of each quasi-identifier, in config order;
	// "null" when missing.
	QI []string
	// Sensitive is the l-diversity field's raw JSON text.
	Sensitive string
	// Metrics holds the value of each Stage.Metrics field; NaN when missing.
	Metrics []float64
	// Payload is the route's output (record mode: released with its
	// quasi-identifiers rewritten). May be nil.
	Payload []byte
}

// Output is one thing the stage publishes or decides. The caller owns Payload.
type Output struct {
	Kind Kind
	// Payload: Released, the record with generalized quasi-identifiers;
	// Aggregate and LateCount, a JSON object (see Group.AppendJSON).
	Payload []byte
	// Levels is the generalization level per quasi-identifier (Released,
	// Aggregate). Shared; do not modify.
	Levels []uint8
	// Class identifies the released class (Released): records with the same
	// Class were released under the same generalized quasi-identifiers.
	Class uint64
	// Entities is the distinct-entity count of the class when released
	// (Released, at least k) or of the group (Aggregate, noisy with noise).
	Entities int
	// Count is how many source records this output decides (LateCount: how
	// many came late, noisy with noise).
	Count int
	// Window is the window start (aggregate mode).
	Window time.Time
	// Reason says why records were suppressed (Suppressed).
	Reason Reason
	// Spans are the source records this output decides, per partition.
	Spans []Span
	// Offsets lists every decided position when Options.ListOffsets is set.
	Offsets []Position
	// Group is the published aggregate (Aggregate).
	Group *Group
}

// Options are a Stage's run-time dependencies.
type Options struct {
	// Now is the clock for record mode's max_delay; time.Now when nil.
	Now func() time.Time
	// Rand draws Laplace noise; a ChaCha8 source seeded from crypto/rand when nil.
	Rand *rand.Rand
	// ListOffsets makes every Output list each position it decides (for
	// audits and tests; costs memory per held record in aggregate mode).
	ListOffsets bool
}

// Stats counts what a stage did. In = Released + Suppressed + Late + Held.
type Stats struct {
	In         uint64 // records added
	Released   uint64 // records released (record mode) or in published groups (aggregate)
	Suppressed uint64 // records withheld, including SuppressedCap
	// SuppressedCap are suppressed because a memory cap was reached.
	SuppressedCap uint64
	Late          uint64 // records of closed windows
	Held          uint64 // records not yet decided
	Groups        uint64 // aggregates published
	// Classes are released classes (record mode) or suppressed groups (aggregate).
	Classes uint64
	// LevelSum is the sum over released records and quasi-identifiers of
	// level/height; NCPSum the same of the normalized certainty penalty.
	LevelSum, NCPSum float64
}

// Height is the average normalized generalization height of released
// records (0: as output by the route, 1: all "*").
func (s Stats) Height(qis int) float64 {
	if s.Released == 0 || qis == 0 {
		return 0
	}
	return s.LevelSum / float64(s.Released) / float64(qis)
}

// NCP is the average normalized certainty penalty of released records.
func (s Stats) NCP(qis int) float64 {
	if s.Released == 0 || qis == 0 {
		return 0
	}
	return s.NCPSum / float64(s.Released) / float64(qis)
}

// SuppressionRate is the share of decided records that were suppressed.
func (s Stats) SuppressionRate() float64 {
	d := s.Released + s.Suppressed + s.Late
	if d == 0 {
		return 0
	}
	return float64(s.Suppressed) / float64(d)
}

// Stage is one route's compiled k-anonymity stage. Not safe for concurrent use.
type Stage struct {
	cfg     config.KAnon
	k, l    int
	m       int // distinct-entity sketch size: exact up to m
	qis     []*ladder
	qiPaths []string // shared by published Groups
	off     []int    // per QI: its first level's index in pending.gh
	offN    int
	seq     [][]uint8
	steps   []int   // steps[j]: the QI whose level seq[j] raises over seq[j-1]
	top     int     // index of the all-top vector in seq; len(seq) with caps
	caps    []uint8 // per QI, the highest level it may reach (repartitioned); nil: none
	metrics []string
	sumIdx  []int
	minIdx  []int
	maxIdx  []int
	now     func() time.Time
	rng     *rand.Rand
	list    bool
	stats   Stats

	paths pnode
	slots int
	found []found
	scan  jsonscan.Scanner
	key   []byte
	tbuf  []byte // Extract's unescaped event time

	agg *aggState
	rec *recState
}

// New compiles cfg (validated by config.Load) into a stage; dir resolves
// hierarchy files. Errors are prefixed with their key path under k_anonymity.
func New(cfg config.KAnon, dir string, opts Options) (*Stage, error) {
	cfg.ApplyDefaults(cfg.EventTime)
	if errs := config.ValidateKAnon("", &cfg, nil); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s := &Stage{cfg: cfg, k: cfg.K, now: opts.Now, rng: opts.Rand, list: opts.ListOffsets}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rng == nil && cfg.Noise != nil {
		var seed [32]byte
		_, _ = crand.Read(seed[:])
		s.rng = rand.New(rand.NewChaCha8(seed))
	}
	if cfg.LDiversity != nil {
		s.l = cfg.LDiversity.L
	}
	s.m = max(s.k, config.DefaultKAnonDistinctCap)
	for i, q := range cfg.QuasiIdentifiers {
		l, err := compileLadder(q, dir)
		if err != nil {
			return nil, fmt.Errorf("k_anonymity.quasi_identifiers[%d].ladder: %w", i, err)
		}
		s.qis = append(s.qis, l)
	}
	s.qiPaths = s.QuasiIdentifiers()
	for _, l := range s.qis {
		s.off = append(s.off, s.offN)
		s.offN += l.height + 1
	}
	if cfg.RepartitionTopic != "" {
		// Repartitioned: every class the stage can publish must lie within
		// one class at the caps, the one its records were keyed by.
		level := math.MaxInt
		if cfg.PartitionLevel != nil {
			level = *cfg.PartitionLevel
		}
		for _, l := range s.qis {
			s.caps = append(s.caps, uint8(min(level, l.height-1)))
		}
	}
	s.seq = sequence(s.qis, s.caps)
	s.top = len(s.seq) - 1
	if s.caps != nil {
		s.top = len(s.seq) // the caps are publishable: the top is beyond them
	}
	s.steps = make([]int, len(s.seq))
	for j := 1; j < len(s.seq); j++ {
		for i := range s.seq[j] {
			if s.seq[j][i] != s.seq[j-1][i] {
				s.steps[j] = i
			}
		}
	}
	index := func(f string) int {
		if i := slices.Index(s.metrics, f); i >= 0 {
			return i
		}
		s.metrics = append(s.metrics, f)
		return len(s.metrics) - 1
	}
	for _, f := range cfg.Sums {
		s.sumIdx = append(s.sumIdx, index(f))
	}
	for _, f := range cfg.Min {
		s.minIdx = append(s.minIdx, index(f))
	}
	for _, f := range cfg.Max {
		s.maxIdx = append(s.maxIdx, index(f))
	}
	s.paths = pnode{slot: -1}
	s.paths.insert(cfg.Entity, slotEntity)
	if cfg.Mode == config.KAnonAggregate {
		s.paths.insert(cfg.EventTime, slotTime)
	}
	if cfg.LDiversity != nil {
		s.paths.insert(cfg.LDiversity.Field, slotSensitive)
	}
	for i, q := range cfg.QuasiIdentifiers {
		s.paths.insert(q.Path, slotQI+i)
	}
	for i, f := range s.metrics {
		s.paths.insert(f, slotQI+len(s.qis)+i)
	}
	s.slots = slotQI + len(s.qis) + len(s.metrics)
	switch cfg.Mode {
	case config.KAnonAggregate:
		s.agg = newAggState(len(s.qis))
	case config.KAnonRecord:
		s.rec = newRecState(s.top)
	}
	return s, nil
}

// Metrics lists the numeric fields Record.Metrics holds, in order.
func (s *Stage) Metrics() []string { return s.metrics }

// QuasiIdentifiers lists the quasi-identifier paths, in Record.QI order.
func (s *Stage) QuasiIdentifiers() []string {
	out := make([]string, len(s.qis))
	for i, q := range s.qis {
		out[i] = q.path
	}
	return out
}

// Sequence returns the roll-up order of level vectors (shared; do not modify).
func (s *Stage) Sequence() [][]uint8 { return s.seq }

// Caps returns, when the stage is repartitioned (repartition_topic), the
// highest level of each quasi-identifier, which is also the level records
// are keyed by; nil otherwise. Shared; do not modify.
func (s *Stage) Caps() []uint8 { return s.caps }

// AppendPartitionKey appends the key a repartitioned stage's records are
// routed by: the quasi-identifiers of rec (filled by Extract) generalized
// to Caps. Every class the stage can publish lies within one such key.
// Not for a stage without caps.
func (s *Stage) AppendPartitionKey(dst []byte, rec *Record) []byte {
	return appendKey(dst, s.qis, rec.QI, s.caps)
}

// Stats returns the counters.
func (s *Stage) Stats() Stats { return s.stats }

// K returns k.
func (s *Stage) K() int { return s.k }

// Window returns the aggregate window's length (0 in record mode).
func (s *Stage) Window() time.Duration {
	if s.agg == nil {
		return 0
	}
	return s.cfg.Window
}

// Add adds one record and appends what it decides to dst: in record mode
// its release (or its class's), releases and suppressions of records that
// waited past max_delay, and what memory caps force out; in aggregate mode
// the windows the record's event time closes. rec is not kept (Add copies
// what it needs).
func (s *Stage) Add(dst []Output, rec Record) []Output {
	s.stats.In++
	if s.rec != nil {
		return s.addRecord(dst, rec, s.now())
	}
	return s.addAggregate(dst, &rec)
}

// Advance appends what the clock decides at now: records that waited
// max_delay (record mode). Aggregate windows close by event time only (Add
// and Flush).
func (s *Stage) Advance(dst []Output, now time.Time) []Output {
	if s.rec != nil {
		return s.expire(dst, now, false)
	}
	return dst
}

// Flush decides every held record, as at the end of input: record mode
// treats each as expired, aggregate mode closes every window.
func (s *Stage) Flush(dst []Output) []Output {
	if s.rec != nil {
		return s.flushRecords(dst, s.now())
	}
	return s.flushAggregate(dst)
}

// Held returns, per partition with undecided records, the lowest undecided
// offset, sorted by topic and partition. A caller commits a partition only
// below it.
func (s *Stage) Held() []Position {
	var out []Position
	if s.rec != nil {
		out = s.rec.heldPositions()
	} else {
		out = s.agg.heldPositions()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// entityHash hashes an entity; a collision can only undercount entities,
// never overcount, so k is never violated by one.
func entityHash(e string) uint64 { return xxhash.Sum64String(e) }

// distinct holds the m smallest entity hashes seen: exact while fewer than
// m entities (so "at least k" is exact, m >= k), then a KMV estimate.
// Mergeable: the union of two keeps the m smallest of both.
type distinct struct{ h []uint64 }

func (d *distinct) add(x uint64, m int) {
	n := len(d.h)
	if n >= m && x >= d.h[n-1] {
		return // full, and not among the m smallest
	}
	// The insertion point: a binary search down to a few, then a scan
	// (most groups hold a few entities).
	h := d.h
	lo, hi := 0, n
	for hi-lo > 8 {
		mid := int(uint(lo+hi) >> 1)
		if h[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for lo < hi && h[lo] < x {
		lo++
	}
	i := lo
	if i < n && h[i] == x {
		return
	}
	if n < m {
		h = append(h, 0)
	}
	// Shift the tail up by one (dropping the largest when full): a short
	// one element by element, a long one (the roll-up's big classes) by
	// memmove.
	if len(h)-i > 8 {
		copy(h[i+1:], h[i:len(h)-1])
	} else {
		for j := len(h) - 1; j > i; j-- {
			h[j] = h[j-1]
		}
	}
	h[i] = x
	d.h = h
}

// merge adds o's hashes to d, keeping the m smallest: one pass over both
// sorted lists (into scratch, returned for reuse) rather than an insertion
// per hash.
func (d *distinct) merge(o *distinct, m int, scratch []uint64) []uint64 {
	if len(o.h) <= 4 {
		// Short groups hold a few entities: inserting them one by one
		// skips the pass over d, which may be full (m) after many merges.
		for _, x := range o.h {
			d.add(x, m)
		}
		return scratch
	}
	buf := scratch[:0]
	i, j := 0, 0
	for len(buf) < m && (i < len(d.h) || j < len(o.h)) {
		switch {
		case j >= len(o.h) || (i < len(d.h) && d.h[i] < o.h[j]):
			buf = append(buf, d.h[i])
			i++
		case i >= len(d.h) || o.h[j] < d.h[i]:
			buf = append(buf, o.h[j])
			j++
		default: // the same entity in both
			buf = append(buf, d.h[i])
			i++
			j++
		}
	}
	d.h = append(d.h[:0], buf...)
	return buf
}

// count returns the distinct count: exact below m, else an estimate.
func (d *distinct) count(m int) int {
	if len(d.h) < m {
		return len(d.h)
	}
	kth := float64(d.h[m-1]) / math.Exp2(64)
	if kth <= 0 {
		return len(d.h)
	}
	return max(m, int(math.Round(float64(m-1)/kth)))
}

// laplace draws from Laplace(0, b) by inverse CDF. (Floating-point Laplace
// leaks through its low bits, Mironov 2012; noise here is a complement to
// k, not a formal guarantee on its own.)
func (s *Stage) laplace(b float64) float64 {
	for {
		u := s.rng.Float64()
		if u == 0 {
			continue
		}
		x := u - 0.5
		if x < 0 {
			return b * math.Log(1+2*x)
		}
		return -b * math.Log(1-2*x)
	}
}

// noisy returns n with Laplace(scale) noise, rounded, at least lo.
func (s *Stage) noisy(n int, scale float64, lo int) int {
	v := int(math.Round(float64(n) + s.laplace(scale)))
	return max(v, lo)
}

func classID(lv []uint8, key []byte) uint64 {
	d := xxhash.New()
	_, _ = d.Write(lv)
	_, _ = d.Write([]byte{0xff})
	_, _ = d.Write(key)
	return d.Sum64()
}

type part struct {
	topic     string
	partition int
}

// loss adds a released record (or n of them sharing qi at lv) to the
// information-loss counters.
func (s *Stage) loss(qi []string, lv []uint8, n int) {
	for i, l := range s.qis {
		s.stats.LevelSum += float64(n) * float64(lv[i]) / float64(l.height)
		s.stats.NCPSum += float64(n) * l.ncp(qiAt(qi, i), int(lv[i]))
	}
}
