package kanon

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
)

// TestAggregateSpansAcrossPartitions pins an aggregate's provenance when a
// stage sees several partitions (a stage fed a repartition topic, or the
// benchmark's six): per partition, in order of first appearance, the
// lowest and highest offset and the count. Add keeps a group's first
// partition inline and notes the others for the close, so these cases
// mix partitions within a group, interleave groups, merge groups in a
// roll-up and suppress a short one.
func TestAggregateSpansAcrossPartitions(t *testing.T) {
	type in struct {
		user      string
		age       int
		team      string
		partition int
		offset    int64
	}
	red := []in{ // one class at level 0 (k=2): partitions 3, 1, 2 in order of appearance
		{"u1", 30, "red", 3, 10}, {"u2", 30, "red", 1, 5}, {"u1", 30, "red", 3, 11},
		{"u2", 30, "red", 2, 7}, {"u1", 30, "red", 1, 6},
	}
	redSpans := []Span{{"in", 3, 10, 11, 2}, {"in", 1, 5, 6, 2}, {"in", 2, 7, 7, 1}}
	blue := []in{ // two groups of one entity each, merged by the roll-up (ages 31 and 35)
		{"u3", 31, "blue", 2, 20}, {"u3", 31, "blue", 0, 21},
		{"u4", 35, "blue", 1, 22}, {"u4", 35, "blue", 2, 23},
	}
	blueSpans := []Span{{"in", 2, 20, 23, 2}, {"in", 0, 21, 21, 1}, {"in", 1, 22, 22, 1}}
	var mixed []in // red and blue interleaved: each group's records in their own order
	for i := range max(len(red), len(blue)) {
		if i < len(red) {
			mixed = append(mixed, red[i])
		}
		if i < len(blue) {
			mixed = append(mixed, blue[i])
		}
	}
	cases := []struct {
		name  string
		input []in
		want  map[Kind][][]Span // per kind, each output's spans in output order
	}{
		{"one group", red, map[Kind][][]Span{Aggregate: {redSpans}}},
		{"roll-up merge", blue, map[Kind][][]Span{Aggregate: {blueSpans}}},
		{"groups interleaved", mixed, map[Kind][][]Span{Aggregate: {redSpans, blueSpans}}},
		{"suppressed", []in{
			{"u5", 50, "green", 4, 30}, {"u5", 50, "green", 0, 31}, {"u5", 50, "green", 4, 32}, {"u5", 50, "green", 5, 33},
		}, map[Kind][][]Span{Suppressed: {{{"in", 4, 30, 32, 2}, {"in", 0, 31, 31, 1}, {"in", 5, 33, 33, 1}}}}},
	}
	for _, tc := range cases {
		for _, list := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/list=%v", tc.name, list), func(t *testing.T) {
				s, err := New(ageTeam(config.KAnonAggregate, 2), "testdata", Options{ListOffsets: list})
				if err != nil {
					t.Fatal(err)
				}
				var outs []Output
				for i, r := range tc.input {
					re := rec(t, s, r.user, r.age, r.team, time.Duration(i)*time.Millisecond)
					re.Partition, re.Offset = r.partition, r.offset
					outs = s.Add(outs, re)
				}
				outs = s.Flush(outs)
				got := map[Kind][][]Span{}
				for _, o := range outs {
					got[o.Kind] = append(got[o.Kind], o.Spans)
				}
				for _, k := range []Kind{Aggregate, Suppressed} {
					if !slices.EqualFunc(got[k], tc.want[k], slices.Equal) {
						t.Errorf("%v spans %v, want %v", k, got[k], tc.want[k])
					}
				}
			})
		}
	}
}
