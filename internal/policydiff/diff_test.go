package policydiff

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
)

// base is the old config of every case; each case edits it into the new one.
const base = `
sources:
  edr: {topic: telemetry.edr, category: threat_telemetry}
  wf: {topic: workflow.events, category: workflow_metadata}
vendors:
  acme:
    vendor: Acme
    purpose: security-detection
    categories: [threat_telemetry]
    topic: vendor.acme
    event_time: time
    keys:
      - file: a.key
    fields:
      - {path: time, action: generalize, time_bucket: 1h}
      - {path: user.name, action: pseudonymize, namespace: user, prefix: usr_}
      - {path: user.email, action: email_split, domain: pseudonymize}
      - {path: target.user, action: pseudonymize, namespace: target}
      - {path: src.ip, action: ip_truncate, ipv4_bits: 16}
      - {path: dst.ip, action: ip_prefix_preserving}
      - {path: pid, action: drop}
      - {path: duration, action: generalize, numeric_bucket: {edges: [10, 100]}}
      - path: role
        action: generalize
        map:
          entries: [{from: clerk, to: staff}, {from: cfo, to: executive}, {from: ceo, to: executive}]
    k_anonymity:
      k: 5
      entity: user.name
      quasi_identifiers:
        - {path: time, ladder: {time_bucket: [1h, 1d]}}
        - {path: role}
    gate:
      patterns: [email, ipv4, card]
      max_quarantine_rate: 0.01
`

type edit struct{ old, new string }

func apply(t *testing.T, text string, edits []edit) string {
	t.Helper()
	for _, e := range edits {
		if !strings.Contains(text, e.old) {
			t.Fatalf("edit: %q not in the base config", e.old)
		}
		text = strings.Replace(text, e.old, e.new, 1)
	}
	return text
}

func TestDiff(t *testing.T) {
	dir := t.TempDir()
	for name, b := range map[string]byte{"a.key": 1, "b.key": 2, "c.key": 3} {
		key := strings.Repeat(string("0123456789abcdef"[b]), 64)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		edits []edit
		from  []edit // the old config, when not the base
		// material and other list the changed keys (relative to
		// vendors.acme when they start with "."), in any order.
		material, other []string
	}{
		{name: "identical", edits: nil},
		{name: "defaults written out are no change", edits: []edit{
			{"action: pseudonymize, namespace: user, prefix: usr_}", "action: pseudonymize, namespace: user, prefix: usr_, bits: 128, encoding: hex}"},
			{"    vendor: Acme\n", "    vendor: Acme\n    output: json\n"},
		}},
		{name: "field newly exported", edits: []edit{
			{"      - {path: pid, action: drop}\n", "      - {path: pid, action: drop}\n      - {path: cmdline, action: keep}\n"},
		}, material: []string{".fields[cmdline]"}},
		{name: "new drop rule is not material", edits: []edit{
			{"      - {path: pid, action: drop}\n", "      - {path: pid, action: drop}\n      - {path: secret, action: drop}\n"},
		}, other: []string{".fields[secret]"}},
		{name: "drop to keep exports a field", edits: []edit{
			{"{path: pid, action: drop}", "{path: pid, action: keep}"},
		}, material: []string{".fields[pid].action"}},
		{name: "pseudonymize to keep is weaker", edits: []edit{
			{"{path: target.user, action: pseudonymize, namespace: target}", "{path: target.user, action: keep}"},
		}, material: []string{".fields[target.user].action"}},
		{name: "ip_prefix_preserving to ip_truncate is weaker", edits: []edit{
			{"{path: dst.ip, action: ip_prefix_preserving}", "{path: dst.ip, action: ip_truncate}"},
		}, material: []string{".fields[dst.ip].action"}},
		{name: "ip_truncate to ip_prefix_preserving is stronger", edits: []edit{
			{"{path: src.ip, action: ip_truncate, ipv4_bits: 16}", "{path: src.ip, action: ip_prefix_preserving}"},
		}, other: []string{".fields[src.ip].action"}},
		{name: "removing a rule is not material", edits: []edit{
			{"      - {path: dst.ip, action: ip_prefix_preserving}\n", ""},
		}, other: []string{".fields[dst.ip]"}},
		{name: "email domain kept is weaker", edits: []edit{
			{"action: email_split, domain: pseudonymize}", "action: email_split, domain: keep}"},
		}, material: []string{".fields[user.email].action"}},
		{name: "fewer pseudonym bits", edits: []edit{
			{"namespace: target}", "namespace: target, bits: 64}"},
		}, material: []string{".fields[target.user].bits"}},
		{name: "more pseudonym bits and a new prefix", edits: []edit{
			{"namespace: target}", "namespace: target, bits: 256, prefix: t_}"},
		}, other: []string{".fields[target.user].bits", ".fields[target.user].prefix"}},
		{name: "more IPv4 bits kept", edits: []edit{
			{"ipv4_bits: 16}", "ipv4_bits: 24}"},
		}, material: []string{".fields[src.ip].ipv4_bits"}},
		{name: "namespaces merged makes fields joinable", edits: []edit{
			{"namespace: target}", "namespace: user, prefix: usr_}"},
		}, material: []string{".fields[target.user].namespace"}, other: []string{".fields[target.user].namespace", ".fields[target.user].prefix"}},
		{name: "finer time bucket", edits: []edit{
			{"time_bucket: 1h}", "time_bucket: 1m}"},
		}, material: []string{".fields[time].generalize"}},
		{name: "coarser time bucket", edits: []edit{
			{"time_bucket: 1h}", "time_bucket: 1d}"},
		}, other: []string{".fields[time].generalize"}},
		{name: "new numeric edge", edits: []edit{
			{"edges: [10, 100]", "edges: [10, 50, 100]"},
		}, material: []string{".fields[duration].generalize"}},
		{name: "numeric edge removed", edits: []edit{
			{"edges: [10, 100]", "edges: [100]"},
		}, other: []string{".fields[duration].generalize"}},
		{name: "map split into more outputs", edits: []edit{
			{"{from: ceo, to: executive}", "{from: ceo, to: chief}"},
		}, material: []string{".fields[role].generalize"}},
		{name: "map merged into fewer outputs", edits: []edit{
			{"{from: clerk, to: staff}", "{from: clerk, to: executive}"},
		}, other: []string{".fields[role].generalize"}},
		{name: "k lowered", edits: []edit{{"k: 5", "k: 3"}}, material: []string{".k_anonymity.k"}},
		{name: "k raised", edits: []edit{{"k: 5", "k: 10"}}, other: []string{".k_anonymity.k"}},
		{name: "k-anonymity removed", edits: []edit{
			{base[strings.Index(base, "    k_anonymity:"):strings.Index(base, "    gate:")], ""},
		}, material: []string{".k_anonymity"}},
		{name: "repartition topic added", edits: []edit{
			{"entity: user.name\n", "entity: user.name\n      repartition_topic: deident.repartition.v\n      partition_level: 1\n"},
		}, other: []string{".k_anonymity.repartition_topic", ".k_anonymity.partition_level"}},
		{name: "repartition topic removed", from: []edit{
			{"entity: user.name\n", "entity: user.name\n      repartition_topic: deident.repartition.v\n"},
		}, material: []string{".k_anonymity.repartition_topic"}},
		{name: "quasi-identifier removed", edits: []edit{
			{"        - {path: role}\n", ""},
		}, material: []string{".k_anonymity.quasi_identifiers[role]"}},
		{name: "category added with opt-in", edits: []edit{
			{"categories: [threat_telemetry]", "categories: [threat_telemetry, user_content]\n    opt_in: {user_content: \"tickets, reviewed by DPO\"}"},
		}, material: []string{".categories", ".opt_in.user_content"}},
		{name: "category removed", edits: []edit{
			{"categories: [threat_telemetry]", "categories: [workflow_metadata]"},
		}, material: []string{".categories"}, other: []string{".categories"}},
		{name: "purpose and vendor changed", edits: []edit{
			{"purpose: security-detection", "purpose: model-training"},
			{"vendor: Acme\n", "vendor: Acme Holdings\n"},
		}, material: []string{".vendor", ".purpose"}},
		{name: "topic changed", edits: []edit{{"topic: vendor.acme", "topic: vendor.acme2"}}, material: []string{".topic"}},
		{name: "key replaced", edits: []edit{{"file: a.key", "file: b.key"}},
			material: []string{".keys[" + keyID(t, dir, "a.key") + "]", ".keys[" + keyID(t, dir, "b.key") + "]"}},
		{name: "key epoch added", edits: []edit{
			{"      - file: a.key\n", "      - file: a.key\n      - {file: c.key, valid_from: 2030-01-01T00:00:00Z}\n"},
		}, material: []string{".keys[" + keyID(t, dir, "c.key") + "]"}},
		{name: "gate check switched off", edits: []edit{
			{"      patterns: [email, ipv4, card]\n", "      patterns: [email, ipv4, card]\n      echo: false\n"},
		}, material: []string{".gate.echo"}},
		{name: "gate pattern removed and one added", edits: []edit{
			{"patterns: [email, ipv4, card]", "patterns: [email, card, iban]"},
		}, material: []string{".gate.patterns"}, other: []string{".gate.patterns"}},
		{name: "gate quarantine rate raised", edits: []edit{
			{"max_quarantine_rate: 0.01", "max_quarantine_rate: 0.05"},
		}, material: []string{".gate.max_quarantine_rate"}},
		{name: "gate quarantine rate lowered", edits: []edit{
			{"max_quarantine_rate: 0.01", "max_quarantine_rate: 0.001"},
		}, other: []string{".gate.max_quarantine_rate"}},
		{name: "route added", edits: []edit{
			{"vendors:\n", "vendors:\n  flow:\n    purpose: workflow-optimization\n    categories: [workflow_metadata]\n    keys: [{file: c.key}]\n    fields: [{path: step, action: keep}]\n"},
		}, material: []string{"vendors.flow"}},
		{name: "source with an allowed category added", edits: []edit{
			{"sources:\n", "sources:\n  edr2: {topic: telemetry.edr2, category: threat_telemetry}\n"},
		}, material: []string{"sources.edr2"}},
		{name: "source nobody receives added", edits: []edit{
			{"sources:\n", "sources:\n  hr: {topic: hr, category: workflow_metadata}\n"},
		}, other: []string{"sources.hr"}},
	}
	oldCfg, err := config.Parse([]byte(base), dir)
	if err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			oldCfg := oldCfg
			if tc.from != nil {
				var err error
				if oldCfg, err = config.Parse([]byte(apply(t, base, tc.from)), dir); err != nil {
					t.Fatalf("old config: %v", err)
				}
			}
			newCfg, err := config.Parse([]byte(apply(t, base, tc.edits)), dir)
			if err != nil {
				t.Fatalf("new config: %v", err)
			}
			changes := Diff(oldCfg, newCfg)
			var material, other []string
			for _, c := range changes {
				k := strings.TrimPrefix(c.Key, "vendors.acme")
				if k != c.Key && k == "" {
					k = c.Key
				}
				if c.Material {
					material = append(material, k)
				} else {
					other = append(other, k)
				}
			}
			slices.Sort(material)
			slices.Sort(other)
			if !slices.Equal(material, slices.Sorted(slices.Values(tc.material))) || !slices.Equal(other, slices.Sorted(slices.Values(tc.other))) {
				var lines []string
				for _, c := range changes {
					lines = append(lines, c.String())
				}
				t.Errorf("material %q, other %q; want %q, %q\n%s", material, other, tc.material, tc.other, strings.Join(lines, "\n"))
			}
			if Material(changes) != (len(tc.material) > 0) {
				t.Errorf("Material = %v", Material(changes))
			}
		})
	}
}

func keyID(t *testing.T, dir, file string) string {
	t.Helper()
	cfg, err := config.Parse([]byte(strings.Replace(base, "file: a.key", "file: "+file, 1)), dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Vendors["acme"].Keys[0].Key.ID()
}

func TestNoticeHasOnlyVendorFacingChanges(t *testing.T) {
	changes := []Change{
		{Route: "acme", Key: "vendors.acme.fields[pid].action", Old: "drop", New: "keep", Material: true, Why: "field newly exported", Audience: Vendor},
		{Route: "acme", Key: "vendors.acme.gate.echo", Old: "on", New: "off", Material: true, Why: "gate loosened", Audience: Internal},
		{Route: "other", Key: "vendors.other.topic", Old: "a", New: "b", Material: true, Audience: Vendor},
		{Route: "acme", Key: "vendors.acme.fields[x].prefix", Old: "a_", New: "b_", Audience: Vendor},
	}
	text := Notice(NoticeInput{Route: "acme", Vendor: "Acme", Purpose: "security-detection", OldVersion: "p1", NewVersion: "p2", Changes: changes, Ack: "ticket SEC-42"})
	for _, want := range []string{"To: Acme", "deident-policy: p2 (previously p1)", "fields[pid].action: was drop, now keep (field newly exported)", "fields[x].prefix: was a_, now b_", "Reason for the change: ticket SEC-42"} {
		if !strings.Contains(text, want) {
			t.Errorf("notice lacks %q:\n%s", want, text)
		}
	}
	for _, not := range []string{"gate", "topic"} {
		if strings.Contains(text, not) {
			t.Errorf("notice mentions %q:\n%s", not, text)
		}
	}
	if Notice(NoticeInput{Route: "acme", Changes: changes[1:2]}) != "" {
		t.Error("a notice for internal changes only")
	}
}

// An acknowledgement in the file covers a route's material changes at the
// policy version it names, and no other version or route.
func TestUnacknowledged(t *testing.T) {
	changes := []Change{
		{Route: "acme", Key: "vendors.acme.fields[file.path].action", Material: true},
		{Route: "acme", Key: "vendors.acme.purpose"},
		{Route: "beta", Key: "vendors.beta.gate.k", Material: true},
	}
	cfg := &config.Config{Acknowledge: []config.Ack{{Route: "acme", Policy: "p2", Reason: "needed for detections"}}}
	keys := func(cs []Change) []string {
		var s []string
		for _, c := range cs {
			s = append(s, c.Key)
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		versions map[string]string
		ack      string
		want     []string
	}{
		{"acked at its new version", map[string]string{"acme": "p2", "beta": "p9"}, "", []string{"vendors.beta.gate.k"}},
		{"ack for another version", map[string]string{"acme": "p3", "beta": "p9"}, "", []string{"vendors.acme.fields[file.path].action", "vendors.beta.gate.k"}},
		{"--ack covers all", map[string]string{"acme": "p3"}, "reviewed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keys(Unacknowledged(changes, cfg, tc.versions, tc.ack)); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
