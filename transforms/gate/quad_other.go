//go:build !amd64

package gate

import "unsafe"

func quadMasks(p unsafe.Pointer) uint64 { return quadMasksGo(p) }
