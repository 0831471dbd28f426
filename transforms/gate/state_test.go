package gate

import (
	"testing"

	"github.com/deident/deident/internal/config"
)

// A config reload replaces a route's gate. With the gate config unchanged
// the new gate still knows the raw identifiers the old one saw (a username
// read just before the reload is still caught after it); with another gate
// config it starts a fresh filter. Either way the counters carry on.
func TestWithState(t *testing.T) {
	leak := replace(good, "scheduled scan completed", `runas /user:CORP\\alice.smith cmd.exe`)
	gc := config.Gate{Patterns: []config.GatePattern{}}
	for _, tc := range []struct {
		name     string
		next     config.Gate
		wantEcho bool
	}{
		{"gate config unchanged", gc, true},
		{"gate config changed", config.Gate{Patterns: []config.GatePattern{config.GatePattern("email")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := newGate(t, gc)
			c := old.NewChecker()
			c.Observe([]byte(raw))
			if err := old.Tally(c.Check([]byte(good))); err != nil {
				t.Fatal(err)
			}
			rc := testRoute(tc.next)
			rc.Fields = rc.Fields[:len(rc.Fields)-1] // the field rules changed too
			rc.Fields = append(rc.Fields, config.FieldRule{Path: "comment", Action: config.Keep})
			g, err := New("acme", rc, WithState(old))
			if err != nil {
				t.Fatal(err)
			}
			v := g.NewChecker().Check([]byte(leak))
			if got := verdictString(v) == "echo@comment"; got != tc.wantEcho {
				t.Errorf("echo of a name observed before the reload: %q, want echo %v", verdictString(v), tc.wantEcho)
			}
			if err := g.Tally(v); err != nil {
				t.Fatal(err)
			}
			if s := g.Stats(); s.Checked != 2 {
				t.Errorf("checked %d after the reload, want 2 (counters carry on)", s.Checked)
			}
		})
	}
}

// A gate that continues another one still learns raw identifiers from the
// route's Applier (route.Observer) after the reload.
func TestWithStateLearnsAfterReload(t *testing.T) {
	old := newGate(t, config.Gate{})
	g, err := New("acme", testRoute(config.Gate{}), WithState(old))
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	c.ObserveIdentifier(1, []byte("Bob.Jones")) // actor.user.name
	leak := replace(good, "scheduled scan completed", `runas /user:CORP\\bob.jones cmd.exe`)
	if v := c.Check([]byte(leak)); !v.Reasons.Has(ReasonEcho) {
		t.Fatalf("a name observed after the reload: %s", verdictString(v))
	}
}
