package jsonscan

import "encoding/binary"

// Names finds an object member's name among a fixed set, for matching keys
// against a compiled tree on the hot path: a small open-addressing table
// over the name's length and first eight bytes, so a lookup mostly compares
// two integers. At a few dozen names it beats a map with string keys and a
// scan over every name. Immutable after NewNames; safe for concurrent use.
type Names struct {
	names []name
	slots []int16 // index into names, -1 when empty; length a power of two
	shift uint8   // 64 - log2(len(slots))
}

type name struct {
	prefix uint64 // the first eight bytes, little-endian, zero-padded
	text   string
}

// NewNames indexes names; Index returns positions in this slice. At most
// 16,384 names.
func NewNames(names []string) *Names {
	size, bits := 4, 2
	for size < 2*len(names) {
		size, bits = size*2, bits+1
	}
	t := &Names{slots: make([]int16, size), shift: uint8(64 - bits)}
	for i := range t.slots {
		t.slots[i] = -1
	}
	for i, s := range names {
		pre := prefix([]byte(s))
		t.names = append(t.names, name{pre, s})
		h := slot(pre, len(s), t.shift)
		for t.slots[h] >= 0 {
			h = (h + 1) & uint32(size-1)
		}
		t.slots[h] = int16(i)
	}
	return t
}

// Index returns the position of n among the names, or -1.
func (t *Names) Index(n []byte) int {
	if t == nil || len(t.names) == 0 {
		return -1
	}
	pre := prefix(n)
	mask := uint32(len(t.slots) - 1)
	for h := slot(pre, len(n), t.shift); ; h = (h + 1) & mask {
		k := t.slots[h]
		if k < 0 {
			return -1
		}
		if m := &t.names[k]; m.prefix == pre && len(m.text) == len(n) && (len(n) <= 8 || m.text[8:] == string(n[8:])) {
			return int(k)
		}
	}
}

// prefix packs up to the first eight bytes of b, little-endian.
func prefix(b []byte) uint64 {
	if len(b) >= 8 {
		return binary.LittleEndian.Uint64(b)
	}
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x
}

func slot(prefix uint64, n int, shift uint8) uint32 {
	return uint32(((prefix ^ uint64(n)) * 0x9E3779B97F4A7C15) >> shift)
}
