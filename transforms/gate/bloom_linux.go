package gate

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// populate asks the kernel to back a new filter's pages now, in one call.
// Left to the inserts, each page of the filter faults twice (a load maps
// the shared zero page, the first bit set copies it), and in a virtual
// machine a fault costs microseconds: in a fresh process, making a filter
// of the default capacity and inserting 55,000 values took 9.1 ms instead
// of 12.5 (benchmarks/RESULTS.md, issue 5), at every start and rotation.
// Kernels before 5.14 refuse MADV_POPULATE_WRITE (the error says so); the
// pages then fault in as before.
func populate(words []atomic.Uint64) error {
	if len(words) == 0 {
		return nil
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	if lo, hi := wholePages(b); hi > lo {
		return unix.Madvise(b[lo:hi], unix.MADV_POPULATE_WRITE)
	}
	return nil
}

// wholePages returns the bounds of the whole pages inside b.
func wholePages(b []byte) (lo, hi int) {
	page := uintptr(unix.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo = int((page - start%page) % page)
	hi = int((start+uintptr(len(b)))&^(page-1) - start)
	return lo, hi
}
