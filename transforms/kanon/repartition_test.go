package kanon

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/config"
)

func repartitioned(c config.KAnon, level *int) config.KAnon {
	c.RepartitionTopic = "rp"
	c.PartitionLevel = level
	return c
}

// TestRepartitionedNeverMergesAcrossKeys: with a repartition topic the
// stage stops rolling up at the partition level. Two users of one age
// decade but different teams make k=2 only once team goes to "*"; team
// has no ladder, so its partition level is the value itself, and the
// repartitioned stage suppresses them where the plain stage publishes.
func TestRepartitionedNeverMergesAcrossKeys(t *testing.T) {
	zero := 0
	for _, tc := range []struct {
		name      string
		cfg       config.KAnon
		caps      []uint8
		published int
	}{
		{"plain", ageTeam(config.KAnonAggregate, 2), nil, 2},
		{"repartitioned", repartitioned(ageTeam(config.KAnonAggregate, 2), nil), []uint8{2, 0}, 0},
		{"partition level 0", repartitioned(ageTeam(config.KAnonAggregate, 2), &zero), []uint8{0, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStage(t, tc.cfg, nil)
			if !slices.Equal(s.Caps(), tc.caps) {
				t.Fatalf("caps %v, want %v", s.Caps(), tc.caps)
			}
			var outs []Output
			outs = s.Add(outs, rec(t, s, "u1", 31, "red", 0))
			outs = s.Add(outs, rec(t, s, "u2", 35, "blue", time.Second))
			outs = s.Flush(outs)
			if got := kinds(outs)[Aggregate]; got != tc.published {
				t.Errorf("published %d records, want %d", got, tc.published)
			}
			checkAccounting(t, s)
		})
	}
}

// TestRepartitionedSplitEqualsWhole: records routed by AppendPartitionKey
// to several independent stages (as replicas consuming a repartition
// topic) publish exactly what one stage fed everything publishes: no
// class the stage can publish spans two keys. Levels never pass the caps.
func TestRepartitionedSplitEqualsWhole(t *testing.T) {
	teams := []string{"red", "blue", "green", "gray", "teal", "other"}
	publishing := 0
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		level := r.IntN(3)
		c := config.KAnon{K: 2 + r.IntN(3), Entity: "user", EventTime: "ts", Mode: config.KAnonAggregate, Window: 10 * time.Second,
			QuasiIdentifiers: []config.QuasiIdentifier{
				{Path: "age", Ladder: config.Ladder{NumericWidth: []float64{5, 10, 20}}},
				{Path: "team", Ladder: config.Ladder{Hierarchy: &config.LadderHierarchy{File: "team.csv"}}},
			}}
		c = repartitioned(c, &level)
		whole := newStage(t, c, nil)
		const parts = 3
		split := make([]*Stage, parts)
		for i := range split {
			split[i] = newStage(t, c, nil)
		}
		var wholeOuts []Output
		splitOuts := make([][]Output, parts)
		at := time.Duration(0)
		for range 400 {
			at += time.Duration(r.IntN(200)) * time.Millisecond // event time never goes back
			user, age, team := fmt.Sprintf("u%d", r.IntN(30)), 18+r.IntN(50), teams[r.IntN(len(teams))]
			x := rec(t, whole, user, age, team, at)
			wholeOuts = whole.Add(wholeOuts, x)
			p := xxhash.Sum64(whole.AppendPartitionKey(nil, &x)) % parts
			splitOuts[p] = split[p].Add(splitOuts[p], rec(t, split[p], user, age, team, at))
		}
		wholeOuts = whole.Flush(wholeOuts)
		var got []string
		for i, s := range split {
			for _, o := range s.Flush(splitOuts[i]) {
				if o.Kind == Aggregate {
					got = append(got, string(o.Payload))
				}
			}
		}
		var want []string
		for _, o := range wholeOuts {
			if o.Kind != Aggregate {
				continue
			}
			want = append(want, string(o.Payload))
			for i, lv := range o.Levels {
				if lv > whole.Caps()[i] {
					t.Fatalf("seed %d: published at levels %v beyond the caps %v", seed, o.Levels, whole.Caps())
				}
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d (partition level %d): split stages published %d aggregates, one stage %d; they differ", seed, level, len(got), len(want))
		}
		if len(want) > 0 {
			publishing++
		}
	}
	if publishing < 30 {
		t.Fatalf("only %d of 40 streams published anything; the test proves little", publishing)
	}
}

// TestRepartitionedRecordModeStaysWithinCaps: record mode builds clusters
// at any level vector; repartitioned, none passes the caps.
func TestRepartitionedRecordModeStaysWithinCaps(t *testing.T) {
	one := 1
	c := repartitioned(ageTeam(config.KAnonRecord, 3), &one)
	clk := &clock{t: t0}
	s := newStage(t, c, clk)
	r := rand.New(rand.NewPCG(3, 4))
	var outs []Output
	for i := range 2000 {
		clk.add(10 * time.Millisecond)
		outs = s.Add(outs, rec(t, s, fmt.Sprintf("u%d", r.IntN(40)), 18+r.IntN(60), []string{"red", "blue", "green"}[r.IntN(3)], time.Duration(i)))
	}
	outs = s.Flush(outs)
	released := 0
	for _, o := range outs {
		if o.Kind != Released {
			continue
		}
		released++
		if o.Levels[0] > 1 || o.Levels[1] > 0 {
			t.Fatalf("released at levels %v beyond the caps [1 0]", o.Levels)
		}
	}
	if released == 0 {
		t.Fatal("nothing released; the test proves nothing")
	}
	checkAccounting(t, s)
}
