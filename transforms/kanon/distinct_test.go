package kanon

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDistinctAddMerge: the entity sketch holds exactly the m smallest
// distinct hashes of everything added or merged into it, however the
// hashes arrive (one by one, small sketches, large ones, repeats), so
// "at least k entities" is exact below m.
func TestDistinctAddMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2))
	for round := range 2000 {
		m := 1 + r.IntN(70)
		var d distinct
		want := map[uint64]bool{}
		var scratch []uint64
		for range r.IntN(8) {
			var o distinct
			for range []int{0, 1, 2, 3, 5, 12, 80}[r.IntN(7)] {
				x := uint64(r.IntN(200)) // small range: repeats across sketches
				o.add(x, m)
				want[x] = true
			}
			if r.IntN(2) == 0 {
				for _, x := range o.h {
					d.add(x, m)
				}
			} else {
				scratch = d.merge(&o, m, scratch)
			}
		}
		all := make([]uint64, 0, len(want))
		for x := range want {
			all = append(all, x)
		}
		slices.Sort(all)
		all = all[:min(m, len(all))]
		if !slices.Equal(d.h, all) {
			t.Fatalf("round %d, m=%d: sketch %v, want the %d smallest %v", round, m, d.h, m, all)
		}
	}
}
