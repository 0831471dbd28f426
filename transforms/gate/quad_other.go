//go:build !amd64

package gate

import "unsafe"

func quadMasks(p unsafe.Pointer) (lo, hi uint64) { return quadMasksGo(p) }
