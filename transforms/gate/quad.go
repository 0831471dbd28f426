package gate

import (
	"encoding/binary"
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
// often; here one vector compare (quadMasks) gives where the digits, dots
// and quotes are, and the fields' widths and values are tested on those
// masks without a branch per field.
func quadLeaf(b *[quadRoom]byte, zero int) int {
	if b[0] != '"' {
		return 0
	}
	m := quadMasks(unsafe.Pointer(&b[1])) // bit i: b[1+i]
	dots, quotes, digits, zeros := uint32(uint16(m)), uint32(uint16(m>>16)), uint32(uint16(m>>32)), uint32(m>>48)
	// The body runs to the first quote. (Sixteen bytes without one are
	// too many for four fields, which the widths below find.)
	q := bits.TrailingZeros32(quotes | 1<<16)
	body := uint32(1)<<q - 1
	bad := (digits|dots)&body ^ body // a byte that is neither digit nor dot
	// The three dots, and no fourth.
	d := dots & body
	p1 := bits.TrailingZeros32(d)
	d &= d - 1
	p2 := bits.TrailingZeros32(d)
	d &= d - 1
	p3 := bits.TrailingZeros32(d)
	d &= d - 1
	bad |= d
	// Fields of one to three digits (a missing dot gives a width out of
	// range: TrailingZeros32(0) is 32).
	s2, s3, s4 := p1+1, p2+1, p3+1
	l1, l2, l3, l4 := p1, p2-s2, p3-s3, q-s4
	bad |= uint32(((l1-1)|(3-l1)|(l2-1)|(3-l2)|(l3-1)|(3-l3)|(l4-1)|(3-l4))>>31) & 1
	// No leading zero: a '0' that starts a field ends it.
	starts := (1 | (dots&body)<<1) & body
	bad |= zeros & starts & (digits >> 1)
	// A field of three digits is at most 255: its bytes, big-endian, at
	// most "255". (Starts past 12 belong to records already bad; they are
	// clamped so that the loads stay in b.)
	p := unsafe.Pointer(&b[1])
	bad |= over255(p, 0, l1) | over255(p, min(s2, 12), l2) | over255(p, min(s3, 12), l3) | over255(p, min(s4, 12), l4)
	// The fields the leaf needs to be 0: a '0' that starts a field ends it
	// (above), so such a field is 0 when it starts with '0'.
	var need uint32
	switch zero {
	case 4:
		need = 1 | 1<<(s2&31) | 1<<(s3&31) | 1<<(s4&31)
	case 3:
		need = 1<<(s2&31) | 1<<(s3&31) | 1<<(s4&31)
	case 2:
		need = 1<<(s3&31) | 1<<(s4&31)
	case 1:
		need = 1 << (s4 & 31)
	}
	bad |= need &^ zeros
	if bad != 0 {
		return 0
	}
	return q + 2
}

// over255 is 1 when the field of width l at p[s:] has three digits above
// "255", compared as big-endian bytes; 0 otherwise. s is at most 12, so
// the four bytes read lie in quadLeaf's 16.
func over255(p unsafe.Pointer, s, l int) uint32 {
	v := int(binary.BigEndian.Uint32((*[4]byte)(unsafe.Add(p, s))[:]) >> 8)
	three := ((l ^ 3) - 1) >> 63 // -1 when l is 3
	return uint32((0x323535-v)>>63&three) & 1
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

// quadMasksGo is quadMasks byte by byte: the other architectures' form,
// and the tests' reference for the vector one.
func quadMasksGo(p unsafe.Pointer) uint64 {
	var m uint64
	for i := range 16 {
		c := *(*byte)(unsafe.Add(p, i))
		if c == '.' {
			m |= 1 << i
		}
		if c == '"' {
			m |= 1 << (16 + i)
		}
		if c-'0' <= 9 {
			m |= 1 << (32 + i)
		}
		if c == '0' {
			m |= 1 << (48 + i)
		}
	}
	return m
}
