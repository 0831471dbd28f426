package gate

import (
	"testing"

	"github.com/deident/deident/internal/gen"
)

// TestSegmentsCoverEveryByte: on the benchmark route, the timestamp and the
// four pseudonyms are taken as segments, and a segment tests every byte it
// spans: any literal byte changed, a hex digit made 'g', or a timestamp
// digit made 'x' makes it not fit (and the record is then taken value by
// value), while the learnt record itself fits.
func TestSegmentsCoverEveryByte(t *testing.T) {
	r := benchRoute(t, 0)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	gn := gen.New(gen.Options{Seed: 5})
	a := r.NewApplier()
	for range 50 {
		out, err := a.Apply(nil, gn.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		c := g.NewChecker() // a fresh Checker learns its shape from out
		if v := c.Check(out); !v.Pass() {
			t.Fatal(verdictString(v))
		}
		sh, rec := &c.shapes[c.lastShape], c.rec.events
		var hexVals, times int
		for i := range sh.events {
			if sh.events[i].seg < 0 {
				continue
			}
			s := &sh.segs[sh.events[i].seg]
			start := 0
			if i > 0 {
				start = rec[i-1].end
			}
			if !segmentFits(s, out, start) {
				t.Fatalf("event %d: the learnt record does not fit its own segment", i)
			}
			// Each byte's class, from the recorded values.
			bad := make(map[int]byte)
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
				default:
					t.Fatalf("event %d (%s) of op %d in a segment", k, e.path, e.op)
				}
			}
			for b := start; b < start+s.n; b++ {
				m := append([]byte(nil), out...)
				if v, ok := bad[b]; ok {
					m[b] = v
				} else {
					m[b] ^= 0x01
				}
				if segmentFits(s, m, start) {
					t.Fatalf("event %d: byte %d of the segment changed (%q to %q) and it still fits", i, b-start, out[b], m[b])
				}
			}
		}
		if hexVals != 4 || times != 1 {
			t.Fatalf("segments took %d pseudonyms and %d timestamps, want the route's 4 and 1", hexVals, times)
		}
	}
}
