package pipeline

import (
	"errors"
	"fmt"
)

// ErrNeedsRestart is wrapped by Reload's error when the new routes differ
// from the running ones in what a running worker cannot change.
var ErrNeedsRestart = errors.New("needs a restart")

// routeSet is one generation of the routes. It is never modified: Reload
// stores a new one.
type routeSet struct {
	gen    uint64
	routes []Route
}

// Reload makes routes the running routes. Every claim switches to them
// before the next record it processes, so each record is processed wholly
// under one set, and in a partition the records under the new set follow
// every record under the old one. A claim keeps the Applier, Checker and
// Stage of a route whose Version is unchanged, and makes new ones (with
// empty caches: a key change never serves an old pseudonym) for a route
// whose Version changed.
//
// routes must be the running routes in the same order, with the same
// names and topics, and a route with a k-anonymity stage must keep its
// Version (its stage holds records processed under it); otherwise Reload
// returns an error wrapping ErrNeedsRestart and changes nothing. Safe for
// concurrent use with Run; concurrent Reloads are serialised by the caller.
func (r *Runner) Reload(routes []Route) error {
	cur := r.routes.Load()
	var errs []error
	if len(routes) != len(cur.routes) {
		return fmt.Errorf("routes: %d running, %d new: %w", len(cur.routes), len(routes), ErrNeedsRestart)
	}
	for i, n := range routes {
		o := &cur.routes[i]
		switch {
		case n.Name != o.Name:
			errs = append(errs, fmt.Errorf("route %d: %s running, %s new: %w", i, o.Name, n.Name, ErrNeedsRestart))
			continue
		case n.Topic != o.Topic:
			errs = append(errs, fmt.Errorf("route %s: topic %s running, %s new: %w", n.Name, o.Topic, n.Topic, ErrNeedsRestart))
		case (n.NewStage == nil) != (o.NewStage == nil) || n.NewStage != nil && n.Version != o.Version:
			errs = append(errs, fmt.Errorf("route %s: its k-anonymity stage holds records processed under policy %s: %w", n.Name, o.Version, ErrNeedsRestart))
		}
		if n.Allows == nil || n.NewApplier == nil {
			errs = append(errs, fmt.Errorf("route %s: Allows and NewApplier are required", n.Name))
		}
		if n.NewChecker != nil && r.cfg.QuarantineTopic == "" {
			errs = append(errs, fmt.Errorf("route %s: a quarantine topic is required for its gate", n.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.routes.Store(&routeSet{gen: cur.gen + 1, routes: routes})
	return nil
}

// Versions returns the policy version of each running route, by name.
func (r *Runner) Versions() map[string]string {
	set := r.routes.Load()
	v := make(map[string]string, len(set.routes))
	for _, rt := range set.routes {
		v[rt.Name] = rt.Version
	}
	return v
}

// sync switches the claim to the running route set if a Reload stored a
// new one. Called between two records with st.stageMu held, so the
// advancer never sees a half-switched claim.
func (st *claimState) sync() {
	set := st.r.routes.Load()
	if set == st.set {
		return
	}
	for i := range set.routes {
		n := &set.routes[i]
		if n.Version == st.set.routes[i].Version {
			continue
		}
		st.policy[i] = []byte(n.Version)
		st.appliers[i] = n.NewApplier()
		st.checkers[i] = nil
		if n.NewChecker != nil {
			st.checkers[i] = n.NewChecker(st.appliers[i])
		}
		st.keyID[i], st.keyHdr[i] = "", nil
	}
	st.set = set
	st.inSet = false // categories may have changed
}
