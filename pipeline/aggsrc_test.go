package pipeline

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestAggregateSrcRoundTrip(t *testing.T) {
	start := time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		start time.Time
		end   time.Time
		spans []SrcSpan
		want  string
	}{
		{"window and one span", start, start.Add(time.Minute), []SrcSpan{{"edr.events", 3, 100, 250, 37}},
			"window=2026-11-27T13:00:00Z/2026-11-27T13:01:00Z;spans=edr.events/3/100-250:37"},
		{"two partitions, topic with dashes", start.Add(1500 * time.Millisecond), start.Add(2 * time.Second),
			[]SrcSpan{{"a-b_c", 0, 5, 5, 1}, {"a-b_c", 12, 0, 9, 10}},
			"window=2026-11-27T13:00:01.5Z/2026-11-27T13:00:02Z;spans=a-b_c/0/5-5:1,a-b_c/12/0-9:10"},
		{"late count: window only", start, start.Add(time.Hour), nil,
			"window=2026-11-27T13:00:00Z/2026-11-27T14:00:00Z"},
		{"no window", time.Time{}, time.Time{}, []SrcSpan{{"t", 1, 2, 4, 2}}, "spans=t/1/2-4:2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := string(AppendAggregateSrc(nil, c.start, c.end, c.spans))
			if v != c.want {
				t.Fatalf("formatted %q, want %q", v, c.want)
			}
			if !IsAggregateSrc(v) {
				t.Fatal("not recognised as an aggregate's")
			}
			a, err := ParseAggregateSrc(v)
			if err != nil {
				t.Fatal(err)
			}
			if !a.Start.Equal(c.start) || !a.End.Equal(c.end) || !reflect.DeepEqual(a.Spans, c.spans) {
				t.Fatalf("parsed %+v", a)
			}
		})
	}
}

func TestAggregateSrcRejects(t *testing.T) {
	for _, v := range []string{
		"edr/0/17", // a record's deident-src
		"window=2026-11-27T13:00:00Z",
		"window=2026-11-27T13:01:00Z/2026-11-27T13:00:00Z", // end before start
		"window=x/y",
		"spans=edr/0/5-3:1",   // last before first
		"spans=edr/0/3-5:4",   // more records than offsets
		"spans=edr/0/3-5:0",   // none
		"spans=edr/-1/3-5:1",  // partition
		"spans=0/3-5:1",       // no topic
		"spans=edr/0/3:1",     // no range
		"spans=edr/0/3-5:1,",  // empty span
		"spans=edr/0/3-5:1;x", // unknown field
		"spans=edr/0/3-5:1;spans=edr/0/3-5:1",
		"window=2026-11-27T13:00:00Z/2026-11-27T13:01:00Z;owner=me",
	} {
		if _, err := ParseAggregateSrc(v); !errors.Is(err, ErrAggregateSrc) {
			t.Errorf("%q: err %v, want ErrAggregateSrc", v, err)
		}
	}
}

// FuzzParseAggregateSrc: headers come from a topic anyone may write to;
// whatever parses formats back to a value that parses the same.
func FuzzParseAggregateSrc(f *testing.F) {
	for _, s := range []string{
		"window=2026-11-27T13:00:00Z/2026-11-27T13:01:00Z;spans=edr/3/100-250:37",
		"spans=a/0/5-5:1,a/1/0-9:10", "window=2026-11-27T13:00:00.5Z/2026-11-27T13:00:01Z", "edr/0/1", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		a, err := ParseAggregateSrc(v)
		if err != nil {
			return
		}
		again, err := ParseAggregateSrc(string(AppendAggregateSrc(nil, a.Start, a.End, a.Spans)))
		if err != nil {
			t.Fatalf("%q parsed, its reformatting does not: %v", v, err)
		}
		if !again.Start.Equal(a.Start) || !again.End.Equal(a.End) || !reflect.DeepEqual(again.Spans, a.Spans) {
			t.Fatalf("%q: %+v then %+v", v, a, again)
		}
	})
}
