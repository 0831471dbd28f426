package main

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/gate"
)

// aggInput is one source record of the aggregate test.
type aggInput struct {
	user, process string
	at            time.Duration // after 10:00
}

// aggGroup is an aggregate the test expects, computed from the inputs by
// the test's own model of the route (not by the stage).
type aggGroup struct {
	window  time.Time
	process string // "*" once rolled up
	users   map[string]bool
	offsets []int64
}

// modelAggregates groups inputs as the route's k-anonymity stage must:
// per 1-minute window by (process, severity 2); a group of at least k
// distinct users is published as it is; the others pool by severity alone
// (process "*"), published when the pool holds k users, else suppressed.
func modelAggregates(in []aggInput, k int, t0 time.Time) (published []*aggGroup, suppressed int) {
	type key struct {
		w       time.Time
		process string
	}
	groups := map[key]*aggGroup{}
	var order []key
	for i, r := range in {
		kk := key{t0.Add(r.at).Truncate(time.Minute), r.process}
		g := groups[kk]
		if g == nil {
			g = &aggGroup{window: kk.w, process: r.process, users: map[string]bool{}}
			groups[kk] = g
			order = append(order, kk)
		}
		g.users[r.user] = true
		g.offsets = append(g.offsets, int64(i))
	}
	pools := map[time.Time]*aggGroup{}
	for _, kk := range order {
		g := groups[kk]
		if len(g.users) >= k {
			published = append(published, g)
			continue
		}
		p := pools[kk.w]
		if p == nil {
			p = &aggGroup{window: kk.w, process: "*", users: map[string]bool{}}
			pools[kk.w] = p
		}
		for u := range g.users {
			p.users[u] = true
		}
		p.offsets = append(p.offsets, g.offsets...)
	}
	for _, p := range pools {
		if len(p.users) >= k {
			published = append(published, p)
		} else {
			suppressed += len(p.offsets)
		}
	}
	return published, suppressed
}

// TestRunKAnonAggregatesThroughGate runs an aggregate route through the
// worker against Kafka: every aggregate published holds at least k
// distinct users by the test's own count from the inputs, with the count,
// entities, window and deident-src (window and offset ranges) the inputs
// give; one whose group holds an e-mail address is quarantined by the gate
// (with its provenance) and never published; the gate's counts show on
// /metrics, a group short at the top is suppressed, the accounting
// identity holds, and the record of the still-open window keeps its offset
// uncommitted.
func TestRunKAnonAggregatesThroughGate(t *testing.T) {
	const k = 3
	brokers := kafkatest.Brokers(t)
	cfg := testConfig(t, brokers)
	rc := cfg.Vendors["acme-mdr"]
	rc.KAnon = &config.KAnon{
		K:      k,
		Entity: "actor.user.name",
		QuasiIdentifiers: []config.QuasiIdentifier{
			{Path: "actor.process.name"},
			{Path: "severity_id", Ladder: config.Ladder{NumericWidth: []float64{10}}},
		},
		Mode:      config.KAnonAggregate,
		EventTime: "time",
		Window:    time.Minute,
		Sums:      []string{"severity_id"},
	}
	cfg.Vendors["acme-mdr"] = rc
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	inputs := []aggInput{
		// window 10:00: a.exe by 3 users (5 events), b.exe by 1 (short,
		// alone at the roll-up: suppressed), a process name holding an
		// e-mail address by 3 users (published by the stage, quarantined
		// by the gate).
		{"alice", "a.exe", 1 * time.Second}, {"alice", "a.exe", 2 * time.Second}, {"bob", "a.exe", 3 * time.Second},
		{"dave", "b.exe", 4 * time.Second}, {"carol", "a.exe", 5 * time.Second}, {"alice", "a.exe", 6 * time.Second},
		{"dave", "b.exe", 7 * time.Second},
		{"erin", "ops@example.org", 8 * time.Second}, {"frank", "ops@example.org", 9 * time.Second}, {"gina", "ops@example.org", 10 * time.Second},
		// window 10:01: a.exe by 2, b.exe by 1: both short, 3 users once rolled up.
		{"alice", "a.exe", 61 * time.Second}, {"bob", "a.exe", 62 * time.Second}, {"henry", "b.exe", 63 * time.Second},
		// window 10:03: its event time closes the two windows above; it stays held.
		{"zed", "z.exe", 180 * time.Second},
	}
	values := make([]string, len(inputs))
	for i, r := range inputs {
		values[i] = fmt.Sprintf(`{"time":%q,"class_uid":1007,"severity_id":2,"metadata":{"product":{"name":"EDR"}},"actor":{"user":{"name":%q},"process":{"name":%q,"pid":42}}}`,
			t0.Add(r.at).Format(time.RFC3339), r.user, r.process)
	}
	// The model, on every input but the held last one (its window is open).
	want, wantSuppressed := modelAggregates(inputs[:len(inputs)-1], k, t0)
	if len(want) != 3 || wantSuppressed != 2 {
		t.Fatalf("the fixture models %d aggregates and %d suppressed records, want 3 and 2", len(want), wantSuppressed)
	}
	const quarantinedProcess = "ops@example.org"

	topic := cfg.Sources["edr"].Topic
	produceTo(t, brokers, topic, 0, values)
	rw := startWorker(t, cfg)
	held := int64(len(inputs) - 1)
	waitUntil(t, "3 aggregates acknowledged", 25*time.Second, func() bool {
		return rw.w.runner.Counters().Worker.Acked.Load() == 3
	})
	waitUntil(t, "commit up to the held record", 10*time.Second, func() bool { return committedP0(cfg, topic) == held })

	srv := httptest.NewServer(rw.w.httpHandler())
	_, text := scrape(t, srv.URL+"/metrics")
	srv.Close()
	m := metricValues(t, text)
	route := rw.w.routes["acme-mdr"]
	rw.shutdown(t)
	if got := committedP0(cfg, topic); got != held {
		t.Errorf("committed %d, want %d (the last record's window is open)", got, held)
	}

	// Vendor and quarantine records, matched to the model by window and group.
	find := func(window time.Time, process string) *aggGroup {
		for _, g := range want {
			if g.window.Equal(window) && g.process == process {
				return g
			}
		}
		return nil
	}
	seen := map[*aggGroup]bool{}
	check := func(msg kafka.Message, where string) *aggGroup {
		t.Helper()
		var agg struct {
			Start    time.Time      `json:"window_start"`
			End      time.Time      `json:"window_end"`
			Group    map[string]any `json:"group"`
			Count    int            `json:"count"`
			Entities int            `json:"entities"`
		}
		if err := json.Unmarshal(msg.Value, &agg); err != nil {
			t.Fatalf("%s record %s: %v", where, msg.Value, err)
		}
		process, _ := agg.Group["actor.process.name"].(string)
		g := find(agg.Start, process)
		if g == nil {
			t.Fatalf("%s aggregate %s matches no group of at least k=%d distinct users in the input", where, msg.Value, k)
		}
		if seen[g] {
			t.Errorf("%s aggregate %s published twice", where, msg.Value)
		}
		seen[g] = true
		if len(g.users) < k || agg.Entities != len(g.users) || agg.Count != len(g.offsets) || !agg.End.Equal(agg.Start.Add(time.Minute)) {
			t.Errorf("%s aggregate %s: the input has %d records of %d distinct users (k=%d) in it", where, msg.Value, len(g.offsets), len(g.users), k)
		}
		h := headers(msg)
		if h[pipeline.HeaderPolicy] != route.Version {
			t.Errorf("%s aggregate: deident-policy %q, want %q", where, h[pipeline.HeaderPolicy], route.Version)
		}
		src, err := pipeline.ParseAggregateSrc(h[pipeline.HeaderSrc])
		if err != nil {
			t.Fatalf("%s aggregate: deident-src %q: %v", where, h[pipeline.HeaderSrc], err)
		}
		wantSpan := []pipeline.SrcSpan{{Topic: topic, Partition: 0, First: slices.Min(g.offsets), Last: slices.Max(g.offsets), Count: len(g.offsets)}}
		if !src.Start.Equal(g.window) || !src.End.Equal(g.window.Add(time.Minute)) || !slices.Equal(src.Spans, wantSpan) {
			t.Errorf("%s aggregate: deident-src %q, want window %v and spans %+v", where, h[pipeline.HeaderSrc], g.window, wantSpan)
		}
		return g
	}
	out := 0
	for _, msg := range readAll(t, brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions) {
		if g := check(msg, "vendor"); g.process == quarantinedProcess {
			t.Errorf("aggregate with an e-mail address published: %s", msg.Value)
		} else {
			out += len(g.offsets)
		}
	}
	q := readAll(t, brokers, cfg.Kafka.QuarantineTopic, 1)
	if len(q) != 1 {
		t.Fatalf("%d quarantined records, want 1", len(q))
	}
	if g := check(q[0], "quarantined"); g.process != quarantinedProcess || headers(q[0])[gate.HeaderReasons] != "pattern:email" {
		t.Errorf("quarantined %s with reasons %q, want the e-mail group with pattern:email", q[0].Value, headers(q[0])[gate.HeaderReasons])
	}
	if len(seen) != len(want) {
		t.Errorf("%d of the %d aggregates the input makes were published or quarantined", len(seen), len(want))
	}

	// Counters and metrics.
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	r := c.Routes["acme-mdr"]
	if r.In.Load() != uint64(len(inputs)) || r.Out.Load() != uint64(out) || r.Quarantined.Load() != 3 ||
		r.Suppressed.Load() != uint64(wantSuppressed) || r.Revoked.Load() != 1 {
		t.Errorf("acme-mdr in %d out %d quarantined %d suppressed %d revoked %d, want %d %d 3 %d 1",
			r.In.Load(), r.Out.Load(), r.Quarantined.Load(), r.Suppressed.Load(), r.Revoked.Load(), len(inputs), out, wantSuppressed)
	}
	get := func(name string) float64 { return m[name] }
	for name, v := range map[string]float64{
		`deident_gate_checked_total{route="acme-mdr"}`:                            3,
		`deident_gate_quarantined_total{reason="pattern:email",route="acme-mdr"}`: 1,
		`deident_route_records_total{outcome="in",route="acme-mdr"}`:              float64(len(inputs)),
		`deident_route_records_total{outcome="out",route="acme-mdr"}`:             float64(out),
		`deident_route_records_total{outcome="quarantined",route="acme-mdr"}`:     3,
		`deident_route_records_total{outcome="suppressed",route="acme-mdr"}`:      float64(wantSuppressed),
		`deident_route_records_held{route="acme-mdr"}`:                            1,
	} {
		if got, ok := m[name]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
	route0 := func(o string) float64 {
		return get(`deident_route_records_total{outcome="` + o + `",route="acme-mdr"}`)
	}
	if in, sum := route0("in"), route0("out")+route0("suppressed")+route0("quarantined")+route0("filtered_by_category")+route0("failed")+route0("revoked")+get(`deident_route_records_held{route="acme-mdr"}`); in != sum {
		t.Errorf("/metrics: in %v != out + suppressed + quarantined + filtered_by_category + failed + revoked + held = %v", in, sum)
	}
}
