package jsonscan

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// The position-based fast paths. They take the document and an offset and
// return the offset after what they read, so a caller's loop can keep both
// in registers instead of going through a Scanner per token. They accept
// exactly what the Scanner accepts and never report why something is
// malformed: on failure the caller hands the same offset to the Scanner
// (Seek, then Skip or String), which finds the error and its offset.

// Data returns the document s reads.
func (s *Scanner) Data() []byte { return s.data }

// Depth returns how many objects and arrays enclose the position.
func (s *Scanner) Depth() int { return s.depth }

// Seek moves s to offset p of its document, at the same depth; p must be
// where a token may start (as returned by the fast paths).
func (s *Scanner) Seek(p int) { s.pos = p }

// Close ends the object or array s is in at offset p, the byte after its
// closing bracket (which the caller has read).
func (s *Scanner) Close(p int) { s.pos, s.depth = p, s.depth-1 }

// SkipWS returns the offset of the first byte at or after p that is not
// JSON whitespace.
func SkipWS(d []byte, p int) int {
	for p < len(d) {
		switch d[p] {
		case ' ', '\t', '\n', '\r':
			p++
		default:
			return p
		}
	}
	return p
}

// PlainString reads a string at d[p] that holds no escapes, control bytes
// or non-ASCII (the common case) and returns its body and the offset after
// its closing quote; ok is false for anything else (the Scanner decides).
func PlainString(d []byte, p int) (body []byte, end int, ok bool) {
	if p < len(d) && d[p] == '"' {
		if i := plainRun(d, p+1); i < len(d) && d[i] == '"' {
			return d[p+1 : i], i + 1, true
		}
	}
	return nil, p, false
}

// PlainKey reads an object key at d[p] as PlainString does, and the colon
// directly after it; end is the offset after the colon.
func PlainKey(d []byte, p int) (key []byte, end int, ok bool) {
	if p < len(d) && d[p] == '"' {
		if i := plainRun(d, p+1); i+1 < len(d) && d[i] == '"' && d[i+1] == ':' {
			return d[p+1 : i], i + 2, true
		}
	}
	return nil, p, false
}

// SkipValue validates the value at d[p] (after optional whitespace) for a
// Scanner at the given depth and returns where it starts and ends. ok is
// false when the value is malformed, truncated or too deep; Scanner.Skip
// from p then reports the error. It does not recurse: nesting is kept in a
// bit stack, one bit per level (object or array).
func SkipValue(d []byte, p, depth int) (start, end int, ok bool) {
	if p < len(d) && d[p] <= ' ' {
		p = SkipWS(d, p)
	}
	start = p
	var stack uint64 // bit 0: the innermost open container is an object
	open := 0
	for {
		// A value at p (whitespace already skipped).
		if p >= len(d) {
			return 0, 0, false
		}
		switch c := d[p]; {
		case c == '"':
			if p = stringEnd(d, p+1); p < 0 {
				return 0, 0, false
			}
		case c == '{' || c == '[':
			if depth+open+1 > MaxDepth {
				return 0, 0, false
			}
			p++
			if p < len(d) && d[p] <= ' ' {
				p = SkipWS(d, p)
			}
			if p >= len(d) {
				return 0, 0, false
			}
			if c == '{' {
				if d[p] == '}' {
					p++
					break
				}
				if p = keyEnd(d, p); p < 0 {
					return 0, 0, false
				}
				stack = stack<<1 | 1
			} else {
				if d[p] == ']' {
					p++
					break
				}
				stack <<= 1
			}
			open++
			if p < len(d) && d[p] <= ' ' {
				p = SkipWS(d, p)
			}
			continue
		case c == '-' || (c >= '0' && c <= '9'):
			if p = numberEnd(d, p); p < 0 {
				return 0, 0, false
			}
		case c == 't':
			if len(d)-p < 4 || binary.LittleEndian.Uint32(d[p:]) != 't'|'r'<<8|'u'<<16|'e'<<24 {
				return 0, 0, false
			}
			p += 4
		case c == 'f':
			if len(d)-p < 5 || binary.LittleEndian.Uint32(d[p+1:]) != 'a'|'l'<<8|'s'<<16|'e'<<24 {
				return 0, 0, false
			}
			p += 5
		case c == 'n':
			if len(d)-p < 4 || binary.LittleEndian.Uint32(d[p:]) != 'n'|'u'<<8|'l'<<16|'l'<<24 {
				return 0, 0, false
			}
			p += 4
		default:
			return 0, 0, false
		}
		// After a value: close containers until a comma leads to the next.
		for {
			if open == 0 {
				return start, p, true
			}
			if p < len(d) && d[p] <= ' ' {
				p = SkipWS(d, p)
			}
			if p >= len(d) {
				return 0, 0, false
			}
			c := d[p]
			if c == ',' {
				p++
				if p < len(d) && d[p] <= ' ' {
					p = SkipWS(d, p)
				}
				if stack&1 != 0 {
					if p = keyEnd(d, p); p < 0 {
						return 0, 0, false
					}
					if p < len(d) && d[p] <= ' ' {
						p = SkipWS(d, p)
					}
				}
				break
			}
			if c != ']'|byte(stack&1)<<5 { // ']' or '}'
				return 0, 0, false
			}
			p++
			stack >>= 1
			open--
		}
	}
}

// keyEnd reads a key and its colon at d[p]; -1 when malformed.
func keyEnd(d []byte, p int) int {
	if p >= len(d) || d[p] != '"' {
		return -1
	}
	if p = stringEnd(d, p+1); p < 0 {
		return -1
	}
	if p < len(d) && d[p] == ':' {
		return p + 1
	}
	p = SkipWS(d, p)
	if p < len(d) && d[p] == ':' {
		return p + 1
	}
	return -1
}

// stringEnd validates a string body from d[i] (after the opening quote) and
// returns the offset after the closing quote; -1 when malformed.
func stringEnd(d []byte, i int) int {
	for {
		i = plainRun(d, i)
		if i >= len(d) {
			return -1
		}
		switch c := d[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(d) {
				return -1
			}
			if e := d[i+1]; simpleEscape[e] {
				i += 2
			} else if e == 'u' {
				if i+6 > len(d) {
					return -1
				}
				for _, h := range d[i+2 : i+6] {
					if unhex(h) < 0 {
						return -1
					}
				}
				i += 6
			} else {
				return -1
			}
		case c < 0x20:
			return -1
		default: // non-ASCII
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				return -1
			}
			i += n
		}
	}
}

// simpleEscape marks the bytes that may follow a backslash on their own.
var simpleEscape = [256]bool{'"': true, '\\': true, '/': true, 'b': true, 'f': true, 'n': true, 'r': true, 't': true}

// NumberEnd returns the end of the JSON number at d[i] (the bytes
// Scanner.Number reads), or -1 when there is none.
func NumberEnd(d []byte, i int) int { return numberEnd(d, i) }

// IsSimpleEscape says whether c may follow a backslash on its own in a
// JSON string (the escapes other than \u).
func IsSimpleEscape(c byte) bool { return simpleEscape[c] }

// numberEnd reads a number at d[i] by the JSON grammar; -1 when malformed
// or when i is at the end of d.
func numberEnd(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	if d[i] == '-' {
		i++
		if i >= len(d) {
			return -1
		}
	}
	switch c := d[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < len(d) && d[i]-'0' < 10 {
			i++
		}
	default:
		return -1
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i]-'0' < 10 {
			i++
		}
		if i == j {
			return -1
		}
	}
	if i < len(d) && d[i]|0x20 == 'e' {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i]-'0' < 10 {
			i++
		}
		if i == j {
			return -1
		}
	}
	return i
}

// IndexAt is Index for the name d[p:p+n], reading the first eight bytes
// with one load when d holds them.
func (t *Names) IndexAt(d []byte, p, n int) int {
	if t == nil || p+8 > len(d) {
		return t.Index(d[p : p+n])
	}
	if len(t.names) == 0 {
		return -1
	}
	pre := binary.LittleEndian.Uint64(d[p:])
	if n < 8 {
		pre &= 1<<(8*uint(n)) - 1
	}
	mask := uint32(len(t.slots) - 1)
	for h := slot(pre, n, t.shift); ; h = (h + 1) & mask {
		k := t.slots[h]
		if k < 0 {
			return -1
		}
		if m := &t.names[k]; m.prefix == pre && len(m.text) == n && (n <= 8 || m.text[8:] == string(d[p+8:p+n])) {
			return int(k)
		}
	}
}

// ResetAt points s at data, at offset pos inside depth open containers, so
// a caller's position-based loop can hand one value to the Scanner.
func (s *Scanner) ResetAt(data []byte, pos, depth int) { s.data, s.pos, s.depth = data, pos, depth }

// ValueEnd validates the value that starts exactly at d[p] (no leading
// whitespace) for a Scanner at the given depth and returns the offset after
// it, or -1 when it is malformed, truncated or too deep (as SkipValue, whose
// fast paths for the common scalars it inlines).
func ValueEnd(d []byte, p, depth int) int {
	if p >= len(d) {
		return -1
	}
	switch c := d[p]; {
	case c == '"':
		i := plainRun(d, p+1)
		if i < len(d) && d[i] == '"' {
			return i + 1
		}
		return stringEnd(d, i)
	case c-'0' < 10:
		return digitsEnd(d, p)
	}
	_, end, ok := SkipValue(d, p, depth)
	if !ok {
		return -1
	}
	return end
}

// digitsEnd reads a number starting with a digit at d[p]. The usual case,
// an integer of at most seven digits followed by a byte that cannot
// continue a number, is found with one eight-byte load; anything else goes
// through numberEnd.
func digitsEnd(d []byte, p int) int {
	if p+8 > len(d) {
		return numberEnd(d, p)
	}
	n := DigitRun(binary.LittleEndian.Uint64(d[p:]))
	if n == 8 || (n > 1 && d[p] == '0') {
		return numberEnd(d, p)
	}
	if c := d[p+n]; c == '.' || c|0x20 == 'e' {
		return numberEnd(d, p)
	}
	return p + n
}

// The word-level pieces of the fast paths, small enough to be inlined into
// a caller's loop (a call there costs more than the work: Go's calling
// convention has no callee-saved registers, so every call spills the
// loop's state).

// StopMask flags (top bit of each byte) the bytes of x, eight bytes of a
// string body little-endian, that end a plain run: a control byte, '"',
// '\\' or non-ASCII. Only the lowest flag is exact: bytes below the first
// match borrow nothing, and a byte with its top bit clear is flagged by each
// term exactly when it matches, so the usual "&^ x" masks are not needed
// (the top bit of x flags non-ASCII by itself).
func StopMask(x uint64) uint64 {
	return ((x - lsb*0x20) | (x ^ lsb*'"' - lsb) | (x ^ lsb*'\\' - lsb) | x) & msb
}

// DigitRun returns how many of the eight bytes of x (little-endian) are
// ASCII digits before the first that is not; 8 when all are. A byte b is
// flagged when b-'0' wraps (below '0'), when b+0x46 reaches 0x80 (above
// '9') or when its own top bit is set; a digit neither borrows nor carries
// (b-'0' is 0 to 9, b+0x46 0x76 to 0x7f), so nothing crosses into the
// first non-digit and its flag, the lowest, is exact.
func DigitRun(x uint64) int {
	return bits.TrailingZeros64(((x-lsb*'0')|(x+lsb*0x46)|x)&msb) >> 3
}

// PlainRun returns the offset of the first byte at or after i that ends a
// plain run of a string body (see StopMask), or len(d).
func PlainRun(d []byte, i int) int { return plainRun(d, i) }

// StringEnd validates the rest of a string body from d[i] and returns the
// offset after its closing quote, or -1 when it is malformed or truncated.
func StringEnd(d []byte, i int) int { return stringEnd(d, i) }
