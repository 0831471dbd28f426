package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource hands out one claim per partition of in-memory records.
type fakeSource struct {
	claims []*fakeClaim
}

func (s *fakeSource) Run(ctx context.Context, h ClaimHandler) error {
	var wg sync.WaitGroup
	for _, c := range s.claims {
		wg.Go(func() { h(ctx, c) })
	}
	wg.Wait()
	return nil
}

type fakeClaim struct {
	topic     string
	partition int
	recs      []Record
	next      int
	// feed, when set, supplies records after recs, one Fetch at a time.
	feed chan Record
	// alwaysReady: Ready says true even with nothing to fetch.
	alwaysReady bool

	mu        sync.Mutex
	committed int64
	commits   []int64
}

func (c *fakeClaim) Topic() string  { return c.topic }
func (c *fakeClaim) Partition() int { return c.partition }
func (c *fakeClaim) Fetch(ctx context.Context) (Record, error) {
	if c.next < len(c.recs) {
		c.next++
		return c.recs[c.next-1], nil
	}
	select {
	case rec := <-c.feed: // nil: never
		return rec, nil
	case <-ctx.Done():
		return Record{}, ctx.Err()
	}
}

// Ready makes the runner batch the outputs of consecutive records.
func (c *fakeClaim) Ready() bool { return c.alwaysReady || c.next < len(c.recs) }
func (c *fakeClaim) Commit(next int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.committed = next
	c.commits = append(c.commits, next)
	return nil
}
func (c *fakeClaim) Committed() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed
}

// fakeSink records outputs and acknowledges them from another goroutine
// in a shuffled order, or holds them until released.
type fakeSink struct {
	mu      sync.Mutex
	outs    []Output
	held    []Output
	hold    bool
	failAt  string // fail outputs whose value contains this
	rng     *rand.Rand
	maxHeld int
}

func (s *fakeSink) Produce(_ context.Context, outs []Output) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range outs {
		s.outs = append(s.outs, o)
		s.held = append(s.held, o)
	}
	s.maxHeld = max(s.maxHeld, len(s.held))
	if s.hold {
		return nil
	}
	batch := s.held
	s.held = nil
	s.rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
	go func() {
		for _, o := range batch {
			var err error
			if s.failAt != "" && bytes.Contains(o.Value, []byte(s.failAt)) {
				err = errors.New("broker says no")
			}
			o.Done.Acked(err)
		}
	}()
	return nil
}

func (s *fakeSink) release() {
	s.mu.Lock()
	batch := s.held
	s.held = nil
	s.mu.Unlock()
	for _, o := range batch {
		o.Done.Acked(nil)
	}
}

// upper is a toy applier: it upper-cases the record, failing on "poison"
// and on what decodeJSONish rejects (so a route of it Decodes).
type upper struct{}

func (upper) Apply(dst, src []byte) ([]byte, error) {
	if decodeJSONish(src) != nil {
		return dst, errors.New("(record): syntax error")
	}
	if bytes.Contains(src, []byte("poison")) {
		return dst, errors.New("name: needs a string")
	}
	return append(dst, bytes.ToUpper(src)...), nil
}
func (upper) KeyID() string { return "k1" }

func decodeJSONish(v []byte) error {
	if len(v) == 0 || v[0] != '{' {
		return errors.New("invalid JSON at byte 0")
	}
	return nil
}

func testRoutes() []Route {
	mk := func(name, cat string) Route {
		return Route{Name: name, Topic: "vendor." + name, Version: "v-" + name,
			Allows:     func(c string) bool { return c == cat },
			NewApplier: func() Applier { return upper{} }}
	}
	return []Route{mk("a", "threat"), mk("b", "workflow"), mk("c", "threat")}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunnerFanOutDeadLettersAndCommits(t *testing.T) {
	// decodes: the routes' Apply stands in for Decode (Route.Decodes); for
	// topic wf the first route that may receive it is the second.
	for _, decodes := range []bool{false, true} {
		t.Run(fmt.Sprintf("decodes=%v", decodes), func(t *testing.T) { testFanOut(t, decodes) })
	}
}

func testFanOut(t *testing.T, decodes bool) {
	routes := testRoutes()
	for i := range routes {
		routes[i].Decodes = decodes
	}
	var claims []*fakeClaim
	for p := range 3 {
		c := &fakeClaim{topic: "edr", partition: p, committed: -1}
		if p == 2 {
			c.topic = "wf"
		}
		for i := range 200 {
			v := fmt.Sprintf(`{"n":%d}`, i)
			switch i % 50 {
			case 7:
				v = `{"n":"poison"}`
			case 9:
				v = `truncated`
			}
			c.recs = append(c.recs, Record{Topic: c.topic, Partition: p, Offset: int64(i * 2), Key: []byte("k"), Value: []byte(v)})
		}
		claims = append(claims, c)
	}
	r, err := New(Config{
		Inputs: map[string]Input{
			"edr": {Category: "threat", Decode: decodeJSONish},
			"wf":  {Category: "workflow", Decode: decodeJSONish},
		},
		Routes:          routes,
		DeadLetterTopic: "dlq",
		MaxInFlight:     7,
		CommitInterval:  time.Millisecond,
		Logger:          quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: claims}, sink) }()
	waitFor(t, "all committed", 10*time.Second, func() bool {
		for _, c := range claims {
			if c.Committed() != int64(2*199+1) {
				return false
			}
		}
		return true
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	cnt := r.Counters()
	if err := cnt.Check(); err != nil {
		t.Errorf("accounting: %v", err)
	}
	w := &cnt.Worker
	if w.Consumed.Load() != 600 || w.DeadLettered.Load() != 12 || w.Decoded.Load() != 588 {
		t.Errorf("worker counters consumed=%d decoded=%d dead=%d", w.Consumed.Load(), w.Decoded.Load(), w.DeadLettered.Load())
	}
	// threat: 392 decoded of which 8 poison; workflow: 196 decoded, 4 poison.
	want := map[string][4]uint64{ // in, out, filtered, failed
		"a": {588, 384, 196, 8},
		"b": {588, 192, 392, 4},
		"c": {588, 384, 196, 8},
	}
	for name, wv := range want {
		rc := cnt.Routes[name]
		got := [4]uint64{rc.In.Load(), rc.Out.Load(), rc.FilteredByCategory.Load(), rc.Failed.Load()}
		if got != wv {
			t.Errorf("route %s: in/out/filtered/failed = %v, want %v", name, got, wv)
		}
	}
	if got := w.InFlight.Load(); got != 0 {
		t.Errorf("in flight after drain: %d", got)
	}
	if sink.maxHeld > 7*2 {
		t.Errorf("sink held up to %d outputs with max in flight 7", sink.maxHeld)
	}
	byTopic := map[string]int{}
	for _, o := range sink.outs {
		byTopic[o.Topic]++
		hdr := map[string]string{}
		for _, h := range o.Headers {
			hdr[h.Key] = string(h.Value)
		}
		if !strings.HasPrefix(hdr[HeaderSrc], "edr/") && !strings.HasPrefix(hdr[HeaderSrc], "wf/") {
			t.Errorf("output without provenance: %v", hdr)
		}
		if o.Topic == "dlq" {
			if hdr[HeaderError] == "" || (hdr[HeaderStage] != "decode" && hdr[HeaderStage] != "apply") {
				t.Errorf("dead letter headers %v", hdr)
			}
			if hdr[HeaderStage] == "apply" && string(o.Value) != `{"n":"poison"}` {
				t.Errorf("dead letter does not carry the original bytes: %q", o.Value)
			}
			if hdr[HeaderStage] == "decode" && (hdr[HeaderError] != "invalid JSON at byte 0" || hdr[HeaderRoute] != "" || string(o.Value) != "truncated") {
				t.Errorf("decode dead letter: headers %v, value %q", hdr, o.Value)
			}
			continue
		}
		if hdr[HeaderPolicy] != "v-"+strings.TrimPrefix(o.Topic, "vendor.") || hdr[HeaderKey] != "k1" {
			t.Errorf("vendor output headers %v on %s", hdr, o.Topic)
		}
	}
	wantTopics := map[string]int{"vendor.a": 384, "vendor.b": 192, "vendor.c": 384, "dlq": 12 + 8 + 4 + 8}
	for k, v := range wantTopics {
		if byTopic[k] != v {
			t.Errorf("topic %s: %d outputs, want %d", k, byTopic[k], v)
		}
	}
	for _, c := range claims {
		for i := 1; i < len(c.commits); i++ {
			if c.commits[i] <= c.commits[i-1] {
				t.Errorf("partition %d: commits not increasing: %v", c.partition, c.commits)
				break
			}
		}
	}
}

// TestRunnerBackpressureAndGrace: with a sink that never acknowledges,
// fetching stops at MaxInFlight records and, on shutdown, the claim
// commits nothing it has not seen acknowledged and returns within the grace.
func TestRunnerBackpressureAndGrace(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	for i := range 100 {
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Value: []byte(`{}`)})
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          testRoutes()[:1],
		DeadLetterTopic: "dlq",
		MaxInFlight:     5,
		ShutdownGrace:   50 * time.Millisecond,
		CommitInterval:  time.Millisecond,
		Logger:          quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{hold: true, rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: []*fakeClaim{c}}, sink) }()
	waitFor(t, "5 in flight", 5*time.Second, func() bool { return r.Counters().Worker.InFlight.Load() == 5 })
	// Release the first five; five more come in, no more.
	sink.release()
	waitFor(t, "commit 5", 5*time.Second, func() bool { return c.Committed() == 5 })
	waitFor(t, "5 more in flight", 5*time.Second, func() bool { return r.Counters().Worker.Consumed.Load() == 10 })
	if got := r.Counters().Worker.InFlight.Load(); got != 5 {
		t.Fatalf("in flight %d, want 5", got)
	}
	start := time.Now()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v with a 50ms grace", d)
	}
	if got := c.Committed(); got != 5 {
		t.Errorf("committed %d after shutdown with unacknowledged 5..9, want 5", got)
	}
}

// TestRunnerSinkFailureStops: a sink that gives up on an output stops the
// runner with an error and the failed record's offset is never committed.
func TestRunnerSinkFailureStops(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	for i := range 50 {
		v := `{"ok":1}`
		if i == 20 {
			v = `{"fail":1}`
		}
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Value: []byte(v)})
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          testRoutes()[:1],
		DeadLetterTopic: "dlq",
		MaxInFlight:     100,
		CommitInterval:  time.Millisecond,
		Logger:          quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{failAt: `"FAIL"`, rng: rand.New(rand.NewPCG(3, 4))}
	err = r.Run(context.Background(), &fakeSource{claims: []*fakeClaim{c}}, sink)
	if err == nil || !strings.Contains(err.Error(), "broker says no") || !strings.Contains(err.Error(), "edr/0/20") {
		t.Fatalf("Run error %v, want the sink's failure naming edr/0/20", err)
	}
	if got := c.Committed(); got > 20 {
		t.Errorf("committed %d, past the failed offset 20", got)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{Routes: []Route{{Name: "x"}}, MaxInFlight: -1})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"dead-letter topic is required", "at least one input", "route 0", "max in flight must be positive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestRunnerLingerBoundsBatching: a claim that says more records are ready
// when none come (a transaction marker or compacted gap below the high
// watermark) delays outputs by at most the linger, and records fed one by
// one are all produced and committed.
func TestRunnerLingerBoundsBatching(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1, feed: make(chan Record), alwaysReady: true}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          testRoutes(),
		DeadLetterTopic: "dlq",
		CommitInterval:  time.Millisecond,
		Logger:          quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: []*fakeClaim{c}}, sink) }()
	for i := range 5 {
		c.feed <- Record{Topic: "edr", Offset: int64(i), Value: []byte(`{"n":1}`)}
		waitFor(t, fmt.Sprintf("outputs of record %d", i), 2*time.Second, func() bool {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			return len(sink.outs) == 2*(i+1)
		})
	}
	waitFor(t, "commit", 2*time.Second, func() bool { return c.Committed() == 5 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := r.Counters().Check(); err != nil {
		t.Error(err)
	}
}
