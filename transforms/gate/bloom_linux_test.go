package gate

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/deident/deident/internal/config"
)

// TestNewFilterIsResident: a new filter's pages are backed before its
// first insert (populate), so inserts take no page faults.
func TestNewFilterIsResident(t *testing.T) {
	if err := populate(make([]atomic.Uint64, 4096)); err != nil {
		t.Skipf("this kernel does not populate: %v", err)
	}
	m, k := bloomSize(config.DefaultBloomCapacity, config.DefaultBloomFPRate)
	b := newBloom(m, k, time.Now())
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&b.words[0])), len(b.words)*8)
	lo, hi := wholePages(mem)
	pages := (hi - lo) / unix.Getpagesize()
	if pages < 1000 {
		t.Fatalf("%d whole pages in a filter of %d bytes", pages, len(mem))
	}
	vec := make([]byte, pages)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[lo])), uintptr(hi-lo), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	missing := 0
	for _, v := range vec {
		if v&1 == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d pages of a new filter are not resident", missing, pages)
	}
}
