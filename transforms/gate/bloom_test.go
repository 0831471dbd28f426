package gate

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func key(i uint64) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], i)
	return xxhash.Sum64(b[:])
}

// TestBloomFalsePositiveRate fills a filter to capacity and measures its
// false-positive rate on values never added.
func TestBloomFalsePositiveRate(t *testing.T) {
	for _, tc := range []struct {
		n int
		p float64
	}{{10000, 0.01}, {100000, 0.001}, {200000, 1e-4}} {
		m, k := bloomSize(tc.n, tc.p)
		b := newBloom(m, k, time.Time{})
		for i := range uint64(tc.n) {
			b.add(key(i))
		}
		for i := range uint64(tc.n) {
			if !b.has(key(i)) {
				t.Fatalf("false negative for %d", i)
			}
		}
		const probes = 2_000_000
		fp := 0
		for i := range uint64(probes) {
			if b.has(key(1<<40 + i)) {
				fp++
			}
		}
		rate := float64(fp) / probes
		t.Logf("n=%d p=%g: m=%d bits (%.1f/value), k=%d, measured %.3g", tc.n, tc.p, b.m, float64(b.m)/float64(tc.n), b.k, rate)
		if rate > 1.5*tc.p || rate < tc.p/3 {
			t.Errorf("n=%d: measured false-positive rate %.3g, configured %g", tc.n, rate, tc.p)
		}
	}
}

// TestBloomRotation drives the clock: values are remembered for one to two
// periods, at most two generations are live, and a generation that reaches
// its capacity rotates early.
func TestBloomRotation(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	r := newRotatingBloom(1000, 1e-4, time.Hour, func() time.Time { return now })
	size := r.memoryBytes()
	add := func(h uint64) { r.add(r.current(now), h, now) }
	add(key(1))
	now = now.Add(59 * time.Minute)
	add(key(2))
	if !r.has(key(1)) || !r.has(key(2)) {
		t.Fatal("lost a value within the period")
	}
	now = now.Add(2 * time.Minute) // rotation: 1 and 2 move to the previous generation
	add(key(3))
	if !r.has(key(1)) || !r.has(key(3)) {
		t.Fatal("lost a value one period on")
	}
	now = now.Add(time.Hour) // the generation holding 1 and 2 is dropped
	add(key(4))
	if r.has(key(1)) || r.has(key(2)) {
		t.Error("a value outlived two periods")
	}
	if !r.has(key(3)) || !r.has(key(4)) {
		t.Error("lost a recent value")
	}
	for i := range uint64(10_000) { // ten times capacity within one period
		add(key(100 + i))
	}
	if got := r.memoryBytes(); got > 2*size {
		t.Errorf("memory %d bytes, bound %d", got, 2*size)
	}
	g := r.gens.Load()
	if g.seq < 10 || g.cur.added.Load() >= 1000 {
		t.Errorf("capacity rotation: seq %d, current holds %d", g.seq, g.cur.added.Load())
	}
	if !r.has(key(100+9_999)) || r.has(key(100)) {
		t.Error("after capacity rotations the newest value must be kept, the oldest dropped")
	}
}

// blockedFPDirect is blockedFP's sum with every term computed from its
// closed form: the reference for the recurrences blockedFP uses.
func blockedFPDirect(blocks uint64, n, k int) float64 {
	lam := float64(n) / float64(blocks)
	sd := math.Sqrt(lam)
	lo, hi := int(max(0, lam-12*sd-10)), int(lam+12*sd+20)
	sum := 0.0
	for j := lo; j <= hi; j++ {
		lg, _ := math.Lgamma(float64(j + 1))
		f := -math.Expm1(float64(k*j) * math.Log1p(-1.0/blockBits))
		if f > 0 {
			sum += math.Exp(float64(j)*math.Log(lam) - lam - lg + float64(k)*math.Log(f))
		}
	}
	return sum
}

// TestBloomSizeIsFewestBlocks: blockedFP agrees with the closed-form sum,
// and bloomSize's filter meets the rate where one block fewer would not.
func TestBloomSizeIsFewestBlocks(t *testing.T) {
	for _, tc := range []struct {
		n int
		p float64
	}{{100, 0.01}, {16000, 1e-6}, {1 << 20, 1e-6}, {1 << 20, 1e-9}} {
		m, k := bloomSize(tc.n, tc.p)
		blocks := m / blockBits
		for _, b := range []uint64{blocks - 1, blocks, blocks + 1} {
			got, want := blockedFP(b, tc.n, k), blockedFPDirect(b, tc.n, k)
			if math.Abs(got-want) > 1e-9*want {
				t.Errorf("n=%d, %d blocks, k=%d: blockedFP %g, closed form %g", tc.n, b, k, got, want)
			}
		}
		if blockedFP(blocks, tc.n, k) > tc.p || blockedFP(blocks-1, tc.n, k) <= tc.p {
			t.Errorf("n=%d p=%g: %d blocks with k=%d is not the fewest meeting the rate", tc.n, tc.p, blocks, k)
		}
	}
}
