package main

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/deident/deident/internal/policydiff"
)

// exitReloadRefused is check --against's exit code when a running worker
// would refuse the new config (refused or invalid).
const exitReloadRefused = 1

// checkReload prints what a worker running the config at runningPath
// would do on reloading newPath: applied or refused, the reasons, the
// policy changes and how to acknowledge material ones.
func checkReload(w io.Writer, runningPath, newPath string) error {
	cfg, routes, err := loadForDiff("running", runningPath)
	if err != nil {
		return err
	}
	p := loadPlan(&policyState{cfg: cfg, routes: routes}, newPath)
	verdict := string(p.Result)
	if p.Result == reloadApplied && !p.Changed() {
		verdict = "applied (no policy change)"
	}
	fmt.Fprintf(w, "reload of %s over %s: %s\n", newPath, runningPath, verdict)
	for _, r := range p.Reasons {
		fmt.Fprintf(w, "  - %s\n", r)
	}
	byRoute := map[string][]policydiff.Change{}
	for _, c := range p.Changes {
		byRoute[c.Route] = append(byRoute[c.Route], c)
	}
	for _, name := range slices.Sorted(maps.Keys(byRoute)) {
		if name == "" {
			fmt.Fprintln(w, "\nsources")
		} else {
			v := p.Versions[name]
			fmt.Fprintf(w, "\nroute %s (policy %s -> %s)\n", name, orDash(v[0]), orDash(v[1]))
			if why := p.Acked[name]; why != "" {
				fmt.Fprintf(w, "  material changes acknowledged: %s\n", why)
			}
		}
		for _, c := range byRoute[name] {
			fmt.Fprintf(w, "  %s\n", c)
		}
	}
	var unacked []string
	for _, name := range slices.Sorted(maps.Keys(p.Versions)) {
		for _, c := range byRoute[name] {
			if c.Material && p.Acked[name] == "" {
				unacked = append(unacked, name)
				break
			}
		}
	}
	if p.Result == reloadRefused && len(unacked) > 0 {
		fmt.Fprintf(w, "\nTo accept the material changes, review them and acknowledge them in %s:\n  acknowledge:\n", newPath)
		for _, name := range unacked {
			fmt.Fprintf(w, "    - {route: %s, policy: %s, reason: \"...\"}\n", name, p.Versions[name][1])
		}
	}
	if p.Result != reloadApplied {
		return &exitError{code: exitReloadRefused, err: fmt.Errorf("%w (%s)", errNoReload, p.Result)}
	}
	return nil
}
