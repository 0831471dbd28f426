package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/gate"
)

// produceTo writes values to one partition of topic, in order.
func produceTo(t *testing.T, brokers []string, topic string, partition int, values []string) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: 5 * time.Millisecond,
		Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return partition })}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte("k" + strconv.Itoa(i)), Value: []byte(v)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("producing to %s/%d: %v", topic, partition, err)
	}
}

// edrRecord is a threat record for the acme-mdr route.
func edrRecord(user, process, product string) string {
	return `{"time":"2026-11-01T10:00:00Z","class_uid":1007,"severity_id":2,"metadata":{"product":{"name":"` + product +
		`"}},"actor":{"user":{"name":"` + user + `"},"process":{"name":"` + process + `","pid":42}},"device":{"hostname":"ws-1.corp.example","ip":"10.1.2.3"}}`
}

// committedP0 returns the group's committed offset of partition 0 of
// topic, or -1 when there is none yet (also while the group is unknown).
func committedP0(cfg *config.Config, topic string) int64 {
	client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Timeout: 10 * time.Second}
	res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: cfg.Kafka.GroupID, Topics: map[string][]int{topic: {0}}})
	if err != nil || res.Error != nil {
		return -1
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == 0 && p.Error == nil {
			return p.CommittedOffset
		}
	}
	return -1
}

// srcOffset returns the offset a deident-src header names.
func srcOffset(t *testing.T, m kafka.Message) int64 {
	t.Helper()
	_, _, off := parseSrc(t, headers(m)[pipeline.HeaderSrc])
	return off
}

// TestRunGateQuarantinesPlantedLeak: a kept free-text field holding a raw
// user name seen earlier in actor.user.name, and one holding an e-mail
// address, land in the quarantine topic with the route, policy, reason
// codes and field paths (never values) and never in the vendor topic; the
// rest flows, the offsets are committed and the accounting holds.
func TestRunGateQuarantinesPlantedLeak(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	values := []string{
		edrRecord("jdoe.admin", "explorer.exe", "EDR"),
		edrRecord("asmith", "cmd.exe", "EDR"),
		edrRecord("asmith", "runas jdoe.admin", "EDR"),              // echo of an earlier raw user name
		edrRecord("bkhan", "svchost.exe", "mail alice@example.org"), // e-mail address
		edrRecord("bkhan", "svchost.exe", "EDR"),
	}
	produceTo(t, brokers, cfg.Sources["edr"].Topic, 0, values)

	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	want := map[int64]struct{ reason, path string }{
		2: {"echo", "actor.process.name"},
		3: {"pattern:email", "metadata.product.name"},
	}
	q := readAll(t, brokers, cfg.Kafka.QuarantineTopic, 1)
	if len(q) != len(want) {
		t.Fatalf("%d quarantined records, want %d", len(q), len(want))
	}
	route := rw.w.routes["acme-mdr"]
	for _, m := range q {
		h := headers(m)
		w, ok := want[srcOffset(t, m)]
		if !ok {
			t.Errorf("unexpected quarantined record %s", h[pipeline.HeaderSrc])
			continue
		}
		if h[pipeline.HeaderRoute] != "acme-mdr" || h[pipeline.HeaderPolicy] != route.Version ||
			!strings.Contains(h[gate.HeaderReasons], w.reason) || !strings.Contains(h[gate.HeaderPaths], w.path) {
			t.Errorf("quarantine headers %v, want route acme-mdr, policy %s, reason %s, path %s", h, route.Version, w.reason, w.path)
		}
		for k, v := range h {
			if strings.Contains(v, "jdoe") || strings.Contains(v, "alice@") {
				t.Errorf("header %s carries a value: %q", k, v)
			}
		}
	}
	for _, m := range readAll(t, brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions) {
		if strings.Contains(string(m.Value), "jdoe") || strings.Contains(string(m.Value), "alice@") {
			t.Errorf("leak published to the vendor: %s", m.Value)
		}
		if _, bad := want[srcOffset(t, m)]; bad {
			t.Errorf("quarantined record %s also published", headers(m)[pipeline.HeaderSrc])
		}
	}
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if rc := c.Routes["acme-mdr"]; rc.Out.Load() != 3 || rc.Quarantined.Load() != 2 {
		t.Errorf("acme-mdr out %d quarantined %d, want 3 2", rc.Out.Load(), rc.Quarantined.Load())
	}
	st := rw.w.gates["acme-mdr"].Stats()
	if st.Quarantined != 2 {
		t.Errorf("gate stats quarantined %d, want 2", st.Quarantined)
	}
	// The metric deident_gate_quarantined_total{route,reason}.
	var got []string
	st.Each(func(reason string, n uint64) { got = append(got, reason+"="+strconv.FormatUint(n, 10)) })
	if strings.Join(got, ",") != "echo=1,pattern:email=1" {
		t.Errorf("gate counts %v", got)
	}
}

// TestRunGateFailsClosed: once the quarantine rate passes the threshold,
// the worker stops with gate.ErrFailClosed (exit 4), publishes nothing
// more to the route, and the committed offset does not pass the record
// that tripped the gate: every record below it has its output in the
// vendor or quarantine topic.
func TestRunGateFailsClosed(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	rc := cfg.Vendors["acme-mdr"]
	rc.Gate.MinRecords = 10
	rc.Gate.MaxQuarantineRate = 0.2
	cfg.Vendors["acme-mdr"] = rc
	var values []string
	for i := range 60 {
		product := "EDR"
		if i >= 10 {
			product = "mail u" + strconv.Itoa(i) + "@example.org"
		}
		values = append(values, edrRecord("user"+strconv.Itoa(i), "cmd.exe", product))
	}
	topic := cfg.Sources["edr"].Topic
	produceTo(t, brokers, topic, 0, values[:10])
	rw := startWorker(t, cfg)
	waitUntil(t, "the good records committed", 25*time.Second, func() bool { return committedP0(cfg, topic) == 10 })
	produceTo(t, brokers, topic, 0, values[10:])
	var err error
	select {
	case err = <-rw.errc:
		rw.errc <- err
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not fail closed within 30s")
	}
	if !errors.Is(err, gate.ErrFailClosed) || !strings.Contains(err.Error(), "acme-mdr") {
		t.Fatalf("worker: %v, want a fail-closed error naming acme-mdr", err)
	}
	var ee *exitError
	if xerr := runExit(err); !errors.As(xerr, &ee) || ee.code != exitFailClosed {
		t.Errorf("exit error %v, want code %d", xerr, exitFailClosed)
	}
	// 10 pass; records 10 and 11 are quarantined (rate 1/11, 2/12); the
	// 13th (offset 12) makes it 3/13 > 0.2 and trips.
	const tripAt = 12
	committed := committedP0(cfg, topic)
	if committed < 10 || committed > tripAt {
		t.Errorf("committed %d, want from 10 to the record %d that tripped the gate", committed, tripAt)
	}
	vendor := readAll(t, brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions)
	quar := readAll(t, brokers, cfg.Kafka.QuarantineTopic, 1)
	seen := map[int64]bool{}
	for _, m := range vendor {
		off := srcOffset(t, m)
		seen[off] = true
		if off >= 10 || strings.Contains(string(m.Value), "@") {
			t.Errorf("record %d published to the vendor", off)
		}
	}
	for _, m := range quar {
		off := srcOffset(t, m)
		seen[off] = true
		if off >= tripAt {
			t.Errorf("record %d at or after the trip handled", off)
		}
	}
	for off := range committed {
		if !seen[off] {
			t.Errorf("offset %d committed without its output", off)
		}
	}
	if err := rw.w.runner.Counters().Check(); err != nil {
		t.Error(err)
	}
	t.Logf("committed %d, %d vendor records, %d quarantined", committed, len(vendor), len(quar))
}

// kanonConfig gives acme-mdr a record-mode k-anonymity stage: k=3
// distinct users per actor.process.name.
func kanonConfig(t *testing.T, brokers []string, maxDelay time.Duration) *config.Config {
	cfg := testConfig(t, brokers)
	rc := cfg.Vendors["acme-mdr"]
	rc.KAnon = &config.KAnon{
		K:                3,
		Entity:           "actor.user.name",
		QuasiIdentifiers: []config.QuasiIdentifier{{Path: "actor.process.name"}},
		Mode:             config.KAnonRecord,
		MaxDelay:         maxDelay,
	}
	cfg.Vendors["acme-mdr"] = rc
	return cfg
}

// kanonRecords: a.exe run by three users (offsets 0, 2, 3: one class of
// k=3), b.exe by one (offset 1: short).
var kanonRecords = []string{
	edrRecord("alice", "a.exe", "EDR"),
	edrRecord("bob", "b.exe", "EDR"),
	edrRecord("carol", "a.exe", "EDR"),
	edrRecord("dave", "a.exe", "EDR"),
}

func vendorOffsets(t *testing.T, cfg *config.Config) []int64 {
	var out []int64
	for _, m := range readAll(t, cfg.Kafka.Brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions) {
		if strings.Contains(string(m.Value), "b.exe") {
			t.Errorf("a class under k published: %s", m.Value)
		}
		out = append(out, srcOffset(t, m))
	}
	return out
}

// TestRunKAnonHoldsOffsetsUntilDecided: a class of k distinct users is
// published, a class under k is not; the offset of the held record is not
// committed, so a worker started after a restart mid-window re-reads it.
func TestRunKAnonHoldsOffsetsUntilDecided(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := kanonConfig(t, brokers, time.Hour)
	topic := cfg.Sources["edr"].Topic
	produceTo(t, brokers, topic, 0, kanonRecords)

	first := startWorker(t, cfg)
	waitUntil(t, "three releases acknowledged", 25*time.Second, func() bool {
		return first.w.runner.Counters().Worker.Acked.Load() == 3
	})
	waitUntil(t, "commit of offset 1", 10*time.Second, func() bool { return committedP0(cfg, topic) == 1 })
	time.Sleep(300 * time.Millisecond) // several commit intervals
	if got := committedP0(cfg, topic); got != 1 {
		t.Fatalf("committed %d past the held record 1", got)
	}
	first.shutdown(t)
	if got := vendorOffsets(t, cfg); len(got) != 3 {
		t.Errorf("vendor records of offsets %v, want 0, 2, 3", got)
	}
	c := first.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if rc := c.Routes["acme-mdr"]; rc.Out.Load() != 3 || rc.Revoked.Load() != 1 || rc.Held.Load() != 0 {
		t.Errorf("acme-mdr out %d revoked %d held %d, want 3 1 0", rc.Out.Load(), rc.Revoked.Load(), rc.Held.Load())
	}
	if got := committedP0(cfg, topic); got != 1 {
		t.Fatalf("committed %d after shutdown, want the held record 1", got)
	}

	second := startWorker(t, cfg)
	waitUntil(t, "the held record re-read", 25*time.Second, func() bool {
		return second.w.runner.Counters().Worker.Consumed.Load() == 3
	})
	second.shutdown(t)
	if got := committedP0(cfg, topic); got != 1 {
		t.Errorf("second worker committed %d, want 1 (b.exe still short)", got)
	}
	if got := vendorOffsets(t, cfg); len(got) != 3 {
		t.Errorf("vendor records of offsets %v after the restart, want 0, 2, 3", got)
	}
}

// TestRunKAnonSuppressesShortClass: after max_delay the short class is
// suppressed (counted, never published) and the commit moves past it.
func TestRunKAnonSuppressesShortClass(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := kanonConfig(t, brokers, 300*time.Millisecond)
	topic := cfg.Sources["edr"].Topic
	produceTo(t, brokers, topic, 0, kanonRecords)

	rw := startWorkerWith(t, cfg, func(o *workerOptions) { o.stageInterval = 20 * time.Millisecond }, nil)
	waitUntil(t, "commit of the end", 25*time.Second, func() bool { return committedP0(cfg, topic) == 4 })
	rw.shutdown(t)
	if got := vendorOffsets(t, cfg); len(got) != 3 {
		t.Errorf("vendor records of offsets %v, want 0, 2, 3", got)
	}
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if rc := c.Routes["acme-mdr"]; rc.Out.Load() != 3 || rc.Suppressed.Load() != 1 || rc.Quarantined.Load() != 0 {
		t.Errorf("acme-mdr out %d suppressed %d quarantined %d, want 3 1 0", rc.Out.Load(), rc.Suppressed.Load(), rc.Quarantined.Load())
	}
	if st := rw.w.gates["acme-mdr"].Stats(); st.Checked != 3 || st.Quarantined != 0 {
		t.Errorf("gate checked %d quarantined %d, want 3 0 (CheckClass with k=3)", st.Checked, st.Quarantined)
	}
}

func TestHeaderNamesMatchGate(t *testing.T) {
	if pipeline.HeaderGate != gate.HeaderReasons || pipeline.HeaderGatePaths != gate.HeaderPaths {
		t.Fatal("pipeline and gate header names differ")
	}
}
