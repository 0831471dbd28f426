//go:build !amd64

package gate

import "unsafe"

var haveAVX2 = false

func fitsAVX2(p unsafe.Pointer, c *rangeChunk, n int) bool { panic("gate: no AVX2") }
