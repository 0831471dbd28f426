package gate

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

var haveAVX2 = cpu.X86.HasAVX2

// fitsAVX2 reports whether the 32 bytes at p+c.off fit c, for each of the
// n chunks from c on (segment_amd64.s).
//
//go:noescape
func fitsAVX2(p unsafe.Pointer, c *rangeChunk, n int) bool
