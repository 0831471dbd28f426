package config

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// GatePattern names one pattern check of the re-identification gate.
type GatePattern string

const (
	PatternEmail      GatePattern = "email"
	PatternIPv4       GatePattern = "ipv4"
	PatternIPv6       GatePattern = "ipv6"
	PatternMAC        GatePattern = "mac"
	PatternCard       GatePattern = "card"
	PatternIBAN       GatePattern = "iban"
	PatternSSN        GatePattern = "ssn"
	PatternJWT        GatePattern = "jwt"
	PatternCloudKey   GatePattern = "cloud_key"
	PatternPrivateKey GatePattern = "private_key"
)

// GatePatterns lists every pattern, in documentation order; it is the
// default of Gate.Patterns.
var GatePatterns = []GatePattern{PatternEmail, PatternIPv4, PatternIPv6, PatternMAC, PatternCard, PatternIBAN, PatternSSN, PatternJWT, PatternCloudKey, PatternPrivateKey}

// Gate defaults.
const (
	DefaultBloomCapacity     = 1 << 20
	DefaultBloomFPRate       = 1e-6
	DefaultBloomRotate       = time.Hour
	DefaultMaxQuarantineRate = 0.01
	DefaultQuarantineWindow  = 5 * time.Minute
	DefaultGateMinRecords    = 100
	DefaultKField            = "deident_k"
)

// Gate configures a route's re-identification gate (design section 5): the
// independent checks every outgoing record passes before it may reach the
// vendor. Every check is on unless switched off.
type Gate struct {
	// Enabled runs the gate; true when unset. Off only for benchmarks and
	// side-by-side comparisons.
	Enabled *bool `mapstructure:"enabled"`
	// Schema checks that a record holds only the fields the route's rules
	// name, with the types their actions produce; true when unset.
	Schema *bool `mapstructure:"schema"`
	// K checks the k-anonymity marker (KField) against MinK; true when unset.
	// A no-op while MinK is 0.
	K *bool `mapstructure:"k"`
	// Echo tests every outgoing string and its tokens against a Bloom filter
	// of raw values recently seen in direct-identifier fields (pseudonymize,
	// email_split, ip_prefix_preserving, ip_truncate); true when unset.
	Echo *bool `mapstructure:"echo"`
	// Patterns are the pattern checks to run; all of GatePatterns when
	// unset, none when an empty list.
	Patterns []GatePattern `mapstructure:"patterns"`
	// MinK is the k a k-anonymity stage guarantees this route: a record must
	// carry KField with a distinct-entity count of at least MinK. 0 (the
	// default) means the route has no k-anonymity stage: the check is a no-op.
	MinK int `mapstructure:"min_k"`
	// KField is the top-level output field holding the class's (record mode)
	// or aggregate's distinct-entity count; "deident_k" when empty.
	KField string `mapstructure:"k_field"`
	// BloomCapacity is how many distinct raw values one Bloom generation
	// holds before it rotates early; 1048576 when zero.
	BloomCapacity int `mapstructure:"bloom_capacity"`
	// BloomFPRate is the false-positive rate of one generation at capacity;
	// 1e-6 when zero. A lookup tests two generations.
	BloomFPRate float64 `mapstructure:"bloom_fp_rate"`
	// BloomRotate is how long a generation collects raw values; a value is
	// remembered for between one and two periods. 1h when zero.
	BloomRotate time.Duration `mapstructure:"bloom_rotate"`
	// MaxQuarantineRate is the share of records quarantined over
	// QuarantineWindow above which the route fails closed; 0.01 when zero,
	// 1 never trips.
	MaxQuarantineRate float64 `mapstructure:"max_quarantine_rate"`
	// QuarantineWindow is the sliding window of the quarantine rate; 5m when zero.
	QuarantineWindow time.Duration `mapstructure:"quarantine_window"`
	// MinRecords is how many records the window must hold before the route
	// can fail closed; 100 when zero.
	MinRecords int `mapstructure:"min_records"`
}

func on(b *bool) bool { return b == nil || *b }

// On reports whether the gate runs at all.
func (g Gate) On() bool { return on(g.Enabled) }

// SchemaOn reports whether the schema check runs.
func (g Gate) SchemaOn() bool { return on(g.Schema) }

// KOn reports whether the k check runs (it is still a no-op while MinK is 0).
func (g Gate) KOn() bool { return on(g.K) && g.MinK > 0 }

// EchoOn reports whether the raw-identifier echo check runs.
func (g Gate) EchoOn() bool { return on(g.Echo) }

// WithDefaults returns g with every unset value at its default.
func (g Gate) WithDefaults() Gate {
	t := true
	for _, b := range []**bool{&g.Enabled, &g.Schema, &g.K, &g.Echo} {
		if *b == nil {
			*b = &t
		}
	}
	if g.Patterns == nil {
		g.Patterns = slices.Clone(GatePatterns)
	}
	if g.KField == "" {
		g.KField = DefaultKField
	}
	if g.BloomCapacity == 0 {
		g.BloomCapacity = DefaultBloomCapacity
	}
	if g.BloomFPRate == 0 {
		g.BloomFPRate = DefaultBloomFPRate
	}
	if g.BloomRotate == 0 {
		g.BloomRotate = DefaultBloomRotate
	}
	if g.MaxQuarantineRate == 0 {
		g.MaxQuarantineRate = DefaultMaxQuarantineRate
	}
	if g.QuarantineWindow == 0 {
		g.QuarantineWindow = DefaultQuarantineWindow
	}
	if g.MinRecords == 0 {
		g.MinRecords = DefaultGateMinRecords
	}
	return g
}

// Validate checks g after defaults; prefix is its key path
// (vendors.NAME.gate). All errors are returned.
func (g Gate) Validate(prefix string) []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{prefix, key}, args...)...))
	}
	seen := map[GatePattern]int{}
	for i, p := range g.Patterns {
		key := fmt.Sprintf("patterns[%d]", i)
		if !slices.Contains(GatePatterns, p) {
			add(key, "unknown pattern %q (want one of %s)", p, list(GatePatterns))
			continue
		}
		if j, dup := seen[p]; dup {
			add(key, "%q is already listed at patterns[%d]", p, j)
		}
		seen[p] = i
	}
	if g.MinK < 0 || g.MinK == 1 {
		add("min_k", "must be 0 (no k-anonymity) or at least 2, got %d", g.MinK)
	}
	if g.BloomCapacity < 1 || g.BloomCapacity > 1<<30 {
		add("bloom_capacity", "must be from 1 to 1073741824, got %d", g.BloomCapacity)
	}
	if !(g.BloomFPRate > 0 && g.BloomFPRate < 0.5) {
		add("bloom_fp_rate", "must be above 0 and below 0.5, got %v", g.BloomFPRate)
	} else if g.BloomCapacity >= 1 {
		bits := -float64(g.BloomCapacity) * math.Log(g.BloomFPRate) / (math.Ln2 * math.Ln2)
		if bits > 8<<30 {
			add("bloom_fp_rate", "with bloom_capacity %d needs %.0f MiB per generation; at most 1024", g.BloomCapacity, bits/8/(1<<20))
		}
	}
	if g.BloomRotate < time.Second {
		add("bloom_rotate", "must be at least 1s, got %v", g.BloomRotate)
	}
	if !(g.MaxQuarantineRate > 0 && g.MaxQuarantineRate <= 1) {
		add("max_quarantine_rate", "must be above 0 and at most 1, got %v", g.MaxQuarantineRate)
	}
	if g.QuarantineWindow < time.Second {
		add("quarantine_window", "must be at least 1s, got %v", g.QuarantineWindow)
	}
	if g.MinRecords < 1 {
		add("min_records", "must be at least 1, got %d", g.MinRecords)
	}
	return errs
}
