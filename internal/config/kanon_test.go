package config

import (
	"strings"
	"testing"
)

const kanonRoute = `
vendors:
  acme:
    purpose: security-detection
    categories: [threat_telemetry]
    keys: [{file: a.key}]
    event_time: time
    fields:
      - {path: time, action: keep}
      - {path: actor.user.name, action: pseudonymize}
      - {path: src, action: keep}
      - {path: secret, action: drop}
    k_anonymity:
`

func TestKAnonConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		errs       []string
	}{
		{"aggregate defaults", `
      k: 5
      entity: actor.user.name
      quasi_identifiers:
        - {path: src.ip, ladder: {ip_prefix: [24, 16, 8]}}
        - {path: time, ladder: {time_bucket: [1m, 1h, 1d]}}
        - {path: src.dept, ladder: {hierarchy: {file: dept.csv, levels: [1, 2]}}}
      sums: [src.bytes]
`, nil},
		{"record", `
      k: 2
      mode: record
      entity: actor.user.name
      quasi_identifiers: [{path: src.port, ladder: {numeric_edges: [[1024, 49152], [1024]]}}]
      l_diversity: {field: src.label, l: 2}
      noise: {epsilon: 0.5}
`, nil},
		{"bad", `
      k: 1
      mode: recrod
      entity: secret
      quasi_identifiers:
        - {path: "a[].b"}
        - {path: src.x, ladder: {time_bucket: [1h, 1m]}}
        - {path: src.y, ladder: {numeric_width: [10, 15]}}
        - {path: src.z, ladder: {ip_prefix: [16, 24], time_bucket: [1m]}}
        - {path: src.w, ladder: {ip_prefix: [24, 16], ipv6_prefix: [48]}}
      max_open_classes: -1
      l_diversity: {field: src.s, l: 1}
      noise: {epsilon: 0}
`, []string{
			"vendors.acme.k_anonymity.k: k must be at least 2, got 1",
			`vendors.acme.k_anonymity.mode: unknown mode "recrod" (want aggregate or record)`,
			`vendors.acme.k_anonymity.entity: "secret" is not in the route's output: no field rule names it`,
			`vendors.acme.k_anonymity.quasi_identifiers[0].path: "a[].b": paths into arrays are not supported here`,
			"vendors.acme.k_anonymity.quasi_identifiers[1].ladder.time_bucket[1]: bucket 1m must be a larger multiple of the previous one (1h0m0s)",
			"vendors.acme.k_anonymity.quasi_identifiers[2].ladder.numeric_width[1]: width 15 must be a larger multiple of the previous one (10)",
			"vendors.acme.k_anonymity.quasi_identifiers[3].ladder: give one of time_bucket, numeric_width, numeric_edges, hierarchy, ip_prefix; got 2",
			"vendors.acme.k_anonymity.quasi_identifiers[4].ladder.ipv6_prefix: needs as many levels as ip_prefix (2), got 1",
			"vendors.acme.k_anonymity.max_open_classes: must be positive, got -1",
			"vendors.acme.k_anonymity.l_diversity.l: l must be at least 2, got 1",
			"vendors.acme.k_anonymity.noise.epsilon: must be a positive number, got 0",
		}},
		{"mode keys", `
      k: 3
      mode: record
      entity: actor.user.name
      window: 1m
      quasi_identifiers: [{path: src.ip}]
`, []string{"vendors.acme.k_anonymity: window, allowed_lateness, late, sums, min and max apply only to aggregate mode"}},
		{"repartitioned", `
      k: 3
      entity: actor.user.name
      quasi_identifiers: [{path: src.ip, ladder: {ip_prefix: [24, 16]}}]
      repartition_topic: deident.repartition.acme
      partition_level: 1
`, nil},
		{"partition level alone", `
      k: 3
      entity: actor.user.name
      quasi_identifiers: [{path: src.ip}]
      partition_level: 1
`, []string{"vendors.acme.k_anonymity.partition_level: applies only with repartition_topic"}},
		{"negative partition level", `
      k: 3
      entity: actor.user.name
      quasi_identifiers: [{path: src.ip}]
      repartition_topic: rp
      partition_level: -1
`, []string{"vendors.acme.k_anonymity.partition_level: must not be negative, got -1"}},
		{"unknown key", `
      k: 3
      entity: actor.user.name
      quasi_identifier: [{path: src.ip}]
`, []string{"vendors.acme.k_anonymity.quasi_identifier: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(kanonRoute+strings.TrimPrefix(tc.yaml, "\n")), testdata)
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				k := c.Vendors["acme"].KAnon
				if k.EventTime != "time" || k.MaxOpenClasses != DefaultMaxOpenClasses || k.MaxBufferedRecords != DefaultMaxBufferedRecs {
					t.Errorf("defaults: %+v", k)
				}
				if k.Mode == KAnonAggregate && (k.Window != DefaultKAnonWindow || k.Late != LateDrop) {
					t.Errorf("aggregate defaults: %+v", k)
				}
				if k.Mode == KAnonRecord && k.MaxDelay != DefaultKAnonMaxDelay {
					t.Errorf("record defaults: %+v", k)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tc.errs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing error %q in:\n%v", w, err)
				}
			}
		})
	}
}

// TestRepartitionACL: a repartition topic is read and written by the
// worker on the source cluster.
func TestRepartitionACL(t *testing.T) {
	c, err := Parse([]byte(kanonRoute+`      k: 3
      entity: actor.user.name
      quasi_identifiers: [{path: src.ip}]
      repartition_topic: deident.repartition.acme
`), testdata)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range c.ACLs() {
		if a.Name == "deident.repartition.acme" {
			found = a.Cluster == c.SourceCluster() && a.Resource == ResourceTopic && strings.Join(a.Operations, ",") == "Read,Write,Describe" &&
				a.Why == "vendors.acme.k_anonymity.repartition_topic"
		}
	}
	if !found {
		t.Errorf("no Read, Write, Describe ACL for the repartition topic on the source cluster in %+v", c.ACLs())
	}
}
