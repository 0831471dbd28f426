package configs

import "testing"

func TestPresetsLoad(t *testing.T) {
	for _, name := range []string{"ocsf", "ecs"} {
		p, err := LoadPreset(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Fields) < 30 {
			t.Errorf("%s: only %d fields", name, len(p.Fields))
		}
	}
	p, _ := LoadPreset("ocsf")
	if c := p.Fields["actor.user.name"]; c.Class != "direct_identifier" || c.Suggest != "pseudonymize" {
		t.Errorf("actor.user.name: %+v", c)
	}
	if _, err := LoadPreset("nope"); err == nil {
		t.Error("unknown preset accepted")
	}
}
