package kanon

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
)

var t0 = time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)

// clock is an injected clock tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

// ageTeam is the test config: age (numeric widths 10, 100) and team (no
// ladder: the value or "*"), entity user, time ts.
func ageTeam(mode config.KAnonMode, k int) config.KAnon {
	c := config.KAnon{
		K: k, Entity: "user", Mode: mode, EventTime: "ts",
		QuasiIdentifiers: []config.QuasiIdentifier{
			{Path: "age", Ladder: config.Ladder{NumericWidth: []float64{10, 100}}},
			{Path: "team"},
		},
	}
	if mode == config.KAnonAggregate {
		c.Window = time.Minute
	} else {
		c.MaxDelay = 10 * time.Second
	}
	return c
}

func newStage(t testing.TB, c config.KAnon, clk *clock) *Stage {
	t.Helper()
	opts := Options{ListOffsets: true, Rand: rand.New(rand.NewPCG(1, 2))}
	if clk != nil {
		opts.Now = clk.now
	}
	s, err := New(c, "testdata", opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var nextOffset int64

// rec builds a route-output record and extracts it.
func rec(t testing.TB, s *Stage, user string, age int, team string, at time.Duration) Record {
	t.Helper()
	payload := fmt.Sprintf(`{"ts":%q,"user":%q,"age":%d,"team":%q,"bytes":%d}`, t0.Add(at).Format(time.RFC3339Nano), user, age, team, age*10)
	var r Record
	if err := s.Extract(&r, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	r.Topic, r.Partition, r.Offset = "in", 0, nextOffset
	nextOffset++
	return r
}

func kinds(outs []Output) map[Kind]int {
	m := map[Kind]int{}
	for _, o := range outs {
		m[o.Kind] += o.Count
	}
	return m
}

func checkAccounting(t *testing.T, s *Stage) {
	t.Helper()
	st := s.Stats()
	if st.In != st.Released+st.Suppressed+st.Late+st.Held {
		t.Errorf("accounting: in %d != released %d + suppressed %d + late %d + held %d", st.In, st.Released, st.Suppressed, st.Late, st.Held)
	}
}

func TestOneEntityManyEventsNeverPublished(t *testing.T) {
	for _, mode := range []config.KAnonMode{config.KAnonAggregate, config.KAnonRecord} {
		t.Run(string(mode), func(t *testing.T) {
			clk := &clock{t0}
			s := newStage(t, ageTeam(mode, 2), clk)
			var outs []Output
			for i := range 500 {
				outs = s.Add(outs, rec(t, s, "usr_1", 30, "red", time.Duration(i)*time.Millisecond))
				clk.add(time.Millisecond)
			}
			outs = s.Advance(outs, clk.add(time.Hour))
			outs = s.Flush(outs)
			got := kinds(outs)
			if got[Released] != 0 || got[Aggregate] != 0 || got[Suppressed] != 500 {
				t.Fatalf("one entity with 500 events: %v, want all 500 suppressed", got)
			}
			checkAccounting(t, s)
		})
	}
}

func TestExactlyKPublishes(t *testing.T) {
	for _, mode := range []config.KAnonMode{config.KAnonAggregate, config.KAnonRecord} {
		for _, k := range []int{2, 5} {
			t.Run(fmt.Sprintf("%s/k=%d", mode, k), func(t *testing.T) {
				clk := &clock{t0}
				s := newStage(t, ageTeam(mode, k), clk)
				var outs []Output
				for i := range k - 1 {
					outs = s.Add(outs, rec(t, s, fmt.Sprint("usr_", i), 30, "red", time.Second))
					outs = s.Add(outs, rec(t, s, fmt.Sprint("usr_", i), 30, "red", time.Second)) // repeats do not count
				}
				if mode == config.KAnonRecord && len(outs) != 0 {
					t.Fatalf("k-1 entities released %v", kinds(outs))
				}
				outs = s.Add(outs, rec(t, s, "usr_last", 30, "red", 2*time.Second))
				outs = s.Flush(outs)
				got := kinds(outs)
				want := 2*(k-1) + 1
				if got[Released]+got[Aggregate] != want || got[Suppressed] != 0 {
					t.Fatalf("exactly k entities: %v, want %d published", got, want)
				}
				for _, o := range outs {
					if o.Entities != k {
						t.Errorf("entities %d, want %d", o.Entities, k)
					}
					if slices.Max(o.Levels) != 0 {
						t.Errorf("levels %v, want level 0", o.Levels)
					}
				}
				checkAccounting(t, s)
			})
		}
	}
}

func TestAggregateRollUpAndSuppressionCounts(t *testing.T) {
	c := ageTeam(config.KAnonAggregate, 2)
	c.Sums, c.Max = []string{"bytes"}, []string{"bytes"}
	s := newStage(t, c, nil)
	if got := fmt.Sprint(s.Sequence()); got != "[[0 0] [0 1] [1 1] [2 1] [3 1]]" {
		t.Fatalf("sequence %s: team (no ladder) should step first, then age", got)
	}
	var outs []Output
	for _, r := range []struct {
		user string
		age  int
		team string
	}{{"a", 21, "x"}, {"b", 22, "x"}, {"c", 25, "y"}, {"e", 30, "x"}, {"f", 30, "x"}, {"e", 31, "x"}, {"d", 155, "x"}, {"d", 156, "x"}} {
		outs = s.Add(outs, rec(t, s, r.user, r.age, r.team, 10*time.Second))
	}
	if len(outs) != 0 {
		t.Fatalf("published before the window closed: %v", kinds(outs))
	}
	if h := s.Held(); len(h) != 1 || h[0].Offset != nextOffset-8 {
		t.Fatalf("held %v, want the window's first offset %d", h, nextOffset-8)
	}
	outs = s.Flush(outs)
	var got []string
	for _, o := range outs {
		switch o.Kind {
		case Aggregate:
			got = append(got, string(o.Payload))
		case Suppressed:
			got = append(got, fmt.Sprintf("suppressed %d", o.Count))
		}
	}
	want := []string{
		`{"window_start":"2026-11-27T13:00:00Z","window_end":"2026-11-27T13:01:00Z","group":{"age":30,"team":"x"},"levels":[0,0],"count":2,"entities":2,"sum":{"bytes":600},"max":{"bytes":300}}`,
		`{"window_start":"2026-11-27T13:00:00Z","window_end":"2026-11-27T13:01:00Z","group":{"age":"[20,30)","team":"*"},"levels":[1,1],"count":3,"entities":3,"sum":{"bytes":680},"max":{"bytes":250}}`,
		"suppressed 3",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st := s.Stats()
	if st.Released != 5 || st.Suppressed != 3 || st.Groups != 2 || st.Classes != 2 || st.Held != 0 {
		t.Fatalf("stats %+v", st)
	}
	checkAccounting(t, s)
	if len(s.Held()) != 0 {
		t.Fatalf("held after flush: %v", s.Held())
	}
}

func TestAggregateLateRecords(t *testing.T) {
	for _, late := range []config.LateAction{config.LateDrop, config.LateCount} {
		t.Run(string(late), func(t *testing.T) {
			c := ageTeam(config.KAnonAggregate, 2)
			c.AllowedLateness, c.Late = 10*time.Second, late
			s := newStage(t, c, nil)
			var outs []Output
			outs = s.Add(outs, rec(t, s, "a", 30, "x", 5*time.Second))
			outs = s.Add(outs, rec(t, s, "b", 30, "x", 50*time.Second))
			outs = s.Add(outs, rec(t, s, "c", 30, "x", 69*time.Second)) // watermark 59s: window 0 still open
			if len(outs) != 0 {
				t.Fatalf("closed early: %v", kinds(outs))
			}
			outs = s.Add(outs, rec(t, s, "d", 30, "x", 40*time.Second)) // within lateness: counted in window 0
			outs = s.Add(outs, rec(t, s, "e", 30, "x", 71*time.Second)) // watermark 61s: window 0 closes
			if got := kinds(outs); got[Aggregate] != 3 {
				t.Fatalf("window 0: %v, want an aggregate of 3", got)
			}
			outs = outs[:0]
			lateRec := rec(t, s, "f", 30, "x", 20*time.Second)
			outs = s.Add(outs, lateRec)
			outs = s.Add(outs, rec(t, s, "g", 30, "x", 30*time.Second))
			if got := kinds(outs); got[Late] != 2 || len(outs) != 2 || outs[0].Offsets[0].Offset != lateRec.Offset {
				t.Fatalf("late records: %v", outs)
			}
			outs = s.Flush(outs[:0])
			lc := 0
			for _, o := range outs {
				if o.Kind == LateCount {
					lc++
					if o.Count != 2 || !o.Window.Equal(t0) || !strings.Contains(string(o.Payload), `"late":2`) {
						t.Errorf("late count %+v %s", o, o.Payload)
					}
				}
			}
			if want := map[config.LateAction]int{config.LateDrop: 0, config.LateCount: 1}[late]; lc != want {
				t.Errorf("%d late counts, want %d", lc, want)
			}
			if st := s.Stats(); st.Late != 2 {
				t.Errorf("late %d, want 2", st.Late)
			}
			checkAccounting(t, s)
		})
	}
}

func TestRecordModeDelayRollUpAndLiveClass(t *testing.T) {
	clk := &clock{t0}
	s := newStage(t, ageTeam(config.KAnonRecord, 2), clk)
	var outs []Output
	outs = s.Add(outs, rec(t, s, "a", 21, "x", 0))
	clk.add(time.Second)
	outs = s.Add(outs, rec(t, s, "b", 25, "y", 0))
	clk.add(time.Second)
	outs = s.Add(outs, rec(t, s, "z", 90, "q", 0))
	if len(outs) != 0 || s.Stats().Held != 3 {
		t.Fatalf("released before max_delay: %v", kinds(outs))
	}
	if h := s.Held(); len(h) != 1 || h[0].Offset != nextOffset-3 {
		t.Fatalf("held %v", h)
	}
	outs = s.Advance(outs, clk.add(8*time.Second)) // a's deadline: a and b merge at [20,30), *
	if len(outs) != 2 {
		t.Fatalf("at a's deadline: %v", outs)
	}
	for _, o := range outs {
		var m map[string]any
		if err := json.Unmarshal(o.Payload, &m); err != nil {
			t.Fatal(err)
		}
		if m["age"] != "[20,30)" || m["team"] != "*" || o.Entities != 2 || o.Class != outs[0].Class {
			t.Errorf("released %s levels %v entities %d", o.Payload, o.Levels, o.Entities)
		}
	}
	// A later member of the live class is released at once.
	outs = s.Add(outs[:0], rec(t, s, "c", 27, "w", 0))
	if len(outs) != 1 || outs[0].Kind != Released || !strings.Contains(string(outs[0].Payload), `"age":"[20,30)","team":"*"`) {
		t.Fatalf("live class member: %v", outs)
	}
	outs = s.Advance(outs[:0], clk.add(2*time.Second)) // z's deadline: alone, suppressed
	if got := kinds(outs); got[Suppressed] != 1 || len(outs) != 1 || outs[0].Reason != Short {
		t.Fatalf("z: %v", outs)
	}
	if len(s.Held()) != 0 {
		t.Fatalf("held %v", s.Held())
	}
	checkAccounting(t, s)
}

func TestRecordModeMemoryCap(t *testing.T) {
	clk := &clock{t0}
	c := ageTeam(config.KAnonRecord, 2)
	c.MaxBufferedRecords = 3
	s := newStage(t, c, clk)
	var outs []Output
	for i := range 10 {
		outs = s.Add(outs, rec(t, s, fmt.Sprint(i), 100*i, "x", 0)) // no two share a class below the top
	}
	st := s.Stats()
	if st.Held != 3 || st.SuppressedCap != 7 || st.Released != 0 {
		t.Fatalf("cap: %+v", st)
	}
	checkAccounting(t, s)
}

// TestRestartMidWindow crashes a stage mid-window, restarts from the
// committed offset (the lowest held one) and checks nothing is lost: every
// record is decided by the first run below the commit point or by the
// second run, and the second run's aggregates equal an uninterrupted run's.
func TestRestartMidWindow(t *testing.T) {
	for _, mode := range []config.KAnonMode{config.KAnonAggregate, config.KAnonRecord} {
		t.Run(string(mode), func(t *testing.T) {
			type in struct {
				user string
				age  int
				at   time.Duration
			}
			var stream []in
			r := rand.New(rand.NewPCG(7, 7))
			for i := range 300 {
				stream = append(stream, in{fmt.Sprint("u", r.IntN(40)), 20 + r.IntN(60), time.Duration(i) * time.Second})
			}
			run := func(s *Stage, clk *clock, from, to int) (outs []Output) {
				for i := from; i < to; i++ {
					x := stream[i]
					clk.t = t0.Add(x.at)
					re := rec(t, s, x.user, x.age, "x", x.at)
					re.Offset = int64(i)
					outs = s.Add(outs, re)
				}
				return outs
			}
			decided := func(outs []Output) map[int64]bool {
				m := map[int64]bool{}
				for _, o := range outs {
					for _, p := range o.Offsets {
						m[p.Offset] = true
					}
				}
				return m
			}
			c := ageTeam(mode, 3)
			full := newStage(t, c, &clock{})
			clk := &clock{}
			full.now = clk.now
			fullOuts := full.Flush(run(full, clk, 0, len(stream)))

			clk1 := &clock{}
			s1 := newStage(t, c, clk1)
			outs1 := run(s1, clk1, 0, 170)
			commit := int64(170)
			if h := s1.Held(); len(h) > 0 {
				commit = h[0].Offset
			}
			if commit == 170 {
				t.Fatal("nothing held mid-window; the test proves nothing")
			}
			d1 := decided(outs1)
			for o := range commit {
				if !d1[o] {
					t.Fatalf("offset %d below the commit point %d was never decided", o, commit)
				}
			}
			clk2 := &clock{}
			s2 := newStage(t, c, clk2)
			outs2 := s2.Flush(run(s2, clk2, int(commit), len(stream)))
			d2 := decided(outs2)
			for o := commit; o < int64(len(stream)); o++ {
				if !d2[o] {
					t.Fatalf("offset %d lost after restart", o)
				}
			}
			if mode == config.KAnonAggregate {
				// Windows open at the crash come out the same.
				want := map[string]bool{}
				for _, o := range fullOuts {
					if o.Kind == Aggregate {
						want[string(o.Payload)] = true
					}
				}
				for _, o := range outs2 {
					if o.Kind == Aggregate && !want[string(o.Payload)] {
						t.Errorf("after restart %s, not in the uninterrupted run", o.Payload)
					}
				}
			}
			checkAccounting(t, s2)
		})
	}
}

func TestNoiseKeepsKAndIsSeeded(t *testing.T) {
	c := ageTeam(config.KAnonAggregate, 3)
	c.Noise = &config.Noise{Epsilon: 0.5}
	s := newStage(t, c, nil)
	var outs []Output
	for i := range 40 {
		outs = s.Add(outs, rec(t, s, fmt.Sprint(i%4), 30, "x", time.Second))
	}
	outs = s.Flush(outs)
	if len(outs) != 1 || outs[0].Group.Entities < 3 || outs[0].Group.Count < outs[0].Group.Entities || outs[0].Count != 40 {
		t.Fatalf("noisy aggregate %+v", outs)
	}
	var sum, n float64
	for range 20000 {
		x := s.laplace(2)
		sum += x * x
		n++
	}
	if v := sum / n; v < 7 || v > 9 { // Laplace(b=2) has variance 2b² = 8
		t.Errorf("laplace variance %.2f, want about 8", v)
	}
}

func TestLDiversity(t *testing.T) {
	c := ageTeam(config.KAnonAggregate, 2)
	c.LDiversity = &config.LDiversity{Field: "bytes", L: 2}
	s := newStage(t, c, nil)
	var outs []Output
	outs = s.Add(outs, rec(t, s, "a", 30, "x", 0))
	outs = s.Add(outs, rec(t, s, "b", 30, "x", 0)) // same age, same bytes: 2 entities, 1 value
	outs = s.Flush(outs)
	if got := kinds(outs); got[Aggregate] != 0 || got[Suppressed] != 2 {
		t.Fatalf("l-diversity not enforced: %v", got)
	}
}

func TestExtractErrors(t *testing.T) {
	s := newStage(t, ageTeam(config.KAnonAggregate, 2), nil)
	for _, tc := range []struct{ payload, err string }{
		{`{"ts":"2026-11-27T13:00:00Z","age":3}`, "user: entity field missing"},
		{`{"user":"u","age":3}`, "ts: event time missing"},
		{`{"user":"u","ts":"yesterday"}`, "ts: event time missing"},
		{`{"user":"u","ts":1,"age":{"x":1}}`, "age: quasi-identifier is an object"},
		{`{"user":"u",`, "truncated"},
	} {
		var r Record
		err := s.Extract(&r, []byte(tc.payload))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.payload, err, tc.err)
		}
	}
	var r Record
	if err := s.Extract(&r, []byte(`{"user":"u","ts":1700000000,"age":null}`)); err != nil || r.QI[0] != "null" || r.QI[1] != "null" {
		t.Errorf("missing QIs: %v %q", err, r.QI)
	}
}

func TestNewErrorsNameKeys(t *testing.T) {
	c := ageTeam(config.KAnonRecord, 1)
	c.QuasiIdentifiers[0].Ladder = config.Ladder{Hierarchy: &config.LadderHierarchy{File: "adult/nope.csv"}}
	if _, err := New(c, "testdata", Options{}); err == nil || !strings.Contains(err.Error(), "k_anonymity.k: k must be at least 2, got 1") {
		t.Fatalf("error %v", err)
	}
	c.K = 2
	if _, err := New(c, "testdata", Options{}); err == nil || !strings.Contains(err.Error(), "k_anonymity.quasi_identifiers[0].ladder") {
		t.Fatalf("error %v", err)
	}
}
