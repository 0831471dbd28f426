package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/deident/deident/internal/fieldpath"
)

// KAnonMode is how a route's k-anonymity stage publishes.
type KAnonMode string

const (
	// KAnonAggregate publishes per-window aggregates of groups with at least k entities.
	KAnonAggregate KAnonMode = "aggregate"
	// KAnonRecord publishes records once their class holds at least k entities.
	KAnonRecord KAnonMode = "record"
)

// LateAction is what aggregate mode does with a record whose window has closed.
type LateAction string

const (
	// LateDrop drops late records; they are only counted in the stage's stats.
	LateDrop LateAction = "drop"
	// LateCount drops late records from the aggregates and publishes, per
	// window, how many arrived late (a count without quasi-identifiers).
	LateCount LateAction = "count"
)

// k-anonymity defaults.
const (
	DefaultKAnonWindow      = time.Hour
	DefaultKAnonMaxDelay    = time.Minute
	DefaultMaxOpenClasses   = 100_000
	DefaultMaxBufferedRecs  = 1_000_000
	DefaultKAnonDistinctCap = 64
)

// KAnon is a route's k-anonymity stage (design section 4). It runs on the
// route's output, so every path names a field as the route writes it.
type KAnon struct {
	// K is the least number of distinct entities a published group or
	// released class holds. Required, at least 2.
	K int `mapstructure:"k"`
	// Entity is the field path whose distinct values K counts (e.g. the user
	// pseudonym). Required; must be in the route's output.
	Entity string `mapstructure:"entity"`
	// QuasiIdentifiers are the fields that could single someone out, each
	// with its generalization ladder. At least one.
	QuasiIdentifiers []QuasiIdentifier `mapstructure:"quasi_identifiers"`
	// Mode is aggregate (default) or record.
	Mode KAnonMode `mapstructure:"mode"`
	// EventTime is the field path of the event time that places a record in
	// a window; the route's event_time when empty. Required in aggregate mode.
	EventTime string `mapstructure:"event_time"`

	// Aggregate mode.

	// Window is the tumbling event-time window; 1h when zero.
	Window time.Duration `mapstructure:"window"`
	// AllowedLateness delays closing a window: watermark = max event time
	// seen - AllowedLateness. Zero closes at once.
	AllowedLateness time.Duration `mapstructure:"allowed_lateness"`
	// Late is what happens to records of closed windows: drop (default) or count.
	Late LateAction `mapstructure:"late"`
	// Sums lists numeric fields summed per group.
	Sums []string `mapstructure:"sums"`
	// Min lists numeric fields whose minimum is published per group.
	Min []string `mapstructure:"min"`
	// Max lists numeric fields whose maximum is published per group.
	Max []string `mapstructure:"max"`

	// Record mode.

	// MaxDelay bounds how long a record waits for its class; 1m when zero.
	MaxDelay time.Duration `mapstructure:"max_delay"`
	// MaxDelayRecords also bounds the wait by the number of records added
	// after it; zero means no such bound.
	MaxDelayRecords int `mapstructure:"max_delay_records"`

	// Memory caps; what cannot be held is suppressed and counted.

	// MaxOpenClasses bounds open groups (aggregate) or open and live
	// released classes (record); 100000 when zero.
	MaxOpenClasses int `mapstructure:"max_open_classes"`
	// MaxBufferedRecords bounds records held undecided; 1000000 when zero.
	MaxBufferedRecords int `mapstructure:"max_buffered_records"`

	// Scale-out (run only; see the README on sizing).

	// RepartitionTopic, when set, makes k exact across replicas: run
	// produces the route's output to this internal topic keyed by an xxhash
	// of its quasi-identifiers generalized to PartitionLevel, and the
	// k-anonymity stage consumes it (in the same consumer group), so every
	// class is counted by one replica. The stage then never generalizes a
	// quasi-identifier beyond PartitionLevel: a class still short there is
	// suppressed. Empty: the stage runs per source partition. Not part of
	// the policy version while empty.
	RepartitionTopic string `mapstructure:"repartition_topic" json:",omitempty"`
	// PartitionLevel is the ladder level each quasi-identifier is keyed
	// and capped at when RepartitionTopic is set: level min(PartitionLevel,
	// coarsest level below "*") of its ladder. nil: the coarsest level
	// below "*" of every ladder (fewest suppressions, fewest distinct keys).
	PartitionLevel *int `mapstructure:"partition_level" json:",omitempty"`

	// LDiversity, when set, also requires L distinct values of a sensitive field per group or class.
	LDiversity *LDiversity `mapstructure:"l_diversity"`
	// Noise, when set, adds Laplace noise to published counts.
	Noise *Noise `mapstructure:"noise"`
}

// QuasiIdentifier is one quasi-identifying field and its ladder.
type QuasiIdentifier struct {
	// Path of the field in the route's output. Arrays are not allowed.
	Path string `mapstructure:"path"`
	// Ladder lists the generalization levels above the value as the route
	// outputs it (level 0); above the last comes "*" (the top). Empty: the
	// value, then "*".
	Ladder Ladder `mapstructure:"ladder"`
}

// Ladder is one of: time buckets, numeric widths, numeric edges, hierarchy
// levels, IP prefix lengths. Each level must nest in the next (a bucket of
// a level lies within one bucket of the next).
type Ladder struct {
	// TimeBucket lists bucket widths, finest first, each a multiple of the last: [1m, 1h, 1d].
	TimeBucket []string `mapstructure:"time_bucket"`
	// NumericWidth lists bucket widths from 0, finest first, each a multiple of the last: [5, 10, 20].
	NumericWidth []float64 `mapstructure:"numeric_width"`
	// NumericEdges lists per level the ascending bucket edges; each level's edges are a subset of the last's.
	NumericEdges [][]float64 `mapstructure:"numeric_edges"`
	// Hierarchy generalizes through an ARX-style hierarchy file.
	Hierarchy *LadderHierarchy `mapstructure:"hierarchy"`
	// IPPrefix lists IPv4 prefix lengths, longest first: [24, 16, 8].
	IPPrefix []int `mapstructure:"ip_prefix"`
	// IPv6Prefix lists IPv6 prefix lengths, longest first, as many as
	// IPPrefix; empty: IPv6 addresses go to "*" above level 0.
	IPv6Prefix []int `mapstructure:"ipv6_prefix"`
}

// LadderHierarchy is an ARX-style CSV hierarchy used as a ladder. Values
// are looked up in its first column.
type LadderHierarchy struct {
	// File is the CSV path, relative to the config file.
	File string `mapstructure:"file"`
	// Separator is the column separator; ";" when empty.
	Separator string `mapstructure:"separator"`
	// Levels are the columns used, ascending from 1; every column except a
	// last all-"*" one when empty.
	Levels []int `mapstructure:"levels"`
}

// LDiversity requires L distinct values of Field in each published group or released class.
type LDiversity struct {
	// Field is the path of the sensitive field in the route's output.
	Field string `mapstructure:"field"`
	// L is the least number of distinct values; at least 2.
	L int `mapstructure:"l"`
}

// Noise adds Laplace noise to published counts (differential privacy).
type Noise struct {
	// Epsilon is the privacy budget per window, split evenly between the
	// count and the distinct-entity count; must be positive.
	Epsilon float64 `mapstructure:"epsilon"`
}

// ApplyDefaults fills zero values; routeEventTime is the route's
// event_time. Load calls it; idempotent.
func (k *KAnon) ApplyDefaults(routeEventTime string) {
	if k.Mode == "" {
		k.Mode = KAnonAggregate
	}
	if k.EventTime == "" {
		k.EventTime = routeEventTime
	}
	if k.MaxOpenClasses == 0 {
		k.MaxOpenClasses = DefaultMaxOpenClasses
	}
	if k.MaxBufferedRecords == 0 {
		k.MaxBufferedRecords = DefaultMaxBufferedRecs
	}
	switch k.Mode {
	case KAnonAggregate:
		if k.Window == 0 {
			k.Window = DefaultKAnonWindow
		}
		if k.Late == "" {
			k.Late = LateDrop
		}
	case KAnonRecord:
		if k.MaxDelay == 0 {
			k.MaxDelay = DefaultKAnonMaxDelay
		}
	}
}

// ValidateKAnon checks a route's k_anonymity block; p is the route's key
// path (vendors.NAME) and fields its rules, which must name the entity and
// the quasi-identifiers (nil fields skips that check). Hierarchy files are
// read when the stage is built.
func ValidateKAnon(p string, k *KAnon, fields []FieldRule) []error {
	if k == nil {
		return nil
	}
	if p == "" {
		p = "k_anonymity"
	} else {
		p += ".k_anonymity"
	}
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	plainPath := func(key, path string, required bool) bool {
		if path == "" {
			if required {
				add(key, "required")
			}
			return false
		}
		fp, err := fieldpath.Parse(path)
		if err != nil {
			add(key, "%v", err)
			return false
		}
		for _, s := range fp {
			if s.Arrays > 0 {
				add(key, "%q: paths into arrays are not supported here", path)
				return false
			}
		}
		return true
	}
	inOutput := func(key, path string) {
		if fields == nil {
			return // not checked (the stage alone, without its route)
		}
		for _, f := range fields {
			if f.Action != Drop && (f.Path == path || strings.HasPrefix(path, f.Path+".")) {
				return
			}
		}
		add(key, "%q is not in the route's output: no field rule names it", path)
	}
	if k.K < 2 {
		add(p+".k", "k must be at least 2, got %d", k.K)
	}
	if plainPath(p+".entity", k.Entity, true) {
		inOutput(p+".entity", k.Entity)
	}
	if len(k.QuasiIdentifiers) == 0 {
		add(p+".quasi_identifiers", "at least one quasi-identifier is required")
	}
	seen := map[string]int{}
	for i, q := range k.QuasiIdentifiers {
		qp := fmt.Sprintf("%s.quasi_identifiers[%d]", p, i)
		if plainPath(qp+".path", q.Path, true) {
			inOutput(qp+".path", q.Path)
		}
		if j, dup := seen[q.Path]; dup {
			add(qp+".path", "%q is already a quasi-identifier at quasi_identifiers[%d]", q.Path, j)
		}
		seen[q.Path] = i
		if q.Path != "" && q.Path == k.Entity {
			add(qp+".path", "the entity field cannot also be a quasi-identifier")
		}
		errs = append(errs, validateLadder(qp+".ladder", q.Ladder)...)
	}
	switch k.Mode {
	case KAnonAggregate:
		if plainPath(p+".event_time", k.EventTime, false) {
			inOutput(p+".event_time", k.EventTime)
		} else if k.EventTime == "" {
			add(p+".event_time", "required in aggregate mode (or set the route's event_time)")
		}
		if k.Window <= 0 {
			add(p+".window", "must be positive, got %s", k.Window)
		}
		if k.AllowedLateness < 0 {
			add(p+".allowed_lateness", "must not be negative, got %s", k.AllowedLateness)
		}
		if k.Late != LateDrop && k.Late != LateCount {
			add(p+".late", "unknown late action %q (want drop or count)", k.Late)
		}
		for j, list := range [][]string{k.Sums, k.Min, k.Max} {
			for i, f := range list {
				key := fmt.Sprintf("%s.%s[%d]", p, [...]string{"sums", "min", "max"}[j], i)
				if plainPath(key, f, true) {
					inOutput(key, f)
				}
			}
		}
		if k.MaxDelay != 0 || k.MaxDelayRecords != 0 {
			add(p, "max_delay and max_delay_records apply only to record mode")
		}
	case KAnonRecord:
		if k.MaxDelay <= 0 {
			add(p+".max_delay", "must be positive, got %s", k.MaxDelay)
		}
		if k.MaxDelayRecords < 0 {
			add(p+".max_delay_records", "must not be negative, got %d", k.MaxDelayRecords)
		}
		if k.Window != 0 || k.AllowedLateness != 0 || k.Late != "" || len(k.Sums)+len(k.Min)+len(k.Max) > 0 {
			add(p, "window, allowed_lateness, late, sums, min and max apply only to aggregate mode")
		}
	default:
		add(p+".mode", "unknown mode %q (want aggregate or record)", k.Mode)
	}
	if k.MaxOpenClasses < 1 {
		add(p+".max_open_classes", "must be positive, got %d", k.MaxOpenClasses)
	}
	if k.MaxBufferedRecords < 1 {
		add(p+".max_buffered_records", "must be positive, got %d", k.MaxBufferedRecords)
	}
	if k.PartitionLevel != nil {
		switch {
		case k.RepartitionTopic == "":
			add(p+".partition_level", "applies only with repartition_topic")
		case *k.PartitionLevel < 0:
			add(p+".partition_level", "must not be negative, got %d", *k.PartitionLevel)
		}
	}
	if l := k.LDiversity; l != nil {
		if plainPath(p+".l_diversity.field", l.Field, true) {
			inOutput(p+".l_diversity.field", l.Field)
		}
		if l.L < 2 {
			add(p+".l_diversity.l", "l must be at least 2, got %d", l.L)
		}
	}
	if n := k.Noise; n != nil && (!(n.Epsilon > 0) || math.IsInf(n.Epsilon, 0)) {
		add(p+".noise.epsilon", "must be a positive number, got %v", n.Epsilon)
	}
	return errs
}

func validateLadder(p string, l Ladder) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	kinds := 0
	for _, set := range []bool{len(l.TimeBucket) > 0, len(l.NumericWidth) > 0, len(l.NumericEdges) > 0, l.Hierarchy != nil, len(l.IPPrefix) > 0 || len(l.IPv6Prefix) > 0} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		add(p, "give one of time_bucket, numeric_width, numeric_edges, hierarchy, ip_prefix; got %d", kinds)
		return errs
	}
	var prev time.Duration
	for i, s := range l.TimeBucket {
		d, err := ParseBucket(s)
		if err != nil {
			add(fmt.Sprintf("%s.time_bucket[%d]", p, i), "%v", err)
			continue
		}
		if prev > 0 && (d <= prev || d%prev != 0) {
			add(fmt.Sprintf("%s.time_bucket[%d]", p, i), "bucket %s must be a larger multiple of the previous one (%s)", s, prev)
		}
		prev = d
	}
	for i, w := range l.NumericWidth {
		key := fmt.Sprintf("%s.numeric_width[%d]", p, i)
		if !(w > 0) || math.IsInf(w, 0) {
			add(key, "must be positive, got %v", w)
			continue
		}
		if i > 0 {
			r := w / l.NumericWidth[i-1]
			if !(r > 1) || math.Abs(r-math.Round(r)) > 1e-9 {
				add(key, "width %v must be a larger multiple of the previous one (%v)", w, l.NumericWidth[i-1])
			}
		}
	}
	for i, edges := range l.NumericEdges {
		key := fmt.Sprintf("%s.numeric_edges[%d]", p, i)
		switch {
		case len(edges) == 0:
			add(key, "at least one edge is required")
		case !slices.IsSorted(edges) || len(slices.Compact(slices.Clone(edges))) != len(edges):
			add(key, "edges must be strictly ascending")
		case i > 0:
			for _, e := range edges {
				if !slices.Contains(l.NumericEdges[i-1], e) {
					add(key, "edge %v is not an edge of the previous level; each level's edges must be a subset of the previous level's", e)
					break
				}
			}
			if len(edges) >= len(l.NumericEdges[i-1]) {
				add(key, "must have fewer edges than the previous level")
			}
		}
	}
	if h := l.Hierarchy; h != nil {
		if h.File == "" {
			add(p+".hierarchy.file", "required")
		}
		if len(h.Separator) > 1 {
			add(p+".hierarchy.separator", "must be one character")
		}
		for i, lv := range h.Levels {
			if lv < 1 || (i > 0 && lv <= h.Levels[i-1]) {
				add(fmt.Sprintf("%s.hierarchy.levels[%d]", p, i), "levels must be ascending from 1, got %d", lv)
			}
		}
	}
	prefixes := func(key string, list []int, max int) {
		for i, n := range list {
			if n < 0 || n > max || (i > 0 && n >= list[i-1]) {
				add(fmt.Sprintf("%s.%s[%d]", p, key, i), "prefix lengths must descend within 0 to %d, got %d", max, n)
			}
		}
	}
	prefixes("ip_prefix", l.IPPrefix, 32)
	prefixes("ipv6_prefix", l.IPv6Prefix, 128)
	if len(l.IPv6Prefix) > 0 && len(l.IPv6Prefix) != len(l.IPPrefix) {
		add(p+".ipv6_prefix", "needs as many levels as ip_prefix (%d), got %d", len(l.IPPrefix), len(l.IPv6Prefix))
	}
	return errs
}
