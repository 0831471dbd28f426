package audit

import (
	"slices"
	"testing"
	"time"
)

func TestParseBound(t *testing.T) {
	cases := []struct {
		in   string
		want Bound
		err  bool
	}{
		{"", Bound{}, false},
		{"4711", Bound{Offset: 4711, IsOffset: true}, false},
		{"0", Bound{IsOffset: true}, false},
		{"-3", Bound{}, true},
		{"2026-03-01T10:00:00Z", Bound{Time: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}, false},
		{"yesterday", Bound{}, true},
	}
	for _, c := range cases {
		got, err := ParseBound(c.in)
		if (err != nil) != c.err || !c.err && (got.IsOffset != c.want.IsOffset || got.Offset != c.want.Offset || !got.Time.Equal(c.want.Time)) {
			t.Errorf("ParseBound(%q) = %+v, %v; want %+v, err %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestParseSrc(t *testing.T) {
	topic, p, o, err := ParseSrc("telemetry/edr/3/4711")
	if err != nil || topic != "telemetry/edr" || p != 3 || o != 4711 {
		t.Fatalf("got %q %d %d %v", topic, p, o, err)
	}
	if Src(topic, p, o) != "telemetry/edr/3/4711" {
		t.Fatal("Src does not invert ParseSrc")
	}
	for _, bad := range []string{"", "t", "t/1", "/1/2", "t/x/2", "t/1/-2", "t/-1/2"} {
		if _, _, _, err := ParseSrc(bad); err == nil {
			t.Errorf("ParseSrc(%q) accepted", bad)
		}
	}
}

func TestJSONDiffNamesPathsNotValues(t *testing.T) {
	cases := []struct {
		a, b string
		want []string
	}{
		{`{"a":1}`, `{"a":1}`, nil},
		{`{"a":1,"b":{"c":"x"}}`, `{"b":{"c":"y"},"a":1}`, []string{"b.c"}},
		{`{"a":1}`, `{"a":1,"extra":"SECRET"}`, []string{"extra"}},
		{`{"l":[{"v":"1"},{"v":"2"}]}`, `{"l":[{"v":"1"},{"v":"3"}]}`, []string{"l[].v"}},
		{`{"l":[1]}`, `{"l":[1,2]}`, []string{"l"}},
		{`{"a":{"b":1}}`, `{"a":"SECRET"}`, []string{"a"}},
		{`{"a":1}`, `[1]`, []string{"(record)"}},
		{`{"a":1}`, `not json SECRET`, []string{"(record)"}},
	}
	for _, c := range cases {
		got := JSONDiff([]byte(c.a), []byte(c.b))
		if !slices.Equal(got, c.want) {
			t.Errorf("JSONDiff(%s, %s) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}
