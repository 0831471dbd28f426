package gate

import "unsafe"

// quadMasks returns, for the 16 bytes at p, a bit per byte: bits 0-15
// mark the dots, 16-31 the quotes, 32-47 the digits and 48-63 the '0's
// (quad_amd64.s; SSE2, which every amd64 CPU has).
//
//go:noescape
func quadMasks(p unsafe.Pointer) uint64
