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
// roll-up (sharing partitions), suppress a short one and recycle a
// closed window's span log for a later window.
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
		// next lists the indexes in input where the records' event times
		// move on to the next one-minute window (nil: all in the first).
		next []int
	}{
		{"one group", red, map[Kind][][]Span{Aggregate: {redSpans}}, nil},
		{"roll-up merge", blue, map[Kind][][]Span{Aggregate: {blueSpans}}, nil},
		{"groups interleaved", mixed, map[Kind][][]Span{Aggregate: {redSpans, blueSpans}}, nil},
		{"suppressed", []in{
			{"u5", 50, "green", 4, 30}, {"u5", 50, "green", 0, 31}, {"u5", 50, "green", 4, 32}, {"u5", 50, "green", 5, 33},
		}, map[Kind][][]Span{Suppressed: {{{"in", 4, 30, 32, 2}, {"in", 0, 31, 31, 1}, {"in", 5, 33, 33, 1}}}}, nil},
		// The group's first partition (2) comes back after partitions 0 and
		// 1: its records stay in the first span, which stays first, and the
		// others keep their order of appearance (0 before 1).
		{"first partition again", []in{
			{"u1", 30, "gold", 2, 40}, {"u2", 30, "gold", 0, 12}, {"u1", 30, "gold", 1, 8},
			{"u2", 30, "gold", 2, 41}, {"u1", 30, "gold", 1, 9}, {"u2", 30, "gold", 2, 42},
		}, map[Kind][][]Span{Aggregate: {{{"in", 2, 40, 42, 3}, {"in", 0, 12, 12, 1}, {"in", 1, 8, 9, 2}}}}, nil},
		// Eight partitions in one group (seven of them logged), offsets out
		// of order within partitions (the first's included): each span is
		// the lowest and highest offset whatever the order they came in.
		{"many partitions", []in{
			{"u1", 40, "plum", 7, 70}, {"u2", 40, "plum", 0, 5}, {"u1", 40, "plum", 5, 52},
			{"u2", 40, "plum", 2, 23}, {"u1", 40, "plum", 0, 3}, {"u2", 40, "plum", 6, 60},
			{"u1", 40, "plum", 1, 14}, {"u2", 40, "plum", 5, 50}, {"u1", 40, "plum", 4, 44},
			{"u2", 40, "plum", 3, 33}, {"u1", 40, "plum", 7, 68}, {"u2", 40, "plum", 2, 27},
			{"u1", 40, "plum", 5, 55}, {"u2", 40, "plum", 3, 31}, {"u1", 40, "plum", 0, 4},
		}, map[Kind][][]Span{Aggregate: {{
			{"in", 7, 68, 70, 2}, {"in", 0, 3, 5, 3}, {"in", 5, 50, 55, 3}, {"in", 2, 23, 27, 2},
			{"in", 6, 60, 60, 1}, {"in", 1, 14, 14, 1}, {"in", 4, 44, 44, 1}, {"in", 3, 31, 33, 2},
		}}}, nil},
		// Three one-entity groups (ages 37, 32, 39, opened in that order)
		// merged by the roll-up into the first opened: its partitions (3,
		// then 4) come first, then the others' new ones in the order the
		// groups opened (5, from the second), though partition 5 appeared
		// before 4 in the window. The shared partitions' spans combine the
		// groups' lowest and highest offsets and add their counts.
		{"roll-up merge of shared partitions", []in{
			{"u7", 37, "teal", 3, 50}, {"u6", 32, "teal", 5, 100}, {"u6", 32, "teal", 3, 60},
			{"u8", 39, "teal", 3, 55}, {"u6", 32, "teal", 3, 40}, {"u8", 39, "teal", 5, 102},
			{"u7", 37, "teal", 4, 80}, {"u6", 32, "teal", 5, 99}, {"u8", 39, "teal", 4, 70},
		}, map[Kind][][]Span{Aggregate: {{{"in", 3, 40, 60, 4}, {"in", 4, 70, 80, 2}, {"in", 5, 99, 102, 3}}}}, nil},
		// Three windows of one group each: the first closes when the second
		// opens, and the third reuses the first's memory (its span log
		// among it), so its spans must hold its own records only.
		{"windows", []in{
			{"u1", 20, "jade", 1, 10}, {"u2", 20, "jade", 4, 11}, {"u1", 20, "jade", 2, 12}, {"u2", 20, "jade", 4, 13},
			{"u1", 20, "jade", 4, 20}, {"u2", 20, "jade", 1, 21}, {"u1", 20, "jade", 4, 22},
			{"u1", 20, "jade", 2, 30}, {"u2", 20, "jade", 3, 31}, {"u1", 20, "jade", 1, 32}, {"u2", 20, "jade", 2, 33},
		}, map[Kind][][]Span{Aggregate: {
			{{"in", 1, 10, 10, 1}, {"in", 4, 11, 13, 2}, {"in", 2, 12, 12, 1}},
			{{"in", 4, 20, 22, 2}, {"in", 1, 21, 21, 1}},
			{{"in", 2, 30, 33, 2}, {"in", 3, 31, 31, 1}, {"in", 1, 32, 32, 1}},
		}}, []int{4, 7}},
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
					win := 0
					for _, n := range tc.next {
						if i >= n {
							win++
						}
					}
					re := rec(t, s, r.user, r.age, r.team, time.Duration(win)*time.Minute+time.Duration(i)*time.Millisecond)
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
