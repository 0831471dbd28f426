package config

import (
	"fmt"
	"strings"
)

// Ack acknowledges a material policy change in the config file itself, as
// `deident policy diff --ack REASON` does on the command line: a running
// worker accepts a reload that weakens route Route only when the file
// acknowledges it. It names the policy version the change leads to, so it
// covers that change and no later one (an ack left in the file does not
// wave through the next edit). Acks are not part of any policy version.
type Ack struct {
	// Route is the vendor route whose change is acknowledged.
	Route string `mapstructure:"route"`
	// Policy is the route's new policy version (`deident check` prints it).
	Policy string `mapstructure:"policy"`
	// Reason says why the weaker policy is acceptable; it goes into the
	// vendor notice and the reload log.
	Reason string `mapstructure:"reason"`
}

// Acked returns the reason the file gives for route's policy version, or "".
func (c *Config) Acked(route, version string) string {
	for _, a := range c.Acknowledge {
		if a.Route == route && a.Policy == version {
			return strings.TrimSpace(a.Reason)
		}
	}
	return ""
}

func (c *Config) validateAcks() []error {
	var errs []error
	for i, a := range c.Acknowledge {
		p := fmt.Sprintf("acknowledge[%d]", i)
		if _, ok := c.Vendors[a.Route]; !ok {
			errs = append(errs, fmt.Errorf("%s.route: no vendor route %q", p, a.Route))
		}
		if a.Policy == "" {
			errs = append(errs, fmt.Errorf("%s.policy: required (the route's new policy version, as deident check prints it)", p))
		}
		if strings.TrimSpace(a.Reason) == "" {
			errs = append(errs, fmt.Errorf("%s.reason: required (why the material change is acceptable)", p))
		}
	}
	return errs
}
