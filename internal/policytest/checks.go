package policytest

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/fieldpath"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/kanon"
	"github.com/deident/deident/transforms/route"
)

// rawPatterns are the patterns raw_identifiers looks for.
var rawPatterns = []config.GatePattern{config.PatternEmail, config.PatternIPv4, config.PatternIPv6, config.PatternCard}

// rawChecker is the re-identification gate of the route under test, with
// only the echo check and the e-mail, IP and card patterns on, whatever the
// route's own gate says: the test asserts these hold, not that the gate
// would catch them.
type rawChecker struct {
	checker *gate.Checker
}

func newRawChecker(r *route.Route) (*rawChecker, error) {
	rc := r.Config
	t, f := true, false
	rc.Gate = config.Gate{Enabled: &t, Schema: &f, K: &f, Echo: &t, Patterns: rawPatterns}.WithDefaults()
	rc.KAnon = nil
	start := time.Unix(0, 0)
	g, err := gate.New(r.Name, rc, gate.WithClock(func() time.Time { return start }))
	if err != nil {
		return nil, err
	}
	return &rawChecker{checker: g.NewChecker()}, nil
}

var rawWhat = map[string]string{
	"echo":          "a raw value of a direct-identifier field",
	"pattern:email": "an e-mail address",
	"pattern:ipv4":  "an IPv4 address",
	"pattern:ipv6":  "an IPv6 address",
	"pattern:card":  "a payment card number",
}

// check runs on the output of the record the applier just read.
func (c *rawChecker) check(res *Result, at string, out []byte) {
	v := c.checker.Check(out)
	for _, f := range v.Findings {
		what, ok := rawWhat[f.Reason.String()]
		if !ok {
			continue
		}
		res.fail("raw_identifiers", "%s: %s in %s", at, what, f.Path)
	}
}

// allowlist is the set of paths a route's rules let out.
type allowlist struct {
	leaves   map[string]config.Action // rule paths (drop excluded)
	prefixes map[string]bool          // every path above a rule path
}

func newAllowlist(rc config.Route) allowlist {
	a := allowlist{leaves: map[string]config.Action{}, prefixes: map[string]bool{}}
	for _, f := range rc.Fields {
		if f.Action == config.Drop {
			continue
		}
		p, err := fieldpath.Parse(f.Path)
		if err != nil {
			continue // the config loader rejects it
		}
		a.leaves[p.String()] = f.Action
		var b strings.Builder
		for i, seg := range p {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(seg.Name)
			for j := 0; j <= seg.Arrays; j++ {
				if j > 0 {
					b.WriteString("[]")
				}
				if i < len(p)-1 || j < seg.Arrays {
					a.prefixes[b.String()] = true
				}
			}
		}
	}
	return a
}

// outside lists the paths of v that no rule names.
func (a allowlist) outside(path string, v any, out []string) []string {
	if path != "" {
		if act, ok := a.leaves[path]; ok {
			if act == config.Keep {
				return out // a kept subtree is the rule's
			}
			if _, isObj := v.(map[string]any); !isObj {
				return out
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		if path != "" && !a.prefixes[path] {
			return append(out, path)
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			out = a.outside(p, x[k], out)
		}
	case []any:
		if !a.prefixes[path] {
			return append(out, path)
		}
		seen := map[string]bool{}
		for _, e := range x {
			for _, p := range a.outside(path+"[]", e, nil) {
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
	default:
		return append(out, orRoot(path))
	}
	return out
}

func checkAllowlist(res *Result, rc config.Route, recs []record, outs []applied) {
	a := newAllowlist(rc)
	for i, rec := range recs {
		if outs[i].out == nil {
			continue
		}
		for _, p := range a.outside("", outs[i].val, nil) {
			res.fail("allowlist", "%s: %s is not a field the route's rules name", rec.at, p)
		}
	}
}

// pseudonymizing reports whether an action's output is keyed.
func pseudonymizing(a config.Action) bool {
	return a == config.Pseudonymize || a == config.EmailSplit || a == config.IPPrefixPreserving
}

// checkIsolation applies the route's own rules under each other route's
// keys (or the one different_from_route names) and requires every keyed
// output (pseudonyms, the local part of email_split, Crypto-PAn addresses)
// to differ: the same value must never get the same pseudonym at two
// vendors. Using the route's rules isolates the keys from differences in
// namespaces and options, which would hide a shared key.
func checkIsolation(res *Result, cfg *config.Config, c *Case, rc config.Route, recs []record, outs []applied) {
	type keyed struct {
		path   fieldpath.Path
		action config.Action
	}
	var fields []keyed
	for _, f := range rc.Fields {
		if pseudonymizing(f.Action) {
			if p, err := fieldpath.Parse(f.Path); err == nil {
				fields = append(fields, keyed{p, f.Action})
			}
		}
	}
	var others []string
	if c.DifferentFromRoute != "" {
		if _, ok := cfg.Vendors[c.DifferentFromRoute]; !ok || c.DifferentFromRoute == c.Route {
			res.fail("isolation", "different_from_route: %q is not another route of the config", c.DifferentFromRoute)
			return
		}
		others = []string{c.DifferentFromRoute}
	} else {
		for _, name := range sortedNames(cfg.Vendors) {
			if name == c.Route {
				continue
			}
			for _, f := range cfg.Vendors[name].Fields {
				if pseudonymizing(f.Action) {
					others = append(others, name)
					break
				}
			}
		}
	}
	if len(fields) == 0 {
		res.note("isolation: the route pseudonymizes nothing")
		return
	}
	if len(others) == 0 {
		res.note("isolation: no other route pseudonymizes; nothing to compare")
		return
	}
	for _, other := range others {
		// Each of the other route's keys in turn, as the only key: records
		// are compared with every epoch of the other vendor, whatever their time.
		for ki, key := range cfg.Vendors[other].Keys {
			if key.Retired {
				continue // no key material left to compare
			}
			alt := rc
			key.ValidFrom = time.Time{}
			alt.Keys = []config.KeyRef{key}
			alt.EventTime = ""
			ra, err := route.Compile(c.Route, alt, cfg.Dir, cfg.Limits)
			if err != nil {
				res.fail("isolation", "the route's rules under %s's keys[%d]: %v", other, ki, err)
				continue
			}
			ap := ra.NewApplier()
			compared := 0
			for i, rec := range recs {
				if outs[i].out == nil {
					continue
				}
				out, err := ap.Apply(nil, rec.data)
				if err != nil {
					continue
				}
				val, err := decode(out)
				if err != nil {
					continue
				}
				for _, f := range fields {
					mine, theirs := valuesAt(outs[i].val, f.path), valuesAt(val, f.path)
					for j := range min(len(mine), len(theirs)) {
						a, aok := mine[j].(string)
						b, bok := theirs[j].(string)
						if !aok || !bok {
							continue
						}
						if f.action == config.EmailSplit {
							a, b = localPart(a), localPart(b)
						}
						compared++
						if a == b {
							res.fail("isolation", "%s: %s gets the same pseudonym under route %s's key %s as under route %s's (%s)", rec.at, f.path, other, ra.KeyRing().ID(0), c.Route, a)
						}
					}
				}
			}
			if compared == 0 {
				res.note("isolation against %s: no keyed values in the input to compare", other)
			} else {
				res.note("isolation against %s key %s: %d keyed values differ", other, ra.KeyRing().ID(0), compared)
			}
		}
	}
}

func localPart(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i]
	}
	return s
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// checkMinK runs the route's outputs through its k-anonymity stage (clock
// frozen, as apply does) and checks every released class and published
// aggregate against k, counting distinct entities itself from the route's
// outputs the stage says each covers rather than trusting the stage's count.
func checkMinK(res *Result, cfg *config.Config, c *Case, rc config.Route, recs []record, outs []applied) {
	if rc.KAnon == nil {
		if c.MinK > 0 {
			res.fail("min_k", "route %s has no k_anonymity stage", c.Route)
		}
		return
	}
	k := rc.KAnon.K
	if c.MinK > 0 {
		k = c.MinK
	}
	entityPath, err := fieldpath.Parse(rc.KAnon.Entity)
	if err != nil {
		res.fail("min_k", "k_anonymity.entity: %v", err)
		return
	}
	start := time.Unix(0, 0)
	st, err := kanon.New(*rc.KAnon, cfg.Dir, kanon.Options{
		Now:         func() time.Time { return start },
		Rand:        rand.New(rand.NewChaCha8([32]byte{})),
		ListOffsets: true,
	})
	if err != nil {
		res.fail("min_k", "%v", err)
		return
	}
	noisy := rc.KAnon.Noise != nil
	entity := func(i int64) string {
		if i < 0 || int(i) >= len(outs) || outs[i].val == nil {
			return ""
		}
		vs := valuesAt(outs[i].val, entityPath)
		if len(vs) == 0 {
			return "" // no entity: counts as one unknown entity
		}
		return show(vs[0])
	}
	classes := map[uint64]map[string]bool{}
	var released, aggregates, suppressed, smallest int
	smallest = -1
	check := func(batch []kanon.Output) {
		for _, o := range batch {
			switch o.Kind {
			case kanon.Released, kanon.Aggregate:
				set := map[string]bool{}
				if o.Kind == kanon.Released {
					if classes[o.Class] == nil {
						classes[o.Class] = map[string]bool{}
					}
					set = classes[o.Class]
					released += o.Count
				} else {
					aggregates++
				}
				for _, p := range o.Offsets {
					set[entity(p.Offset)] = true
				}
				what := "aggregate"
				if o.Kind == kanon.Released {
					what = "released record"
				}
				if !noisy && o.Entities < k {
					res.fail("min_k", "a %s (records %s) reports %d distinct entities, under k=%d", what, offsets(recs, o.Offsets), o.Entities, k)
				}
				if o.Kind == kanon.Aggregate {
					n := len(set)
					smallest = minPos(smallest, n)
					if n < k {
						res.fail("min_k", "an aggregate covers records %s with %d distinct entities, under k=%d", offsets(recs, o.Offsets), n, k)
					} else if !noisy && n < o.Entities {
						res.fail("min_k", "an aggregate reports %d distinct entities but its records %s hold %d", o.Entities, offsets(recs, o.Offsets), n)
					}
				}
			case kanon.Suppressed:
				suppressed += o.Count
			}
		}
	}
	var buf []kanon.Output
	var r kanon.Record
	for i := range outs {
		if outs[i].out == nil {
			continue
		}
		if err := st.Extract(&r, outs[i].out); err != nil {
			res.fail("min_k", "%s: the k-anonymity stage cannot read the output: %v", recs[i].at, err)
			continue
		}
		r.Topic, r.Partition, r.Offset = "fixture", 0, int64(i)
		buf = st.Add(buf[:0], r)
		check(buf)
	}
	check(st.Flush(buf[:0]))
	for _, id := range sortedClasses(classes) {
		n := len(classes[id])
		smallest = minPos(smallest, n)
		if n < k {
			res.fail("min_k", "a released class holds %d distinct entities over the fixture, under k=%d", n, k)
		}
	}
	res.note("min_k: k=%d: %d records released in %d classes, %d aggregates, %d records suppressed; smallest class %d entities",
		k, released, len(classes), aggregates, suppressed, max(smallest, 0))
}

func minPos(a, b int) int {
	if a < 0 || b < a {
		return b
	}
	return a
}

func sortedClasses(m map[uint64]map[string]bool) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// offsets names the input records of positions, briefly.
func offsets(recs []record, ps []kanon.Position) string {
	var names []string
	for i, p := range ps {
		if i == 4 {
			names = append(names, fmt.Sprintf("and %d more", len(ps)-4))
			break
		}
		if p.Offset >= 0 && int(p.Offset) < len(recs) {
			names = append(names, recs[p.Offset].at)
		}
	}
	return strings.Join(names, ", ")
}
