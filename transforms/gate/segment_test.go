package gate

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/deident/deident/internal/gen"
)

// TestSegmentsCoverEveryByte: on the benchmark route, the timestamp with
// the event's class numbers after it and the four pseudonyms are taken as
// segments, and a segment tests every byte it spans: any literal byte
// changed, a hex digit made 'g', a timestamp or integer digit made 'x', or
// the first digit of a longer integer made '0' makes it not fit (and the
// record is then taken value by value), while the learnt record itself
// fits. Both tests agree: 32 bytes at a time (AVX2) and a word at a time.
func TestSegmentsCoverEveryByte(t *testing.T) {
	learntSegments(t, 5, 50, func(out []byte, c *Checker, segs []learntSeg) {
		sh, rec := &c.shapes[c.lastShape], c.rec.events
		var hexVals, times, numbers, joined int
		for _, ls := range segs {
			i, s, start := ls.ev, ls.s, ls.start
			if s.bridge != nil {
				joined++
				if b := s.bridge; sh.events[b.ev].path != "metadata.product.name" {
					t.Fatalf("event %d: a segment joined over %s, want the product's name", i, sh.events[b.ev].path)
				}
			}
			fits := func(m []byte) (bool, bool) {
				s.misses = 0 // (tick 0 tries it in any case)
				return fitsSegment(s, m, start, 0), segmentFitsWords(s, m, start)
			}
			if a, b := fits(out); !a || !b {
				t.Fatalf("event %d: the learnt record does not fit its own segment (%v, words %v)", i, a, b)
			}
			// Each byte's class, from the recorded values.
			bad, lead := make(map[int]byte), make(map[int]bool)
			for k := i; k < s.last; k++ {
				e := &sh.events[k]
				switch e.op {
				case opHex:
					hexVals++
					for b := rec[k].start + 1 + len(e.node.leaf.prefix); b < rec[k].end-1; b++ {
						bad[b] = 'g'
					}
				case opTime:
					times++
					for b := rec[k].start + 1; b < rec[k].end-1; b++ {
						if isDigit(out[b]) {
							bad[b] = 'x'
						}
					}
				case opNumber:
					numbers++
					for b := rec[k].start; b < rec[k].end; b++ {
						bad[b] = 'x'
					}
					if rec[k].end-rec[k].start > 1 {
						lead[rec[k].start] = true
					}
				default:
					if s.bridge == nil || k != s.bridge.ev {
						t.Fatalf("event %d (%s) of op %d in a segment", k, e.path, e.op)
					}
					// The bridged value: its learnt bytes, literal.
				}
			}
			for b := start; b < start+s.n; b++ {
				m := append([]byte(nil), out...)
				if v, ok := bad[b]; ok {
					m[b] = v
				} else {
					m[b] ^= 0x01
				}
				if a, w := fits(m); a || w {
					t.Fatalf("event %d: byte %d of the segment changed (%q to %q) and it still fits (%v, words %v)", i, b-start, out[b], m[b], a, w)
				}
				if lead[b] {
					m[b] = '0'
					if a, w := fits(m); a || w {
						t.Fatalf("event %d: an integer's first digit made 0 at byte %d and it still fits (%v, words %v)", i, b-start, a, w)
					}
				}
				// Another digit of the same class fits.
				if _, ok := bad[b]; ok && !lead[b] && isDigit(out[b]) {
					m[b] = '0' + (out[b]-'0'+1)%10
					if a, w := fits(m); !a || !w {
						t.Fatalf("event %d: digit %q at byte %d does not fit (%v, words %v)", i, m[b], b-start, a, w)
					}
				}
			}
		}
		// Twice over: the two segments, and the joined one.
		if hexVals != 8 || times != 2 || numbers != 10 || joined != 1 {
			t.Fatalf("segments took %d pseudonyms, %d timestamps and %d integers, %d joined, want the route's 4, 1 and 5 twice, 1 joined", hexVals, times, numbers, joined)
		}
	})
}

// TestFitsAVX2MatchesWords: the AVX2 test of a segment (range chunks)
// and the word test (range words) agree on every value of every byte of
// the benchmark route's segments, joined ones included.
func TestFitsAVX2MatchesWords(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2")
	}
	tested := 0
	learntSegments(t, 9, 10, func(out []byte, _ *Checker, segs []learntSeg) {
		for _, ls := range segs {
			i, s, start := ls.ev, ls.s, ls.start
			m := append([]byte(nil), out...)
			for b := start; b < start+s.n; b++ {
				for v := range 256 {
					m[b] = byte(v)
					s.misses = 0
					if avx, words := fitsSegment(s, m, start, 0), segmentFitsWords(s, m, start); avx != words {
						t.Fatalf("event %d: byte %d of the segment as %#x: AVX2 %v, words %v", i, b-start, v, avx, words)
					}
					tested++
				}
				m[b] = out[b]
			}
		}
	})
	if tested < 100000 {
		t.Fatalf("only %d byte values tested", tested)
	}
}

// learntSeg is a segment of a learnt shape: the event it starts at and
// its first byte in the output.
type learntSeg struct {
	ev    int
	s     *segment
	start int
}

// learntSegments applies the benchmark route to n records generated from
// seed, has a fresh Checker learn each output's shape, and calls f with the
// output, the Checker and the shape's segments, joined ones too. Every
// segment has AVX2 chunks where the machine has AVX2.
func learntSegments(t *testing.T, seed uint64, n int, f func(out []byte, c *Checker, segs []learntSeg)) {
	t.Helper()
	r := benchRoute(t, 0)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	gn := gen.New(gen.Options{Seed: seed})
	a := r.NewApplier()
	for range n {
		out, err := a.Apply(nil, gn.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		c := g.NewChecker() // a fresh Checker learns its shape from out
		if v := c.Check(out); !v.Pass() {
			t.Fatal(verdictString(v))
		}
		sh, rec := &c.shapes[c.lastShape], c.rec.events
		var segs []learntSeg
		for i := range sh.events {
			for _, k := range []int16{sh.events[i].seg, sh.events[i].join} {
				if k < 0 {
					continue
				}
				ls := learntSeg{ev: i, s: &sh.segs[k]}
				if i > 0 {
					ls.start = rec[i-1].end
				}
				if haveAVX2 && len(ls.s.chunks) == 0 {
					t.Fatalf("event %d: a segment of %d bytes without AVX2 chunks", i, ls.s.n)
				}
				segs = append(segs, ls)
			}
		}
		f(out, c, segs)
	}
}

// TestBenchShapesMatchFullPassMutated: on the benchmark route, whose
// segments hold a timestamp, integers and pseudonyms, a Checker with its
// shapes gives the full pass's verdict for outputs with bytes changed,
// inserted or deleted anywhere (digits for digits most often, so that
// integers change width or gain a leading zero), while the filter learns
// identifiers that may match pieces of the records.
func TestBenchShapesMatchFullPassMutated(t *testing.T) {
	for _, avx2 := range []bool{true, false} {
		if avx2 && !haveAVX2 {
			continue
		}
		t.Run(map[bool]string{true: "avx2", false: "words"}[avx2], func(t *testing.T) {
			defer func(v bool) { haveAVX2 = v }(haveAVX2)
			haveAVX2 = avx2 // segments learnt from now on test this way
			benchShapesMatchFullPassMutated(t)
		})
	}
}

func benchShapesMatchFullPassMutated(t *testing.T) {
	r := benchRoute(t, 1<<14)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	fast, full := g.NewChecker(), g.NewChecker()
	full.reference = true
	gn := gen.New(gen.Options{Seed: 7, Users: 50})
	a := r.NewApplier()
	rng := rand.New(rand.NewPCG(3, 4))
	idents := []string{"Sentinel", "detected", "2026-11-01T00", "443", "chrome", "01.054z", "1007"}
	fails := 0
	for i := range 20000 {
		in := gn.Append(nil)
		out, err := a.Apply(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		fast.Observe(in)
		if i%2000 == 1999 {
			fast.ObserveIdentifier(13, []byte(idents[rng.IntN(len(idents))])) // device.hostname's rule
		}
		m := append([]byte(nil), out...)
		for range rng.IntN(3) {
			k := rng.IntN(len(m))
			switch c := m[k]; {
			case isDigit(c) && rng.IntN(2) == 0:
				m[k] = byte('0' + rng.IntN(10))
			case rng.IntN(3) == 0:
				m = append(m[:k], m[k+1:]...)
			case rng.IntN(2) == 0:
				m = append(m[:k], append([]byte{"0123456789\"-.aZ"[rng.IntN(15)]}, m[k:]...)...)
			default:
				m[k] = byte(rng.IntN(128))
			}
		}
		want := verdictString(full.Check(m))
		if got := verdictString(fast.Check(m)); got != want {
			t.Fatalf("record %d %q: with shapes %s, in full %s", i, m, got, want)
		}
		if want != "" {
			fails++
		}
	}
	if fails < 1000 || fails > 15000 {
		t.Fatalf("%d of 20000 mutated records failed: the mutations do not exercise both verdicts", fails)
	}
}

// TestRangeChunkLayout: fitsAVX2 (segment_amd64.s) reads a chunk's fields
// at fixed offsets.
func TestRangeChunkLayout(t *testing.T) {
	var c rangeChunk
	got := [6]uintptr{unsafe.Offsetof(c.off), unsafe.Offsetof(c.lo1), unsafe.Offsetof(c.span1), unsafe.Offsetof(c.lo2), unsafe.Offsetof(c.span2), unsafe.Sizeof(c)}
	if want := [6]uintptr{0, 32, 64, 96, 128, 160}; got != want {
		t.Fatalf("rangeChunk offsets %v, want %v", got, want)
	}
}
