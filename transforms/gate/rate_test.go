package gate

import (
	"errors"
	"testing"
	"time"
)

func TestRateTracker(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	rt := NewRateTracker("acme", 0.05, time.Minute, 100, func() time.Time { return now })
	// Under min_records nothing trips, whatever the rate.
	for range 50 {
		if err := rt.Add(true); err != nil {
			t.Fatalf("tripped under min_records: %v", err)
		}
	}
	// The window slides: two minutes later those 50 have left it.
	now = now.Add(2 * time.Minute)
	for i := range 1000 {
		if err := rt.Add(i%25 == 0); err != nil { // 4%
			t.Fatalf("tripped at 4%%: %v", err)
		}
	}
	if n, q := rt.Rate(); n != 1000 || q != 40 {
		t.Errorf("window holds %d records, %d quarantined; want 1000, 40", n, q)
	}
	var err error
	for i := 0; err == nil && i < 100; i++ {
		err = rt.Add(true)
	}
	var te *TripError
	if !errors.As(err, &te) || !errors.Is(err, ErrFailClosed) || te.Records < 1000 || te.Route != "acme" {
		t.Fatalf("got %v", err)
	}
	if float64(te.Quarantined)/float64(te.Records) <= 0.05 {
		t.Errorf("tripped at %d/%d", te.Quarantined, te.Records)
	}
	if rt.Add(false) == nil || rt.Err() == nil {
		t.Error("must stay tripped")
	}
}

// TestRateTrackerCountsBatchedPasses: passing records counted between two
// reads of the clock are all in the window when a quarantined record is
// judged, and in Rate.
func TestRateTrackerCountsBatchedPasses(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	rt := NewRateTracker("acme", 0.6, time.Minute, 10, func() time.Time { return now })
	for range 9 {
		if err := rt.Add(false); err != nil {
			t.Fatal(err)
		}
	}
	if n, q := rt.Rate(); n != 9 || q != 0 {
		t.Fatalf("window holds %d records, %d quarantined; want 9, 0", n, q)
	}
	for range passBatch + 3 { // a batch counted by the clock, and more
		if err := rt.Add(false); err != nil {
			t.Fatal(err)
		}
	}
	passes := uint64(9 + passBatch + 3)
	// 0.6 of the records: q > 0.6 (passes + q).
	need := uint64(0.6*float64(passes)/0.4) + 1
	for i := uint64(1); i <= need; i++ {
		err := rt.Add(true)
		if i < need && err != nil {
			t.Fatalf("tripped at %d of %d quarantined: %v", i, passes+i, err)
		}
		if i == need {
			var te *TripError
			if !errors.As(err, &te) || te.Records != passes+need || te.Quarantined != need {
				t.Fatalf("at %d quarantined: %v", i, err)
			}
		}
	}
}
