package kanon

import (
	"syscall"
	"unsafe"
)

// hugeSlice is an experiment only: n elements of pointer-free T in
// anonymous memory advised for transparent huge pages (never freed).
func hugeSlice[T any](n int) []T {
	var z T
	size := n * int(unsafe.Sizeof(z))
	size = (size + (2<<20 - 1)) &^ (2<<20 - 1)
	b, err := syscall.Mmap(-1, 0, size+2<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		panic(err)
	}
	p := uintptr(unsafe.Pointer(&b[0]))
	off := int((p+(2<<20-1))&^(2<<20-1) - p)
	b = b[off : off+size]
	if err := syscall.Madvise(b, 14); err != nil { // MADV_HUGEPAGE
		panic(err)
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), size/int(unsafe.Sizeof(z)))[:0]
}
