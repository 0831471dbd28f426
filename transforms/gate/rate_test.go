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
