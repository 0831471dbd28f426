package gate

import "unsafe"

// quadMasks returns, for the 16 bytes at p, a bit per byte. lo: bits 0-15
// mark the dots, 16-31 the quotes, 32-47 the digits and 48-63 the '0's;
// hi: bits 0-15 mark '3'-'9', 16-31 the '2's, 32-47 '6'-'9' and 48-63
// the '5's (quad_amd64.s; SSE2, which every amd64 CPU has).
//
//go:noescape
func quadMasks(p unsafe.Pointer) (lo, hi uint64)
