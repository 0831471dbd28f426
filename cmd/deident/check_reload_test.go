package main

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// check --against says what a running worker would do with a new config,
// and exits non-zero exactly when it would refuse it.
func TestCheckAgainst(t *testing.T) {
	r := strings.NewReplacer
	material := r("{path: pid, action: drop}", "{path: pid, action: keep}").Replace(policyOld)
	files := map[string]string{
		"a.key":         strings.Repeat("ab", 32),
		"b.key":         strings.Repeat("cd", 32),
		"running.yaml":  policyOld,
		"same.yaml":     policyOld,
		"safe.yaml":     r("{path: host, action: pseudonymize}", "{path: host, action: drop}").Replace(policyOld),
		"material.yaml": material,
		"restart.yaml":  r("topic: telemetry.edr", "topic: telemetry.other").Replace(policyOld),
		"kanon.yaml":    policyOld + "    k_anonymity: {k: 5, entity: user.name, mode: record, quasi_identifiers: [{path: host}]}\n",
		"invalid.yaml":  r("action: drop", "action: hash").Replace(policyOld),
		"added.yaml":    policyOld + "  beta:\n    purpose: p\n    categories: [threat_telemetry]\n    topic: vendor.beta\n    keys: [{file: b.key}]\n    fields: []\n",
	}
	dir := writePolicyFiles(t, files)
	path := func(name string) string { return filepath.Join(dir, name) }

	// The material change's new policy version, from the refusal's hint.
	out, _ := run(t, "check", "--against", path("running.yaml"), path("material.yaml"))
	m := regexp.MustCompile(`\{route: acme, policy: (p[0-9a-f]{16}), reason: "\.\.\."\}`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no acknowledgement hint in:\n%s", out)
	}
	files["acked.yaml"] = material + "acknowledge:\n  - {route: acme, policy: " + m[1] + ", reason: \"pids are needed\"}\n"
	files["stale.yaml"] = material + "acknowledge:\n  - {route: acme, policy: p0000000000000000, reason: \"pids are needed\"}\n"
	dir2 := writePolicyFiles(t, files)

	// policy diff takes the file's acknowledgement as it takes --ack.
	if out, err := run(t, "policy", "diff", filepath.Join(dir2, "running.yaml"), filepath.Join(dir2, "acked.yaml")); err != nil || !strings.Contains(out, "Reason for the change: pids are needed") {
		t.Errorf("policy diff of an acknowledged change: %v\n%s", err, out)
	}
	if _, err := run(t, "policy", "diff", filepath.Join(dir2, "running.yaml"), filepath.Join(dir2, "stale.yaml")); err == nil {
		t.Error("policy diff accepted an acknowledgement of another version")
	}
	for _, tc := range []struct {
		file    string
		refused bool
		want    []string
	}{
		{"same.yaml", false, []string{": applied (no policy change)"}},
		{"safe.yaml", false, []string{": applied", "  vendors.acme.fields[host].action: pseudonymize"}},
		{"material.yaml", true, []string{": refused", "vendors.acme.fields[pid].action: material change (field newly exported) not acknowledged for policy " + m[1], "acknowledge:"}},
		{"acked.yaml", false, []string{": applied", "material changes acknowledged: pids are needed"}},
		{"stale.yaml", true, []string{": refused", "not acknowledged for policy " + m[1]}},
		{"restart.yaml", true, []string{": refused", "sources: changed: needs a restart"}},
		{"kanon.yaml", true, []string{": refused", "vendors.acme: the route has a k-anonymity stage holding records processed under policy"}},
		{"invalid.yaml", true, []string{": invalid", `unknown action "hash"`}},
		{"added.yaml", true, []string{": refused", "vendors.beta: route added: needs a restart"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, err := run(t, "check", "--against", filepath.Join(dir2, "running.yaml"), filepath.Join(dir2, tc.file))
			var ee *exitError
			switch {
			case tc.refused && (!errors.As(err, &ee) || ee.code != exitReloadRefused):
				t.Errorf("err %v, want exit %d", err, exitReloadRefused)
			case !tc.refused && err != nil:
				t.Errorf("err %v, want none", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "abab") || strings.Contains(out, "cdcd") {
				t.Errorf("output shows key material:\n%s", out)
			}
		})
	}
}
