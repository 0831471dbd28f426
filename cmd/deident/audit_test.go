package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/pipeline"
)

// TestAuditFindsExactlyTheTamperedTheUnprovenAndTheMissing publishes what
// the worker would (the route applied directly, with provenance headers,
// one record redelivered), then tampers with one record, adds one without
// provenance and leaves one source record without output. The audit must
// report exactly those three, and the gate's verdicts on the rest.
func TestAuditFindsExactlyTheTamperedTheUnprovenAndTheMissing(t *testing.T) {
	e := newReplayEnv(t)
	version := e.version(t)
	want := e.expected(t, func(kafka.Message) bool { return true })
	srcs := slices.Sorted(func(yield func(string) bool) {
		for s := range want {
			if !yield(s) {
				return
			}
		}
	})
	tampered, missing, redelivered := srcs[0], srcs[1], srcs[2]
	keyID := ""
	{
		// The key id as the worker writes it: take it from a replay.
		out := filepath.Join(t.TempDir(), "r.jsonl")
		if _, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--out", out); err != nil {
			t.Fatal(err)
		}
		for _, l := range readReplayFile(t, out) {
			keyID = l.Key
		}
	}
	var vendorMsgs []kafka.Message
	srcTime := map[string]time.Time{}
	for _, m := range e.srcMsgs {
		srcTime[audit.Src(e.source, m.Partition, m.Offset)] = m.Time
	}
	publish := func(src, value string, headers bool) {
		m := kafka.Message{Partition: len(vendorMsgs) % 2, Value: []byte(value), Time: srcTime[src].Add(time.Second)}
		if headers {
			m.Headers = []kafka.Header{
				{Key: pipeline.HeaderSrc, Value: []byte(src)},
				{Key: pipeline.HeaderPolicy, Value: []byte(version)},
				{Key: pipeline.HeaderKey, Value: []byte(keyID)},
			}
		}
		vendorMsgs = append(vendorMsgs, m)
	}
	for _, src := range srcs {
		v := want[src]
		switch src {
		case missing:
			continue
		case tampered:
			var obj map[string]any
			if err := json.Unmarshal([]byte(v), &obj); err != nil {
				t.Fatal(err)
			}
			obj["user"] = "usr_00000000000000000000000000000000"
			b, _ := json.Marshal(obj)
			v = string(b)
		case redelivered:
			publish(src, v, true)
		}
		publish(src, v, true)
	}
	publish(srcs[3], want[srcs[3]], false) // a record without provenance
	// An aggregate (as a k-anonymity route publishes): it names its window
	// and source offset ranges, which audit cannot re-derive.
	aggSrc := string(pipeline.AppendAggregateSrc(nil, e.t0, e.t0.Add(time.Minute), []pipeline.SrcSpan{{Topic: e.source, Partition: 0, First: 0, Last: 3, Count: 3}}))
	publish(aggSrc, `{"count":3,"entities":3}`, true)
	produceAt(t, e.brokers, e.vendor, vendorMsgs, nil)

	reportDir := filepath.Join(t.TempDir(), "report")
	from, to := e.t0.Add(-time.Minute), e.t0.Add(2*time.Hour)
	out, err := run(t, "audit", "--config", e.cfgPath, "--route", "acme", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339), "--report", reportDir)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitAuditFindings {
		t.Fatalf("audit: err %v, want exit %d\n%s", err, exitAuditFindings, out)
	}
	var rep audit.Report
	b, err := os.ReadFile(filepath.Join(reportDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	s := rep.Summary
	wantSummary := audit.Summary{
		VendorRecords: len(want) + 2, // minus the missing, plus the redelivery, the unproven and the aggregate
		Matched:       len(want) - 2, // minus the missing and the tampered
		Duplicates:    1,
		Mismatched:    1,
		NoProvenance:  1,
		Unverified:    1,
		SourceRecords: len(e.srcMsgs),
		Delivered:     len(want) - 1,
		Missing:       1,
		Quarantined:   1,
		Failed:        1,
		ByReason:      map[string]int{"pattern:email": 1},
	}
	if got, _ := json.Marshal(s); string(got) != string(must(json.Marshal(wantSummary))) {
		t.Errorf("summary\n got %s\nwant %s\n%s", got, must(json.Marshal(wantSummary)), out)
	}
	if len(rep.Mismatches) != 1 || rep.Mismatches[0].Src != tampered || !slices.Equal(rep.Mismatches[0].Paths, []string{"user"}) {
		t.Errorf("mismatches %+v, want %s at [user]", rep.Mismatches, tampered)
	}
	if !slices.Equal(rep.Missing, []string{missing}) {
		t.Errorf("missing %v, want [%s]", rep.Missing, missing)
	}
	if len(rep.GateFindings) != 0 || len(rep.Unverified) != 1 || rep.Unverified[0].Src != aggSrc || !strings.Contains(rep.Unverified[0].Reason, "aggregate") {
		t.Errorf("gate findings %+v, unverified %+v", rep.GateFindings, rep.Unverified)
	}
	if len(rep.Policies) != 1 || rep.Policies[0].Version != version || !rep.Policies[0].Known {
		t.Errorf("policies %+v", rep.Policies)
	}
	// Never a value: no raw user name, no pseudonym, no message text.
	for _, secret := range []string{"User1", "usr_0000", "login ok", "bob@example.com", "10.1."} {
		if strings.Contains(string(b), secret) || strings.Contains(out, secret) {
			t.Errorf("report holds the value %q", secret)
		}
	}
	html, err := os.ReadFile(filepath.Join(reportDir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "Volume over time", "Actions per field", tampered, missing} {
		if !strings.Contains(string(html), want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "src=", "href=", "@import", "url(", "ZgotmplZ"} {
		if strings.Contains(string(html), bad) {
			t.Errorf("report.html holds %q: not self-contained or mis-escaped", bad)
		}
	}

	// The same audit by offsets over the vendor topic, with the older policy
	// unknown: every record that claims it is unverifiable.
	// Then the older config goes into a policy directory and resolves them.
	t.Run("older policy", func(t *testing.T) {
		old := mustRead(t, e.cfgPath)
		policies := t.TempDir()
		for name, text := range map[string]string{"2026-01.yaml": old, "acme.key": mustRead(t, filepath.Join(filepath.Dir(e.cfgPath), "acme.key")), "unrelated.yaml": "vendors: {}\n"} {
			if err := os.WriteFile(filepath.Join(policies, name), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		newer := strings.Replace(old, "{path: n, action: keep}", "{path: n, action: drop}", 1)
		if err := os.WriteFile(e.cfgPath, []byte(newer), 0o600); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "r2")
		out, err := run(t, "audit", "--config", e.cfgPath, "--route", "acme", "--from", "0", "--report", dir)
		if !errors.As(err, &ee) || ee.code != exitAuditFindings || !strings.Contains(out, "unknown policy version") || !strings.Contains(out, "unverifiable "+strconv.Itoa(len(want)+1)) { // and the aggregate
			t.Fatalf("without the policy directory: err %v\n%s", err, out)
		}
		out, err = run(t, "audit", "--config", e.cfgPath, "--route", "acme", "--from", "0", "--report", dir, "--policies", policies)
		if !errors.As(err, &ee) || ee.code != exitAuditFindings {
			t.Fatalf("with the policy directory: err %v\n%s", err, out)
		}
		// By vendor offsets there is no source range, so nothing is missing;
		// the tampered, the unproven and the aggregate records remain.
		for _, want := range []string{"matched " + strconv.Itoa(len(want)-2), "mismatched 1", "no provenance 1", "unverifiable 1", "missing 0", "2026-01.yaml"} {
			if !strings.Contains(out+mustRead(t, filepath.Join(dir, "report.json")), want) {
				t.Errorf("lacks %q:\n%s", want, out)
			}
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
