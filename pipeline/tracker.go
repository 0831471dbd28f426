package pipeline

import (
	"container/heap"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Tracker errors.
var (
	// ErrOffsetOrder: Add was called with an offset not above the last one.
	ErrOffsetOrder = errors.New("offset not above the previous one")
	// ErrUnknownOffset: Ack for an offset with no outstanding output.
	ErrUnknownOffset = errors.New("no outstanding output at offset")
	// ErrUnknownHold: Unhold for an offset with no hold.
	ErrUnknownHold = errors.New("no hold at offset")
)

// PartitionTracker tracks the records of one partition from consumption
// until every output derived from them is acknowledged, and says which
// offset is safe to commit: the lowest offset that still has an
// unacknowledged output, or one past the last record when none has.
// Acknowledgements may arrive in any order. Safe for concurrent use.
//
// Records held by a k-anonymity stage are decided later, and one output
// (an aggregate) may decide many of them. Three more bounds keep the
// committable offset below them:
//
//   - SetFloor: the lowest offset a stage still holds undecided;
//   - Hold/Unhold: an output decided by a stage, in flight, held at the
//     lowest offset it decides;
//   - Pin: an offset the claim gave up on (a decided output it could not
//     produce); nothing at or above it is committed for the tracker's life.
type PartitionTracker struct {
	mu      sync.Mutex
	entries []trackEntry // ascending offsets; entries[head] is the oldest record not yet released
	head    int
	last    int64 // last added offset, -1 before the first
	pending int   // records with unacknowledged outputs
	changed chan struct{}

	floor int64         // lowest offset held by a stage, -1 when none
	pin   int64         // -1 when none
	holds map[int64]int // in-flight stage outputs by the lowest offset they decide
	hmin  offsetHeap    // keys of holds, lazily deleted
	nhold int           // sum of holds
}

type trackEntry struct {
	off     int64
	pending int32
}

// NewPartitionTracker returns an empty tracker.
func NewPartitionTracker() *PartitionTracker {
	return &PartitionTracker{last: -1, floor: -1, pin: -1, holds: map[int64]int{}, changed: make(chan struct{}, 1)}
}

// Add registers the record at off with the number of outputs derived from
// it (0 for a record that produced nothing). Offsets must ascend; gaps
// are fine.
func (t *PartitionTracker) Add(off int64, outputs int) error {
	if outputs < 0 {
		return fmt.Errorf("adding offset %d: negative output count %d", off, outputs)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if off <= t.last {
		return fmt.Errorf("adding offset %d after %d: %w", off, t.last, ErrOffsetOrder)
	}
	t.last = off
	if outputs == 0 && t.head == len(t.entries) {
		t.notify()
		return nil // nothing outstanding before it: committable at once
	}
	t.entries = append(t.entries, trackEntry{off: off, pending: int32(outputs)})
	if outputs > 0 {
		t.pending++
	}
	return nil
}

// Ack acknowledges one output of the record at off. It reports whether
// that was the record's last outstanding output.
func (t *PartitionTracker) Ack(off int64) (done bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.entries[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].off >= off })
	if i == len(live) || live[i].off != off || live[i].pending == 0 {
		return false, fmt.Errorf("acknowledging offset %d: %w", off, ErrUnknownOffset)
	}
	live[i].pending--
	if live[i].pending > 0 {
		return false, nil
	}
	t.pending--
	if i == 0 {
		for t.head < len(t.entries) && t.entries[t.head].pending == 0 {
			t.head++
		}
		if t.head == len(t.entries) {
			t.entries, t.head = t.entries[:0], 0
		} else if t.head > 1024 && t.head > len(t.entries)/2 {
			n := copy(t.entries, t.entries[t.head:])
			t.entries, t.head = t.entries[:n], 0
		}
		t.notify()
	}
	return true, nil
}

func (t *PartitionTracker) notify() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Committable returns the offset to commit (the next offset to consume),
// or -1 before any record was added.
func (t *PartitionTracker) Committable() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var off int64
	switch {
	case t.head < len(t.entries):
		off = t.entries[t.head].off
	case t.last < 0:
		return -1
	default:
		off = t.last + 1
	}
	for _, b := range [...]int64{t.floor, t.pin, t.minHold()} {
		if b >= 0 && b < off {
			off = b
		}
	}
	return off
}

// Pending returns the number of records with unacknowledged outputs plus
// the number of held stage outputs in flight.
func (t *PartitionTracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending + t.nhold
}

// SetFloor sets the lowest offset a stage holds undecided (-1: none).
// Register the holds of what the stage decided (Hold) before raising it.
func (t *PartitionTracker) SetFloor(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off < 0 {
		off = -1
	}
	if off != t.floor {
		t.floor = off
		t.notify()
	}
}

// Hold keeps the committable offset at or below off until Unhold(off):
// off is the lowest offset an in-flight stage output decides.
func (t *PartitionTracker) Hold(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holds[off] == 0 {
		heap.Push(&t.hmin, off)
	}
	t.holds[off]++
	t.nhold++
}

// Unhold releases one Hold(off).
func (t *PartitionTracker) Unhold(off int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.holds[off]
	if n == 0 {
		return fmt.Errorf("releasing hold at offset %d: %w", off, ErrUnknownHold)
	}
	if n == 1 {
		delete(t.holds, off)
	} else {
		t.holds[off] = n - 1
	}
	t.nhold--
	t.notify()
	return nil
}

// Pin keeps the committable offset at or below off for the tracker's life.
func (t *PartitionTracker) Pin(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pin < 0 || off < t.pin {
		t.pin = off
	}
}

// minHold returns the lowest held offset, or -1. t.mu is held.
func (t *PartitionTracker) minHold() int64 {
	for len(t.hmin) > 0 {
		if off := t.hmin[0]; t.holds[off] > 0 {
			return off
		}
		heap.Pop(&t.hmin)
	}
	return -1
}

// offsetHeap is a min-heap of offsets.
type offsetHeap []int64

func (h offsetHeap) Len() int           { return len(h) }
func (h offsetHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h offsetHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *offsetHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *offsetHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Changed receives (coalesced) when Committable may have advanced.
func (t *PartitionTracker) Changed() <-chan struct{} { return t.changed }
