package fieldpath

import (
	"errors"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]Path{
		"a":                    {{Name: "a"}},
		"actor.user.name":      {{Name: "actor"}, {Name: "user"}, {Name: "name"}},
		"file.hashes[].value":  {{Name: "file"}, {Name: "hashes", Arrays: 1}, {Name: "value"}},
		"m[][]":                {{Name: "m", Arrays: 2}},
		"src_endpoint.ip":      {{Name: "src_endpoint"}, {Name: "ip"}},
		"weird-name.x y.@type": {{Name: "weird-name"}, {Name: "x y"}, {Name: "@type"}},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) = %v, want %v", in, got, want)
		}
		if got.String() != in {
			t.Errorf("round trip %q -> %q", in, got.String())
		}
	}
	for _, in := range []string{"", ".", "a.", ".a", "a..b", "[]", "a[0]", "a[", "a]", "a[]x", "a.[].b", "a*"} {
		if _, err := Parse(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a.b", "a[].b", "a[][]", "", ".", "a[0]", "ä.ö[]", "a.b.c.d.e.f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
	})
}
