package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// waitUntil polls cond every few milliseconds until it holds or timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameHeaders(a, b kafka.Message) bool {
	if len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || string(a.Headers[i].Value) != string(b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// cloneConfig copies cfg deeply enough to change topics of one copy.
func cloneConfig(cfg *config.Config) *config.Config {
	c := *cfg
	c.Vendors = make(map[string]config.Route, len(cfg.Vendors))
	for k, v := range cfg.Vendors {
		c.Vendors[k] = v
	}
	c.Sources = make(map[string]config.Source, len(cfg.Sources))
	for k, v := range cfg.Sources {
		c.Sources[k] = v
	}
	return &c
}

// committedOffsets returns the group's committed offsets of the source
// topics (-1 where nothing is committed).
func committedOffsets(t *testing.T, cfg *config.Config) map[string]map[int]int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Timeout: 10 * time.Second}
	topics := map[string][]int{}
	for _, s := range cfg.Sources {
		topics[s.Topic] = []int{0, 1, 2}
	}
	res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: cfg.Kafka.GroupID, Topics: topics})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		t.Fatalf("OffsetFetch %s: %v", cfg.Kafka.GroupID, err)
	}
	out := map[string]map[int]int64{}
	for topic, ps := range res.Topics {
		out[topic] = map[int]int64{}
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("OffsetFetch %s/%d: %v", topic, p.Partition, p.Error)
			}
			out[topic][p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// parseSrc splits a deident-src header "topic/partition/offset".
func parseSrc(t *testing.T, src string) (string, int, int64) {
	t.Helper()
	i := strings.LastIndexByte(src, '/')
	j := strings.LastIndexByte(src[:max(i, 0)], '/')
	if i < 0 || j < 0 {
		t.Fatalf("malformed deident-src %q", src)
	}
	p, err1 := strconv.Atoi(src[j+1 : i])
	off, err2 := strconv.ParseInt(src[i+1:], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("malformed deident-src %q", src)
	}
	return src[:j], p, off
}

// checkCommittedCovered checks that every source record below its
// partition's committed offset has all its expected vendor outputs in the
// vendor topics, byte for byte: the group never committed past an output
// the broker had not acknowledged. It returns how many source records the
// commits cover.
func checkCommittedCovered(t *testing.T, cfg *config.Config, w *worker) int {
	t.Helper()
	committed := committedOffsets(t, cfg)
	want, _ := expected(t, cfg, w)
	covered := map[string]bool{}
	for topic, exp := range want {
		got := map[string][]byte{}
		for _, m := range readAll(t, cfg.Kafka.Brokers, topic, testPartitions) {
			got[headers(m)[pipeline.HeaderSrc]] = m.Value
		}
		for src, e := range exp {
			st, p, off := parseSrc(t, src)
			if off >= committed[st][p] {
				continue
			}
			covered[src] = true
			v, ok := got[src]
			if !ok {
				t.Errorf("%s/%d committed at %d, but the output of offset %d is not in %s", st, p, committed[st][p], off, topic)
			} else if string(v) != string(e.value) {
				t.Errorf("%s: output of %s differs from the expected one", topic, src)
			}
		}
	}
	return len(covered)
}

// scrape fetches url and returns its body and status.
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return res.StatusCode, string(b)
}

// metricValues parses the samples of a Prometheus text exposition:
// "name{labels}" -> value (labels as printed, sorted by name).
func metricValues(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestRunMetricsHealthReadyHTTP serves the worker's HTTP endpoints and
// checks them over HTTP: /healthz answers while the process is up, /readyz
// only once the group is joined and assigned, and /metrics (Prometheus
// text format from the client library's registry) carries the per-route
// and worker counters with both accounting identities holding.
func TestRunMetricsHealthReadyHTTP(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	produce(t, brokers, cfg.Sources["edr"].Topic, append(generate(gen.Threat, 11, 200), []byte(`{"truncated":`)))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 12, 100))

	w, err := newWorker(cfg, testLogger(t), testWorkerOptions())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.httpHandler())
	defer srv.Close()
	if code, _ := scrape(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before start: %d, want 200", code)
	}
	if code, body := scrape(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before joining: %d %q, want 503", code, body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	waitUntil(t, "/readyz 200", 20*time.Second, func() bool {
		code, _ := scrape(t, srv.URL+"/readyz")
		return code == http.StatusOK
	})
	waitCommitted(t, cfg, 25*time.Second)

	code, text := scrape(t, srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	m := metricValues(t, text)
	want := map[string]float64{
		`deident_records_consumed_total`:                                               301,
		`deident_records_decoded_total`:                                                300,
		`deident_records_dead_lettered_total`:                                          1,
		`deident_records_in_flight`:                                                    0,
		`deident_assigned_partitions`:                                                  6,
		`deident_ready`:                                                                1,
		`deident_route_records_total{outcome="in",route="acme-mdr"}`:                   300,
		`deident_route_records_total{outcome="out",route="acme-mdr"}`:                  200,
		`deident_route_records_total{outcome="filtered_by_category",route="acme-mdr"}`: 100,
		`deident_route_records_total{outcome="failed",route="acme-mdr"}`:               0,
		`deident_route_records_total{outcome="suppressed",route="acme-mdr"}`:           0,
		`deident_route_records_total{outcome="quarantined",route="acme-mdr"}`:          0,
		`deident_route_records_total{outcome="out",route="flowai"}`:                    100,
		`deident_route_records_total{outcome="filtered_by_category",route="flowai"}`:   200,
		`deident_records_in_flight_max`:                                                10000,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for _, k := range []string{"deident_offset_commits_total", "deident_outputs_acked_total", "deident_consumer_generations_total", "go_goroutines", "process_resident_memory_bytes"} {
		if m[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, m[k])
		}
	}
	for _, route := range []string{"acme-mdr", "flowai"} {
		get := func(o string) float64 { return m[`deident_route_records_total{outcome="`+o+`",route="`+route+`"}`] }
		if in, sum := get("in"), get("out")+get("suppressed")+get("quarantined")+get("filtered_by_category")+get("failed"); in != sum {
			t.Errorf("route %s: in %v != out + suppressed + quarantined + filtered_by_category + failed = %v", route, in, sum)
		}
	}
	if !strings.Contains(text, "# TYPE deident_route_records_total counter") || !strings.Contains(text, "# TYPE deident_records_in_flight gauge") {
		t.Errorf("metric types missing:\n%s", text)
	}
}

// TestRunTwoWorkersOneLeaves runs two workers in one group that share the
// partitions while records keep arriving; one leaves mid-stream (as on
// SIGTERM) and the other takes its partitions over. Nothing is lost and
// every duplicate is a byte-identical redelivery (value, key and headers)
// with the same deident-src.
func TestRunTwoWorkersOneLeaves(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	cfg.Kafka.MaxInFlight = 200
	const first, chunks, chunk = 500, 20, 150
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 21, first))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 22, first))

	a := startWorker(t, cfg)
	b := startWorker(t, cfg)
	waitUntil(t, "both workers sharing the partitions", 25*time.Second, func() bool {
		pa, pb := a.w.source.Partitions(), b.w.source.Partitions()
		return a.w.source.Ready() && b.w.source.Ready() && pa > 0 && pb > 0 && pa+pb == 2*testPartitions
	})

	// Keep producing while worker a leaves.
	var produced atomic.Int64
	produced.Store(2 * first)
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := range chunks {
			produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, uint64(100+i), chunk))
			produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, uint64(200+i), chunk))
			produced.Add(2 * chunk)
		}
	}()
	total := int64(2 * (first + chunks*chunk))
	waitUntil(t, "half of the records consumed", 25*time.Second, func() bool {
		return int64(a.w.runner.Counters().Worker.Consumed.Load()+b.w.runner.Counters().Worker.Consumed.Load()) >= total/2
	})
	genB := b.w.source.Generations()
	a.shutdown(t)
	ca := a.w.runner.Counters().Worker.Consumed.Load()
	<-prodDone
	waitCommitted(t, cfg, 25*time.Second)
	b.shutdown(t)
	cb := b.w.runner.Counters().Worker.Consumed.Load()

	if ca == 0 || cb == 0 {
		t.Errorf("worker a consumed %d, b %d: the partitions were not shared", ca, cb)
	}
	if b.w.source.Generations() <= genB {
		t.Errorf("worker b stayed in generation %d after a left: no rebalance", genB)
	}
	if int64(ca+cb) < total {
		t.Errorf("consumed %d + %d < %d", ca, cb, total)
	}
	dups := checkOutputs(t, cfg, b.w)
	t.Logf("produced %d; a consumed %d, b %d; duplicate vendor records %d", total, ca, cb, dups)
	for _, w := range []*worker{a.w, b.w} {
		if err := w.runner.Counters().Check(); err != nil {
			t.Error(err)
		}
	}
}

// TestRunRejectingVendorTopicHoldsOffsets: a vendor topic that rejects
// writes (it does not exist and the sink may not create it) stops the
// worker with an error naming the failure, and the group's offsets on the
// affected source topic stay at the first affected record.
func TestRunRejectingVendorTopicHoldsOffsets(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	edr := cfg.Sources["edr"].Topic
	produce(t, brokers, edr, generate(gen.Threat, 31, 150))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 32, 150))
	ok := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	ok.shutdown(t)
	before := committedOffsets(t, cfg)[edr]

	// Records from here on are the first affected ones on each partition.
	produce(t, brokers, edr, generate(gen.Threat, 33, 150))
	bad := cloneConfig(cfg)
	v := bad.Vendors["acme-mdr"]
	v.Topic = kafkatest.Topic(t, "vendor-missing") // never created
	bad.Vendors["acme-mdr"] = v
	rw := startWorkerWith(t, bad, func(o *workerOptions) { o.autoCreateTopics = false; o.sinkMaxAttempts = 2 }, nil)
	var err error
	select {
	case err = <-rw.errc:
		rw.errc <- err
	case <-time.After(25 * time.Second):
		t.Fatal("worker did not stop on a vendor topic that rejects writes")
	}
	if err == nil || !strings.Contains(err.Error(), "producing output") {
		t.Fatalf("worker error %v, want one naming the failed produce", err)
	}
	t.Logf("worker stopped: %v", err)
	after := committedOffsets(t, cfg)[edr]
	for p, off := range after {
		if off > before[p] {
			t.Errorf("%s/%d: committed offset advanced from %d to %d past records whose outputs were never written", edr, p, before[p], off)
		}
	}
	if rw.w.runner.Err() == nil {
		t.Error("runner reports no failure")
	}
}

// gatedSink holds every output (no acknowledgement: a vendor topic that
// is unavailable) until opened, and tracks the number of distinct source
// records with unacknowledged outputs.
type gatedSink struct {
	next pipeline.Sink

	mu          sync.Mutex
	open        bool
	held        []pipeline.Output
	outstanding map[string]int // deident-src -> unacknowledged outputs
	maxRecords  int
}

type gatedAck struct {
	s    *gatedSink
	src  string
	next pipeline.Acker
}

func (a *gatedAck) Acked(err error) {
	a.s.mu.Lock()
	if a.s.outstanding[a.src]--; a.s.outstanding[a.src] == 0 {
		delete(a.s.outstanding, a.src)
	}
	a.s.mu.Unlock()
	a.next.Acked(err)
}

func (s *gatedSink) Produce(ctx context.Context, outs []pipeline.Output) error {
	s.mu.Lock()
	for i := range outs {
		src := ""
		for _, h := range outs[i].Headers {
			if h.Key == pipeline.HeaderSrc {
				src = string(h.Value)
			}
		}
		s.outstanding[src]++
		outs[i].Done = &gatedAck{s: s, src: src, next: outs[i].Done}
	}
	s.maxRecords = max(s.maxRecords, len(s.outstanding))
	if !s.open {
		s.held = append(s.held, outs...)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return s.next.Produce(ctx, outs)
}

func (s *gatedSink) release(ctx context.Context) error {
	s.mu.Lock()
	s.open = true
	held := s.held
	s.held = nil
	s.mu.Unlock()
	return s.next.Produce(ctx, held)
}

func (s *gatedSink) stats() (held, maxRecords int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held), s.maxRecords
}

// TestRunBoundedInFlightSlowVendor: while the vendor side acknowledges
// nothing, the worker holds at most kafka.max_in_flight records (it stops
// fetching; memory is bounded by the cap, not by the backlog), and once
// the vendor side recovers everything is delivered.
func TestRunBoundedInFlightSlowVendor(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	const maxInFlight, n = 64, 1000
	cfg.Kafka.MaxInFlight = maxInFlight
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 41, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 42, n))

	gate := &gatedSink{outstanding: map[string]int{}}
	rw := startWorkerWith(t, cfg, nil, func(s pipeline.Sink) pipeline.Sink { gate.next = s; return gate })
	c := rw.w.runner.Counters()
	waitUntil(t, "the in-flight cap reached", 20*time.Second, func() bool { return c.Worker.Consumed.Load() >= maxInFlight })

	// Observe the stalled worker for a while: it must not fetch past the cap.
	srv := httptest.NewServer(rw.w.httpHandler())
	defer srv.Close()
	for range 40 {
		time.Sleep(10 * time.Millisecond)
		if got := c.Worker.InFlight.Load(); got > maxInFlight {
			t.Fatalf("in flight %d > cap %d", got, maxInFlight)
		}
	}
	if got := c.Worker.Consumed.Load(); got != maxInFlight {
		t.Errorf("consumed %d while the vendor side is stalled, want exactly the cap %d (every record has one output)", got, maxInFlight)
	}
	if _, text := scrape(t, srv.URL+"/metrics"); metricValues(t, text)["deident_records_in_flight"] != maxInFlight {
		t.Errorf("deident_records_in_flight != %d while stalled", maxInFlight)
	}
	for _, ps := range committedOffsets(t, cfg) {
		for p, off := range ps {
			if off > 0 {
				t.Errorf("partition %d committed at %d with nothing acknowledged", p, off)
			}
		}
	}

	if err := gate.release(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)
	if _, maxRecords := gate.stats(); maxRecords > maxInFlight || maxRecords == 0 {
		t.Errorf("at most %d records had unacknowledged outputs, want 1..%d", maxRecords, maxInFlight)
	}
	if n := checkOutputs(t, cfg, rw.w); n != 0 {
		t.Errorf("%d duplicates", n)
	}
	if err := c.Check(); err != nil {
		t.Error(err)
	}
}

// brokerOutage makes a kfake cluster refuse every request (closing the
// connection, as a dead broker does) while down is true.
func brokerOutage(c *kfake.Cluster) *atomic.Bool {
	var down atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if down.Load() {
			return nil, errors.New("broker down (test)"), true
		}
		return nil, nil, false
	})
	return &down
}

func newKfake(t *testing.T) *kfake.Cluster {
	t.Helper()
	if kafkatest.Real() {
		t.Skip("stops the broker: kfake only (set no DEIDENT_KAFKA_BROKERS)")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRunBrokerOutageRecovers: the broker goes away mid-stream for less
// than the producer's retry budget; the consumer group, the fetchers, the
// commits and the producer retry with backoff and the worker finishes the
// stream with nothing lost and only identical duplicates.
func TestRunBrokerOutageRecovers(t *testing.T) {
	cluster := newKfake(t)
	brokers := cluster.ListenAddrs()
	cfg := testConfig(t, brokers)
	cfg.Kafka.MaxInFlight = 200
	const n = 3000
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 51, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 52, n))
	down := brokerOutage(cluster)

	rw := startWorker(t, cfg)
	c := rw.w.runner.Counters()
	waitUntil(t, "records flowing", 20*time.Second, func() bool { return c.Worker.Consumed.Load() > 0 })
	down.Store(true)
	time.Sleep(1500 * time.Millisecond) // the outage
	down.Store(false)
	waitCommitted(t, cfg, 25*time.Second)
	if err := rw.w.runner.Err(); err != nil {
		t.Fatalf("worker failed across a short outage: %v", err)
	}
	rw.shutdown(t)
	dups := checkOutputs(t, cfg, rw.w)
	t.Logf("consumed %d of %d, generations %d, duplicates %d", c.Worker.Consumed.Load(), 2*n, rw.w.source.Generations(), dups)
	if err := c.Check(); err != nil {
		t.Error(err)
	}
}

// TestRunBrokerOutageExitsWithoutCommittingPastUnacked: an outage longer
// than the producer's retry budget stops the worker with an error naming
// the record whose output failed; when the broker is back, the committed
// offsets cover only records whose outputs were acknowledged.
func TestRunBrokerOutageExitsWithoutCommittingPastUnacked(t *testing.T) {
	cluster := newKfake(t)
	brokers := cluster.ListenAddrs()
	cfg := testConfig(t, brokers)
	cfg.Kafka.MaxInFlight = 200
	const n = 3000
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 61, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 62, n))
	down := brokerOutage(cluster)

	rw := startWorkerWith(t, cfg, func(o *workerOptions) { o.sinkMaxAttempts = 3 }, nil)
	c := rw.w.runner.Counters()
	// Wait until the broker itself shows a commit (the worker's counter can
	// run ahead of the group coordinator), so the check after the outage
	// has something to check.
	waitUntil(t, "records flowing and committed", 20*time.Second, func() bool {
		if c.Worker.Consumed.Load() <= 500 || c.Worker.Commits.Load() == 0 {
			return false
		}
		for _, ps := range committedOffsets(t, cfg) {
			for _, off := range ps {
				if off > 0 {
					return true
				}
			}
		}
		return false
	})
	down.Store(true)
	var err error
	select {
	case err = <-rw.errc:
		rw.errc <- err
	case <-time.After(25 * time.Second):
		t.Fatal("worker neither recovered nor stopped")
	}
	down.Store(false)
	if err == nil || !strings.Contains(err.Error(), "producing output") {
		t.Fatalf("worker error %v, want one naming the failed output", err)
	}
	t.Logf("worker stopped: %v", err)
	covered := checkCommittedCovered(t, cfg, rw.w)
	t.Logf("commits cover %d of %d consumed records", covered, c.Worker.Consumed.Load())
	if covered == 0 {
		t.Error("nothing committed before the outage: the check above proved nothing")
	}
}

// TestRunSIGTERM builds the deident binary, runs `deident run` as a real
// process against the test broker, sends SIGTERM mid-stream and checks it
// exits 0 within the grace period, served /healthz, /readyz and /metrics
// while running, and that its committed offsets cover only acknowledged
// outputs.
func TestRunSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	const n = 20000
	produce(t, brokers, cfg.Sources["edr"].Topic, generate(gen.Threat, 71, n))
	produce(t, brokers, cfg.Sources["workflow"].Topic, generate(gen.Workflow, 72, n))

	bin := filepath.Join(t.TempDir(), "deident")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfgPath, err := filepath.Abs("../../configs/deident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const grace = 10 * time.Second
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(),
		"DEIDENT_KAFKA_BROKERS="+strings.Join(brokers, ","),
		"DEIDENT_KAFKA_GROUP_ID="+cfg.Kafka.GroupID,
		"DEIDENT_KAFKA_DEAD_LETTER_TOPIC="+cfg.Kafka.DeadLetterTopic,
		"DEIDENT_KAFKA_METRICS_ADDR=127.0.0.1:0",
		"DEIDENT_KAFKA_SHUTDOWN_GRACE="+grace.String(),
		"DEIDENT_KAFKA_BATCH_TIMEOUT=5ms",
		"DEIDENT_KAFKA_MAX_IN_FLIGHT=500",
		"DEIDENT_SOURCES_EDR_TOPIC="+cfg.Sources["edr"].Topic,
		"DEIDENT_SOURCES_WORKFLOW_TOPIC="+cfg.Sources["workflow"].Topic,
		"DEIDENT_VENDORS_ACME_MDR_TOPIC="+cfg.Vendors["acme-mdr"].Topic,
		"DEIDENT_VENDORS_FLOWAI_TOPIC="+cfg.Vendors["flowai"].Topic,
	)
	proc := startRunBinary(t, cmd)
	base, exited := proc.base, proc.exited
	if code, _ := scrape(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	waitUntil(t, "/readyz 200", 20*time.Second, func() bool {
		code, _ := scrape(t, base+"/readyz")
		return code == http.StatusOK
	})
	var consumed float64
	waitUntil(t, "records flowing", 20*time.Second, func() bool {
		_, text := scrape(t, base+"/metrics")
		consumed = metricValues(t, text)["deident_records_consumed_total"]
		return consumed >= 2000
	})

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("deident run after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(grace + 2*time.Second):
		t.Fatalf("deident run did not exit within the grace period %v", grace)
	}
	took := time.Since(sent)

	w, err := newWorker(cfg, testLogger(t), testWorkerOptions())
	if err != nil {
		t.Fatal(err)
	}
	covered := checkCommittedCovered(t, cfg, w)
	t.Logf("SIGTERM after %v records consumed; exit 0 after %v; commits cover %d of %d records", consumed, took.Round(time.Millisecond), covered, 2*n)
	if covered == 0 {
		t.Error("nothing committed on SIGTERM")
	}
	if !strings.Contains(proc.Logs(), `"msg":"worker stopped"`) {
		t.Errorf("no 'worker stopped' log line")
	}
}

// runBinary is a started `deident run` process of a test: the base URL of
// its HTTP endpoints, its exit, and its stderr so far (structured logs).
type runBinary struct {
	base   string
	exited chan error
	mu     sync.Mutex
	logs   strings.Builder
}

// Logs returns what the process wrote to stderr so far.
func (p *runBinary) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startRunBinary starts cmd (a `deident run` with metrics on
// 127.0.0.1:0), waits until it serves HTTP, and kills it at cleanup if it
// still runs; a failed test gets its stderr in the log.
func startRunBinary(t *testing.T, cmd *exec.Cmd) *runBinary {
	t.Helper()
	p := &runBinary{exited: make(chan error, 1)}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		addrRE := regexp.MustCompile(`"msg":"serving /metrics, /healthz, /readyz","addr":"([^"]+)"`)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("deident run stderr:\n%s", p.Logs())
		}
	})
	select {
	case addr := <-addrc:
		p.base = "http://" + addr
	case err := <-p.exited:
		t.Fatalf("deident run exited early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("deident run did not serve HTTP within 20s")
	}
	return p
}
