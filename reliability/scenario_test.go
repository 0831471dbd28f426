//go:build faults

package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

const (
	partitions = 3
	// scenarioBudget bounds every scenario from the moment its broker is
	// up (the start itself is bounded by kafka-local's own timeout: on a
	// loaded machine it took 33 to 75 s, which left too little of a
	// budget that included it). A restart inside a scenario counts.
	scenarioBudget = 3 * time.Minute
)

// scenario is one fault scenario: its own broker, the deident binary, the
// example config (configs/deident.yaml, overridden through the
// environment) and the worker processes it ran.
type scenario struct {
	t       *testing.T
	b       *broker
	bin     string
	cfgPath string
	cfg     *config.Config
	routes  map[string]*route.Route
	names   []string // route names, sorted
	ctx     context.Context
	procs   []*proc
	start   time.Time
	// supervise: while waiting for commits, replace every process that
	// exited non-zero on its own (not killed by the test), as an
	// orchestrator would.
	supervise bool
	restarts  int
	// lostWithTopic: per route, per source topic and partition, the
	// offset below which the route's outputs were acknowledged into a
	// vendor topic that was then deleted (scenario 3): not expected.
	lostWithTopic map[string]map[string]map[int]int64
}

type scenarioOptions struct {
	// maxInFlight is kafka.max_in_flight (the config's default when zero).
	maxInFlight int
	// topicConfigs are topic configs by topic at creation.
	topicConfigs map[string]map[string]string
	// ownConfig: the workers run a copy of configs/deident.yaml (demo
	// keys beside it) that the scenario may rewrite (a config reload).
	ownConfig bool
}

// newScenario starts a broker, builds the binary, creates the config's
// topics and sets the environment the workers (and config.Load here) read.
func newScenario(t *testing.T, opt scenarioOptions) *scenario {
	t.Helper()
	b := startBroker(t)
	bin := buildBinary(t)
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(scenarioBudget))
	t.Cleanup(cancel)
	s := &scenario{t: t, ctx: ctx, start: start, b: b, bin: bin}
	root := repoRoot(t)
	s.cfgPath = filepath.Join(root, "configs", "deident.yaml")
	if opt.ownConfig {
		text, err := os.ReadFile(s.cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		s.cfgPath = filepath.Join(dir, "deident.yaml")
		if err := os.WriteFile(s.cfgPath, text, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, "configs", "demo-keys"), filepath.Join(dir, "demo-keys")); err != nil {
			t.Fatal(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(root, "configs", "demo-keys", "flowai.key"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEIDENT_KEY_FLOWAI", strings.TrimSpace(string(key)))
	t.Setenv("DEIDENT_KAFKA_BROKERS", s.b.addr)
	t.Setenv("DEIDENT_KAFKA_GROUP_ID", "deident-faults")
	t.Setenv("DEIDENT_KAFKA_METRICS_ADDR", "127.0.0.1:0")
	t.Setenv("DEIDENT_KAFKA_BATCH_TIMEOUT", "5ms")
	t.Setenv("DEIDENT_KAFKA_SHUTDOWN_GRACE", "10s")
	if opt.maxInFlight > 0 {
		t.Setenv("DEIDENT_KAFKA_MAX_IN_FLIGHT", strconv.Itoa(opt.maxInFlight))
	}
	s.cfg, err = config.Load(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s.routes, err = route.CompileAll(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.routes {
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	for _, topic := range s.sourceTopics() {
		s.b.createTopic(topic, partitions, opt.topicConfigs[topic])
	}
	for _, topic := range s.vendorTopics() {
		s.b.createTopic(topic, partitions, opt.topicConfigs[topic])
	}
	for _, topic := range []string{s.cfg.Kafka.DeadLetterTopic, s.cfg.Kafka.QuarantineTopic} {
		s.b.createTopic(topic, 1, opt.topicConfigs[topic])
	}
	return s
}

func (s *scenario) sourceTopics() []string {
	var out []string
	for _, src := range s.cfg.Sources {
		out = append(out, src.Topic)
	}
	sort.Strings(out)
	return out
}

func (s *scenario) vendorTopics() []string {
	var out []string
	for _, name := range s.names {
		out = append(out, s.routes[name].Config.Topic)
	}
	return out
}

func (s *scenario) topic(source string) string { return s.cfg.Sources[source].Topic }

// worker starts one more `deident run` process.
func (s *scenario) worker(name string, env ...string) *proc {
	s.t.Helper()
	p := startProc(s.t, name, s.bin, s.cfgPath, env...)
	s.procs = append(s.procs, p)
	return p
}

// respawn starts a replacement for every process that exited non-zero by
// itself and has not been replaced yet.
func (s *scenario) respawn() {
	s.t.Helper()
	for _, p := range s.procs {
		if p.exited() && !p.replaced && p.signal == "" && p.exitCode() != 0 {
			p.replaced = true
			s.restarts++
			s.t.Logf("%s exited %d (%s); starting a replacement", p.name, p.exitCode(), lastError(p))
			s.worker(fmt.Sprintf("%s.r%d", p.name, s.restarts))
		}
	}
}

// lastError is the process's final "deident: ..." line.
func lastError(p *proc) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.logs) - 1; i >= 0; i-- {
		if strings.HasPrefix(p.logs[i], "deident: ") {
			return p.logs[i]
		}
	}
	return "no error line"
}

// consumed sums deident_records_consumed_total over every process's last scrape.
func (s *scenario) consumed() float64 {
	var n float64
	for _, p := range s.procs {
		n += p.metric("deident_records_consumed_total")
	}
	return n
}

// waitFor polls cond until it holds, failing at timeout or the scenario's deadline.
func (s *scenario) waitFor(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			s.t.Fatalf("timed out after %v waiting for %s (scenario at %v)", timeout, what, time.Since(s.start).Round(time.Second))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- input

func generate(kind gen.Kind, seed uint64, n int) [][]byte {
	g := gen.New(gen.Options{Kind: kind, Seed: seed})
	out := make([][]byte, n)
	for i := range out {
		out[i] = g.Append(nil)
	}
	return out
}

// produce writes values to topic (keys entity-N, so one entity keeps its
// partition), retrying what failed until the scenario's deadline: the
// broker may be down for a while.
func (s *scenario) produce(topic string, values [][]byte) {
	s.t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(s.b.addr),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    500,
		BatchBytes:   6 << 20, // one 5 MB poison record per batch (source topics take 8 MiB in that scenario)
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  3,
	}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte("entity-" + strconv.Itoa(i%37)), Value: v}
	}
	logged := map[string]bool{}
	for len(msgs) > 0 {
		ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
		err := w.WriteMessages(ctx, msgs...)
		cancel()
		if err == nil {
			return
		}
		if e := firstError(err); !logged[e] {
			logged[e] = true
			s.t.Logf("producing to %s: %s (retrying)", topic, e)
		}
		if s.ctx.Err() != nil {
			s.t.Errorf("producing to %s: %v (scenario deadline)", topic, err)
			return
		}
		var we kafka.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var failed []kafka.Message
			for i, e := range we {
				if e != nil {
					failed = append(failed, msgs[i])
				}
			}
			msgs = failed
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// firstError names err, or the first of kafka.WriteErrors.
func firstError(err error) string {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil {
				return fmt.Sprintf("%d of %d failed, e.g. %v", we.Count(), len(we), e)
			}
		}
	}
	return err.Error()
}

// stream produces n generated records to each source, chunk by chunk with
// a pause between chunks, in the background; wait() returns once all are
// written. produced counts what was written so far.
type stream struct {
	produced atomic.Int64
	done     chan struct{}
}

func (s *scenario) stream(n, chunk int, pause time.Duration, seed uint64) *stream {
	st := &stream{done: make(chan struct{})}
	kinds := map[string]gen.Kind{"edr": gen.Threat, "workflow": gen.Workflow}
	values := map[string][][]byte{}
	values["edr"] = generate(gen.Threat, seed, n)
	values["workflow"] = generate(gen.Workflow, seed+1, n)
	go func() {
		defer close(st.done)
		for i := 0; i < n; i += chunk {
			var wg sync.WaitGroup
			for src := range kinds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.produce(s.topic(src), values[src][i:min(i+chunk, n)])
				}()
			}
			wg.Wait()
			st.produced.Add(int64(2 * (min(i+chunk, n) - i)))
			if s.ctx.Err() != nil {
				return
			}
			time.Sleep(pause)
		}
	}()
	return st
}

func (st *stream) wait(s *scenario) {
	s.t.Helper()
	select {
	case <-st.done:
	case <-s.ctx.Done():
		s.t.Fatal("producing did not finish within the scenario's budget")
	}
}

// ---------------------------------------------------------------- reading back

func (s *scenario) endOffsets(topic string, n int) map[int]int64 {
	s.t.Helper()
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	// Retried: right after a broker restart or a burst of group changes
	// the broker may answer UNKNOWN_SERVER_ERROR for a moment.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		var res *kafka.ListOffsetsResponse
		res, err = s.b.client().ListOffsets(s.ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err == nil {
			out := map[int]int64{}
			for _, p := range res.Topics[topic] {
				if p.Error != nil {
					err = fmt.Errorf("partition %d: %w", p.Partition, p.Error)
				}
				out[p.Partition] = p.LastOffset
			}
			if err == nil {
				return out
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	s.t.Fatalf("ListOffsets %s: %v", topic, err)
	return nil
}

// readAll reads every record of topic up to its current end.
func (s *scenario) readAll(topic string, n int) []kafka.Message {
	s.t.Helper()
	var out []kafka.Message
	for p, end := range s.endOffsets(topic, n) {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.b.brokers(), Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond, MaxBytes: 32 << 20})
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				s.t.Fatalf("reading %s/%d: %v", topic, p, err)
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

// committed returns the group's committed offsets of the source topics
// (-1 where nothing is committed).
func (s *scenario) committed() map[string]map[int]int64 {
	s.t.Helper()
	topics := map[string][]int{}
	for _, topic := range s.sourceTopics() {
		topics[topic] = []int{0, 1, 2}
	}
	res, err := s.b.client().OffsetFetch(s.ctx, &kafka.OffsetFetchRequest{GroupID: s.cfg.Kafka.GroupID, Topics: topics})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		s.t.Fatalf("OffsetFetch: %v", err)
	}
	out := map[string]map[int]int64{}
	for topic, ps := range res.Topics {
		out[topic] = map[int]int64{}
		for _, p := range ps {
			out[topic][p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// waitCommitted waits until the group has committed the end of every
// source partition.
func (s *scenario) waitCommitted(timeout time.Duration) {
	s.t.Helper()
	want := map[string]map[int]int64{}
	for _, topic := range s.sourceTopics() {
		want[topic] = s.endOffsets(topic, partitions)
	}
	var last string
	defer func() {
		if s.t.Failed() {
			s.t.Logf("committed/end: %s", last)
		}
	}()
	s.waitFor("the group to commit the end of every source partition", timeout, func() bool {
		if s.supervise {
			s.respawn()
		}
		got := s.committed()
		var b strings.Builder
		ok := true
		for topic, ps := range want {
			for p, end := range ps {
				c := got[topic][p]
				fmt.Fprintf(&b, "%s/%d=%d/%d ", topic, p, c, end)
				if c != end && !(end == 0 && c < 0) {
					ok = false
				}
			}
		}
		last = b.String()
		return ok
	})
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// parseSrc splits a deident-src "topic/partition/offset".
func parseSrc(src string) (topic string, partition int, offset int64) {
	i := strings.LastIndexByte(src, '/')
	j := strings.LastIndexByte(src[:max(i, 0)], '/')
	if i < 0 || j < 0 {
		return src, -1, -1
	}
	partition, _ = strconv.Atoi(src[j+1 : i])
	offset, _ = strconv.ParseInt(src[i+1:], 10, 64)
	return src[:j], partition, offset
}

func srcOf(m kafka.Message) string { return fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset) }

func sameMessage(a, b kafka.Message) bool {
	if !bytes.Equal(a.Value, b.Value) || !bytes.Equal(a.Key, b.Key) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------- the end of a scenario

// report is what a scenario prints: counts from the topics (exact) and
// from the processes' metrics.
type report struct {
	sources      int     // source records (distinct deident-src)
	consumed     float64 // summed over processes (a killed process: its last scrape, a lower bound)
	published    int     // vendor records, duplicates included
	distinct     int     // distinct (route, deident-src) among them
	suppressed   float64 // from the metrics (no route here has k-anonymity: 0)
	quarantined  int     // records in the quarantine topic
	deadLettered int     // records in the dead-letter topic
	duplicates   int     // published - distinct: re-delivered, byte-identical
	missing      int
}

func (r report) String() string {
	return fmt.Sprintf("sources %d, consumed %.0f, published %d (distinct %d), suppressed %.0f, quarantined %d, dead-lettered %d, duplicates re-delivered %d, missing %d",
		r.sources, r.consumed, r.published, r.distinct, r.suppressed, r.quarantined, r.deadLettered, r.duplicates, r.missing)
}

type expectedOutput struct {
	value  []byte
	policy string
	keyID  string
}

// expectation is what the routes applied directly (route.Compile +
// NewApplier, the policy the workers load) make of the source records.
type expectation struct {
	sources  map[string][]byte                    // deident-src -> value
	category map[string]config.Category           // deident-src -> its source's category
	outputs  map[string]map[string]expectedOutput // route -> deident-src -> output
	failed   map[string]map[string]bool           // route -> deident-src the route cannot de-identify
}

func (s *scenario) expect(routes map[string]*route.Route) *expectation {
	s.t.Helper()
	e := &expectation{sources: map[string][]byte{}, category: map[string]config.Category{}, outputs: map[string]map[string]expectedOutput{}, failed: map[string]map[string]bool{}}
	appliers := map[string]*route.Applier{}
	for _, name := range s.names {
		appliers[name] = routes[name].NewApplier()
		e.outputs[name] = map[string]expectedOutput{}
		e.failed[name] = map[string]bool{}
	}
	for _, src := range s.cfg.Sources {
		for _, m := range s.readAll(src.Topic, partitions) {
			id := srcOf(m)
			e.sources[id] = m.Value
			e.category[id] = src.Category
			for _, name := range s.names {
				r := routes[name]
				if !r.Allows(src.Category) {
					continue
				}
				v, err := appliers[name].Apply(nil, m.Value)
				if err != nil {
					e.failed[name][id] = true
					continue
				}
				e.outputs[name][id] = expectedOutput{value: v, policy: r.Version, keyID: appliers[name].KeyID()}
			}
		}
	}
	return e
}

// finish ends a scenario the way an operator would: it waits until the
// group has committed the end of every source partition, checks each live
// process's accounting identity on a scrape taken then (no record in
// flight), stops them with SIGTERM (each must exit 0), then checks the
// topics against the routes applied directly and prints the counts.
func (s *scenario) finish(routes map[string]*route.Route) report {
	s.t.Helper()
	s.waitCommitted(60 * time.Second)
	var live []*proc
	for _, p := range s.procs {
		if !p.exited() {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		s.t.Fatal("no worker left running at the end")
	}
	for _, p := range live {
		// The commit can run ahead of the last scrape by one tick; wait for in_flight 0.
		s.waitFor(p.name+" idle", 10*time.Second, func() bool {
			m := p.scrapeNow(s.t)
			return m["deident_records_in_flight"] == 0 && checkIdentity(m, s.names) == nil
		})
		if err := checkIdentity(p.metrics(), s.names); err != nil {
			s.t.Errorf("%s: accounting identity: %v", p.name, err)
		}
	}
	for _, p := range live {
		if code := p.term(s.t); code != 0 {
			s.t.Errorf("%s: exit %d after SIGTERM, want 0", p.name, code)
		}
	}
	for _, p := range s.procs {
		m := p.metrics()
		how := fmt.Sprintf("exit %d", p.exitCode())
		if p.signal != "" {
			how = "ended by signal (" + p.signal + "); counts of its last scrape"
		}
		s.t.Logf("  %-10s consumed %6.0f decoded %6.0f dead_lettered %4.0f acked %6.0f commits %4.0f generations %2.0f  peak RSS %5.1f MiB  (%s)",
			p.name, m["deident_records_consumed_total"], m["deident_records_decoded_total"], m["deident_records_dead_lettered_total"],
			m["deident_outputs_acked_total"], m["deident_offset_commits_total"], m["deident_consumer_generations_total"], float64(p.peakRSS())/(1<<20), how)
	}
	return s.verify(routes)
}

// verify compares the topics with the expectation: every vendor record is
// the expected output of the source record its deident-src names, with the
// route's policy version and key id; duplicates are byte-identical; no
// expected output is missing unless the gate quarantined it; every record a
// route (or the decoder) cannot handle is in the dead-letter topic with a
// reason; and the scenario's accounting identity holds per route:
//
//	decoded = distinct out + quarantined + filtered_by_category + failed (+ suppressed, 0 here)
func (s *scenario) verify(routes map[string]*route.Route) report {
	s.t.Helper()
	t := s.t
	e := s.expect(routes)
	var rep report
	rep.sources = len(e.sources)
	for _, p := range s.procs {
		m := p.metrics()
		rep.consumed += m["deident_records_consumed_total"]
		for _, name := range s.names {
			rep.suppressed += m[routeMetric(name, "suppressed")]
		}
	}

	// Quarantine: the gate's verdicts (outputs that failed the gate).
	quarantined := map[string]map[string]bool{}
	for _, m := range s.readAll(s.cfg.Kafka.QuarantineTopic, 1) {
		rep.quarantined++
		r, src := header(m, pipeline.HeaderRoute), header(m, pipeline.HeaderSrc)
		if quarantined[r] == nil {
			quarantined[r] = map[string]bool{}
		}
		quarantined[r][src] = true
		if _, ok := e.outputs[r][src]; !ok {
			t.Errorf("quarantine: record for %s (route %q) that the route would not output", src, r)
		}
	}

	// Dead letters: by source record, with stage, route and reason.
	dlDecode := map[string]bool{}
	dlRoute := map[string]map[string]bool{}
	for _, m := range s.readAll(s.cfg.Kafka.DeadLetterTopic, 1) {
		rep.deadLettered++
		src, stage, r, reason := header(m, pipeline.HeaderSrc), header(m, pipeline.HeaderStage), header(m, pipeline.HeaderRoute), header(m, pipeline.HeaderError)
		orig, ok := e.sources[src]
		switch {
		case !ok:
			t.Errorf("dead letter names unknown source record %q", src)
			continue
		case !bytes.Equal(orig, m.Value):
			t.Errorf("dead letter for %s does not carry the original bytes", src)
		case reason == "" || stage == "":
			t.Errorf("dead letter for %s without stage or reason: stage %q reason %q", src, stage, reason)
		}
		if r == "" {
			dlDecode[src] = true
			continue
		}
		if dlRoute[r] == nil {
			dlRoute[r] = map[string]bool{}
		}
		dlRoute[r][src] = true
	}

	for _, name := range s.names {
		topic := routes[name].Config.Topic
		exp := e.outputs[name]
		got := map[string]kafka.Message{}
		for _, m := range s.readAll(topic, partitions) {
			rep.published++
			src := header(m, pipeline.HeaderSrc)
			want, ok := exp[src]
			switch {
			case !ok:
				t.Errorf("%s: record with unexpected deident-src %q", topic, src)
				continue
			case !bytes.Equal(m.Value, want.value):
				t.Errorf("%s: output for %s differs from the route applied directly:\n got %s\nwant %s", topic, src, m.Value, want.value)
			case header(m, pipeline.HeaderPolicy) != want.policy || header(m, pipeline.HeaderKey) != want.keyID:
				t.Errorf("%s: output for %s: policy %q key %q, want %q %q", topic, src, header(m, pipeline.HeaderPolicy), header(m, pipeline.HeaderKey), want.policy, want.keyID)
			}
			if prev, dup := got[src]; dup {
				rep.duplicates++
				if !sameMessage(prev, m) {
					t.Errorf("%s: re-delivery of %s is not byte-identical to the first (value, key, headers)", topic, src)
				}
				continue
			}
			got[src] = m
		}
		rep.distinct += len(got)
		var missing []string
		deleted := 0
		for src := range exp {
			if _, ok := got[src]; !ok && !quarantined[name][src] {
				if st, p, off := parseSrc(src); off < s.lostWithTopic[name][st][p] {
					deleted++
					continue
				}
				missing = append(missing, src)
			}
		}
		for src := range e.failed[name] {
			if !dlRoute[name][src] && !dlDecode[src] {
				missing = append(missing, "dead letter of "+src)
			}
		}
		for src := range dlRoute[name] {
			if !e.failed[name][src] {
				t.Errorf("dead letter for %s on route %s, but the route de-identifies it", src, name)
			}
		}
		slices.Sort(missing)
		rep.missing += len(missing)
		if len(missing) > 0 {
			t.Errorf("%s: %d expected records missing, e.g. %v", name, len(missing), missing[:min(5, len(missing))])
		}
		// The scenario's identity, from the topics.
		decoded := len(e.sources) - len(dlDecode)
		failed := len(dlRoute[name])
		q := len(quarantined[name])
		filtered := 0 // decodable records of categories the route may not receive
		for src, c := range e.category {
			if !routes[name].Allows(c) && !dlDecode[src] {
				filtered++
			}
		}
		if decoded != len(got)+q+filtered+failed+deleted {
			t.Errorf("route %s: decoded %d != distinct out %d + quarantined %d + filtered_by_category %d + failed %d + deleted with the topic %d",
				name, decoded, len(got), q, filtered, failed, deleted)
		}
		t.Logf("  route %-9s decoded %d = out %d + quarantined %d + filtered_by_category %d + failed %d + deleted with the topic %d (+ suppressed 0)",
			name, decoded, len(got), q, filtered, failed, deleted)
	}
	exact := true // every process ended with a final scrape (no kill, no crash)
	for _, p := range s.procs {
		exact = exact && p.exitCode() == 0
	}
	if exact && rep.consumed < float64(rep.sources) {
		t.Errorf("processes consumed %.0f < %d source records", rep.consumed, rep.sources)
	}
	t.Logf("COUNTS %s: %s; %v", t.Name(), rep, time.Since(s.start).Round(100*time.Millisecond))
	return rep
}
