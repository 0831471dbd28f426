package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/pseudonym"
)

// Options configure Audit.
type Options struct {
	Config *config.Config
	// Current is the route's policy in the current config; Policies holds
	// every known version (Current included), by version id.
	Current  *Policy
	Policies Policies
	Client   *kafka.Client
	Reader   Reader
	// From and To bound the vendor topic; times bound the source topics
	// too (source records in range that produced nothing are reported).
	From, To Bound
	// Grace extends the vendor topic's read past a time To, so outputs
	// published shortly after their sources are found; they are used only
	// to account for source records, not audited themselves. 1m when zero.
	Grace time.Duration
	// Now stamps the report; time.Now when nil.
	Now func() time.Time
}

// Loc names a vendor record.
type Loc struct {
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
}

// Mismatch is a vendor record whose bytes differ from what its claimed
// policy derives from its source.
type Mismatch struct {
	Loc
	Src    string `json:"src"`
	Policy string `json:"policy"`
	// Paths are the field paths that differ ("(record)" when either side is
	// not a JSON object, "(header deident-key)" for a wrong key id). Never values.
	Paths []string `json:"paths"`
}

// Unverified is a vendor record that could not be re-derived.
type Unverified struct {
	Loc
	Src    string `json:"src,omitempty"`
	Policy string `json:"policy,omitempty"`
	Reason string `json:"reason"`
}

// Shredded is a run of vendor records of one partition made under a key
// that has since been retired (deident keys retire): by design they can no
// longer be re-derived, so they are reported, not failed.
type Shredded struct {
	KeyID string `json:"key_id"`
	// EpochFrom and EpochUntil bound the key's epoch (RFC 3339; EpochFrom
	// empty: from the beginning).
	EpochFrom   string    `json:"epoch_from,omitempty"`
	EpochUntil  string    `json:"epoch_until,omitempty"`
	Partition   int       `json:"partition"`
	FirstOffset int64     `json:"first_offset"`
	LastOffset  int64     `json:"last_offset"`
	Records     int       `json:"records"`
	FirstTime   time.Time `json:"first_time"`
	LastTime    time.Time `json:"last_time"`
}

// GateFinding is a vendor record the gate fails: it should never have been published.
type GateFinding struct {
	Loc
	Src string `json:"src"`
	Verdict
}

// PolicyUse counts vendor records per claimed policy version.
type PolicyUse struct {
	Version string `json:"version"`
	File    string `json:"file,omitempty"`
	Records int    `json:"records"`
	Known   bool   `json:"known"`
}

// Bucket is one step of the report's timeline (vendor record timestamps).
type Bucket struct {
	Start      time.Time `json:"start"`
	Records    int       `json:"records"`
	Matched    int       `json:"matched"`
	Mismatched int       `json:"mismatched"`
	Other      int       `json:"other"` // no provenance, unverified
	Shredded   int       `json:"shredded"`
}

// FieldAction is one rule of the current policy.
type FieldAction struct {
	Path   string `json:"path"`
	Action string `json:"action"`
}

// Summary holds the counts. Vendor side: records = matched + duplicates +
// mismatched + no_provenance + unverified + crypto_shredded. Source side:
// records = delivered + missing + quarantined + failed (a source record of
// a retired key epoch with no vendor record counts as failed).
type Summary struct {
	VendorRecords int `json:"vendor_records"`
	Matched       int `json:"matched"`
	Duplicates    int `json:"duplicates"`
	Mismatched    int `json:"mismatched"`
	NoProvenance  int `json:"no_provenance"`
	Unverified    int `json:"unverified"`
	// CryptoShredded counts vendor records whose deident-key names a key
	// retired since: not re-derivable, by design, and not a finding.
	CryptoShredded int `json:"crypto_shredded"`
	GateFailures   int `json:"gate_failures"`

	SourceRecords int            `json:"source_records"`
	Delivered     int            `json:"delivered"`
	Missing       int            `json:"missing"`
	Quarantined   int            `json:"quarantined"`
	Failed        int            `json:"failed"`
	ByReason      map[string]int `json:"quarantined_by_reason"`
}

// Report is the result of an audit. It holds coordinates, policy ids, key
// ids, counts and field paths; never a record value or key material.
type Report struct {
	Route        string       `json:"route"`
	Vendor       string       `json:"vendor"`
	Purpose      string       `json:"purpose"`
	VendorTopic  string       `json:"vendor_topic"`
	Policy       string       `json:"policy"`
	From         string       `json:"from"`
	To           string       `json:"to"`
	GeneratedAt  time.Time    `json:"generated_at"`
	VendorRanges []Range      `json:"vendor_ranges"`
	SourceRanges []Range      `json:"source_ranges"`
	Summary      Summary      `json:"summary"`
	Mismatches   []Mismatch   `json:"mismatches"`
	NoProvenance []Loc        `json:"no_provenance"`
	Unverified   []Unverified `json:"unverified"`
	// CryptoShredded lists the vendor ranges made under retired keys.
	CryptoShredded []Shredded    `json:"crypto_shredded"`
	Missing        []string      `json:"missing"`
	GateFindings   []GateFinding `json:"gate_findings"`
	Policies       []PolicyUse   `json:"policies"`
	Timeline       []Bucket      `json:"timeline"`
	Fields         []FieldAction `json:"fields"`
	Notes          []string      `json:"notes,omitempty"`
}

// Clean reports whether the audit found nothing wrong: every vendor record
// re-derives byte for byte (or was made under a key retired since: crypto-
// shredded), carries provenance and passes the gate, and no source record in
// range lacks its output.
func (r *Report) Clean() bool {
	s := r.Summary
	return s.Mismatched == 0 && s.NoProvenance == 0 && s.Unverified == 0 && s.GateFailures == 0 && s.Missing == 0
}

type vendorRec struct {
	loc    Loc
	value  []byte
	policy string
	keyID  string
	extra  bool // read past To for the grace period: accounts for sources only
	done   bool
	// retired is the retired key its deident-key names, if any; shredded
	// is set once the claim holds (the source is in a retired epoch, or
	// gone): then it is counted as crypto-shredded, never re-derived.
	retired  *config.RetiredKey
	shredded bool
}

type srcKey struct {
	topic     string
	partition int
	offset    int64
}

// Audit reads the route's vendor topic over [From, To), re-derives every
// record from its source under the policy version it claims, and reports.
func Audit(ctx context.Context, o Options) (*Report, error) {
	p := o.Current
	rc := p.Route.Config
	if rc.Topic == "" {
		return nil, fmt.Errorf("vendors.%s.topic: the route has no vendor topic to audit", p.Route.Name)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	grace := o.Grace
	if grace == 0 {
		grace = time.Minute
	}
	rep := &Report{
		Route: p.Route.Name, Vendor: rc.Vendor, Purpose: rc.Purpose, VendorTopic: rc.Topic,
		Policy: p.Route.Version, From: o.From.String(), To: o.To.String(), GeneratedAt: now().UTC(),
		Summary: Summary{ByReason: map[string]int{}},
	}
	for _, f := range rc.Fields {
		rep.Fields = append(rep.Fields, FieldAction{f.Path, string(f.Action)})
	}
	sources, err := RouteSources(o.Config, p.Route.Name)
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{}
	for _, s := range sources {
		allowed[s.Topic] = true
	}
	retired, err := o.Config.RetiredKeys(p.Route.Name)
	if err != nil {
		return nil, err
	}
	shreds := map[[2]any]*Shredded{} // by key id and partition
	shred := func(v *vendorRec) {
		v.done, v.shredded = true, true
		if !v.extra {
			rep.Summary.CryptoShredded++
			addShred(shreds, *v.retired, v.loc)
		}
	}

	// 1. The vendor topic.
	vto := o.To
	if o.To.IsTime() {
		vto = Bound{Time: o.To.Time.Add(grace)}
	}
	vranges, err := Resolve(ctx, o.Client, rc.Topic, o.From, vto)
	if err != nil {
		return nil, err
	}
	bySrc := map[srcKey][]*vendorRec{}
	uses := map[string]int{}
	var recs []*vendorRec
	for _, vr := range vranges {
		err := o.Reader.Read(ctx, vr, func(m kafka.Message) error {
			v := &vendorRec{loc: Loc{vr.Partition, m.Offset, m.Time.UTC()}, value: m.Value}
			v.extra = o.To.IsTime() && !m.Time.Before(o.To.Time)
			src, hasSrc := Header(m.Headers, pipeline.HeaderSrc)
			v.policy, _ = Header(m.Headers, pipeline.HeaderPolicy)
			v.keyID, _ = Header(m.Headers, pipeline.HeaderKey)
			if !v.extra {
				rep.Summary.VendorRecords++
				recs = append(recs, v)
			}
			if !hasSrc || v.policy == "" {
				if !v.extra {
					rep.Summary.NoProvenance++
					rep.NoProvenance = append(rep.NoProvenance, v.loc)
				}
				v.done = true
				return nil
			}
			if pipeline.IsAggregateSrc(src) {
				// An aggregate derives from a window of records: it names
				// them, but re-deriving it means replaying the stage.
				if !v.extra {
					rep.Summary.Unverified++
					rep.Unverified = append(rep.Unverified, Unverified{v.loc, src, v.policy, ErrKAnonUnsupported.Error() + " (an aggregate: its deident-src names a window and offset ranges)"})
				}
				v.done = true
				return nil
			}
			t, part, off, err := ParseSrc(src)
			if err != nil {
				if !v.extra {
					rep.Summary.NoProvenance++
					rep.NoProvenance = append(rep.NoProvenance, v.loc)
				}
				v.done = true
				return nil
			}
			if !v.extra {
				uses[v.policy]++
			}
			if rk, ok := retired[v.keyID]; ok {
				v.retired = &rk
			}
			k := srcKey{t, part, off}
			bySrc[k] = append(bySrc[k], v)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if vr.Len() > 0 {
			rep.VendorRanges = append(rep.VendorRanges, vr)
		}
	}

	// 2. The source ranges: the audited range (times only) joined with every
	// offset a vendor record refers to.
	type span struct {
		topic      string
		partition  int
		start, end int64 // to read
		inStart    int64 // [inStart, inEnd): the audited source range
		inEnd      int64
	}
	spans := map[[2]any]*span{}
	get := func(topic string, part int) *span {
		k := [2]any{topic, part}
		s := spans[k]
		if s == nil {
			s = &span{topic: topic, partition: part, start: -1, end: -1}
			spans[k] = s
		}
		return s
	}
	if o.From.IsTime() || o.To.IsTime() {
		from, to := o.From, o.To
		if from.IsOffset {
			from = Bound{}
		}
		if to.IsOffset {
			to = Bound{}
		}
		for _, s := range sources {
			rs, err := Resolve(ctx, o.Client, s.Topic, from, to)
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				sp := get(r.Topic, r.Partition)
				sp.start, sp.end, sp.inStart, sp.inEnd = r.Start, r.End, r.Start, r.End
			}
		}
	}
	for k, vs := range bySrc {
		if !allowed[k.topic] {
			for _, v := range vs {
				v.done = true
				if !v.extra {
					rep.Summary.Unverified++
					rep.Unverified = append(rep.Unverified, Unverified{v.loc, Src(k.topic, k.partition, k.offset), v.policy, "source topic is not one the route may receive"})
				}
			}
			continue
		}
		sp := get(k.topic, k.partition)
		if sp.start < 0 || k.offset < sp.start {
			sp.start = k.offset
		}
		if sp.end < 0 || k.offset+1 > sp.end {
			sp.end = k.offset + 1
		}
	}

	// 3. Read the sources in offset order, derive, compare.
	keys := slices.SortedFunc(maps.Keys(spans), func(a, b [2]any) int {
		if c := strings.Compare(a[0].(string), b[0].(string)); c != 0 {
			return c
		}
		return a[1].(int) - b[1].(int)
	})
	for _, k := range keys {
		sp := spans[k]
		if sp.end <= sp.start {
			continue
		}
		if sp.inEnd > sp.inStart {
			rep.SourceRanges = append(rep.SourceRanges, Range{sp.topic, sp.partition, sp.inStart, sp.inEnd})
		}
		r := Range{Topic: sp.topic, Partition: sp.partition, Start: sp.start, End: sp.end}
		err := o.Reader.Read(ctx, r, func(m kafka.Message) error {
			src := Src(sp.topic, sp.partition, m.Offset)
			vs := bySrc[srcKey{sp.topic, sp.partition, m.Offset}]
			cur := p.Derive(m.Value) // the gate learns raw identifiers in offset order
			inRange := m.Offset >= sp.inStart && m.Offset < sp.inEnd
			if inRange {
				rep.Summary.SourceRecords++
			}
			delivered := false
			first := true
			for _, v := range vs {
				if v.retired != nil && errors.Is(cur.Err, pseudonym.ErrEpochRetired) {
					// Made under a key retired since, from a source of that
					// epoch: not re-derivable, by design. A record claiming a
					// retired key for a live epoch is compared as usual.
					shred(v)
					delivered = true
					continue
				}
				v.done = true
				pol := o.Policies[v.policy]
				if pol == nil {
					if !v.extra {
						rep.Summary.Unverified++
						rep.Unverified = append(rep.Unverified, Unverified{v.loc, src, v.policy, "unknown policy version: no config for it in the policy directory"})
					}
					continue
				}
				d := cur
				if pol != p {
					d = pol.Derive(m.Value)
				}
				delivered = true
				if v.extra {
					continue
				}
				paths := diffPaths(d, v)
				switch {
				case len(paths) > 0:
					rep.Summary.Mismatched++
					rep.Mismatches = append(rep.Mismatches, Mismatch{v.loc, src, v.policy, paths})
				case first:
					rep.Summary.Matched++
					first = false
				default:
					rep.Summary.Duplicates++ // at-least-once: a byte-identical redelivery
				}
				if gv := pol.Check(v.value); !gv.Pass {
					rep.Summary.GateFailures++
					rep.GateFindings = append(rep.GateFindings, GateFinding{v.loc, src, gv})
				}
			}
			if !inRange {
				return nil
			}
			switch {
			case delivered:
				rep.Summary.Delivered++
			case cur.Err != nil:
				rep.Summary.Failed++
			case !cur.Verdict.Pass:
				rep.Summary.Quarantined++
				for _, reason := range strings.Split(cur.Verdict.Reasons, ",") {
					rep.Summary.ByReason[reason]++
				}
			default:
				rep.Summary.Missing++
				rep.Missing = append(rep.Missing, src)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for k, vs := range bySrc {
		for _, v := range vs {
			if !v.done && v.retired != nil {
				shred(v) // its source is gone too
				continue
			}
			if !v.done && !v.extra {
				rep.Summary.Unverified++
				rep.Unverified = append(rep.Unverified, Unverified{v.loc, Src(k.topic, k.partition, k.offset), v.policy, "source record not found (deleted by retention, or never written)"})
			}
		}
	}

	// 4. Policies, timeline, order.
	for _, ver := range slices.Sorted(maps.Keys(uses)) {
		u := PolicyUse{Version: ver, Records: uses[ver]}
		if pol := o.Policies[ver]; pol != nil {
			u.Known, u.File = true, pol.File
		}
		rep.Policies = append(rep.Policies, u)
	}
	for _, k := range slices.SortedFunc(maps.Keys(shreds), func(a, b [2]any) int {
		if c := strings.Compare(a[0].(string), b[0].(string)); c != 0 {
			return c
		}
		return a[1].(int) - b[1].(int)
	}) {
		rep.CryptoShredded = append(rep.CryptoShredded, *shreds[k])
	}
	rep.Timeline = timeline(recs, rep)
	sort.Slice(rep.Mismatches, func(i, j int) bool { return less(rep.Mismatches[i].Loc, rep.Mismatches[j].Loc) })
	sort.Slice(rep.Unverified, func(i, j int) bool { return less(rep.Unverified[i].Loc, rep.Unverified[j].Loc) })
	sort.Slice(rep.GateFindings, func(i, j int) bool { return less(rep.GateFindings[i].Loc, rep.GateFindings[j].Loc) })
	sort.Slice(rep.NoProvenance, func(i, j int) bool { return less(rep.NoProvenance[i], rep.NoProvenance[j]) })
	return rep, nil
}

func addShred(shreds map[[2]any]*Shredded, rk config.RetiredKey, l Loc) {
	k := [2]any{rk.KeyID, l.Partition}
	s := shreds[k]
	if s == nil {
		s = &Shredded{KeyID: rk.KeyID, EpochFrom: rk.ValidFrom, EpochUntil: rk.ValidUntil, Partition: l.Partition,
			FirstOffset: l.Offset, LastOffset: l.Offset, FirstTime: l.Time, LastTime: l.Time}
		shreds[k] = s
	}
	s.Records++
	s.FirstOffset, s.LastOffset = min(s.FirstOffset, l.Offset), max(s.LastOffset, l.Offset)
	s.FirstTime, s.LastTime = minTime(s.FirstTime, l.Time), maxTime(s.LastTime, l.Time)
}

func less(a, b Loc) bool {
	if a.Partition != b.Partition {
		return a.Partition < b.Partition
	}
	return a.Offset < b.Offset
}

// diffPaths compares a vendor record with its re-derivation: nil when they
// are the same bytes under the same key id.
func diffPaths(d Derived, v *vendorRec) []string {
	var paths []string
	switch {
	case d.Err != nil:
		paths = append(paths, "(record: the policy cannot de-identify the source)")
	case !bytes.Equal(d.Out, v.value):
		paths = append(paths, JSONDiff(d.Out, v.value)...)
		if len(paths) == 0 {
			paths = append(paths, "(record: same fields, different bytes)")
		}
	}
	if d.Err == nil && d.KeyID != v.keyID {
		paths = append(paths, "(header "+pipeline.HeaderKey+")")
	}
	return paths
}

// JSONDiff lists the paths at which two JSON documents differ, in the
// route's path syntax ("a.b", "a.list[]"); "(record)" when either is not a
// JSON object. It never returns values.
func JSONDiff(a, b []byte) []string {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return []string{"(record)"}
	}
	if _, ok := x.(map[string]any); !ok {
		return []string{"(record)"}
	}
	if _, ok := y.(map[string]any); !ok {
		return []string{"(record)"}
	}
	set := map[string]bool{}
	walkDiff("", x, y, set)
	return slices.Sorted(maps.Keys(set))
}

func walkDiff(path string, x, y any, out map[string]bool) {
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch xv := x.(type) {
	case map[string]any:
		yv, ok := y.(map[string]any)
		if !ok {
			out[orRecord(path)] = true
			return
		}
		for k, xe := range xv {
			ye, ok := yv[k]
			if !ok {
				out[join(k)] = true
				continue
			}
			walkDiff(join(k), xe, ye, out)
		}
		for k := range yv {
			if _, ok := xv[k]; !ok {
				out[join(k)] = true
			}
		}
	case []any:
		yv, ok := y.([]any)
		if !ok || len(xv) != len(yv) {
			out[orRecord(path)] = true
			return
		}
		for i := range xv {
			walkDiff(path+"[]", xv[i], yv[i], out)
		}
	default:
		if !equalScalar(x, y) {
			out[orRecord(path)] = true
		}
	}
}

func equalScalar(x, y any) bool {
	switch x.(type) {
	case map[string]any, []any:
		return false
	}
	switch y.(type) {
	case map[string]any, []any:
		return false
	}
	return x == y
}

func orRecord(p string) string {
	if p == "" {
		return "(record)"
	}
	return p
}

// timeline buckets the audited vendor records by timestamp into at most
// about 48 steps of a round width.
func timeline(recs []*vendorRec, rep *Report) []Bucket {
	if len(recs) == 0 {
		return nil
	}
	lo, hi := recs[0].loc.Time, recs[0].loc.Time
	for _, v := range recs {
		lo, hi = minTime(lo, v.loc.Time), maxTime(hi, v.loc.Time)
	}
	width := time.Second
	for _, w := range []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour} {
		width = w
		if hi.Sub(lo)/w < 48 {
			break
		}
	}
	start := lo.Truncate(width)
	n := int(hi.Sub(start)/width) + 1
	bs := make([]Bucket, n)
	for i := range bs {
		bs[i].Start = start.Add(time.Duration(i) * width)
	}
	bad := map[Loc]int{}
	for _, m := range rep.Mismatches {
		bad[m.Loc] = 1
	}
	for _, l := range rep.NoProvenance {
		bad[l] = 2
	}
	for _, u := range rep.Unverified {
		bad[u.Loc] = 2
	}
	for _, v := range recs {
		if v.shredded {
			bad[v.loc] = 3
		}
	}
	for _, v := range recs {
		b := &bs[int(v.loc.Time.Sub(start)/width)]
		b.Records++
		switch bad[v.loc] {
		case 1:
			b.Mismatched++
		case 2:
			b.Other++
		case 3:
			b.Shredded++
		default:
			b.Matched++
		}
	}
	return bs
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
