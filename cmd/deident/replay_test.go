package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

// replayEnv is a broker with a source topic of two partitions holding two
// batches of records an hour apart, and a config whose route acme reads it.
type replayEnv struct {
	brokers             []string
	cfgPath             string
	source, vendor      string
	t0                  time.Time // first batch; the second is at t0+1h
	srcMsgs             []kafka.Message
	failing, quarantine string // deident-src of the record apply rejects and the one the gate quarantines
}

func newReplayEnv(t *testing.T) *replayEnv {
	t.Helper()
	e := &replayEnv{brokers: kafkatest.Brokers(t), source: kafkatest.Topic(t, "audit-src"), vendor: kafkatest.Topic(t, "audit-vendor")}
	kafkatest.CreateTopic(t, e.brokers, e.source, 2)
	kafkatest.CreateTopic(t, e.brokers, e.vendor, 2)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "acme.key"), []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
kafka:
  brokers: [%s]
sources:
  edr: {topic: %s, category: threat_telemetry}
  hr: {topic: hr-never-read, category: workflow_metadata}
vendors:
  acme:
    vendor: Acme
    purpose: security-detection
    categories: [threat_telemetry]
    topic: %s
    keys: [{file: acme.key}]
    fields:
      - {path: time, action: keep}
      - {path: user, action: pseudonymize, prefix: usr_, normalize: lower}
      - {path: ip, action: ip_truncate}
      - {path: msg, action: keep}
      - {path: n, action: keep}
`, strings.Join(e.brokers, ", "), e.source, e.vendor)
	e.cfgPath = filepath.Join(dir, "deident.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.t0 = time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	for batch := range 2 {
		for i := range 6 {
			n := batch*6 + i
			msg := "login ok"
			ip := fmt.Sprintf("10.1.%d.%d", n, n+1)
			switch n {
			case 4:
				ip = "not-an-ip" // apply fails: dead letter
			case 9:
				msg = "mail bob@example.com" // the gate quarantines it (pattern:email)
			}
			v := fmt.Sprintf(`{"time":"%s","user":"User%d","ip":"%s","msg":"%s","n":%d,"secret":"s%d"}`,
				e.t0.Add(time.Duration(batch)*time.Hour).Format(time.RFC3339), n%4, ip, msg, n, n)
			e.srcMsgs = append(e.srcMsgs, kafka.Message{
				Partition: n % 2, // placed by the balancer below
				Key:       []byte(fmt.Sprintf("k%d", n)),
				Value:     []byte(v),
				Time:      e.t0.Add(time.Duration(batch)*time.Hour + time.Duration(i)*time.Second),
			})
		}
	}
	produceAt(t, e.brokers, e.source, e.srcMsgs, func(msgs []kafka.Message) {
		e.srcMsgs = msgs
	})
	for _, m := range e.srcMsgs {
		if strings.Contains(string(m.Value), "not-an-ip") {
			e.failing = audit.Src(e.source, m.Partition, m.Offset)
		}
		if strings.Contains(string(m.Value), "bob@") {
			e.quarantine = audit.Src(e.source, m.Partition, m.Offset)
		}
	}
	return e
}

// partitionByField places every message on the partition it names.
type partitionByField struct{}

func (partitionByField) Balance(m kafka.Message, _ ...int) int { return m.Partition }

// produceAt writes msgs in order and reads them back, so the caller learns
// each one's partition and offset (kafka-go's Writer does not report them).
func produceAt(t *testing.T, brokers []string, topic string, msgs []kafka.Message, got func([]kafka.Message)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: partitionByField{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	for _, m := range msgs { // one at a time: order within a partition is the slice's
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatalf("producing to %s: %v", topic, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		return
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	ranges, err := audit.Resolve(ctx, client, topic, audit.Bound{}, audit.Bound{})
	if err != nil {
		t.Fatal(err)
	}
	var back []kafka.Message
	for _, r := range ranges {
		if err := (audit.Reader{Brokers: brokers}).Read(ctx, r, func(m kafka.Message) error {
			m.Partition = r.Partition
			back = append(back, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(back) != len(msgs) {
		t.Fatalf("read back %d of %d records", len(back), len(msgs))
	}
	got(back)
}

// expected applies the route directly: src -> output, for records that
// apply (the gate is not consulted; callers remove e.quarantine).
func (e *replayEnv) expected(t *testing.T, keep func(kafka.Message) bool) map[string]string {
	t.Helper()
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.Compile("acme", cfg.Vendors["acme"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	a := r.NewApplier()
	out := map[string]string{}
	for _, m := range e.srcMsgs {
		src := audit.Src(e.source, m.Partition, m.Offset)
		if !keep(m) || src == e.failing || src == e.quarantine {
			continue
		}
		v, err := a.Apply(nil, m.Value)
		if err != nil {
			t.Fatalf("apply %s: %v", src, err)
		}
		out[src] = string(v)
	}
	return out
}

func (e *replayEnv) version(t *testing.T) string {
	t.Helper()
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.Compile("acme", cfg.Vendors["acme"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	return r.Version
}

func readReplayFile(t *testing.T, path string) map[string]replayLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]replayLine{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l replayLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if _, dup := out[l.Src]; dup {
			t.Fatalf("src %s twice", l.Src)
		}
		out[l.Src] = l
	}
	return out
}

func compareReplay(t *testing.T, got map[string]replayLine, want map[string]string, version string) {
	t.Helper()
	if len(got) != len(want) {
		var extra []string
		for src := range got {
			if _, ok := want[src]; !ok {
				extra = append(extra, src)
			}
		}
		sort.Strings(extra)
		t.Errorf("%d outputs, want %d; not expected: %v", len(got), len(want), extra)
	}
	for src, w := range want {
		g, ok := got[src]
		switch {
		case !ok:
			t.Errorf("%s: no output", src)
		case string(g.Value) != w:
			t.Errorf("%s: output differs from applying the route directly", src)
		case g.Policy != version || !strings.HasPrefix(g.Key, "k"):
			t.Errorf("%s: provenance policy %q key %q", src, g.Policy, g.Key)
		}
	}
}

func TestReplayOffsetAndTimeRanges(t *testing.T) {
	e := newReplayEnv(t)
	dir := t.TempDir()
	version := e.version(t)

	t.Run("offsets", func(t *testing.T) {
		out := filepath.Join(dir, "all.jsonl")
		if _, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--from", "0", "--to", "100", "--out", out); err != nil {
			t.Fatal(err)
		}
		compareReplay(t, readReplayFile(t, out), e.expected(t, func(kafka.Message) bool { return true }), version)

		// [1, 3) on each partition: offsets 1 and 2.
		out = filepath.Join(dir, "part.jsonl")
		if _, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--from", "1", "--to", "3", "--out", out); err != nil {
			t.Fatal(err)
		}
		compareReplay(t, readReplayFile(t, out), e.expected(t, func(m kafka.Message) bool { return m.Offset == 1 || m.Offset == 2 }), version)
	})

	t.Run("time", func(t *testing.T) {
		// The second batch only: [t0+30m, t0+2h).
		out := filepath.Join(dir, "batch2.jsonl")
		from, to := e.t0.Add(30*time.Minute), e.t0.Add(2*time.Hour)
		if _, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339), "--out", out); err != nil {
			t.Fatal(err)
		}
		want := e.expected(t, func(m kafka.Message) bool { return !m.Time.Before(from) && m.Time.Before(to) })
		if len(want) != 5 { // 6 records, one quarantined
			t.Fatalf("test setup: %d records in the second batch", len(want))
		}
		compareReplay(t, readReplayFile(t, out), want, version)
	})

	t.Run("refuses vendor topics", func(t *testing.T) {
		_, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--topic", e.vendor)
		if err == nil || !strings.Contains(err.Error(), "--to-vendor") {
			t.Fatalf("err = %v, want a refusal naming --to-vendor", err)
		}
		_, err = run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--topic", e.source)
		if err == nil || !strings.Contains(err.Error(), "source topic") {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})

	t.Run("audit topic", func(t *testing.T) {
		auditTopic := kafkatest.Topic(t, "audit-out")
		kafkatest.CreateTopic(t, e.brokers, auditTopic, 1)
		if _, err := run(t, "replay", "--config", e.cfgPath, "--route", "acme", "--topic", auditTopic); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		client := &kafka.Client{Addr: kafka.TCP(e.brokers...), Timeout: 10 * time.Second}
		ranges, err := audit.Resolve(ctx, client, auditTopic, audit.Bound{}, audit.Bound{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]replayLine{}
		for _, r := range ranges {
			err := (audit.Reader{Brokers: e.brokers}).Read(ctx, r, func(m kafka.Message) error {
				src, _ := audit.Header(m.Headers, pipeline.HeaderSrc)
				pol, _ := audit.Header(m.Headers, pipeline.HeaderPolicy)
				key, _ := audit.Header(m.Headers, pipeline.HeaderKey)
				got[src] = replayLine{Src: src, Policy: pol, Key: key, Value: m.Value}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		compareReplay(t, got, e.expected(t, func(kafka.Message) bool { return true }), version)
	})
}

func TestReplayNeedsARoute(t *testing.T) {
	e := &replayEnv{}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "k.key"), []byte(strings.Repeat("11", 32)), 0o600)
	e.cfgPath = filepath.Join(dir, "c.yaml")
	_ = os.WriteFile(e.cfgPath, []byte("kafka: {brokers: [127.0.0.1:1]}\nvendors:\n  a:\n    purpose: p\n    categories: [threat_telemetry]\n    keys: [{file: k.key}]\n    fields: [{path: x, action: keep}]\n"), 0o600)
	_, err := run(t, "replay", "--config", e.cfgPath, "--route", "nope", "--from", "0")
	if err == nil || !strings.Contains(err.Error(), `no route "nope"`) {
		t.Fatalf("err = %v", err)
	}
	_, err = run(t, "replay", "--config", e.cfgPath, "--route", "a", "--from", "yesterday")
	if err == nil || !strings.Contains(err.Error(), "--from") {
		t.Fatalf("err = %v", err)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		t.Fatalf("a usage error is not an exit code: %v", err)
	}
}
