package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
	kafkasrc "github.com/deident/deident/sources/kafka"
)

const testPartitions = 3

// testConfig loads configs/deident.yaml with unique topics and group on brokers.
func testConfig(t *testing.T, brokers []string) *config.Config {
	t.Helper()
	key, err := os.ReadFile("../../configs/demo-keys/flowai.key")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEIDENT_KEY_FLOWAI", strings.TrimSpace(string(key)))
	cfg, err := config.Load("../../configs/deident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.GroupID = kafkatest.Topic(t, "deident-group")
	cfg.Kafka.DeadLetterTopic = kafkatest.Topic(t, "dead-letter")
	cfg.Kafka.QuarantineTopic = kafkatest.Topic(t, "quarantine")
	cfg.Kafka.BatchTimeout = 5 * time.Millisecond
	cfg.Kafka.MetricsAddr = "off"
	cfg.Kafka.ShutdownGrace = 10 * time.Second
	kafkatest.CreateTopic(t, brokers, cfg.Kafka.DeadLetterTopic, 1)
	kafkatest.CreateTopic(t, brokers, cfg.Kafka.QuarantineTopic, 1)
	for name, s := range cfg.Sources {
		s.Topic = kafkatest.Topic(t, name)
		cfg.Sources[name] = s
		kafkatest.CreateTopic(t, brokers, s.Topic, testPartitions)
	}
	for name, v := range cfg.Vendors {
		v.Topic = kafkatest.Topic(t, "vendor-"+name)
		cfg.Vendors[name] = v
		kafkatest.CreateTopic(t, brokers, v.Topic, testPartitions)
	}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type runningWorker struct {
	w    *worker
	stop context.CancelFunc
	errc chan error
}

func startWorker(t *testing.T, cfg *config.Config) *runningWorker {
	t.Helper()
	return startWorkerWith(t, cfg, nil, nil)
}

// testWorkerOptions are the options of the test workers: short group
// timeouts and frequent commits.
func testWorkerOptions() workerOptions {
	return workerOptions{
		commitInterval: 50 * time.Millisecond,
		tuneSource: func(c *kafkasrc.Config) {
			c.HeartbeatInterval = 500 * time.Millisecond
			c.SessionTimeout = 6 * time.Second
			c.RebalanceTimeout = 5 * time.Second
			c.JoinGroupBackoff = 250 * time.Millisecond
			c.MaxWait = 100 * time.Millisecond
		},
	}
}

// startWorkerWith starts a worker with testWorkerOptions adjusted by tune
// (if not nil); wrap (if not nil) wraps the worker's Kafka sink.
func startWorkerWith(t *testing.T, cfg *config.Config, tune func(*workerOptions), wrap func(pipeline.Sink) pipeline.Sink) *runningWorker {
	t.Helper()
	opt := testWorkerOptions()
	if tune != nil {
		tune(&opt)
	}
	w, err := newWorker(cfg, testLogger(t), opt)
	if err != nil {
		t.Fatalf("newWorker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, stop: cancel, errc: make(chan error, 1)}
	go func() {
		if wrap == nil {
			rw.errc <- w.run(ctx)
			return
		}
		err := w.runner.Run(ctx, w.source, wrap(w.sink))
		if cerr := w.sink.Close(); cerr != nil && err == nil {
			err = cerr
		}
		rw.errc <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-rw.errc
	})
	return rw
}

// shutdown cancels the worker (as SIGTERM does) and waits for it to drain.
func (rw *runningWorker) shutdown(t *testing.T) {
	t.Helper()
	rw.stop()
	select {
	case err := <-rw.errc:
		rw.errc <- err // for Cleanup
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not stop within 20s")
	}
}

func produce(t *testing.T, brokers []string, topic string, values [][]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte("entity-" + strconv.Itoa(i%37)), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("producing to %s: %v", topic, err)
	}
}

func generate(kind gen.Kind, seed uint64, n int) [][]byte {
	g := gen.New(gen.Options{Kind: kind, Seed: seed})
	out := make([][]byte, n)
	for i := range out {
		out[i] = g.Append(nil)
	}
	return out
}

func endOffsets(t *testing.T, brokers []string, topic string, partitions int) map[int]int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	var reqs []kafka.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	res, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("ListOffsets %s: %v", topic, err)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("ListOffsets %s/%d: %v", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out
}

// readAll reads every record of topic up to its current end.
func readAll(t *testing.T, brokers []string, topic string, partitions int) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for p, end := range endOffsets(t, brokers, topic, partitions) {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("reading %s/%d: %v", topic, p, err)
			}
			out = append(out, m)
			if m.Offset >= end-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	return out
}

// waitCommitted waits until the group has committed the end of every
// partition of the source topics.
func waitCommitted(t *testing.T, cfg *config.Config, timeout time.Duration) {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Timeout: 10 * time.Second}
	want := map[string]map[int]int64{}
	topics := map[string][]int{}
	for _, s := range cfg.Sources {
		want[s.Topic] = endOffsets(t, cfg.Kafka.Brokers, s.Topic, testPartitions)
		topics[s.Topic] = []int{0, 1, 2}
	}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: cfg.Kafka.GroupID, Topics: topics})
		if err == nil && res.Error == nil {
			ok := true
			var b strings.Builder
			for topic, ps := range res.Topics {
				for _, p := range ps {
					fmt.Fprintf(&b, "%s/%d=%d/%d ", topic, p.Partition, p.CommittedOffset, want[topic][p.Partition])
					if w := want[topic][p.Partition]; p.CommittedOffset != w && !(w == 0 && p.CommittedOffset < 0) {
						ok = false
					}
				}
			}
			if ok && len(res.Topics) == len(want) {
				return
			}
			last = b.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not commit the end of its topics within %v: %s (err %v)", cfg.Kafka.GroupID, timeout, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func headers(m kafka.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

func srcOf(m kafka.Message) string {
	return fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset)
}

type expectedOutput struct {
	value  []byte
	policy string
	keyID  string
}

// expected applies each route directly (NewApplier) to every source record
// it may receive: route topic -> deident-src -> output.
func expected(t *testing.T, cfg *config.Config, w *worker) (map[string]map[string]expectedOutput, map[string][]byte) {
	t.Helper()
	out := map[string]map[string]expectedOutput{}
	inputs := map[string][]byte{}
	for _, name := range sortedNames(cfg.Vendors) {
		out[cfg.Vendors[name].Topic] = map[string]expectedOutput{}
	}
	appliers := map[string]pipeline.Applier{}
	for name, r := range w.routes {
		appliers[name] = r.NewApplier()
	}
	for _, sname := range sortedNames(cfg.Sources) {
		s := cfg.Sources[sname]
		for _, m := range readAll(t, cfg.Kafka.Brokers, s.Topic, testPartitions) {
			inputs[srcOf(m)] = m.Value
			for _, rname := range sortedNames(w.routes) {
				r := w.routes[rname]
				if !r.Allows(s.Category) {
					continue
				}
				a := appliers[rname]
				v, err := a.Apply(nil, m.Value)
				if err != nil {
					continue // a dead letter
				}
				out[r.Config.Topic][srcOf(m)] = expectedOutput{value: v, policy: r.Version, keyID: a.KeyID()}
			}
		}
	}
	return out, inputs
}

// checkOutputs compares every vendor record with the expected output of
// the source record its deident-src names; duplicates must be identical.
// It returns the number of duplicates.
func checkOutputs(t *testing.T, cfg *config.Config, w *worker) int {
	t.Helper()
	want, _ := expected(t, cfg, w)
	dups := 0
	for topic, exp := range want {
		got := map[string]kafka.Message{}
		for _, m := range readAll(t, cfg.Kafka.Brokers, topic, testPartitions) {
			h := headers(m)
			src := h[pipeline.HeaderSrc]
			e, ok := exp[src]
			if !ok {
				t.Errorf("%s: output with unexpected deident-src %q", topic, src)
				continue
			}
			if !bytes.Equal(m.Value, e.value) {
				t.Errorf("%s: output for %s:\n got %s\nwant %s", topic, src, m.Value, e.value)
			}
			if h[pipeline.HeaderPolicy] != e.policy || h[pipeline.HeaderKey] != e.keyID {
				t.Errorf("%s: output for %s: policy %q key %q, want %q %q", topic, src, h[pipeline.HeaderPolicy], h[pipeline.HeaderKey], e.policy, e.keyID)
			}
			if prev, dup := got[src]; dup {
				dups++
				if !bytes.Equal(prev.Value, m.Value) || !bytes.Equal(prev.Key, m.Key) || !sameHeaders(prev, m) {
					t.Errorf("%s: duplicate for %s differs from the first delivery", topic, src)
				}
			}
			got[src] = m
		}
		if len(got) != len(exp) {
			var missing []string
			for src := range exp {
				if _, ok := got[src]; !ok {
					missing = append(missing, src)
				}
			}
			sort.Strings(missing)
			t.Errorf("%s: %d distinct outputs, want %d; missing %d, e.g. %v", topic, len(got), len(exp), len(missing), missing[:min(5, len(missing))])
		}
	}
	return dups
}

// TestRunEndToEndTwoRoutes runs the worker over both sources of the
// example config and checks every vendor record byte for byte against the
// route applied directly, with its provenance headers.
func TestRunEndToEndTwoRoutes(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 1, 300))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 2, 300))

	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	if dups := checkOutputs(t, cfg, rw.w); dups != 0 {
		t.Errorf("%d duplicates in a run without restarts", dups)
	}
	if dl := readAll(t, brokers, cfg.Kafka.DeadLetterTopic, 1); len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if got := c.Worker.Consumed.Load(); got != 600 {
		t.Errorf("consumed %d, want 600", got)
	}
	for _, name := range []string{"acme-mdr", "flowai"} {
		rc := c.Routes[name]
		if rc.In.Load() != 600 || rc.Out.Load() != 300 || rc.FilteredByCategory.Load() != 300 {
			t.Errorf("route %s: in %d out %d filtered %d, want 600 300 300", name, rc.In.Load(), rc.Out.Load(), rc.FilteredByCategory.Load())
		}
	}
}

// TestRunPoisonRecordsDeadLettered: undecodable records and records a
// route cannot de-identify land in the dead-letter topic with the original
// bytes, their coordinates and the reason; the good records around them flow.
func TestRunPoisonRecordsDeadLettered(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	good := generate(gen.Threat, 3, 2)
	poison := map[string]struct{ stage, route, reason string }{
		`{"time":"2026-11-01T00:00:00Z","actor":{"user":`:              {"decode", "", "truncated JSON"},
		`{"time":"2026-11-01T00:00:00Z","actor":{"user":{"name":42}}}`: {"apply", "acme-mdr", "actor.user.name: needs a string"},
		`[1,2,3]`: {"decode", "", "not a JSON object"},
		`{"time":"2026-11-01T00:00:00Z","device":{"ip":"not-an-address"}}`: {"apply", "acme-mdr", "device.ip"},
	}
	values := [][]byte{good[0]}
	for p := range poison {
		values = append(values, []byte(p))
	}
	values = append(values, good[1])
	produce(t, brokers, cfg.Sources["edr"].Topic, values)

	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	dl := readAll(t, brokers, cfg.Kafka.DeadLetterTopic, 1)
	if len(dl) != len(poison) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(poison))
	}
	sources := map[string][]byte{}
	for _, m := range readAll(t, brokers, cfg.Sources["edr"].Topic, testPartitions) {
		sources[srcOf(m)] = m.Value
	}
	for _, m := range dl {
		h := headers(m)
		want, ok := poison[string(m.Value)]
		if !ok {
			t.Errorf("dead letter with unexpected value %q", m.Value)
			continue
		}
		if !bytes.Equal(sources[h[pipeline.HeaderSrc]], m.Value) {
			t.Errorf("dead letter deident-src %q does not name its source record", h[pipeline.HeaderSrc])
		}
		if h[pipeline.HeaderStage] != want.stage || h[pipeline.HeaderRoute] != want.route || !strings.Contains(h[pipeline.HeaderError], want.reason) {
			t.Errorf("dead letter for %q: headers %v, want stage %s route %q reason containing %q", m.Value, h, want.stage, want.route, want.reason)
		}
		if strings.Contains(h[pipeline.HeaderError], "not-an-address") || strings.Contains(h[pipeline.HeaderError], "42") {
			t.Errorf("reason %q echoes the value", h[pipeline.HeaderError])
		}
	}
	if n := checkOutputs(t, cfg, rw.w); n != 0 {
		t.Errorf("%d duplicates", n)
	}
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if c.Worker.DeadLettered.Load() != 2 || c.Routes["acme-mdr"].Failed.Load() != 2 || c.Routes["acme-mdr"].Out.Load() != 2 {
		t.Errorf("dead_lettered %d, acme-mdr failed %d out %d; want 2, 2, 2", c.Worker.DeadLettered.Load(), c.Routes["acme-mdr"].Failed.Load(), c.Routes["acme-mdr"].Out.Load())
	}
}

// TestRunRestartAtLeastOnce stops a worker mid-stream and starts another
// in the same group: every record is delivered at least once, the distinct
// outputs are exactly the expected ones, and duplicates are identical
// (checked per deident-src).
func TestRunRestartAtLeastOnce(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	cfg.Kafka.MaxInFlight = 100
	const n = 3000
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 4, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 5, n))

	// The first worker stops with no grace: outputs in flight at the stop
	// are produced (the sink flushes) but not committed, so the second
	// worker re-delivers them.
	cfg1 := *cfg
	cfg1.Kafka.ShutdownGrace = time.Nanosecond
	first := startWorker(t, &cfg1)
	deadline := time.Now().Add(20 * time.Second)
	for first.w.runner.Counters().Worker.Consumed.Load() < n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("first worker consumed only %d records", first.w.runner.Counters().Worker.Consumed.Load())
		}
		time.Sleep(time.Millisecond)
	}
	first.shutdown(t)
	c1 := first.w.runner.Counters().Worker.Consumed.Load()
	if c1 >= 2*n {
		t.Logf("first worker finished everything (%d) before it was stopped; restart not exercised", c1)
	}

	second := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	second.shutdown(t)
	c2 := second.w.runner.Counters().Worker.Consumed.Load()
	if c1+c2 < 2*n {
		t.Errorf("consumed %d + %d < %d records", c1, c2, 2*n)
	}
	if c2 == 2*n {
		t.Errorf("second worker re-read everything: the first worker's commits were lost")
	}
	dups := checkOutputs(t, cfg, second.w)
	t.Logf("first worker consumed %d, second %d, duplicate vendor records %d", c1, c2, dups)
	for _, w := range []*worker{first.w, second.w} {
		if err := w.runner.Counters().Check(); err != nil {
			t.Error(err)
		}
	}
}
