package gate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/deident/deident/transforms/route"
)

var _ route.Observer = (*Checker)(nil)

// TestObserverMatchesObserve: learning raw identifiers from the route's
// Applier (one pass) catches the same echoes as Observe's own pass.
func TestObserverMatchesObserve(t *testing.T) {
	r, g := routeAndGate(t, `      - {path: user.name, action: pseudonymize}
      - {path: device.hostname, action: pseudonymize}
      - {path: mail, action: email_split}
      - {path: src, action: ip_truncate}
      - {path: note, action: keep}
`)
	first := `{"user":{"name":"Zed.Quist"},"device":{"hostname":"wks-77.corp.example"},"mail":"amy.b@x.org","src":"10.1.2.3","note":"ok"}`
	notes := map[string]bool{
		"seen zed.quist today":      true,
		"path C:/Users/ZED_QUIST/x": true,
		"host wks-77 rebooted":      true,
		"mailbox amy.b is full":     true,
		"nothing to see":            false,
	}
	for _, viaApplier := range []bool{false, true} {
		c := g.NewChecker()
		a := r.NewApplier()
		if viaApplier {
			a.SetObserver(c)
		}
		out, err := a.Apply(nil, []byte(first))
		if err != nil {
			t.Fatal(err)
		}
		if !viaApplier {
			c.Observe([]byte(first))
		}
		if v := c.Check(out); !v.Pass() {
			t.Fatalf("clean output failed: %v", v.Reasons)
		}
		for note, leak := range notes {
			in := `{"user":{"name":"someone"},"note":"` + note + `"}`
			out, err := a.Apply(nil, []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			v := c.Check(out)
			if got := v.Reasons.Has(ReasonEcho); got != leak {
				t.Errorf("via applier %v: %q: echo %v, want %v", viaApplier, note, got, leak)
			}
		}
	}
}

// TestToldIdentifiersReachOtherCheckers: the identifiers one worker's
// Checker is told (route.Observer) go into the route's shared filter in
// batches, by that Checker's next record start or check at the latest, so
// the route's other workers catch their echoes too, however many there were.
func TestToldIdentifiersReachOtherCheckers(t *testing.T) {
	r, g := routeAndGate(t, `      - {path: user.name, action: pseudonymize}
      - {path: note, action: keep}
`)
	a := r.NewApplier()
	apply := func(in string) []byte {
		out, err := a.Apply(nil, []byte(in))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	clean := apply(`{"user":{"name":"nobody"},"note":"all quiet"}`)
	for _, then := range []string{"record start", "check"} {
		told, other := g.NewChecker(), g.NewChecker()
		var names []string
		for i := range 3*maxPending + 5 {
			names = append(names, fmt.Sprintf("member%03d.%s", i, strings.ReplaceAll(then, " ", "-")))
			told.ObserveIdentifier(0, []byte(names[i]))
		}
		if then == "check" {
			if v := told.Check(clean); !v.Pass() {
				t.Fatalf("clean output failed: %v", v.Reasons)
			}
		} else {
			told.Generation()
		}
		for _, n := range names {
			if v := other.Check(apply(`{"user":{"name":"nobody"},"note":"login by ` + n + `"}`)); !v.Reasons.Has(ReasonEcho) {
				t.Errorf("after the telling Checker's %s, another Checker missed %s in a note", then, n)
			}
		}
	}
}

// routeAndGate compiles route "v" of the given field rules (YAML lines)
// and its gate.
func routeAndGate(t *testing.T, fields string) (*route.Route, *Gate) {
	t.Helper()
	cfg := configWithFields(t, fields)
	r, err := route.Compile("v", cfg.Vendors["v"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New("v", cfg.Vendors["v"])
	if err != nil {
		t.Fatal(err)
	}
	return r, g
}
