package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// The tests in this file run the real worker (deident run) and then audit
// and replay what it published, through the CLI as an operator would.

const workerConfigFile = "../../configs/deident.yaml"

// cliEnv points the CLI at the topics, group and broker of cfg (a
// testConfig): the config file is configs/deident.yaml, and each key
// testConfig changed is overridden from the environment
// (vendors.acme-mdr.topic is DEIDENT_VENDORS_ACME_MDR_TOPIC). Call it after
// the last kafkatest.Brokers: it sets DEIDENT_KAFKA_BROKERS.
func cliEnv(t *testing.T, cfg *config.Config) {
	t.Helper()
	env := func(key string) string {
		return config.EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
	}
	t.Setenv(env("kafka.brokers"), strings.Join(cfg.Kafka.Brokers, ","))
	t.Setenv(env("kafka.group_id"), cfg.Kafka.GroupID)
	t.Setenv(env("kafka.dead_letter_topic"), cfg.Kafka.DeadLetterTopic)
	t.Setenv(env("kafka.quarantine_topic"), cfg.Kafka.QuarantineTopic)
	for name, s := range cfg.Sources {
		t.Setenv(env("sources."+name+".topic"), s.Topic)
	}
	for name, v := range cfg.Vendors {
		t.Setenv(env("vendors."+name+".topic"), v.Topic)
	}
	// The CLI must see the same route, hence the same policy version, as the worker.
	loaded, err := config.Load(workerConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range cfg.Vendors {
		if loaded.Vendors[name].Topic != v.Topic {
			t.Fatalf("environment override of vendors.%s.topic did not apply", name)
		}
	}
}

// produceTimed writes values to topic keyed as produce does, every record
// with the given timestamp plus its index in milliseconds.
func produceTimed(t *testing.T, brokers []string, topic string, values [][]byte, at time.Time) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte("entity-" + strconv.Itoa(i%37)), Value: v, Time: at.Add(time.Duration(i) * time.Millisecond)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("producing to %s: %v", topic, err)
	}
}

// runWorkerToEnd runs the worker until the group has committed the end of
// every source topic (every output acknowledged), stops it, and checks
// that it published exactly what the routes derive.
func runWorkerToEnd(t *testing.T, cfg *config.Config) *worker {
	t.Helper()
	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)
	if dups := checkOutputs(t, cfg, rw.w); dups != 0 {
		t.Fatalf("%d duplicates in a run without restarts", dups)
	}
	if t.Failed() {
		t.FailNow()
	}
	return rw.w
}

// TestAuditFindsTamperedAndUnprovenAfterWorker: the worker publishes the
// acme-mdr route; then one of its vendor records is copied with one field
// changed (same headers) and one record without provenance is appended.
// The audit over a time range covering everything reports exactly those
// two; every record the worker published matches (the original of the
// tampered copy too), nothing is missing, and the exit code says so.
func TestAuditFindsTamperedAndUnprovenAfterWorker(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	const n = 120
	begin := time.Now().Add(-time.Minute)
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 11, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 12, n))
	w := runWorkerToEnd(t, cfg)
	if out := w.runner.Counters().Routes["acme-mdr"].Out.Load(); out != n {
		t.Fatalf("acme-mdr published %d records, want %d", out, n)
	}

	vendorTopic := cfg.Vendors["acme-mdr"].Topic
	published := readAll(t, brokers, vendorTopic, testPartitions)
	if len(published) != n {
		t.Fatalf("vendor topic holds %d records, want %d", len(published), n)
	}
	slices.SortFunc(published, func(a, b kafka.Message) int { return strings.Compare(srcOf(a), srcOf(b)) })

	// (a) A copy of one published record with actor.user.name changed in one
	// character (still a well-formed pseudonym, so only the comparison with
	// the source can tell), on the original's partition, same key and headers.
	orig := published[len(published)/2]
	var parsed struct {
		Actor struct {
			User struct {
				Name string `json:"name"`
			} `json:"user"`
		} `json:"actor"`
	}
	if err := json.Unmarshal(orig.Value, &parsed); err != nil || !strings.HasPrefix(parsed.Actor.User.Name, "usr_") {
		t.Fatalf("vendor record %s: actor.user.name %q (%v), want a pseudonym", srcOf(orig), parsed.Actor.User.Name, err)
	}
	name := parsed.Actor.User.Name
	last := name[len(name)-1]
	changed := name[:len(name)-1] + map[bool]string{true: "1", false: "0"}[last == '0']
	quoted := []byte(`"name":"` + name + `"`)
	if bytes.Count(orig.Value, quoted) != 1 {
		t.Fatalf("vendor record %s: pseudonym not found once", srcOf(orig))
	}
	tamperedValue := bytes.Replace(orig.Value, quoted, []byte(`"name":"`+changed+`"`), 1)
	origSrc := headers(orig)[pipeline.HeaderSrc]
	if origSrc == "" || headers(orig)[pipeline.HeaderPolicy] == "" || headers(orig)[pipeline.HeaderKey] == "" {
		t.Fatalf("vendor record %s lacks provenance: %v", srcOf(orig), headers(orig))
	}
	// (b) A record without provenance: another published value, no headers.
	unproven := published[0]
	appended := []kafka.Message{
		{Partition: orig.Partition, Key: orig.Key, Value: tamperedValue, Headers: slices.Clone(orig.Headers)},
		{Partition: unproven.Partition, Key: unproven.Key, Value: unproven.Value},
	}
	before := endOffsets(t, brokers, vendorTopic, testPartitions)
	produceAt(t, brokers, vendorTopic, appended, nil)
	after := endOffsets(t, brokers, vendorTopic, testPartitions)
	tamperedLoc := audit.Loc{Partition: orig.Partition, Offset: before[orig.Partition]}
	unprovenLoc := audit.Loc{Partition: unproven.Partition, Offset: before[unproven.Partition]}
	if orig.Partition == unproven.Partition {
		unprovenLoc.Offset++
	}
	for p := range testPartitions {
		if want := before[p] + int64(countPartition(appended, p)); after[p] != want {
			t.Fatalf("vendor partition %d ends at %d, want %d", p, after[p], want)
		}
	}

	cliEnv(t, cfg)
	reportDir := filepath.Join(t.TempDir(), "report")
	end := time.Now().Add(time.Minute)
	out, err := run(t, "audit", "--config", workerConfigFile, "--route", "acme-mdr",
		"--from", begin.UTC().Format(time.RFC3339Nano), "--to", end.UTC().Format(time.RFC3339Nano),
		"--report", reportDir, "--grace", "1s", "--idle-timeout", "5s")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code == 0 {
		t.Fatalf("audit: err %v, want a non-zero exit code\n%s", err, out)
	}
	if ee.code != exitAuditFindings {
		t.Errorf("audit exit code %d, want %d", ee.code, exitAuditFindings)
	}
	b, err := os.ReadFile(filepath.Join(reportDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep audit.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(reportDir, "report.html")); err != nil {
		t.Errorf("report.html: %v", err)
	}

	wantSummary := audit.Summary{
		VendorRecords: n + 2,
		Matched:       n, // every record the worker published, the tampered one's original too
		Mismatched:    1,
		NoProvenance:  1,
		SourceRecords: n,
		Delivered:     n,
		ByReason:      map[string]int{},
	}
	if got, want := must(json.Marshal(rep.Summary)), must(json.Marshal(wantSummary)); !bytes.Equal(got, want) {
		t.Errorf("summary\n got %s\nwant %s\n%s", got, want, out)
	}
	if len(rep.Mismatches) != 1 {
		t.Fatalf("mismatches %+v, want exactly one\n%s", rep.Mismatches, out)
	}
	m := rep.Mismatches[0]
	if m.Partition != tamperedLoc.Partition || m.Offset != tamperedLoc.Offset || m.Src != origSrc || m.Policy != headers(orig)[pipeline.HeaderPolicy] {
		t.Errorf("mismatch at %d/%d src %s policy %s, want the tampered copy at %d/%d src %s policy %s",
			m.Partition, m.Offset, m.Src, m.Policy, tamperedLoc.Partition, tamperedLoc.Offset, origSrc, headers(orig)[pipeline.HeaderPolicy])
	}
	if !slices.Equal(m.Paths, []string{"actor.user.name"}) {
		t.Errorf("mismatch paths %v, want [actor.user.name]", m.Paths)
	}
	if len(rep.NoProvenance) != 1 || rep.NoProvenance[0].Partition != unprovenLoc.Partition || rep.NoProvenance[0].Offset != unprovenLoc.Offset {
		t.Errorf("no provenance %+v, want exactly %d/%d", rep.NoProvenance, unprovenLoc.Partition, unprovenLoc.Offset)
	}
	if len(rep.Missing) != 0 || len(rep.Unverified) != 0 || len(rep.GateFindings) != 0 {
		t.Errorf("missing %v, unverified %+v, gate findings %+v; want none", rep.Missing, rep.Unverified, rep.GateFindings)
	}
	if len(rep.Policies) != 1 || !rep.Policies[0].Known || rep.Policies[0].Version != headers(orig)[pipeline.HeaderPolicy] || rep.Policies[0].Records != n+1 {
		t.Errorf("policies %+v, want the worker's version %s, known, on %d records", rep.Policies, headers(orig)[pipeline.HeaderPolicy], n+1)
	}
	// The report covers the whole source topic and the whole vendor topic.
	var srcCovered, vendorCovered int64
	for _, r := range rep.SourceRanges {
		srcCovered += r.Len()
	}
	for _, r := range rep.VendorRanges {
		vendorCovered += r.Len()
	}
	if srcCovered != n || vendorCovered != n+2 {
		t.Errorf("ranges cover %d source and %d vendor records, want %d and %d", srcCovered, vendorCovered, n, n+2)
	}
	// Field paths, never values: neither pseudonym is in the report or the output.
	for _, v := range []string{name, changed} {
		if strings.Contains(string(b), v) || strings.Contains(out, v) {
			t.Errorf("the report holds the value %q", v)
		}
	}
}

func countPartition(msgs []kafka.Message, p int) int {
	n := 0
	for _, m := range msgs {
		if m.Partition == p {
			n++
		}
	}
	return n
}

// TestReplayTimeRangeMatchesWorker: three batches an hour apart go through
// the worker; `deident replay` over the middle hour gives, for exactly the
// source records of the middle batch, the bytes and provenance the worker
// published for them, and commits nothing and writes nothing to a vendor topic.
func TestReplayTimeRangeMatchesWorker(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	const perBatch = 40
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	for b := range 3 {
		at := t0.Add(time.Duration(b) * time.Hour)
		produceTimed(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, uint64(20+b), perBatch), at)
		produceTimed(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, uint64(30+b), perBatch), at)
	}
	runWorkerToEnd(t, cfg)

	// The source records of the middle batch, by their timestamps.
	from, to := t0.Add(30*time.Minute), t0.Add(90*time.Minute)
	inRange := map[string]bool{}
	for _, m := range readAll(t, brokers, cfg.Sources["edr"].Topic, testPartitions) {
		if !m.Time.Before(from) && m.Time.Before(to) {
			inRange[srcOf(m)] = true
		}
	}
	if len(inRange) != perBatch {
		t.Fatalf("test setup: %d source records in [%v, %v), want %d (timestamps not kept?)", len(inRange), from, to, perBatch)
	}
	// What the worker published for them.
	published := map[string]kafka.Message{}
	for _, m := range readAll(t, brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions) {
		if src := headers(m)[pipeline.HeaderSrc]; inRange[src] {
			published[src] = m
		}
	}
	if len(published) != perBatch {
		t.Fatalf("the worker published %d records for the middle batch, want %d", len(published), perBatch)
	}

	cliEnv(t, cfg)
	committed := committedOffsets(t, cfg)
	vendorEnds := map[string]map[int]int64{}
	for _, v := range cfg.Vendors {
		vendorEnds[v.Topic] = endOffsets(t, brokers, v.Topic, testPartitions)
	}

	out := filepath.Join(t.TempDir(), "replay.jsonl")
	if _, err := run(t, "replay", "--config", workerConfigFile, "--route", "acme-mdr",
		"--from", from.UTC().Format(time.RFC3339), "--to", to.UTC().Format(time.RFC3339), "--out", out, "--idle-timeout", "5s"); err != nil {
		t.Fatalf("replay: %v", err)
	}
	got := readReplayFile(t, out)
	if len(got) != len(published) {
		t.Errorf("replay gave %d outputs, want %d", len(got), len(published))
	}
	for src := range got {
		if !inRange[src] {
			t.Errorf("replay output for %s, outside the range", src)
		}
	}
	for src, m := range published {
		l, ok := got[src]
		if !ok {
			t.Errorf("%s: the worker published it, replay gave nothing", src)
			continue
		}
		h := headers(m)
		if !bytes.Equal(l.Value, m.Value) {
			t.Errorf("%s: replay differs from the worker's output\nreplay %s\nworker %s", src, l.Value, m.Value)
		}
		if l.Src != h[pipeline.HeaderSrc] || l.Policy != h[pipeline.HeaderPolicy] || l.Key != h[pipeline.HeaderKey] {
			t.Errorf("%s: replay provenance src %q policy %q key %q, worker %q %q %q", src, l.Src, l.Policy, l.Key, h[pipeline.HeaderSrc], h[pipeline.HeaderPolicy], h[pipeline.HeaderKey])
		}
	}

	// Nothing committed, nothing written to a vendor topic.
	if now := committedOffsets(t, cfg); !maps.EqualFunc(now, committed, maps.Equal) {
		t.Errorf("group offsets changed by replay: %v, were %v", now, committed)
	}
	for topic, ends := range vendorEnds {
		if now := endOffsets(t, brokers, topic, testPartitions); !maps.Equal(now, ends) {
			t.Errorf("vendor topic %s: ends %v after replay, were %v", topic, now, ends)
		}
	}
}
