package gate

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrFailClosed is wrapped by the *TripError a route's gate returns once
// its quarantine rate has passed max_quarantine_rate: the worker must stop
// publishing to the route and exit non-zero without committing further.
var ErrFailClosed = errors.New("quarantine rate over threshold; failing closed")

// TripError says which route tripped and by how much; it names no record.
type TripError struct {
	Route       string
	Quarantined uint64 // quarantined records in the window when it tripped
	Records     uint64 // records in the window when it tripped
	Max         float64
	Window      time.Duration
}

func (e *TripError) Error() string {
	return fmt.Sprintf("route %s: %d of %d records (%.2f%%) quarantined over the last %v, above max_quarantine_rate %.2f%%: %v",
		e.Route, e.Quarantined, e.Records, 100*float64(e.Quarantined)/float64(e.Records), e.Window, 100*e.Max, ErrFailClosed)
}

func (e *TripError) Unwrap() error { return ErrFailClosed }

const rateBuckets = 20

// passBatch is how many passing records the tracker counts between two
// reads of the clock (77 ns each in some VMs, more than the rest of Add).
const passBatch = 16

// RateTracker tracks a route's quarantine rate over a sliding window (in
// rateBuckets slots, so the window slides in steps of window/20) and trips
// once the rate passes max with at least minRecords records in the window.
// Once tripped it stays tripped. Safe for concurrent use.
//
// Passing records enter the window in batches: Add counts them and reads
// the clock only for every passBatch-th, which brings the batch into the
// window at that time. A quarantined record first brings in every passing
// record before it, so the rate it is judged by counts them all; and Rate
// does the same. So the window holds each record, but up to passBatch-1
// passing ones (per route) from a moment later than they were checked:
// they may leave the window late by as long as their batch took to fill.
type RateTracker struct {
	route      string
	max        float64
	minRecords uint64
	window     time.Duration
	slot       int64 // nanoseconds
	now        func() time.Time

	// pending counts passing records not yet in a bucket.
	pending atomic.Uint64
	trip    atomic.Pointer[TripError] // tripped, for Add's path without the lock

	mu      sync.Mutex
	buckets [rateBuckets]rateBucket
	tripped *TripError
}

// rateBucket counts the records of one slot of the window.
type rateBucket struct {
	idx  int64 // the slot: time / slot length
	n, q uint64
}

// NewRateTracker returns a tracker for route; now is the clock.
func NewRateTracker(route string, maxRate float64, window time.Duration, minRecords int, now func() time.Time) *RateTracker {
	slot := max(int64(window)/rateBuckets, 1)
	t := &RateTracker{route: route, max: maxRate, minRecords: uint64(minRecords), window: window, slot: slot, now: now}
	for i := range t.buckets {
		t.buckets[i].idx = -1
	}
	return t
}

// Add counts one record, quarantined or not, and returns a *TripError
// (wrapping ErrFailClosed) once the route has tripped.
func (t *RateTracker) Add(quarantined bool) error {
	if !quarantined {
		if e := t.trip.Load(); e != nil {
			return e
		}
		if t.pending.Add(1)%passBatch != 0 {
			return nil // the rate can only have gone down
		}
	}
	idx := t.now().UnixNano() / t.slot
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tripped != nil {
		return t.tripped
	}
	b := t.flush(idx)
	if !quarantined {
		return nil
	}
	b.n++
	b.q++
	n, q := t.sums(idx)
	if n >= t.minRecords && float64(q) > t.max*float64(n) {
		t.tripped = &TripError{Route: t.route, Quarantined: q, Records: n, Max: t.max, Window: t.window}
		t.trip.Store(t.tripped)
		return t.tripped
	}
	return nil
}

// errFast is Err without the lock: for every record's path.
func (t *RateTracker) errFast() error {
	if e := t.trip.Load(); e != nil {
		return e
	}
	return nil
}

// addPasses counts n passing records at once (a Tallier's batch).
func (t *RateTracker) addPasses(n uint64) {
	idx := t.now().UnixNano() / t.slot
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tripped == nil {
		t.flush(idx).n += n
	}
}

// flush counts the pending passing records in slot idx and returns its
// bucket. t.mu is held.
func (t *RateTracker) flush(idx int64) *rateBucket {
	b := &t.buckets[idx%rateBuckets]
	if b.idx != idx {
		b.idx, b.n, b.q = idx, 0, 0
	}
	b.n += t.pending.Swap(0)
	return b
}

func (t *RateTracker) sums(idx int64) (n, q uint64) {
	for i := range t.buckets {
		if b := &t.buckets[i]; b.idx > idx-rateBuckets && b.idx <= idx {
			n += b.n
			q += b.q
		}
	}
	return n, q
}

// Rate returns the records and quarantined records in the current window.
func (t *RateTracker) Rate() (records, quarantined uint64) {
	idx := t.now().UnixNano() / t.slot
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tripped == nil {
		t.flush(idx)
	}
	return t.sums(idx)
}

// Err returns the *TripError once the route has tripped, else nil.
func (t *RateTracker) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tripped == nil {
		return nil
	}
	return t.tripped
}
