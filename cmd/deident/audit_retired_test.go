package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

// TestAuditReportsRetiredEpochAsCryptoShredded publishes what the worker
// would for two key epochs (the first batch under the old key, the second
// under the new), retires the old key with keys retire, and audits: the
// first batch is crypto-shredded, the second matched, and the report is
// clean. A record that claims the retired key for a source of the live
// epoch is still caught.
func TestAuditReportsRetiredEpochAsCryptoShredded(t *testing.T) {
	e := newReplayEnv(t)
	dir := filepath.Dir(e.cfgPath)
	cut := e.t0.Add(30 * time.Minute) // between the two batches
	if err := os.WriteFile(filepath.Join(dir, "acme-new.key"), []byte(strings.Repeat("6b", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(mustRead(t, e.cfgPath), "    keys: [{file: acme.key}]\n",
		"    event_time: time\n    keys:\n      - {file: acme.key}\n      - {file: acme-new.key, valid_from: "+cut.Format(time.RFC3339)+"}\n", 1)
	if err := os.WriteFile(e.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.Compile("acme", cfg.Vendors["acme"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	oldID, newID := r.KeyRing().ID(0), r.KeyRing().ID(1)
	a := r.NewApplier()
	var vendorMsgs []kafka.Message
	var forged kafka.Message
	old := 0
	for _, m := range e.srcMsgs {
		src := audit.Src(e.source, m.Partition, m.Offset)
		if src == e.failing || src == e.quarantine {
			continue
		}
		v, err := a.Apply(nil, m.Value)
		if err != nil {
			t.Fatalf("apply %s: %v", src, err)
		}
		if a.KeyID() == oldID {
			old++
		}
		vm := kafka.Message{Partition: m.Partition, Value: v, Time: m.Time.Add(time.Second), Headers: []kafka.Header{
			{Key: pipeline.HeaderSrc, Value: []byte(src)},
			{Key: pipeline.HeaderPolicy, Value: []byte(r.Version)},
			{Key: pipeline.HeaderKey, Value: []byte(a.KeyID())},
		}}
		vendorMsgs = append(vendorMsgs, vm)
		if a.KeyID() == newID {
			forged = vm
			forged.Headers = append([]kafka.Header(nil), vm.Headers[:2]...)
			forged.Headers = append(forged.Headers, kafka.Header{Key: pipeline.HeaderKey, Value: []byte(oldID)})
		}
	}
	if old != 5 || len(vendorMsgs) != 10 {
		t.Fatalf("%d vendor records, %d under the old key; want 10 and 5", len(vendorMsgs), old)
	}
	produceAt(t, e.brokers, e.vendor, vendorMsgs, nil)

	if out, err := runIn(t, "", "keys", "retire", "--config", e.cfgPath, "--before", cut.Format(time.RFC3339), "--yes"); err != nil || !strings.Contains(out, "acme: key "+oldID+": removed") {
		t.Fatalf("keys retire: %v\n%s", err, out)
	}

	from, to := e.t0.Add(-time.Minute), e.t0.Add(2*time.Hour)
	auditRun := func() (audit.Report, string, error) {
		t.Helper()
		reportDir := filepath.Join(t.TempDir(), "report")
		out, err := run(t, "audit", "--config", e.cfgPath, "--route", "acme", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339), "--report", reportDir)
		var rep audit.Report
		if err := json.Unmarshal([]byte(mustRead(t, filepath.Join(reportDir, "report.json"))), &rep); err != nil {
			t.Fatal(err)
		}
		if html := mustRead(t, filepath.Join(reportDir, "report.html")); !strings.Contains(html, "Crypto-shredded ranges") || !strings.Contains(html, oldID) {
			t.Error("report.html does not list the crypto-shredded range")
		}
		return rep, out, err
	}
	rep, out, err := auditRun()
	if err != nil {
		t.Fatalf("audit after retiring: %v (want a clean report)\n%s", err, out)
	}
	want := audit.Summary{
		VendorRecords: 10, Matched: 5, CryptoShredded: 5,
		SourceRecords: 12, Delivered: 10, Quarantined: 1,
		Failed:   1, // the record the route could not apply lies in the retired epoch
		ByReason: map[string]int{"pattern:email": 1},
	}
	if got, _ := json.Marshal(rep.Summary); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("summary\n got %s\nwant %s\n%s", got, must(json.Marshal(want)), out)
	}
	n := 0
	for _, s := range rep.CryptoShredded {
		n += s.Records
		if s.KeyID != oldID || s.EpochFrom != "" || s.EpochUntil != cut.UTC().Format(time.RFC3339) || s.FirstOffset > s.LastOffset {
			t.Errorf("shredded range %+v", s)
		}
	}
	if n != 5 || !strings.Contains(out, "crypto-shredded 5") || !strings.Contains(out, "records under retired key "+oldID) {
		t.Errorf("%d shredded records in ranges %+v\n%s", n, rep.CryptoShredded, out)
	}

	// A record of the live epoch that claims the retired key is not shredded.
	produceAt(t, e.brokers, e.vendor, []kafka.Message{forged}, nil)
	rep, out, err = auditRun()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitAuditFindings {
		t.Fatalf("audit with a forged key header: %v\n%s", err, out)
	}
	if rep.Summary.CryptoShredded != 5 || rep.Summary.Mismatched != 1 || len(rep.Mismatches) != 1 || !strings.Contains(strings.Join(rep.Mismatches[0].Paths, ","), "(header "+pipeline.HeaderKey+")") {
		t.Errorf("forged: summary %+v mismatches %+v", rep.Summary, rep.Mismatches)
	}
}
