package gate

import (
	"math/bits"
	"unsafe"
)

// quadLeaf is quadAt with an address leaf's check, for the leaves whose
// check needs no arithmetic on the address: zero is how many of its last
// fields must be 0 (ip_truncate to 24 bits: 1; to 32 bits, or a prefix-
// preserving pseudonym: none). It returns the length of the quoted dotted
// quad at b[0], quotes included, when quadAt would read one there and the
// leaf would accept it, and 0 otherwise (the caller then decides the
// slow way). quadAt takes a branch per byte, and the widths of an
// address's fields change from record to record, so its branches miss
// often; here byte compares give masks of where the dots, quotes, digits
// and the digits that matter for 255 are, and every rule is a test on
// those masks, without a branch or a load per field. quadLeafGo is the
// rules in Go; on amd64, quad_amd64.s runs them with SSE2 in one call.
func quadLeafGo(b *[quadRoom]byte, zero int) int {
	if b[0] != '"' {
		return 0
	}
	lo, hi := quadMasksGo(unsafe.Pointer(&b[1])) // bit i: b[1+i]
	dots, quotes, digits, zeros := uint32(uint16(lo)), uint32(uint16(lo>>16)), uint32(uint16(lo>>32)), uint32(lo>>48)
	ge3, two, ge6, five := uint32(uint16(hi)), uint32(uint16(hi>>16)), uint32(uint16(hi>>32)), uint32(hi>>48)
	// The body runs to the first quote. (Sixteen bytes without one are
	// too many for four fields of at most three digits, which the tests
	// below find.)
	q := uint(bits.TrailingZeros32(quotes | 1<<16))
	body := uint32(1)<<q - 1
	d, g := dots&body, digits&body
	bad := (d | g) ^ body // a byte that is neither digit nor dot
	// Three dots, none first or last, no two together: four fields of
	// one digit or more; and no four digits in a row: at most three.
	bad |= uint32(bits.OnesCount32(d) ^ 3)
	bad |= d & (1 | 1<<((q-1)&31) | d>>1)
	bad |= g & (g >> 1) & (g >> 2) & (g >> 3)
	// No leading zero: a '0' that starts a field ends it.
	starts := (1 | d<<1) & body
	bad |= zeros & starts & (g >> 1)
	// A field of three digits is at most 255: it starts with '1' or '2',
	// and after a '2' come at most "55".
	three := starts & (g >> 1) & (g >> 2)
	bad |= three & (ge3 | two&(ge6>>1|(five>>1)&(ge6>>2)))
	// The fields the leaf needs to be 0, the last zero of the four: a
	// '0' that starts a field ends it (above), so such a field is 0 when
	// it starts with '0'.
	var need uint32
	switch zero {
	case 1: // the last start
		need = 1 << ((bits.Len32(starts) - 1) & 31)
	case 2: // all but the first two
		need = starts & (starts - 1)
		need &= need - 1
	case 3: // all but the first
		need = starts & (starts - 1)
	case 4:
		need = starts
	}
	bad |= need &^ zeros
	if bad != 0 {
		return 0
	}
	return int(q) + 2
}

// quadZeros is how many trailing fields of a dotted quad l's check needs
// to be 0 (quadLeaf), or -1 when the check needs the address's value
// (a truncation that is not a multiple of 8 bits): quadAt then.
func quadZeros(l *gleaf) int {
	switch {
	case l.kind == kindIPPrefix || l.kind == kindIPTruncate && l.v4 == 32:
		return 0
	case l.kind == kindIPTruncate && 0 <= l.v4 && l.v4 < 32 && l.v4%8 == 0:
		return (32 - l.v4) / 8
	}
	return -1
}

// quadMasksGo returns, for the 16 bytes at p, a bit per byte. lo: bits 0-15
// mark the dots, 16-31 the quotes, 32-47 the digits and 48-63 the '0's;
// hi: bits 0-15 mark '3'-'9', 16-31 the '2's, 32-47 '6'-'9' and 48-63
// the '5's.
func quadMasksGo(p unsafe.Pointer) (lo, hi uint64) {
	for i := range 16 {
		c, bit := *(*byte)(unsafe.Add(p, i)), uint64(1)<<i
		if c == '.' {
			lo |= bit
		}
		if c == '"' {
			lo |= bit << 16
		}
		if '0' <= c && c <= '9' {
			lo |= bit << 32
		}
		if c == '0' {
			lo |= bit << 48
		}
		if '3' <= c && c <= '9' {
			hi |= bit
		}
		if c == '2' {
			hi |= bit << 16
		}
		if '6' <= c && c <= '9' {
			hi |= bit << 32
		}
		if c == '5' {
			hi |= bit << 48
		}
	}
	return lo, hi
}
