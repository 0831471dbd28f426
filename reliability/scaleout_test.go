//go:build faults

package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

// The scale-out scenario: three `deident run` replicas of one k-anonymity
// route (record mode, k=4, quasi-identifiers process name and time) over a
// stream whose users, and so whose classes, are spread over the source
// partitions. Checked with counters of its own, never the stage's:
//
//   - with the repartition topic, every visible class (the generalized
//     values a vendor record carries) holds at least k distinct users,
//     counted from the raw source records its vendor records name, and all
//     its records went through one repartition partition: one replica
//     counted it. Every source record is accounted for through both legs.
//   - without it, the same stream has visible classes released by the
//     stages of several source partitions (each counting only its own
//     records): the class is counted piecewise, which is what the
//     repartition topic removes.

const (
	scaleK        = 4
	scaleRoute    = "acme-mdr"
	scaleSource   = "telemetry.edr"
	scaleRecords  = 3000
	scaleReplicas = 3
)

func scaleConfig(t *testing.T, dir, brokers, group, vendorTopic, repartition string) string {
	t.Helper()
	root := repoRoot(t)
	rp := ""
	if repartition != "" {
		rp = "\n      repartition_topic: " + repartition
	}
	yaml := fmt.Sprintf(`kafka:
  brokers: [%[1]s]
  group_id: %[2]s
  dead_letter_topic: dead-letter.%[2]s
  quarantine_topic: quarantine.%[2]s
  metrics_addr: 127.0.0.1:0
  batch_timeout: 5ms
  shutdown_grace: 10s
sources:
  edr: {topic: %[3]s, category: threat_telemetry, format: json}
vendors:
  %[4]s:
    purpose: security-detection
    categories: [threat_telemetry]
    topic: %[5]s
    event_time: time
    keys: [{file: %[6]s}]
    fields:
      - {path: time, action: keep}
      - {path: severity_id, action: keep}
      - {path: actor.user.name, action: pseudonymize, namespace: user, prefix: usr_}
      - {path: actor.process.name, action: keep}
    k_anonymity:
      k: %[7]d
      entity: actor.user.name
      mode: record
      max_delay: 2s
      quasi_identifiers:
        - {path: actor.process.name}
        - {path: time, ladder: {time_bucket: [1h, 1d]}}%[8]s
`, brokers, group, scaleSource, scaleRoute, vendorTopic, filepath.Join(root, "configs", "demo-keys", "acme-mdr.key"), scaleK, rp)
	path := filepath.Join(dir, group+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// scaleStream: 60 users (the record key, so each user's records share a
// partition) on 8 common processes, plus 30 rare processes run once each
// by 3 to 6 users, over four hours.
func scaleStream(seed uint64) (keys, values [][]byte) {
	r := rand.New(rand.NewPCG(seed, 1))
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	add := func(i int, user int, proc string) {
		at := t0.Add(time.Duration(i) * 4 * time.Hour / scaleRecords)
		keys = append(keys, []byte("u"+strconv.Itoa(user)))
		values = append(values, fmt.Appendf(nil, `{"time":%q,"severity_id":%d,"actor":{"user":{"name":"u%d"},"process":{"name":%q,"pid":%d}}}`,
			at.Format(time.RFC3339Nano), 1+r.IntN(4), user, proc, r.IntN(60000)))
	}
	rare := 0
	for i := 0; len(values) < scaleRecords; i++ {
		if i%100 == 50 && rare < 30 {
			for _, u := range r.Perm(60)[:3+rare%4] {
				add(i, u, fmt.Sprintf("rare-%d.exe", rare))
			}
			rare++
			continue
		}
		add(i, r.IntN(60), fmt.Sprintf("p%d.exe", r.IntN(8)))
	}
	return keys, values
}

// scaleRun is one run of the scenario: a group of replicas over the
// source topic, into its own vendor topic.
type scaleRun struct {
	s           *scenario
	cfgPath     string
	cfg         *config.Config
	group       string
	vendorTopic string
	rpTopic     string // "" without repartition
	procs       []*proc
}

func TestScaleOutExactK(t *testing.T) {
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(4*time.Minute))
	defer cancel()
	b := startBroker(t)
	s := &scenario{t: t, b: b, ctx: ctx, start: start}
	s.bin = buildBinary(t)
	dir := t.TempDir()
	b.createTopic(scaleSource, partitions, nil)

	runs := []*scaleRun{
		{s: s, group: "scale-repartitioned", vendorTopic: "vendor.acme-mdr", rpTopic: "deident.repartition.acme-mdr"},
		{s: s, group: "scale-single-leg", vendorTopic: "vendor.acme-mdr.single-leg"},
	}
	for _, r := range runs {
		b.createTopic(r.vendorTopic, partitions, nil)
		b.createTopic("dead-letter."+r.group, 1, nil)
		b.createTopic("quarantine."+r.group, 1, nil)
		if r.rpTopic != "" {
			b.createTopic(r.rpTopic, partitions, nil)
		}
		r.cfgPath = scaleConfig(t, dir, b.addr, r.group, r.vendorTopic, r.rpTopic)
		var err error
		if r.cfg, err = config.Load(r.cfgPath); err != nil {
			t.Fatal(err)
		}
	}

	// Both groups' replicas join before the stream starts, so partitions
	// are spread and stay put: each stage sees its partition's records.
	for _, r := range runs {
		for i := range scaleReplicas {
			r.procs = append(r.procs, startProc(t, fmt.Sprintf("%s-%d", r.group[6:], i+1), s.bin, r.cfgPath, "DEIDENT_KAFKA_BROKERS="+b.addr))
		}
		want := float64(partitions)
		if r.rpTopic != "" {
			want = 2 * partitions
		}
		s.waitFor(r.group+": three replicas sharing the partitions", 60*time.Second, func() bool {
			total := 0.0
			for _, p := range r.procs {
				n := p.metric("deident_assigned_partitions")
				if n == 0 {
					return false
				}
				total += n
			}
			return total == want
		})
	}
	keys, values := scaleStream(7)
	produceKeyed(s, scaleSource, keys, values)
	t.Logf("produced %d records to %s", len(values), scaleSource)

	sources := map[string][]byte{} // deident-src -> raw value
	for _, m := range s.readAll(scaleSource, partitions) {
		sources[srcOf(m)] = m.Value
	}
	for _, r := range runs {
		r.finish()
	}

	// The repartitioned run.
	rep := runs[0]
	routes, err := route.CompileAll(rep.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rpPartition := map[string]int{} // deident-src -> repartition partition
	for _, m := range s.readAll(rep.rpTopic, partitions) {
		src := header(m, pipeline.HeaderSrc)
		if p, seen := rpPartition[src]; seen && p != m.Partition {
			t.Errorf("source record %s repartitioned to partitions %d and %d", src, p, m.Partition)
		}
		rpPartition[src] = m.Partition
	}
	classes := rep.classes(sources)
	applier := routes[scaleRoute].NewApplier()
	underK, multi := 0, 0
	for _, c := range classes {
		if len(c.users) < scaleK || len(c.pseudonyms) < scaleK {
			underK++
			t.Errorf("visible class %s: %d distinct users (%d pseudonyms) in the vendor records, k=%d", c.key, len(c.users), len(c.pseudonyms), scaleK)
		}
		parts := map[int]bool{}
		for src := range c.srcs {
			p, ok := rpPartition[src]
			if !ok {
				t.Errorf("vendor record from %s that never went through the repartition topic", src)
			}
			parts[p] = true
		}
		if len(parts) > 1 {
			multi++
			t.Errorf("visible class %s was counted in %d repartition partitions", c.key, len(parts))
		}
		for src, v := range c.srcs {
			want, err := applier.Apply(nil, sources[src])
			if err != nil {
				t.Fatal(err)
			}
			if !sameExcept(t, v, want, "time") {
				t.Errorf("vendor record of %s differs from the route's output beyond the generalized time:\n got %s\nwant %s", src, v, want)
			}
		}
	}
	spread := map[int]bool{}
	for _, p := range rpPartition {
		spread[p] = true
	}
	if len(spread) < 2 {
		t.Errorf("every class keyed to one repartition partition: the stream does not spread classes")
	}
	released := 0
	for _, c := range classes {
		released += len(c.srcs)
	}
	legCounts := rep.metricSums()
	// Every source record through both legs, from the topics (and the
	// suppressed count from the metrics: suppression has no output).
	dl := map[string]int{}
	for _, m := range s.readAll("dead-letter."+rep.group, 1) {
		dl[header(m, pipeline.HeaderRoute)]++
	}
	q := map[string]int{}
	for _, m := range s.readAll("quarantine."+rep.group, 1) {
		q[header(m, pipeline.HeaderRoute)]++
	}
	leg1 := scaleRoute + "/repartition"
	if got := len(rpPartition) + dl[leg1] + q[leg1]; got != len(sources) {
		t.Errorf("leg 1: repartitioned %d + failed %d + quarantined %d = %d, want the %d source records", len(rpPartition), dl[leg1], q[leg1], got, len(sources))
	}
	sup := legCounts[routeMetric(scaleRoute, "suppressed")]
	if got := float64(released+dl[scaleRoute]+q[scaleRoute]) + sup; got != float64(len(rpPartition)) {
		t.Errorf("leg 2: released %d + failed %d + quarantined %d + suppressed %.0f = %.0f, want the %d repartitioned records",
			released, dl[scaleRoute], q[scaleRoute], sup, got, len(rpPartition))
	}
	t.Logf("COUNTS repartitioned: sources %d, repartitioned %d (keys over %d partitions), released %d in %d visible classes, suppressed %.0f, quarantined %v, dead-lettered %v; classes under k %d, classes counted in more than one partition %d",
		len(sources), len(rpPartition), len(spread), released, len(classes), sup, q, dl, underK, multi)

	// The single-leg run: the same stream, one stage per source partition.
	single := runs[1]
	sClasses := single.classes(sources)
	split, sUnderK, sReleased := 0, 0, 0
	for _, c := range sClasses {
		sReleased += len(c.srcs)
		parts := map[int]bool{}
		for src := range c.srcs {
			_, p, _ := parseSrc(src)
			parts[p] = true
		}
		if len(parts) > 1 {
			split++
		}
		if len(c.users) < scaleK {
			sUnderK++
		}
	}
	sSup := single.metricSums()[routeMetric(scaleRoute, "suppressed")]
	t.Logf("COUNTS single leg: released %d in %d visible classes, suppressed %.0f; classes released piecewise by the stages of several partitions %d; classes under k across replicas %d",
		sReleased, len(sClasses), sSup, split, sUnderK)
	if split == 0 {
		t.Errorf("without the repartition topic no class was counted piecewise: the stream does not exercise what the repartition topic fixes")
	}
	sDL, sQ := len(s.readAll("dead-letter."+single.group, 1)), len(s.readAll("quarantine."+single.group, 1))
	if got := float64(sReleased+sDL+sQ) + sSup; got != float64(len(sources)) {
		t.Errorf("single leg: released %d + failed %d + quarantined %d + suppressed %.0f = %.0f, want the %d source records", sReleased, sDL, sQ, sSup, got, len(sources))
	}
	t.Logf("scale-out scenario took %v", time.Since(start).Round(100*time.Millisecond))
}

// produceKeyed writes values with their keys (kafka.Hash, as the workers'
// producer), retrying until the scenario's deadline.
func produceKeyed(s *scenario, topic string, keys, values [][]byte) {
	s.t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(s.b.addr), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i := range values {
		msgs[i] = kafka.Message{Key: keys[i], Value: values[i]}
	}
	for i := 0; i < len(msgs); i += 500 {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		err := w.WriteMessages(ctx, msgs[i:min(i+500, len(msgs))]...)
		cancel()
		if err != nil {
			s.t.Fatalf("producing to %s: %v", topic, err)
		}
		time.Sleep(100 * time.Millisecond) // a stream, not one burst
	}
}

// finish waits until the run's group has committed the end of the source
// (and repartition) partitions, checks each replica's accounting on a
// scrape with nothing in flight, and stops them with SIGTERM (exit 0).
func (r *scaleRun) finish() {
	s := r.s
	s.t.Helper()
	topics := []string{scaleSource}
	if r.rpTopic != "" {
		topics = append(topics, r.rpTopic)
	}
	for _, topic := range topics {
		end := s.endOffsets(topic, partitions)
		s.waitFor(r.group+" to commit the end of "+topic, 90*time.Second, func() bool {
			got := r.committed(topic)
			for p, e := range end {
				if got[p] != e && !(e == 0 && got[p] < 0) {
					return false
				}
			}
			return true
		})
	}
	for _, p := range r.procs {
		s.waitFor(p.name+" idle with its accounting adding up", 10*time.Second, func() bool {
			m := p.scrapeNow(s.t)
			return m["deident_records_in_flight"] == 0 && r.identity(m) == nil
		})
	}
	for _, p := range r.procs {
		if code := p.term(s.t); code != 0 {
			s.t.Errorf("%s: exit %d after SIGTERM, want 0", p.name, code)
		}
	}
}

func (r *scaleRun) committed(topic string) map[int]int64 {
	s := r.s
	res, err := s.b.client().OffsetFetch(s.ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{topic: {0, 1, 2}}})
	if err == nil {
		err = res.Error
	}
	out := map[int]int64{}
	if err != nil {
		return out
	}
	for _, p := range res.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// identity checks one replica's accounting: consumed = decoded +
// dead_lettered; per route in = out + suppressed + quarantined +
// filtered_by_category + failed + held + revoked; the first leg (or the
// single-leg route) reads every decoded source record, the second leg
// every decoded repartition record.
func (r *scaleRun) identity(m map[string]float64) error {
	decoded, rp := m["deident_records_decoded_total"], m["deident_records_repartition_decoded_total"]
	if c, d := m["deident_records_consumed_total"], m["deident_records_dead_lettered_total"]; c != decoded+d {
		return fmt.Errorf("consumed %v != decoded %v + dead_lettered %v", c, decoded, d)
	}
	reads := map[string]float64{scaleRoute: decoded}
	if r.rpTopic != "" {
		reads = map[string]float64{scaleRoute + "/repartition": decoded - rp, scaleRoute: rp}
	}
	for name, want := range reads {
		g := func(o string) float64 { return m[routeMetric(name, o)] }
		held := m[`deident_route_records_held{route="`+name+`"}`]
		if in := g("in"); in != want || in != g("out")+g("suppressed")+g("quarantined")+g("filtered_by_category")+g("failed")+held+g("revoked") {
			return fmt.Errorf("route %s: in %v (reads %v) != out %v + suppressed %v + quarantined %v + filtered %v + failed %v + held %v + revoked %v",
				name, in, want, g("out"), g("suppressed"), g("quarantined"), g("filtered_by_category"), g("failed"), held, g("revoked"))
		}
	}
	return nil
}

// metricSums sums every metric over the run's replicas' last scrapes.
func (r *scaleRun) metricSums() map[string]float64 {
	out := map[string]float64{}
	for _, p := range r.procs {
		for k, v := range p.metrics() {
			out[k] += v
		}
	}
	return out
}

// visibleClass is the vendor records sharing their generalized
// quasi-identifiers, with the distinct users behind them.
type visibleClass struct {
	key        string
	srcs       map[string][]byte // deident-src -> vendor value (the first delivery)
	users      map[string]bool   // raw user names, from the source records
	pseudonyms map[string]bool   // entity values in the vendor records
}

// classes groups the run's vendor records by their visible class, an
// independent count: raw users come from the source records the
// deident-src headers name.
func (r *scaleRun) classes(sources map[string][]byte) map[string]*visibleClass {
	s := r.s
	out := map[string]*visibleClass{}
	for _, m := range s.readAll(r.vendorTopic, partitions) {
		var v struct {
			Time  string `json:"time"`
			Actor struct {
				User    struct{ Name string } `json:"user"`
				Process struct{ Name string } `json:"process"`
			} `json:"actor"`
		}
		if err := json.Unmarshal(m.Value, &v); err != nil {
			s.t.Fatalf("vendor record %s: %v", srcOf(m), err)
		}
		key := v.Actor.Process.Name + " @ " + v.Time
		c := out[key]
		if c == nil {
			c = &visibleClass{key: key, srcs: map[string][]byte{}, users: map[string]bool{}, pseudonyms: map[string]bool{}}
			out[key] = c
		}
		src := header(m, pipeline.HeaderSrc)
		raw, ok := sources[src]
		if !ok {
			s.t.Errorf("vendor record with deident-src %q, not a source record", src)
			continue
		}
		var in struct {
			Actor struct {
				User struct{ Name string } `json:"user"`
			} `json:"actor"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			s.t.Fatal(err)
		}
		if _, dup := c.srcs[src]; !dup {
			c.srcs[src] = m.Value
		}
		c.users[in.Actor.User.Name] = true
		c.pseudonyms[v.Actor.User.Name] = true
	}
	return out
}

// sameExcept reports whether JSON objects a and b are equal but for the
// top-level member skip.
func sameExcept(t *testing.T, a, b []byte, skip string) bool {
	t.Helper()
	var x, y map[string]any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	delete(x, skip)
	delete(y, skip)
	return reflect.DeepEqual(x, y)
}
