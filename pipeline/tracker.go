package pipeline

import (
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
)

// PartitionTracker tracks the records of one partition from consumption
// until every output derived from them is acknowledged, and says which
// offset is safe to commit: the lowest offset that still has an
// unacknowledged output, or one past the last record when none has.
// Acknowledgements may arrive in any order. Safe for concurrent use.
type PartitionTracker struct {
	mu      sync.Mutex
	entries []trackEntry // ascending offsets; entries[head] is the oldest record not yet released
	head    int
	last    int64 // last added offset, -1 before the first
	pending int   // records with unacknowledged outputs
	changed chan struct{}
}

type trackEntry struct {
	off     int64
	pending int32
}

// NewPartitionTracker returns an empty tracker.
func NewPartitionTracker() *PartitionTracker {
	return &PartitionTracker{last: -1, changed: make(chan struct{}, 1)}
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
	if t.head < len(t.entries) {
		return t.entries[t.head].off
	}
	if t.last < 0 {
		return -1
	}
	return t.last + 1
}

// Pending returns the number of records with unacknowledged outputs.
func (t *PartitionTracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// Changed receives (coalesced) when Committable may have advanced.
func (t *PartitionTracker) Changed() <-chan struct{} { return t.changed }
