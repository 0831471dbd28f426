package gate

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// bloom is a Bloom filter over 64-bit xxhash values with double hashing
// (Kirsch and Mitzenmacher: index i is h1 + i*h2, reduced to the filter's
// size by a multiply-shift). Bits are set and read atomically, so one
// filter is shared by every worker of a route.
type bloom struct {
	words []atomic.Uint64
	m     uint64 // bits
	k     int    // probes
	added atomic.Int64
	start time.Time
}

// bloomSize returns the bits and probes of a filter holding n values at
// false-positive rate p: m = -n ln p / (ln 2)^2, k = m/n ln 2.
func bloomSize(n int, p float64) (m uint64, k int) {
	fm := math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2))
	m = max(64, (uint64(fm)+63)&^63)
	k = int(math.Round(float64(m) / float64(n) * math.Ln2))
	return m, min(max(k, 1), 32)
}

func newBloom(n int, p float64, start time.Time) *bloom {
	m, k := bloomSize(n, p)
	return &bloom{words: make([]atomic.Uint64, m/64), m: m, k: k, start: start}
}

// probes derives the second hash from the first with a 64-bit finalizer,
// forced odd so that the probe sequence does not collapse.
func probes(h uint64) (h1, h2 uint64) {
	x := h ^ h>>33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return h, x | 1
}

func (b *bloom) has(h uint64) bool {
	h1, h2 := probes(h)
	for range b.k {
		i, _ := bits.Mul64(h1, b.m)
		if b.words[i>>6].Load()&(1<<(i&63)) == 0 {
			return false
		}
		h1 += h2
	}
	return true
}

// add sets h's bits and reports whether any was newly set (h was absent).
func (b *bloom) add(h uint64) bool {
	h1, h2 := probes(h)
	changed := false
	for range b.k {
		i, _ := bits.Mul64(h1, b.m)
		w, bit := &b.words[i>>6], uint64(1)<<(i&63)
		if w.Load()&bit == 0 {
			w.Or(bit)
			changed = true
		}
		h1 += h2
	}
	return changed
}

// generations is the pair a lookup tests: the filter being filled and the
// one before it.
type generations struct {
	cur, prev *bloom
	seq       uint64
}

// rotatingBloom remembers raw values for between one and two rotation
// periods: values go into the current generation; a lookup tests it and
// the previous one; every period (or when the current generation reaches
// its capacity) the previous generation is dropped and a fresh one
// started. Memory is bounded by two generations. Safe for concurrent use.
type rotatingBloom struct {
	capacity int
	fpRate   float64
	every    time.Duration
	now      func() time.Time

	gens atomic.Pointer[generations]
	mu   sync.Mutex // serialises rotation
}

func newRotatingBloom(capacity int, fpRate float64, every time.Duration, now func() time.Time) *rotatingBloom {
	r := &rotatingBloom{capacity: capacity, fpRate: fpRate, every: every, now: now}
	r.gens.Store(&generations{cur: newBloom(capacity, fpRate, now())})
	return r
}

// has reports whether h is (probably) in either generation.
func (r *rotatingBloom) has(h uint64) bool {
	g := r.gens.Load()
	return g.cur.has(h) || (g.prev != nil && g.prev.has(h))
}

// current returns the generations to insert into, rotating first when the
// current one is older than the period.
func (r *rotatingBloom) current(now time.Time) *generations {
	g := r.gens.Load()
	if now.Sub(g.cur.start) < r.every {
		return g
	}
	return r.rotate(g, now)
}

// rotate replaces g (if no one else has) by a fresh current generation.
// The old previous generation is left to the garbage collector: readers
// may still hold it, so it is never cleared in place.
func (r *rotatingBloom) rotate(g *generations, now time.Time) *generations {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.gens.Load(); cur != g {
		return cur
	}
	next := &generations{cur: newBloom(r.capacity, r.fpRate, now), prev: g.cur, seq: g.seq + 1}
	r.gens.Store(next)
	return next
}

// add inserts h into g's current generation, rotating early when the
// generation reaches its capacity.
func (r *rotatingBloom) add(g *generations, h uint64, now time.Time) {
	if g.cur.add(h) && g.cur.added.Add(1) >= int64(r.capacity) {
		r.rotate(g, now)
	}
}

// memoryBytes is the size of the live generations' bit arrays.
func (r *rotatingBloom) memoryBytes() int {
	g := r.gens.Load()
	n := len(g.cur.words) * 8
	if g.prev != nil {
		n += len(g.prev.words) * 8
	}
	return n
}
