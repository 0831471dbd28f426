package gate

import (
	"errors"
	"fmt"
	"sync"
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

// RateTracker tracks a route's quarantine rate over a sliding window (in
// rateBuckets slots, so the window slides in steps of window/20) and trips
// once the rate passes max with at least minRecords records in the window.
// Once tripped it stays tripped. Safe for concurrent use.
type RateTracker struct {
	route      string
	max        float64
	minRecords uint64
	window     time.Duration
	slot       int64 // nanoseconds
	now        func() time.Time

	mu      sync.Mutex
	buckets [rateBuckets]struct {
		idx  int64
		n, q uint64
	}
	tripped *TripError
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
	idx := t.now().UnixNano() / t.slot
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tripped != nil {
		return t.tripped
	}
	b := &t.buckets[idx%rateBuckets]
	if b.idx != idx {
		b.idx, b.n, b.q = idx, 0, 0
	}
	b.n++
	if !quarantined {
		return nil // the rate can only have gone down
	}
	b.q++
	n, q := t.sums(idx)
	if n >= t.minRecords && float64(q) > t.max*float64(n) {
		t.tripped = &TripError{Route: t.route, Quarantined: q, Records: n, Max: t.max, Window: t.window}
		return t.tripped
	}
	return nil
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
