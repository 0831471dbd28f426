package kanon

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
)

// The independent side of the property test: its own JSON parsing and its
// own notion of which generalized values cover an original value.

var teamDept = map[string]string{"red": "eng", "blue": "eng", "green": "ops", "gray": "ops", "teal": "sales"}

// covers reports whether visible (a JSON value the stage published) is a
// generalization of the original age.
func coversAge(visible any, age int) bool {
	switch v := visible.(type) {
	case float64:
		return int(v) == age
	case string:
		if v == "*" {
			return true
		}
		x := float64(age)
		if lo, ok := strings.CutPrefix(v, "<"); ok {
			f, _ := strconv.ParseFloat(lo, 64)
			return x < f
		}
		if lo, ok := strings.CutPrefix(v, ">="); ok {
			f, _ := strconv.ParseFloat(lo, 64)
			return x >= f
		}
		var lo, hi float64
		if _, err := fmt.Sscanf(v, "[%g,%g)", &lo, &hi); err == nil {
			return lo <= x && x < hi
		}
	}
	return false
}

func coversTeam(visible any, team string) bool {
	v, _ := visible.(string)
	return v == "*" || v == team || (teamDept[team] != "" && v == teamDept[team])
}

type propRec struct {
	user, team string
	age        int
	at         time.Time
}

// TestPropertyNeverUnderK: over random streams and configs, every published
// group and every released record belongs to a class of at least k distinct
// entities, counted here from the inputs and the published values; every
// record is decided exactly once.
func TestPropertyNeverUnderK(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 99))
		c := config.KAnon{K: 2 + r.IntN(5), Entity: "user", EventTime: "ts"}
		ageLadder := config.Ladder{NumericWidth: []float64{5, 10, 20}}
		if r.IntN(2) == 0 {
			ageLadder = config.Ladder{NumericEdges: [][]float64{{18, 30, 45, 65}, {30, 65}}}
		}
		teamLadder := config.Ladder{}
		if r.IntN(2) == 0 {
			teamLadder = config.Ladder{Hierarchy: &config.LadderHierarchy{File: "team.csv"}}
		}
		c.QuasiIdentifiers = []config.QuasiIdentifier{{Path: "age", Ladder: ageLadder}, {Path: "team", Ladder: teamLadder}}
		if r.IntN(2) == 0 {
			c.QuasiIdentifiers[0], c.QuasiIdentifiers[1] = c.QuasiIdentifiers[1], c.QuasiIdentifiers[0]
		}
		if r.IntN(2) == 0 {
			c.Mode = config.KAnonAggregate
			c.Window = time.Duration(1+r.IntN(60)) * time.Second
			c.AllowedLateness = time.Duration(r.IntN(20)) * time.Second
			c.Late = []config.LateAction{config.LateDrop, config.LateCount}[r.IntN(2)]
		} else {
			c.Mode = config.KAnonRecord
			c.MaxDelay = time.Duration(1+r.IntN(30)) * time.Second
			c.MaxDelayRecords = r.IntN(3) * r.IntN(50)
		}
		if r.IntN(3) == 0 {
			c.MaxOpenClasses = 1 + r.IntN(20)
			c.MaxBufferedRecords = 1 + r.IntN(40)
		}
		if r.IntN(4) == 0 {
			c.LDiversity = &config.LDiversity{Field: "sens", L: 2}
		}
		clk := &clock{t0}
		s := newStage(t, c, clk)
		users := 1 + r.IntN(30)
		n := r.IntN(400)
		inputs := map[int64]propRec{}
		var outs []Output
		teams := []string{"red", "blue", "green", "gray", "teal", "other"}
		for i := range n {
			u := fmt.Sprint("u", int(float64(users)*r.Float64()*r.Float64())) // skewed
			pr := propRec{user: u, team: teams[r.IntN(len(teams))], age: 15 + r.IntN(60),
				at: clk.t.Add(-time.Duration(r.IntN(30)) * time.Second)}
			payload := fmt.Sprintf(`{"ts":%q,"user":%q,"age":%d,"team":%q,"sens":%d}`, pr.at.Format(time.RFC3339Nano), pr.user, pr.age, pr.team, r.IntN(3))
			var re Record
			if err := s.Extract(&re, []byte(payload)); err != nil {
				t.Fatal(err)
			}
			re.Topic, re.Partition, re.Offset = "in", i%3, int64(i)
			inputs[int64(i)] = pr
			outs = s.Add(outs, re)
			clk.add(time.Duration(r.IntN(2000)) * time.Millisecond)
			if r.IntN(10) == 0 {
				outs = s.Advance(outs, clk.t)
			}
			// Held is what a caller commits below: per partition, the
			// lowest offset not yet decided by any output.
			if got, want := s.Held(), heldFrom(outs, i+1, 3); !slices.Equal(got, want) {
				t.Fatalf("seed %d (%+v): after offset %d held %v, want %v", seed, c, i, got, want)
			}
		}
		outs = s.Flush(outs)

		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d (%+v): "+format, append([]any{seed, c}, args...)...)
		}
		decided := map[int64]int{}
		classes := map[string]map[string]bool{} // visible QI tuple -> users
		for _, o := range outs {
			for _, p := range o.Offsets {
				decided[p.Offset]++
			}
			if o.Kind != LateCount && !slices.Equal(o.Spans, spansOf(o.Offsets)) {
				fail("%v output's spans %v, its offsets give %v", o.Kind, o.Spans, spansOf(o.Offsets))
			}
			switch o.Kind {
			case Released:
				var m map[string]any
				if err := json.Unmarshal(o.Payload, &m); err != nil {
					fail("released payload %s: %v", o.Payload, err)
				}
				in := inputs[o.Offsets[0].Offset]
				if m["user"] != in.user || !coversAge(m["age"], in.age) || !coversTeam(m["team"], in.team) {
					fail("released %s does not generalize its input %+v", o.Payload, in)
				}
				tuple := fmt.Sprint(m["age"], "|", m["team"])
				if classes[tuple] == nil {
					classes[tuple] = map[string]bool{}
				}
				classes[tuple][in.user] = true
			case Aggregate:
				var g struct {
					Group    map[string]any `json:"group"`
					Entities int            `json:"entities"`
				}
				if err := json.Unmarshal(o.Payload, &g); err != nil {
					fail("aggregate %s: %v", o.Payload, err)
				}
				members := map[string]bool{}
				for _, p := range o.Offsets {
					in := inputs[p.Offset]
					members[in.user] = true
					if !coversAge(g.Group["age"], in.age) || !coversTeam(g.Group["team"], in.team) {
						fail("aggregate %s holds %+v it does not cover", o.Payload, in)
					}
					if in.at.Before(o.Window) || !in.at.Before(o.Window.Add(c.Window)) {
						fail("aggregate %s holds a record of another window", o.Payload)
					}
				}
				if len(members) < c.K || len(o.Offsets) != o.Count {
					fail("aggregate %s has %d distinct entities, k=%d", o.Payload, len(members), c.K)
				}
				if g.Entities > len(members) {
					fail("aggregate claims %d entities, has %d", g.Entities, len(members))
				}
			}
		}
		for tuple, us := range classes {
			if len(us) < c.K {
				fail("released class %s has %d distinct entities, k=%d", tuple, len(us), c.K)
			}
		}
		for i := range int64(n) {
			if decided[i] != 1 {
				fail("offset %d decided %d times", i, decided[i])
			}
		}
		st := s.Stats()
		if st.In != uint64(n) || st.Held != 0 || st.In != st.Released+st.Suppressed+st.Late {
			fail("accounting %+v", st)
		}
	}
}

// spansOf is what an output's provenance spans must say, derived from the
// positions it lists: per partition in order of first appearance, the
// lowest and highest offset and how many.
func spansOf(ps []Position) []Span {
	var out []Span
	for _, p := range ps {
		i := slices.IndexFunc(out, func(sp Span) bool { return sp.Topic == p.Topic && sp.Partition == p.Partition })
		if i < 0 {
			out = append(out, Span{Topic: p.Topic, Partition: p.Partition, First: p.Offset, Last: p.Offset})
			i = len(out) - 1
		}
		sp := &out[i]
		sp.First, sp.Last, sp.Count = min(sp.First, p.Offset), max(sp.Last, p.Offset), sp.Count+1
	}
	return out
}

// heldFrom derives Held from the outputs: offsets 0..n-1 went to
// partition offset%parts (topic "in"); per partition, the lowest offset
// no output lists.
func heldFrom(outs []Output, n, parts int) []Position {
	decided := map[int64]bool{}
	for _, o := range outs {
		for _, p := range o.Offsets {
			decided[p.Offset] = true
		}
	}
	var out []Position
	for p := range parts {
		for off := int64(p); off < int64(n); off += int64(parts) {
			if !decided[off] {
				out = append(out, Position{"in", p, off})
				break
			}
		}
	}
	return out
}
