package gate

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Blocked Bloom filter geometry: every value's probes fall in one block of
// 512 bits, one 64-byte cache line, so a lookup or an insert touches one
// line of a multi-megabyte array instead of k of them.
const (
	blockBits  = 512
	blockWords = blockBits / 64
	lineBytes  = 64
)

// bloom is a blocked Bloom filter over 64-bit xxhash values (Putze,
// Sanders and Singler, "Cache-, hash- and space-efficient Bloom filters"):
// the hash picks a block by a multiply-shift; a 64-bit finalizer of it
// seeds a linear congruential sequence whose top nine bits are the k bit
// positions inside the block. Bits are set and read atomically, so one
// filter is shared by every worker of a route.
type bloom struct {
	words  []atomic.Uint64 // blocks*blockWords, the first one cache-line aligned
	blocks uint64
	// summary is a small filter in front of the blocks, sized to stay in a
	// core's cache and indexed by prehash, which is much cheaper than
	// xxhash on short strings: each value sets three bits of one word of
	// it. A value whose summary bits are not all set is absent without being
	// hashed by xxhash or touching the blocks; while the generation holds
	// up to about a hundred thousand values that answers nearly every
	// negative lookup. (add and has, on hashes, leave it out; the Checker
	// uses insert and contains.)
	summary []atomic.Uint64
	sumMask uint64
	// sig is a smaller filter in front of the summary, 8 KiB, indexed
	// without hashing the value: one bit per (length, first byte, last
	// byte). Identifiers share few such triples (names end in digits,
	// addresses in a top-level domain), so most other tokens stop here.
	sig   [sigWords]atomic.Uint64
	m     uint64 // bits
	k     int    // probes
	added atomic.Int64
	start time.Time
}

// bloomSize returns the bits (a whole number of blocks) and probes of a
// blocked filter holding n values at false-positive rate p. The number of
// values in a block is Poisson with mean λ = n/blocks; a value not in the
// filter is a false positive when its k probes hit bits its block's values
// set: FP = Σ_j Pois(j; λ) (1 - (1-1/512)^(kj))^k. For each k the fewest
// blocks meeting p are found by bisection; the smallest filter wins. At
// p = 1e-6 that takes about 38.5 bits per value with k = 16, against 28.8
// for a classic filter: the price of one cache line per lookup.
func bloomSize(n int, p float64) (m uint64, k int) {
	// A blocked filter needs at least the bits of a classic one,
	// -n ln p / (ln 2)^2, so the search starts there.
	classic := math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2))
	floor := max(1, uint64(classic)/blockBits)
	best, bestK := uint64(math.MaxUint64), 1
	for k := 1; k <= 32; k++ {
		lo, hi := floor, floor
		for blockedFP(hi, n, k) > p && hi < 1<<40 {
			lo, hi = hi, hi*2
		}
		for lo < hi {
			mid := lo + (hi-lo)/2
			if blockedFP(mid, n, k) <= p {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		if hi < best {
			best, bestK = hi, k
		}
	}
	return best * blockBits, bestK
}

// blockedFP is the false-positive rate of n values in the given number of
// blocks with k probes each. The Poisson weights and (1-1/512)^(kj) are
// carried from term to term by one multiplication each (a term used to
// cost a Lgamma, an Expm1, a Log and an Exp: 13 ms for a filter of the
// default capacity, at every start and rotation).
func blockedFP(blocks uint64, n, k int) float64 {
	lam := float64(n) / float64(blocks)
	if lam == 0 {
		return 0
	}
	sd := math.Sqrt(lam)
	lo, hi := int(max(0, lam-12*sd-10)), int(lam+12*sd+20)
	lg, _ := math.Lgamma(float64(lo + 1))
	pj := math.Exp(float64(lo)*math.Log(lam) - lam - lg)   // Pois(j; λ), j = lo
	r := math.Exp(float64(k) * math.Log1p(-1.0/blockBits)) // (1-1/512)^k
	rj := math.Pow(r, float64(lo))                         // (1-1/512)^(kj)
	sum := 0.0
	for j := lo; j <= hi; j++ {
		if f := 1 - rj; f > 0 {
			sum += pj * powInt(f, k)
		}
		pj *= lam / float64(j+1)
		rj *= r
	}
	return sum
}

// powInt is x to the power k >= 0, by squaring.
func powInt(x float64, k int) float64 {
	y := 1.0
	for ; k > 0; k >>= 1 {
		if k&1 != 0 {
			y *= x
		}
		x *= x
	}
	return y
}

// newBloom returns an empty filter of m bits (whole blocks) and k probes
// (bloomSize).
func newBloom(m uint64, k int, start time.Time) *bloom {
	blocks := m / blockBits
	// Over-allocate by one line and start at a line boundary, so no block
	// straddles two cache lines.
	raw := make([]atomic.Uint64, blocks*blockWords+lineBytes/8)
	off := 0
	if r := uintptr(unsafe.Pointer(&raw[0])) % lineBytes; r != 0 {
		off = int(lineBytes-r) / 8
	}
	words := raw[off : off+int(blocks*blockWords)]
	_ = populate(words) // an old kernel: the pages fault in as they are touched
	sum := uint64(1)
	for sum < min(m/32/64, maxSummaryWords) {
		sum *= 2
	}
	return &bloom{
		words: words, blocks: blocks, m: m, k: k, start: start,
		summary: make([]atomic.Uint64, sum), sumMask: sum - 1,
	}
}

// maxSummaryWords bounds a generation's summary at 64 KiB (a thirty-second
// of the blocks below that): small enough to stay in a core's L2 cache,
// large enough that about 0.1% of absent values get through to the blocks
// with 16,000 values in the generation (the benchmark route), 8% with
// 100,000; from a few hundred thousand on it lets nearly everything by.
const maxSummaryWords = 1 << 13

const sigWords = 1 << 10

// sigBit returns the word and bit of v's signature; v is not empty.
func sigBit(v []byte) (int, uint64) { return sigBitOf(len(v), v[0], v[len(v)-1]) }

// sigBitOf is sigBit of a value of length n with those first and last
// bytes.
func sigBitOf(n int, first, last byte) (int, uint64) {
	x := uint32(min(n, 255))<<16 | uint32(first)<<8 | uint32(last)
	x *= 0x9e3779b1
	return int(x >> 22), 1 << (x >> 16 & 63)
}

// summaryBits is the three bits a prehash p sets in its summary word.
func summaryBits(p uint64) uint64 { return 1<<(p>>46&63) | 1<<(p>>52&63) | 1<<(p>>58) }

// mayHave reports whether the summary lets a value with prehash p through.
func (b *bloom) mayHave(p uint64) bool {
	sb := summaryBits(p)
	return b.summary[p&b.sumMask].Load()&sb == sb
}

// form is a value as the filter keys it: its signature and its two
// hashes, computed once (formOf) so that inserting it needs no bytes.
type form struct {
	p, h   uint64 // prehash and xxhash
	sig    uint16 // signature word
	sigBit uint8  // and bit
}

// formOf returns the form of v (not empty).
func formOf(v []byte) form {
	i, bit := sigBit(v)
	return form{p: prehash(v), h: xxhash.Sum64(v), sig: uint16(i), sigBit: uint8(bits.TrailingZeros64(bit))}
}

// addForm inserts f and reports whether has or mayHave may have been
// false for it before, and whether its signature bit was new.
func (b *bloom) addForm(f form) (changed, sigNew bool) {
	if w, bit := &b.sig[f.sig], uint64(1)<<f.sigBit; w.Load()&bit == 0 {
		w.Or(bit)
		sigNew = true
	}
	changed = sigNew
	if w, sb := &b.summary[f.p&b.sumMask], summaryBits(f.p); w.Load()&sb != sb {
		w.Or(sb)
		changed = true
	}
	return b.add(f.h) || changed, sigNew
}

// prehash is a cheap hash of a short string for the summaries and the
// memo's slots (a wyhash-style chain of folded 64-bit multiplies, much
// cheaper than xxhash on strings of a few dozen bytes). It is never
// trusted alone: the summaries are only ever a filter in front of the
// blocks, and the memo compares the whole string.
func prehash(v []byte) uint64 { return prehashSeeded(v, 0x8bb84b93962eacc9) }

// prehashSeeded is prehash with a seed of its own: with a secret random
// seed nobody can pick values whose hashes collide.
func prehashSeeded(v []byte, seed uint64) uint64 {
	n := len(v)
	var a, z uint64
	switch {
	case n > 16:
		for i := 0; n-i > 16; i += 16 {
			hi, lo := bits.Mul64(binary.LittleEndian.Uint64(v[i:])^0x2d358dccaa6c78a5, binary.LittleEndian.Uint64(v[i+8:])^seed)
			seed = hi ^ lo
		}
		// The last sixteen bytes, overlapping what went before.
		a, z = binary.LittleEndian.Uint64(v[n-16:]), binary.LittleEndian.Uint64(v[n-8:])
	case n >= 8:
		a, z = binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint64(v[n-8:])
	case n >= 4:
		a, z = uint64(binary.LittleEndian.Uint32(v)), uint64(binary.LittleEndian.Uint32(v[n-4:]))
	case n > 0:
		a = uint64(v[0])<<16 | uint64(v[n>>1])<<8 | uint64(v[n-1])
	}
	hi, lo := bits.Mul64(a^0x2d358dccaa6c78a5, z^seed)
	hi, lo = bits.Mul64(hi^lo^uint64(n), 0x4b33a62ed433d4a3)
	return hi ^ lo
}

// LCG constants (Knuth's MMIX); the top bits of the sequence are the probes.
const (
	lcgMul = 6364136223846793005
	lcgInc = 1442695040888963407
)

// locate returns h's block and the seed of its probe sequence.
func (b *bloom) locate(h uint64) (*[blockWords]atomic.Uint64, uint64) {
	i, _ := bits.Mul64(h, b.blocks)
	blk := (*[blockWords]atomic.Uint64)(b.words[i*blockWords : i*blockWords+blockWords])
	x := h ^ h>>33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return blk, x
}

// has reports whether h's bits are all set (the summary is not consulted).
func (b *bloom) has(h uint64) bool {
	blk, x := b.locate(h)
	for range b.k {
		p := x >> (64 - 9)
		if blk[p>>6].Load()&(1<<(p&63)) == 0 {
			return false
		}
		x = x*lcgMul + lcgInc
	}
	return true
}

// add sets h's bits and reports whether any was newly set (h was absent).
// The probes are gathered per word of the block first, so a new value
// costs one atomic OR per word it touches rather than one per bit.
func (b *bloom) add(h uint64) bool {
	blk, x := b.locate(h)
	var m [blockWords]uint64
	for range b.k {
		p := x >> (64 - 9)
		m[p>>6] |= 1 << (p & 63)
		x = x*lcgMul + lcgInc
	}
	changed := false
	for i, bits := range m {
		if bits != 0 && blk[i].Load()&bits != bits {
			blk[i].Or(bits)
			changed = true
		}
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
	// m and k are every generation's size and probes: bloomSize runs
	// once (about 1 ms at the default capacity), not at every rotation.
	m     uint64
	k     int
	every time.Duration
	now   func() time.Time

	gens atomic.Pointer[generations]
	mu   sync.Mutex // serialises rotation

	_ [lineBytes]byte
	// version moves (after the bits are set) whenever an insert changes
	// what contains reports for some value: a lookup that was negative at
	// version v is negative while the version is still v. Rotation only
	// drops bits, so it leaves negatives negative and the version alone.
	// Versions start at 1.
	version atomic.Uint64
	// sigVersion moves (after the bit is set) whenever an insert sets a
	// signature bit that was clear in the current generation. A lookup
	// that stopped at its signature at sigVersion v stops there while the
	// sigVersion is still v, however the version moves: signatures are
	// few and soon all set (about 600 of 65,536 bits for gen's 5,000 users
	// and their hosts), while the version moves with every new value.
	sigVersion atomic.Uint64
	_          [lineBytes - 16]byte
}

func newRotatingBloom(capacity int, fpRate float64, every time.Duration, now func() time.Time) *rotatingBloom {
	m, k := bloomSize(capacity, fpRate)
	r := &rotatingBloom{capacity: capacity, m: m, k: k, every: every, now: now}
	r.gens.Store(&generations{cur: newBloom(m, k, now())})
	r.version.Store(1)
	r.sigVersion.Store(1)
	return r
}

// has reports whether the hash h is (probably) in either generation's
// blocks.
func (r *rotatingBloom) has(h uint64) bool {
	g := r.gens.Load()
	return g.cur.has(h) || (g.prev != nil && g.prev.has(h))
}

// contains reports whether the value v (not empty) is (probably) in either
// generation: the signatures and summaries first, then, for a generation
// whose summary lets v through, its blocks by v's xxhash.
func (r *rotatingBloom) contains(v []byte) bool {
	found, _ := r.lookup(v)
	return found
}

// lookup is contains, and also reports whether v's signature was set in
// either generation (the lookup went past it).
func (r *rotatingBloom) lookup(v []byte) (found, pastSig bool) {
	g := r.gens.Load()
	i, bit := sigBit(v)
	cur := g.cur.sig[i].Load()&bit != 0
	prev := g.prev != nil && g.prev.sig[i].Load()&bit != 0
	if !cur && !prev {
		return false, false
	}
	p := prehash(v)
	cur = cur && g.cur.mayHave(p)
	prev = prev && g.prev.mayHave(p)
	if !cur && !prev {
		return false, true
	}
	h := xxhash.Sum64(v)
	return (cur && g.cur.has(h)) || (prev && g.prev.has(h)), true
}

// insertAll puts forms into g's current generation, rotating early when
// the generation reaches its capacity, and moves the version whenever that
// changed what contains reports.
//
// It loads every form's block before setting any bit. A new value's block
// is nearly always a cache miss (a few megabytes, touched at random), and
// the atomic ORs that set its bits let no later load start before them,
// so inserting the forms one by one waits out each miss in turn; loaded
// first, the misses can overlap. The Checker inserts a record's
// identifiers together (Checker.flush). On the benchmark route, over the
// first 100,000 records (where most inserts are), `apply` with the gate
// took 1.36-1.40 times its gate-off time instead of 1.43-1.49 in five
// interleaved sets (with populate); queueing without the first loads, or
// populate alone, did not show it reliably (benchmarks/RESULTS.md, issue
// 5). A synthetic benchmark of inserts alone showed no difference either.
func (r *rotatingBloom) insertAll(g *generations, forms []form, now time.Time) {
	for i := range forms {
		blk, _ := g.cur.locate(forms[i].h)
		blk[0].Load() // (an atomic load is never dropped as unused)
	}
	for _, f := range forms {
		changed, sigNew := g.cur.addForm(f)
		if sigNew {
			r.sigVersion.Add(1)
		}
		if changed {
			r.version.Add(1)
			if g.cur.added.Add(1) >= int64(r.capacity) {
				g = r.rotate(g, now)
			}
		}
	}
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
	next := &generations{cur: newBloom(r.m, r.k, now), prev: g.cur, seq: g.seq + 1}
	r.gens.Store(next)
	return next
}

// add inserts h into g's current generation, rotating early when the
// generation reaches its capacity.
func (r *rotatingBloom) add(g *generations, h uint64, now time.Time) {
	if g.cur.add(h) {
		r.version.Add(1)
		if g.cur.added.Add(1) >= int64(r.capacity) {
			r.rotate(g, now)
		}
	}
}

// memoryBytes is the size of the live generations' bit arrays.
func (r *rotatingBloom) memoryBytes() int {
	g := r.gens.Load()
	n := g.cur.memoryBytes()
	if g.prev != nil {
		n += g.prev.memoryBytes()
	}
	return n
}

func (b *bloom) memoryBytes() int { return (len(b.words) + len(b.summary) + len(b.sig)) * 8 }
