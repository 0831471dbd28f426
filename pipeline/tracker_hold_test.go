package pipeline

import (
	"errors"
	"testing"
)

// TestPartitionTrackerHolds: the floor (held by a stage), holds (stage
// outputs in flight) and pins keep Committable below them.
func TestPartitionTrackerHolds(t *testing.T) {
	tr := NewPartitionTracker()
	tr.SetFloor(0)
	for off := range int64(10) {
		if err := tr.Add(off, 0); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want int64) {
		t.Helper()
		if got := tr.Committable(); got != want {
			t.Fatalf("Committable %d, want %d", got, want)
		}
	}
	check(0)
	// The stage decides 0..4 in two outputs (held at 0 and 2); 7 stays held.
	tr.Hold(0)
	tr.Hold(2)
	tr.SetFloor(7)
	check(0)
	if tr.Pending() != 2 {
		t.Fatalf("Pending %d, want 2", tr.Pending())
	}
	if err := tr.Unhold(2); err != nil {
		t.Fatal(err)
	}
	check(0)
	if err := tr.Unhold(0); err != nil {
		t.Fatal(err)
	}
	check(7)
	if err := tr.Unhold(0); !errors.Is(err, ErrUnknownHold) {
		t.Fatalf("second Unhold: %v, want ErrUnknownHold", err)
	}
	tr.SetFloor(-1)
	check(10)
	tr.Pin(8)
	tr.Hold(8)
	_ = tr.Unhold(8)
	check(8)
	tr.Pin(9)
	check(8)
}
