package gate

import (
	"testing"

	"github.com/deident/deident/internal/config"
)

func TestCheckAggregate(t *testing.T) {
	off := false
	rc := testRoute(config.Gate{Echo: &off})
	rc.KAnon = &config.KAnon{K: 5}
	g, err := New("acme", rc)
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	agg := func(group, tail string) []byte {
		return []byte(`{"window_start":"2026-11-27T10:00:00Z","window_end":"2026-11-27T11:00:00Z","group":{` + group +
			`},"levels":[0,1],"count":40,"entities":` + tail + `}`)
	}
	cases := []struct {
		name, out string
		distinct  int
		want      string
	}{
		{"published group", string(agg(`"duration":"[10,20)","src_endpoint.ip":"10.1.2.0"`, `7,"sum":{"duration":120}`)), -1, ""},
		{"an IP in the route's IP field is by design", string(agg(`"src_endpoint.ip":"10.1.0.0"`, `7`)), -1, ""},
		{"an IP in a kept field is not", string(agg(`"comment":"seen 10.1.2.3"`, `7`)), -1, "pattern:ipv4@comment"},
		{"an e-mail in a group value", string(agg(`"comment":"bob@corp.example"`, `7`)), -1, "pattern:email@comment"},
		{"under k by its own count", string(agg(`"duration":"[10,20)"`, `4`)), -1, "k@deident_k"},
		{"under k by the stage's count", string(agg(`"duration":"[10,20)"`, `9`)), 3, "k@deident_k"},
		{"a path the route does not output", string(agg(`"actor.process.cmd_line":"run"`, `7`)), -1, "schema@group.*"},
		{"an unknown member", `{"group":{},"entities":7,"raw":"x"}`, -1, "schema@*"},
		{"a member of the wrong type", `{"group":{},"entities":"7"}`, -1, "k@deident_k schema@entities"},
		{"a late count carries no k", `{"window_start":"2026-11-27T10:00:00Z","window_end":"2026-11-27T11:00:00Z","late":3}`, -1, ""},
		{"not JSON", `{"group":`, -1, "schema@(record)"},
	}
	for _, tc := range cases {
		if got := verdictString(c.CheckAggregate([]byte(tc.out), tc.distinct)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
