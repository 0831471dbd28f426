package policydiff

import "github.com/deident/deident/internal/config"

// Unacknowledged returns the material changes that neither ack (the
// operator's --ack reason, covering every change) nor the new config's
// acknowledge entries cover. An entry covers a route's changes when it
// names the route's new policy version (versions: route name -> new
// version), so it never covers a later change of the route. Material
// changes outside routes (sources) are covered by ack only.
func Unacknowledged(changes []Change, new *config.Config, versions map[string]string, ack string) []Change {
	if ack != "" {
		return nil
	}
	var out []Change
	for _, c := range changes {
		if !c.Material {
			continue
		}
		if c.Route != "" && new.Acked(c.Route, versions[c.Route]) != "" {
			continue
		}
		out = append(out, c)
	}
	return out
}
