package config

import (
	"strings"
	"testing"
	"time"
)

func gateYAML(gate string) string {
	return `
vendors:
  acme:
    purpose: testing
    categories: [threat_telemetry]
    keys: [{env: DEIDENT_TEST_GATE_KEY}]
    fields:
      - {path: user, action: pseudonymize}
` + gate
}

func TestGateDefaults(t *testing.T) {
	t.Setenv("DEIDENT_TEST_GATE_KEY", strings.Repeat("ab", 32))
	c, err := Parse([]byte(gateYAML("")), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := c.Vendors["acme"].Gate
	if !g.On() || !g.SchemaOn() || !g.EchoOn() || g.KOn() {
		t.Errorf("switches: on=%v schema=%v echo=%v k=%v; want all on, k a no-op without min_k", g.On(), g.SchemaOn(), g.EchoOn(), g.KOn())
	}
	if len(g.Patterns) != len(GatePatterns) {
		t.Errorf("patterns = %v, want all", g.Patterns)
	}
	if g.BloomCapacity != DefaultBloomCapacity || g.BloomFPRate != DefaultBloomFPRate || g.BloomRotate != time.Hour ||
		g.MaxQuarantineRate != 0.01 || g.QuarantineWindow != 5*time.Minute || g.MinRecords != 100 || g.KField != "deident_k" {
		t.Errorf("defaults: %+v", g)
	}
}

func TestGateSwitches(t *testing.T) {
	t.Setenv("DEIDENT_TEST_GATE_KEY", strings.Repeat("ab", 32))
	c, err := Parse([]byte(gateYAML(`    gate:
      schema: false
      echo: false
      patterns: []
      min_k: 5
      bloom_rotate: 10m
      max_quarantine_rate: 0.2
`)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := c.Vendors["acme"].Gate
	if g.SchemaOn() || g.EchoOn() || !g.KOn() || !g.On() {
		t.Errorf("switches: schema=%v echo=%v k=%v on=%v", g.SchemaOn(), g.EchoOn(), g.KOn(), g.On())
	}
	if g.Patterns == nil || len(g.Patterns) != 0 {
		t.Errorf("patterns: [] gave %#v, want an empty list (no pattern checks)", g.Patterns)
	}
	if g.BloomRotate != 10*time.Minute || g.MaxQuarantineRate != 0.2 || g.MinK != 5 {
		t.Errorf("values: %+v", g)
	}
}

func TestGateInvalid(t *testing.T) {
	t.Setenv("DEIDENT_TEST_GATE_KEY", strings.Repeat("ab", 32))
	_, err := Parse([]byte(gateYAML(`    gate:
      patterns: [email, phone, email]
      min_k: 1
      bloom_capacity: -3
      bloom_fp_rate: 0.7
      bloom_rotate: 10ms
      max_quarantine_rate: 1.5
      quarantine_window: 1ms
      min_records: -1
      schemas: true
`)), t.TempDir())
	if err == nil {
		t.Fatal("no error")
	}
	// Unknown keys are reported first, on their own.
	if !strings.Contains(err.Error(), "vendors.acme.gate.schemas: unknown key") {
		t.Errorf("got %v", err)
	}
	_, err = Parse([]byte(gateYAML(`    gate:
      patterns: [email, phone, email]
      min_k: 1
      bloom_capacity: -3
      bloom_fp_rate: 0.7
      bloom_rotate: 10ms
      max_quarantine_rate: 1.5
      quarantine_window: 1ms
      min_records: -1
`)), t.TempDir())
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`vendors.acme.gate.patterns[1]: unknown pattern "phone"`,
		`vendors.acme.gate.patterns[2]: "email" is already listed at patterns[0]`,
		`vendors.acme.gate.min_k: must be 0 (no k-anonymity) or at least 2, got 1`,
		`vendors.acme.gate.bloom_capacity: must be from 1 to 1073741824, got -3`,
		`vendors.acme.gate.bloom_fp_rate: must be above 0 and below 0.5, got 0.7`,
		`vendors.acme.gate.bloom_rotate: must be at least 1s, got 10ms`,
		`vendors.acme.gate.max_quarantine_rate: must be above 0 and at most 1, got 1.5`,
		`vendors.acme.gate.quarantine_window: must be at least 1s, got 1ms`,
		`vendors.acme.gate.min_records: must be at least 1, got -1`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
