package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

var errTrip = errors.New("tripped")

// leakChecker quarantines outputs containing "LEAK" and trips on the
// tripAt-th quarantined record (0: never).
type leakChecker struct {
	mu     *sync.Mutex
	q      *int
	tripAt int
}

func (c leakChecker) Check(_, out []byte) (Verdict, error) { return c.verdict(out) }
func (c leakChecker) Observe([]byte)                       {}
func (c leakChecker) CheckClass(out []byte, n int) (Verdict, error) {
	if n < 2 {
		return Verdict{Reasons: []byte("k"), Paths: []byte("deident_k")}, nil
	}
	return c.verdict(out)
}

func (c leakChecker) CheckAggregate(out []byte, n int) (Verdict, error) {
	if n < 2 {
		return Verdict{Reasons: []byte("k"), Paths: []byte("deident_k")}, nil
	}
	return c.verdict(out)
}

func (c leakChecker) verdict(out []byte) (Verdict, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tripAt > 0 && *c.q >= c.tripAt {
		return Verdict{}, errTrip
	}
	if !bytes.Contains(out, []byte("LEAK")) {
		return Verdict{Pass: true}, nil
	}
	*c.q++
	v := Verdict{Reasons: []byte("pattern:email"), Paths: []byte("msg")}
	if c.tripAt > 0 && *c.q >= c.tripAt {
		return v, errTrip
	}
	return v, nil
}

func gateRoute(tripAt int) Route {
	r := testRoutes()[0]
	var mu sync.Mutex
	q := new(int)
	r.NewChecker = func(Applier) Checker { return leakChecker{&mu, q, tripAt} }
	return r
}

func runUntil(t *testing.T, r *Runner, claims []*fakeClaim, sink Sink, done func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: claims}, sink) }()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		select {
		case err := <-errc:
			cancel()
			return err
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("timed out")
		}
	}
	cancel()
	return <-errc
}

func hdrs(o Output) map[string]string {
	h := map[string]string{}
	for _, x := range o.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

// TestRunnerGateQuarantines: a failing record goes to the quarantine topic
// with the route, policy, reasons and paths, is counted quarantined and
// acknowledged like any output, and its offset is committed.
func TestRunnerGateQuarantines(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	for i := range 20 {
		v := `{"n":1}`
		if i%5 == 3 {
			v = `{"msg":"LEAK"}`
		}
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Key: []byte("k"), Value: []byte(v)})
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          []Route{gateRoute(0)},
		DeadLetterTopic: "dlq", QuarantineTopic: "quarantine",
		CommitInterval: time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	if err := runUntil(t, r, []*fakeClaim{c}, sink, func() bool { return c.Committed() == 20 }); err != nil {
		t.Fatal(err)
	}
	cnt := r.Counters()
	if err := cnt.Check(); err != nil {
		t.Error(err)
	}
	if rc := cnt.Routes["a"]; rc.Out.Load() != 16 || rc.Quarantined.Load() != 4 {
		t.Errorf("out %d quarantined %d, want 16 4", rc.Out.Load(), rc.Quarantined.Load())
	}
	n := 0
	for _, o := range sink.outs {
		if o.Topic != "quarantine" {
			if bytes.Contains(o.Value, []byte("LEAK")) {
				t.Errorf("leak published to %s", o.Topic)
			}
			continue
		}
		n++
		h := hdrs(o)
		if h[HeaderRoute] != "a" || h[HeaderPolicy] != "v-a" || h[HeaderGate] != "pattern:email" || h[HeaderGatePaths] != "msg" || !strings.HasPrefix(h[HeaderSrc], "edr/0/") {
			t.Errorf("quarantine headers %v", h)
		}
	}
	if n != 4 {
		t.Errorf("%d quarantined outputs, want 4", n)
	}
}

// TestRunnerGateFailsClosed: a tripped gate stops the runner with its
// error; nothing at or after the tripping record is committed or published.
func TestRunnerGateFailsClosed(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	for i := range 100 {
		v := `{"n":1}`
		if i >= 40 && i%2 == 0 {
			v = `{"msg":"LEAK"}`
		}
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Value: []byte(v)})
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          []Route{gateRoute(3)},
		DeadLetterTopic: "dlq", QuarantineTopic: "quarantine",
		CommitInterval: time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	err = runUntil(t, r, []*fakeClaim{c}, sink, func() bool { return false })
	if !errors.Is(err, errTrip) || !strings.Contains(err.Error(), "edr/0/44") {
		t.Fatalf("Run: %v, want the trip at edr/0/44", err)
	}
	if got := c.Committed(); got > 44 {
		t.Errorf("committed %d, past the tripping record 44", got)
	}
	for _, o := range sink.outs {
		var off int64
		if _, err := fmt.Sscanf(hdrs(o)[HeaderSrc], "edr/0/%d", &off); err != nil || off >= 44 {
			t.Errorf("output of %s (at or after the trip)", hdrs(o)[HeaderSrc])
		}
	}
	if err := r.Counters().Check(); err != nil {
		t.Error(err)
	}
}

// groupStage is a toy k-anonymity stage: records are grouped by value;
// a group of k records is published as one aggregate; "SHORT" records are
// suppressed on Advance; "HOLD" records are never decided.
type groupStage struct {
	k     int
	group []int64
	short []int64
	hold  []int64
}

func (s *groupStage) Add(dst []Decision, rec *Record, out []byte) ([]Decision, error) {
	switch {
	case bytes.Contains(out, []byte("BAD")):
		return dst, errors.New("entity: missing")
	case bytes.Contains(out, []byte("SHORT")):
		s.short = append(s.short, rec.Offset)
	case bytes.Contains(out, []byte("HOLD")):
		s.hold = append(s.hold, rec.Offset)
	default:
		s.group = append(s.group, rec.Offset)
		if len(s.group) == s.k {
			dst = append(dst, Decision{Kind: Aggregate, Payload: fmt.Appendf(nil, `{"count":%d}`, s.k), Entities: s.k, Count: s.k, First: s.group[0], Last: s.group[s.k-1]})
			s.group = s.group[:0]
		}
	}
	return dst, nil
}

func (s *groupStage) Advance(dst []Decision, _ time.Time) []Decision {
	if len(s.short) > 0 {
		dst = append(dst, Decision{Kind: Suppress, Count: len(s.short), First: s.short[0], Last: s.short[len(s.short)-1]})
		s.short = s.short[:0]
	}
	return dst
}

func (s *groupStage) Held() int64 {
	low := int64(-1)
	for _, l := range [][]int64{s.group, s.short, s.hold} {
		if len(l) > 0 && (low < 0 || l[0] < low) {
			low = l[0]
		}
	}
	return low
}

// TestRunnerStageHoldsOffsets: offsets a stage holds are not committed
// until it decides them; an aggregate's acknowledgement releases every
// offset it covers; suppressed records are decided with no output.
func TestRunnerStageHoldsOffsets(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	vals := []string{`{"g":1}`, `{"s":"SHORT"}`, `{"g":2}`, `{"g":3}`, `{"x":"BAD"}`, `{"g":4}`, `{"g":5}`, `{"g":6}`, `{"h":"HOLD"}`, `{"g":7}`}
	for i, v := range vals {
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Value: []byte(v)})
	}
	rt := testRoutes()[0]
	rt.NewStage = func() Stage { return &groupStage{k: 3} }
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          []Route{rt},
		DeadLetterTopic: "dlq",
		StageInterval:   time.Hour, // Advance only when the test says
		CommitInterval:  time.Millisecond, ShutdownGrace: time.Second, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{hold: true, rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: []*fakeClaim{c}}, sink) }()
	waitFor(t, "all consumed", 5*time.Second, func() bool { return r.Counters().Worker.Consumed.Load() == 10 })
	// Two aggregates (0,2,3 and 5,6,7) and a dead letter (4) in flight,
	// 1 and 9 and 8 held: nothing committable.
	time.Sleep(20 * time.Millisecond)
	if got := c.Committed(); got > 0 {
		t.Fatalf("committed %d with everything held or in flight", got)
	}
	sink.release()
	// 0 is decided and acknowledged; 1 is held (short, not yet suppressed).
	waitFor(t, "commit 1", 5*time.Second, func() bool { return c.Committed() == 1 })
	time.Sleep(20 * time.Millisecond)
	if got := c.Committed(); got != 1 {
		t.Fatalf("committed %d past the held offset 1", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rc := r.Counters().Routes["a"]
	if rc.Out.Load() != 6 || rc.Failed.Load() != 1 || rc.Revoked.Load() != 3 || rc.Held.Load() != 0 {
		t.Errorf("out %d failed %d revoked %d held %d, want 6 1 3 0", rc.Out.Load(), rc.Failed.Load(), rc.Revoked.Load(), rc.Held.Load())
	}
	if err := r.Counters().Check(); err != nil {
		t.Error(err)
	}
	var spans []string
	for _, o := range sink.outs {
		if o.Topic == "vendor.a" {
			spans = append(spans, hdrs(o)[HeaderSrc])
		}
	}
	if strings.Join(spans, " ") != "spans=edr/0/0-3:3 spans=edr/0/5-7:3" {
		t.Errorf("aggregates' spans %v", spans)
	}
}

// TestRunnerStageSuppressionDecides: records the stage suppresses are
// decided with no output, and the commit moves past them.
func TestRunnerStageSuppressionDecides(t *testing.T) {
	c := &fakeClaim{topic: "edr", committed: -1}
	for i, v := range []string{`{"g":1}`, `{"s":"SHORT"}`, `{"g":2}`, `{"g":3}`, `{"s":"SHORT"}`} {
		c.recs = append(c.recs, Record{Topic: "edr", Offset: int64(i), Value: []byte(v)})
	}
	rt := testRoutes()[0]
	rt.NewStage = func() Stage { return &groupStage{k: 3} }
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          []Route{rt},
		DeadLetterTopic: "dlq",
		StageInterval:   5 * time.Millisecond,
		CommitInterval:  time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	if err := runUntil(t, r, []*fakeClaim{c}, sink, func() bool { return c.Committed() == 5 }); err != nil {
		t.Fatal(err)
	}
	rc := r.Counters().Routes["a"]
	if rc.Out.Load() != 3 || rc.Suppressed.Load() != 2 || rc.Held.Load() != 0 || rc.Revoked.Load() != 0 {
		t.Errorf("out %d suppressed %d held %d revoked %d, want 3 2 0 0", rc.Out.Load(), rc.Suppressed.Load(), rc.Held.Load(), rc.Revoked.Load())
	}
	if err := r.Counters().Check(); err != nil {
		t.Error(err)
	}
	if w := r.Counters().Worker.InFlight.Load(); w != 0 {
		t.Errorf("in flight %d after drain", w)
	}
}
