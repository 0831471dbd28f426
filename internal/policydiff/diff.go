// Package policydiff compares two loaded configs route by route and says
// which changes are material: those that give a vendor more data, less
// protected data, or data under a new key, recipient or purpose (design
// section 7, `deident policy diff`). It works on configs after defaults, so
// a default written out and a default left implicit compare equal; keys are
// compared by key id and epoch, never by their bytes.
package policydiff

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deident/deident/internal/config"
)

// Audience says who a change concerns.
type Audience string

const (
	// Vendor changes alter what the vendor receives; they go in the change notice.
	Vendor Audience = "vendor"
	// Internal changes (the gate) alter our own checks; the vendor sees no difference
	// unless a check lets more through.
	Internal Audience = "internal"
)

// Change is one difference between the old and the new config.
type Change struct {
	// Route is the vendor route's name; empty for changes outside routes (sources).
	Route string `json:"route,omitempty"`
	// Key is the key path, with field rules addressed by their path:
	// "vendors.acme.fields[actor.user.name].action".
	Key string `json:"key"`
	// Old and New are the values as they print; empty when absent.
	Old string `json:"old,omitempty"`
	New string `json:"new,omitempty"`
	// Material marks a change that exposes more or weakens protection; Why says how.
	Material bool   `json:"material"`
	Why      string `json:"why,omitempty"`
	// Audience: vendor or internal.
	Audience Audience `json:"audience"`
}

func (c Change) String() string {
	mark := " "
	if c.Material {
		mark = "!"
	}
	var s string
	switch {
	case c.Old == "":
		s = fmt.Sprintf("%s %s: added %s", mark, c.Key, c.New)
	case c.New == "":
		s = fmt.Sprintf("%s %s: removed (was %s)", mark, c.Key, c.Old)
	default:
		s = fmt.Sprintf("%s %s: %s -> %s", mark, c.Key, c.Old, c.New)
	}
	if c.Why != "" {
		s += "  [" + c.Why + "]"
	}
	return s
}

// Material reports whether any change is material.
func Material(changes []Change) bool {
	return slices.ContainsFunc(changes, func(c Change) bool { return c.Material })
}

type differ struct {
	out []Change
}

func (d *differ) add(route, key, old, new string, material bool, why string, aud Audience) {
	d.out = append(d.out, Change{Route: route, Key: key, Old: old, New: new, Material: material, Why: why, Audience: aud})
}

// Diff lists every change from old to new, routes in name order, sources
// last. Both configs must be loaded (config.Load: defaults applied, keys read).
func Diff(old, new *config.Config) []Change {
	d := &differ{}
	names := slices.Sorted(maps.Keys(union(old.Vendors, new.Vendors)))
	for _, name := range names {
		o, inOld := old.Vendors[name]
		n, inNew := new.Vendors[name]
		p := "vendors." + name
		switch {
		case !inOld:
			d.add(name, p, "", fmt.Sprintf("route to %s for %s (%s)", n.Vendor, n.Purpose, cats(n.Categories)), true, "route added", Vendor)
		case !inNew:
			d.add(name, p, fmt.Sprintf("route to %s", o.Vendor), "", false, "", Vendor)
		default:
			d.route(name, o, n)
		}
	}
	d.sources(old, new)
	return d.out
}

func union[V any](a, b map[string]V) map[string]bool {
	u := map[string]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

func cats(cs []config.Category) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

func (d *differ) route(name string, o, n config.Route) {
	p := "vendors." + name
	if o.Vendor != n.Vendor {
		d.add(name, p+".vendor", o.Vendor, n.Vendor, true, "new recipient", Vendor)
	}
	if o.Purpose != n.Purpose {
		d.add(name, p+".purpose", o.Purpose, n.Purpose, true, "new purpose", Vendor)
	}
	for _, c := range config.Categories {
		had, has := slices.Contains(o.Categories, c), slices.Contains(n.Categories, c)
		switch {
		case !had && has:
			d.add(name, p+".categories", "", string(c), true, "category added", Vendor)
		case had && !has:
			d.add(name, p+".categories", string(c), "", false, "", Vendor)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(union(o.OptIn, n.OptIn))) {
		ov, had := o.OptIn[c]
		nv, has := n.OptIn[c]
		switch {
		case !had && has:
			d.add(name, p+".opt_in."+c, "", strconv.Quote(nv), true, "opt-in added", Vendor)
		case had && !has:
			d.add(name, p+".opt_in."+c, strconv.Quote(ov), "", false, "", Vendor)
		case ov != nv:
			d.add(name, p+".opt_in."+c, strconv.Quote(ov), strconv.Quote(nv), false, "", Vendor)
		}
	}
	if o.Topic != n.Topic {
		d.add(name, p+".topic", o.Topic, n.Topic, true, "output goes to another topic", Vendor)
	}
	if o.Output != n.Output {
		d.add(name, p+".output", string(o.Output), string(n.Output), false, "", Vendor)
	}
	if o.EventTime != n.EventTime {
		d.add(name, p+".event_time", o.EventTime, n.EventTime, false, "", Vendor)
	}
	if o.CacheEntries != n.CacheEntries {
		d.add(name, p+".cache_entries", strconv.Itoa(o.CacheEntries), strconv.Itoa(n.CacheEntries), false, "", Internal)
	}
	d.keys(name, o.Keys, n.Keys)
	d.fields(name, o.Fields, n.Fields)
	d.kanon(name, o.KAnon, n.KAnon)
	d.gate(name, o.Gate, n.Gate)
}

func keyDesc(k config.KeyRef) string {
	if k.ValidFrom.IsZero() {
		return k.Key.ID() + " (from the beginning)"
	}
	return k.Key.ID() + " (from " + k.ValidFrom.UTC().Format(time.RFC3339) + ")"
}

func (d *differ) keys(name string, o, n []config.KeyRef) {
	p := "vendors." + name + ".keys"
	ids := func(ks []config.KeyRef) map[string]config.KeyRef {
		m := map[string]config.KeyRef{}
		for _, k := range ks {
			m[k.Key.ID()] = k
		}
		return m
	}
	om, nm := ids(o), ids(n)
	for _, id := range slices.Sorted(maps.Keys(union(om, nm))) {
		ok, had := om[id]
		nk, has := nm[id]
		switch {
		case !had:
			d.add(name, p+"["+id+"]", "", keyDesc(nk), true, "key changed: pseudonyms change from its epoch", Vendor)
		case !has:
			d.add(name, p+"["+id+"]", keyDesc(ok), "", true, "key changed: its epoch is no longer served (or is crypto-shredded)", Vendor)
		case !ok.ValidFrom.Equal(nk.ValidFrom):
			d.add(name, p+"["+id+"].valid_from", keyDesc(ok), keyDesc(nk), true, "key changed: epoch moved", Vendor)
		}
	}
}

// Strength orders actions by how much they protect a field, most first:
// drop > pseudonymize, email_split with the domain pseudonymized >
// email_split keeping the domain > ip_prefix_preserving > ip_truncate,
// generalize > keep.
func Strength(f config.FieldRule) int {
	switch f.Action {
	case config.Drop:
		return 60
	case config.Pseudonymize:
		return 50
	case config.EmailSplit:
		if f.Domain == "pseudonymize" {
			return 50
		}
		return 45
	case config.IPPrefixPreserving:
		return 40
	case config.IPTruncate, config.Generalize:
		return 30
	case config.Keep:
		return 0
	}
	return 0
}

func ruleDesc(f config.FieldRule) string {
	var opts []string
	switch f.Action {
	case config.Pseudonymize, config.EmailSplit:
		opts = append(opts, "namespace="+f.Namespace, "bits="+strconv.Itoa(f.Bits), "encoding="+f.Encoding)
		if f.Prefix != "" {
			opts = append(opts, "prefix="+f.Prefix)
		}
		opts = append(opts, "normalize="+f.Normalize)
		if f.Action == config.EmailSplit {
			opts = append(opts, "domain="+f.Domain)
		}
	case config.IPTruncate:
		opts = append(opts, fmt.Sprintf("ipv4_bits=%d", f.IPv4Bits), fmt.Sprintf("ipv6_bits=%d", f.IPv6Bits))
	case config.Generalize:
		opts = append(opts, generalizer(f))
	}
	if len(opts) == 0 {
		return string(f.Action)
	}
	return string(f.Action) + " (" + strings.Join(opts, ", ") + ")"
}

func generalizer(f config.FieldRule) string {
	switch {
	case f.TimeBucket != "":
		return "time_bucket=" + f.TimeBucket
	case f.NumericBucket != nil && len(f.NumericBucket.Edges) > 0:
		return "numeric_bucket.edges=" + floats(f.NumericBucket.Edges)
	case f.NumericBucket != nil:
		return "numeric_bucket.width=" + strconv.FormatFloat(f.NumericBucket.Width, 'g', -1, 64)
	case f.Hierarchy != nil:
		return fmt.Sprintf("hierarchy=%s level %d", f.Hierarchy.File, f.Hierarchy.Level)
	case f.Map != nil:
		return fmt.Sprintf("map (%d entries, %d outputs)", len(f.Map.Entries), mapOutputs(f.Map))
	}
	return "?"
}

func floats(fs []float64) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func mapOutputs(m *config.MapTable) int {
	out := map[string]bool{}
	for _, e := range m.Entries {
		out[e.To] = true
	}
	def := m.Default
	if def == "" {
		def = "other"
	}
	out[def] = true
	return len(out)
}

func (d *differ) fields(name string, o, n []config.FieldRule) {
	p := "vendors." + name + ".fields"
	index := func(fs []config.FieldRule) map[string]config.FieldRule {
		m := map[string]config.FieldRule{}
		for _, f := range fs {
			m[f.Path] = f
		}
		return m
	}
	om, nm := index(o), index(n)
	// joinable[path] = the other paths sharing its pseudonym namespace.
	joinable := func(m map[string]config.FieldRule) map[string][]string {
		byNS := map[string][]string{}
		for path, f := range m {
			if f.Action == config.Pseudonymize || f.Action == config.EmailSplit {
				byNS[f.Namespace] = append(byNS[f.Namespace], path)
			}
		}
		j := map[string][]string{}
		for _, paths := range byNS {
			for _, a := range paths {
				for _, b := range paths {
					if a != b {
						j[a] = append(j[a], b)
					}
				}
			}
		}
		return j
	}
	oj, nj := joinable(om), joinable(nm)
	for _, path := range slices.Sorted(maps.Keys(union(om, nm))) {
		of, had := om[path]
		nf, has := nm[path]
		fp := p + "[" + path + "]"
		switch {
		case !had:
			if nf.Action == config.Drop {
				d.add(name, fp, "", ruleDesc(nf), false, "", Vendor)
			} else {
				d.add(name, fp, "", ruleDesc(nf), true, "field newly exported", Vendor)
			}
			continue
		case !has:
			d.add(name, fp, ruleDesc(of), "", false, "", Vendor)
			continue
		}
		if of.Action != nf.Action || Strength(of) != Strength(nf) {
			weaker := Strength(nf) < Strength(of)
			why := ""
			if weaker {
				why = "weaker action"
				if of.Action == config.Drop {
					why = "field newly exported"
				}
			}
			d.add(name, fp+".action", ruleDesc(of), ruleDesc(nf), weaker, why, Vendor)
			continue
		}
		d.options(name, fp, of, nf)
		// Joinability: paths (present in both configs) that now share a namespace.
		// Each pair is reported once, at its first path.
		var newly []string
		for _, other := range nj[path] {
			if _, inOld := om[other]; inOld && other > path && !slices.Contains(oj[path], other) {
				newly = append(newly, other)
			}
		}
		if len(newly) > 0 {
			sort.Strings(newly)
			d.add(name, fp+".namespace", "", "joinable with "+strings.Join(newly, ", "), true, "pseudonyms newly joinable across fields", Vendor)
		}
	}
}

func (d *differ) options(name, fp string, o, n config.FieldRule) {
	add := func(key, old, new string, material bool, why string) {
		d.add(name, fp+"."+key, old, new, material, why, Vendor)
	}
	str := func(key, old, new string) {
		if old != new {
			add(key, old, new, false, "")
		}
	}
	switch o.Action {
	case config.Pseudonymize, config.EmailSplit:
		if o.Bits != n.Bits {
			add("bits", strconv.Itoa(o.Bits), strconv.Itoa(n.Bits), n.Bits < o.Bits, ifs(n.Bits < o.Bits, "fewer pseudonym bits"))
		}
		str("namespace", o.Namespace, n.Namespace)
		str("encoding", o.Encoding, n.Encoding)
		str("prefix", o.Prefix, n.Prefix)
		str("normalize", o.Normalize, n.Normalize)
		str("domain", o.Domain, n.Domain)
	case config.IPTruncate:
		if o.IPv4Bits != n.IPv4Bits {
			add("ipv4_bits", strconv.Itoa(o.IPv4Bits), strconv.Itoa(n.IPv4Bits), n.IPv4Bits > o.IPv4Bits, ifs(n.IPv4Bits > o.IPv4Bits, "more address bits kept"))
		}
		if o.IPv6Bits != n.IPv6Bits {
			add("ipv6_bits", strconv.Itoa(o.IPv6Bits), strconv.Itoa(n.IPv6Bits), n.IPv6Bits > o.IPv6Bits, ifs(n.IPv6Bits > o.IPv6Bits, "more address bits kept"))
		}
	case config.Generalize:
		og, ng := generalizer(o), generalizer(n)
		if og == ng && (o.Map == nil || slices.Equal(o.Map.Entries, n.Map.Entries) && o.Map.Default == n.Map.Default) {
			return
		}
		finer, why := finerGeneralization(o, n)
		add("generalize", og, ng, finer, why)
	}
}

func ifs(b bool, s string) string {
	if b {
		return s
	}
	return ""
}

// finerGeneralization reports whether n may output finer values than o.
// Where it cannot tell (a different kind of generalization, another
// hierarchy file), it says so and counts the change as material.
func finerGeneralization(o, n config.FieldRule) (bool, string) {
	switch {
	case o.TimeBucket != "" && n.TimeBucket != "":
		od, err1 := config.ParseBucket(o.TimeBucket)
		nd, err2 := config.ParseBucket(n.TimeBucket)
		if err1 == nil && err2 == nil && nd < od {
			return true, "finer time buckets"
		}
		return false, ""
	case o.NumericBucket != nil && n.NumericBucket != nil && len(o.NumericBucket.Edges) == 0 && len(n.NumericBucket.Edges) == 0:
		if n.NumericBucket.Width < o.NumericBucket.Width {
			return true, "narrower numeric buckets"
		}
		return false, ""
	case o.NumericBucket != nil && n.NumericBucket != nil && len(o.NumericBucket.Edges) > 0 && len(n.NumericBucket.Edges) > 0:
		for _, e := range n.NumericBucket.Edges {
			if !slices.Contains(o.NumericBucket.Edges, e) {
				return true, "new numeric bucket edges (finer buckets)"
			}
		}
		return false, ""
	case o.Hierarchy != nil && n.Hierarchy != nil && o.Hierarchy.File == n.Hierarchy.File && o.Hierarchy.Separator == n.Hierarchy.Separator:
		if n.Hierarchy.Level < o.Hierarchy.Level {
			return true, "lower hierarchy level (finer values)"
		}
		return false, ""
	case o.Map != nil && n.Map != nil:
		if mapOutputs(n.Map) > mapOutputs(o.Map) {
			return true, "map has more distinct outputs"
		}
		if refines(o.Map, n.Map) {
			return false, ""
		}
		return true, "map regroups values; cannot show it is not finer"
	}
	return true, "another generalization; cannot show it is not finer"
}

// refines reports whether every pair of inputs o maps together n maps
// together too (n is o, or coarser), over the inputs either lists.
func refines(o, n *config.MapTable) bool {
	get := func(m *config.MapTable, v string) string {
		for _, e := range m.Entries {
			if e.From == v {
				return e.To
			}
		}
		if m.Default == "" {
			return "other"
		}
		return m.Default
	}
	var in []string
	for _, e := range o.Entries {
		in = append(in, e.From)
	}
	for _, e := range n.Entries {
		in = append(in, e.From)
	}
	in = append(in, "\x00unlisted")
	for _, a := range in {
		for _, b := range in {
			if get(o, a) == get(o, b) && get(n, a) != get(n, b) {
				return false
			}
		}
	}
	return true
}

func (d *differ) kanon(name string, o, n *config.KAnon) {
	p := "vendors." + name + ".k_anonymity"
	switch {
	case o == nil && n == nil:
		return
	case o == nil:
		d.add(name, p, "", fmt.Sprintf("k=%d on %s", n.K, n.Entity), false, "", Vendor)
		return
	case n == nil:
		d.add(name, p, fmt.Sprintf("k=%d on %s", o.K, o.Entity), "", true, "k-anonymity removed", Vendor)
		return
	}
	add := func(key, old, new string, material bool, why string) {
		d.add(name, p+"."+key, old, new, material, why, Vendor)
	}
	if o.K != n.K {
		add("k", strconv.Itoa(o.K), strconv.Itoa(n.K), n.K < o.K, ifs(n.K < o.K, "k lowered"))
	}
	if o.Entity != n.Entity {
		add("entity", o.Entity, n.Entity, true, "k counts another entity")
	}
	if o.Mode != n.Mode {
		m := o.Mode == config.KAnonAggregate && n.Mode == config.KAnonRecord
		add("mode", string(o.Mode), string(n.Mode), m, ifs(m, "individual records instead of aggregates"))
	}
	oq := map[string]config.QuasiIdentifier{}
	for _, q := range o.QuasiIdentifiers {
		oq[q.Path] = q
	}
	nq := map[string]config.QuasiIdentifier{}
	for _, q := range n.QuasiIdentifiers {
		nq[q.Path] = q
	}
	for _, path := range slices.Sorted(maps.Keys(union(oq, nq))) {
		a, had := oq[path]
		b, has := nq[path]
		key := "quasi_identifiers[" + path + "]"
		switch {
		case !had:
			add(key, "", ladder(b.Ladder), false, "")
		case !has:
			add(key, ladder(a.Ladder), "", true, "quasi-identifier removed: no longer generalized for k")
		case ladder(a.Ladder) != ladder(b.Ladder):
			add(key+".ladder", ladder(a.Ladder), ladder(b.Ladder), false, "")
		}
	}
	if o.Window != n.Window {
		add("window", o.Window.String(), n.Window.String(), false, "")
	}
	if o.MaxDelay != n.MaxDelay {
		add("max_delay", o.MaxDelay.String(), n.MaxDelay.String(), false, "")
	}
	// Without the repartition topic each replica counts k over its own
	// partitions: a class can be released piecewise, by several replicas.
	if o.RepartitionTopic != n.RepartitionTopic {
		gone := n.RepartitionTopic == ""
		add("repartition_topic", o.RepartitionTopic, n.RepartitionTopic, gone, ifs(gone, "k counted per replica: a class may be released piecewise"))
	}
	if level := func(l *int) string {
		if l == nil {
			return ""
		}
		return strconv.Itoa(*l)
	}; level(o.PartitionLevel) != level(n.PartitionLevel) {
		add("partition_level", level(o.PartitionLevel), level(n.PartitionLevel), false, "")
	}
	switch {
	case o.LDiversity != nil && n.LDiversity == nil:
		add("l_diversity", fmt.Sprintf("l=%d on %s", o.LDiversity.L, o.LDiversity.Field), "", true, "l-diversity removed")
	case o.LDiversity == nil && n.LDiversity != nil:
		add("l_diversity", "", fmt.Sprintf("l=%d on %s", n.LDiversity.L, n.LDiversity.Field), false, "")
	case o.LDiversity != nil && *o.LDiversity != *n.LDiversity:
		lower := n.LDiversity.L < o.LDiversity.L || n.LDiversity.Field != o.LDiversity.Field
		add("l_diversity", fmt.Sprintf("l=%d on %s", o.LDiversity.L, o.LDiversity.Field), fmt.Sprintf("l=%d on %s", n.LDiversity.L, n.LDiversity.Field), lower, ifs(lower, "l-diversity weaker"))
	}
	switch {
	case o.Noise != nil && n.Noise == nil:
		add("noise", fmt.Sprintf("epsilon=%g", o.Noise.Epsilon), "", true, "noise removed")
	case o.Noise == nil && n.Noise != nil:
		add("noise", "", fmt.Sprintf("epsilon=%g", n.Noise.Epsilon), false, "")
	case o.Noise != nil && o.Noise.Epsilon != n.Noise.Epsilon:
		m := n.Noise.Epsilon > o.Noise.Epsilon
		add("noise.epsilon", fmt.Sprintf("%g", o.Noise.Epsilon), fmt.Sprintf("%g", n.Noise.Epsilon), m, ifs(m, "larger epsilon: less noise"))
	}
}

func ladder(l config.Ladder) string {
	var parts []string
	if len(l.TimeBucket) > 0 {
		parts = append(parts, "time_bucket "+strings.Join(l.TimeBucket, ","))
	}
	if len(l.NumericWidth) > 0 {
		parts = append(parts, "numeric_width "+floats(l.NumericWidth))
	}
	for _, e := range l.NumericEdges {
		parts = append(parts, "numeric_edges "+floats(e))
	}
	if l.Hierarchy != nil {
		parts = append(parts, fmt.Sprintf("hierarchy %s %v", l.Hierarchy.File, l.Hierarchy.Levels))
	}
	if len(l.IPPrefix) > 0 {
		parts = append(parts, fmt.Sprintf("ip_prefix %v", l.IPPrefix))
	}
	if len(l.IPv6Prefix) > 0 {
		parts = append(parts, fmt.Sprintf("ipv6_prefix %v", l.IPv6Prefix))
	}
	if len(parts) == 0 {
		return "(value, then *)"
	}
	return strings.Join(parts, "; ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (d *differ) gate(name string, o, n config.Gate) {
	p := "vendors." + name + ".gate"
	o, n = o.WithDefaults(), n.WithDefaults()
	add := func(key, old, new string, material bool, why string) {
		d.add(name, p+"."+key, old, new, material, why, Internal)
	}
	checks := []struct {
		key  string
		o, n bool
	}{
		{"enabled", o.On(), n.On()},
		{"schema", o.SchemaOn(), n.SchemaOn()},
		{"k", *o.K, *n.K},
		{"echo", o.EchoOn(), n.EchoOn()},
	}
	for _, c := range checks {
		if c.o != c.n {
			add(c.key, onOff(c.o), onOff(c.n), !c.n, ifs(!c.n, "gate loosened: check switched off"))
		}
	}
	for _, pat := range config.GatePatterns {
		had, has := slices.Contains(o.Patterns, pat), slices.Contains(n.Patterns, pat)
		switch {
		case had && !has:
			add("patterns", string(pat), "", true, "gate loosened: pattern removed")
		case !had && has:
			add("patterns", "", string(pat), false, "")
		}
	}
	if o.MinK != n.MinK {
		add("min_k", strconv.Itoa(o.MinK), strconv.Itoa(n.MinK), n.MinK < o.MinK, ifs(n.MinK < o.MinK, "gate loosened: min_k lowered"))
	}
	if o.KField != n.KField {
		add("k_field", o.KField, n.KField, false, "")
	}
	if o.MaxQuarantineRate != n.MaxQuarantineRate {
		m := n.MaxQuarantineRate > o.MaxQuarantineRate
		add("max_quarantine_rate", strconv.FormatFloat(o.MaxQuarantineRate, 'g', -1, 64), strconv.FormatFloat(n.MaxQuarantineRate, 'g', -1, 64), m, ifs(m, "gate loosened: fails closed later"))
	}
	if o.MinRecords != n.MinRecords {
		m := n.MinRecords > o.MinRecords
		add("min_records", strconv.Itoa(o.MinRecords), strconv.Itoa(n.MinRecords), m, ifs(m, "gate loosened: fails closed later"))
	}
	if o.QuarantineWindow != n.QuarantineWindow {
		add("quarantine_window", o.QuarantineWindow.String(), n.QuarantineWindow.String(), false, "")
	}
	if o.BloomCapacity != n.BloomCapacity {
		add("bloom_capacity", strconv.Itoa(o.BloomCapacity), strconv.Itoa(n.BloomCapacity), false, "")
	}
	if o.BloomFPRate != n.BloomFPRate {
		add("bloom_fp_rate", strconv.FormatFloat(o.BloomFPRate, 'g', -1, 64), strconv.FormatFloat(n.BloomFPRate, 'g', -1, 64), false, "")
	}
	if o.BloomRotate != n.BloomRotate {
		add("bloom_rotate", o.BloomRotate.String(), n.BloomRotate.String(), false, "")
	}
}

func (d *differ) sources(old, new *config.Config) {
	allowedBy := func(c config.Category) []string {
		var rs []string
		for _, name := range slices.Sorted(maps.Keys(new.Vendors)) {
			if slices.Contains(new.Vendors[name].Categories, c) {
				rs = append(rs, name)
			}
		}
		return rs
	}
	for _, name := range slices.Sorted(maps.Keys(union(old.Sources, new.Sources))) {
		o, had := old.Sources[name]
		n, has := new.Sources[name]
		p := "sources." + name
		desc := func(s config.Source) string { return fmt.Sprintf("%s (%s, %s)", s.Topic, s.Category, s.Format) }
		switch {
		case !had:
			rs := allowedBy(n.Category)
			d.add("", p, "", desc(n), len(rs) > 0, ifs(len(rs) > 0, "new source feeds "+strings.Join(rs, ", ")), Vendor)
		case !has:
			d.add("", p, desc(o), "", false, "", Vendor)
		case o != n:
			rs := allowedBy(n.Category)
			m := (o.Category != n.Category || o.Topic != n.Topic) && len(rs) > 0
			d.add("", p, desc(o), desc(n), m, ifs(m, "other records feed "+strings.Join(rs, ", ")), Vendor)
		}
	}
}
