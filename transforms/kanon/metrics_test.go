package kanon

import (
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
)

// TestAggregateMetricKinds checks sums, minima and maxima over several
// fields, a field configured under more than one kind, and records
// without a field: a group's sums and extremes are those of its own
// records, merged ones included at roll-up, and a minimum or maximum no
// record had is null.
func TestAggregateMetricKinds(t *testing.T) {
	c := ageTeam(config.KAnonAggregate, 2)
	c.Sums = []string{"bytes", "n"}
	c.Min = []string{"n", "bytes"}
	c.Max = []string{"bytes"}
	s := newStage(t, c, nil)
	var outs []Output
	for i, p := range []string{
		// age 30, team x: published at level 0
		`{"ts":"2026-11-27T13:00:01Z","user":"u1","age":30,"team":"x","bytes":300,"n":5}`,
		`{"ts":"2026-11-27T13:00:02Z","user":"u2","age":30,"team":"x","bytes":100}`,
		`{"ts":"2026-11-27T13:00:03Z","user":"u3","age":30,"team":"x","bytes":200,"n":-2.5}`,
		// age 40, no n: published at level 0
		`{"ts":"2026-11-27T13:00:04Z","user":"u4","age":40,"team":"y","bytes":10}`,
		`{"ts":"2026-11-27T13:00:05Z","user":"u5","age":40,"team":"y","bytes":20}`,
		// ages 51 and 52, one user each: merged at age [50,60), team *
		`{"ts":"2026-11-27T13:00:06Z","user":"u6","age":51,"team":"x","n":7}`,
		`{"ts":"2026-11-27T13:00:07Z","user":"u7","age":52,"team":"y","bytes":-4,"n":1}`,
	} {
		var r Record
		if err := s.Extract(&r, []byte(p)); err != nil {
			t.Fatal(err)
		}
		r.Topic, r.Offset = "in", int64(i)
		outs = s.Add(outs, r)
	}
	outs = s.Flush(outs)
	var got []string
	for _, o := range outs {
		if o.Kind == Aggregate {
			p := string(o.Payload)
			got = append(got, p[strings.Index(p, `"group"`):])
		}
	}
	want := []string{
		`"group":{"age":30,"team":"x"},"levels":[0,0],"count":3,"entities":3,"sum":{"bytes":600,"n":2.5},"min":{"n":-2.5,"bytes":100},"max":{"bytes":300}}`,
		`"group":{"age":40,"team":"y"},"levels":[0,0],"count":2,"entities":2,"sum":{"bytes":30,"n":0},"min":{"n":null,"bytes":10},"max":{"bytes":20}}`,
		`"group":{"age":"[50,60)","team":"*"},"levels":[1,1],"count":2,"entities":2,"sum":{"bytes":-4,"n":8},"min":{"n":1,"bytes":-4},"max":{"bytes":-4}}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
