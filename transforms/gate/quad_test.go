package gate

import (
	"math/rand/v2"
	"testing"
)

// TestQuadLeafMatchesQuadAt: quadLeaf and quadLeafGo (its Go form) accept
// exactly the quoted dotted quads that quadAt reads and whose last zero
// fields are 0 (what an ip_truncate leaf to 32-8*zero bits accepts), with
// the same length, for random strings over digits, dots, quotes and bytes
// one bit away from them, and for every zero count.
func TestQuadLeafMatchesQuadAt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const alphabet = "0000123456789...0125x\"-\xb0\xae\xa2/:"
	accepted := [5]int{}
	for range 400000 {
		b := randomQuadish(rng, alphabet)
		if rng.IntN(16) == 0 {
			b[0] = alphabet[rng.IntN(len(alphabet))]
		}
		a, want := quadAt(&b)
		for zero := range 5 {
			w := want
			if w > 0 && zero > 0 && a&(1<<(8*zero)-1) != 0 {
				w = 0
			}
			if got := quadLeaf(&b, zero); got != w {
				t.Fatalf("%q, %d zero fields: quadLeaf %d, quadAt and the leaf %d", b[:], zero, got, w)
			}
			if got := quadLeafGo(&b, zero); got != w {
				t.Fatalf("%q, %d zero fields: quadLeafGo %d, quadAt and the leaf %d", b[:], zero, got, w)
			}
			if w > 0 {
				accepted[zero]++
			}
		}
	}
	for zero, n := range accepted {
		if n < 1000 {
			t.Fatalf("only %d quads with %d zero fields accepted: the test checks little", n, zero)
		}
	}
}

// TestQuadLeafAnyBytes: on any bytes, mostly ones that mark masks (dots,
// quotes, digits, the digits that bound 255) or lie above 0x7f, quadLeaf
// and quadLeafGo agree.
func TestQuadLeafAnyBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200000 {
		var b [quadRoom]byte
		for i := range b {
			if rng.IntN(2) == 0 {
				b[i] = "0.\"9/:\xb0\xae\xa22356"[rng.IntN(13)]
			} else {
				b[i] = byte(rng.Uint32())
			}
		}
		if rng.IntN(2) == 0 {
			b[0] = '"'
		}
		for zero := range 5 {
			if got, want := quadLeaf(&b, zero), quadLeafGo(&b, zero); got != want {
				t.Fatalf("%q, %d zero fields: quadLeaf %d, quadLeafGo %d", b[:], zero, got, want)
			}
		}
	}
}

// TestQuadZeros: the zero counts quadLeaf is given for each IPv4 width.
func TestQuadZeros(t *testing.T) {
	for _, c := range []struct {
		l    gleaf
		want int
	}{
		{gleaf{kind: kindIPPrefix}, 0},
		{gleaf{kind: kindIPTruncate, v4: 32}, 0},
		{gleaf{kind: kindIPTruncate, v4: 24}, 1},
		{gleaf{kind: kindIPTruncate, v4: 16}, 2},
		{gleaf{kind: kindIPTruncate, v4: 8}, 3},
		{gleaf{kind: kindIPTruncate, v4: 0}, 4},
		{gleaf{kind: kindIPTruncate, v4: 20}, -1},
		{gleaf{kind: kindIPTruncate, v4: 33}, -1},
	} {
		if got := quadZeros(&c.l); got != c.want {
			t.Errorf("v4 %d kind %d: %d zero fields, want %d", c.l.v4, c.l.kind, got, c.want)
		}
	}
}

// randomQuadish returns a quote and a string over alphabet that is often
// a dotted quad: two times in three four fields of one to three digits,
// often 0, one byte changed one time in three; else one to sixteen bytes
// of alphabet. A quote closes it seven times in eight.
func randomQuadish(rng *rand.Rand, alphabet string) [quadRoom]byte {
	var b [quadRoom]byte
	b[0] = '"'
	n := 0
	if rng.IntN(3) > 0 {
		for f := range 4 {
			if f > 0 {
				n++
				b[n] = '.'
			}
			if rng.IntN(3) == 0 {
				n++
				b[n] = '0'
				continue
			}
			for range 1 + rng.IntN(3) {
				if n < 15 {
					n++
					b[n] = "0123456789"[rng.IntN(10)]
				}
			}
		}
		if rng.IntN(3) == 0 {
			b[1+rng.IntN(n)] = alphabet[rng.IntN(len(alphabet))]
		}
	} else {
		n = 1 + rng.IntN(16)
		for i := 1; i <= n && i < quadRoom; i++ {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
	}
	if n+1 < quadRoom && rng.IntN(8) > 0 {
		b[n+1] = '"'
	}
	return b
}
