package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// provStage releases every record at once, naming the source record its
// repartition record came from (the deident-src header) as provenance.
type provStage struct{}

func (provStage) Add(dst []Decision, rec *Record, out []byte) ([]Decision, error) {
	var src []byte
	for _, h := range rec.Headers {
		if h.Key == HeaderSrc {
			src = append([]byte(nil), h.Value...)
		}
	}
	return append(dst, Decision{Kind: Release, Payload: append([]byte(nil), out...), Entities: 2, Count: 1, First: rec.Offset, Last: rec.Offset, Prov: src}), nil
}
func (provStage) Advance(dst []Decision, _ time.Time) []Decision { return dst }
func (provStage) Held() int64                                    { return -1 }

// loopSink acknowledges every output, and feeds what is produced to the
// repartition topic back as records of its claim, as a broker would.
type loopSink struct {
	mu   sync.Mutex
	outs []Output
	rp   *fakeClaim
	next int64
}

func (s *loopSink) Produce(_ context.Context, outs []Output) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range outs {
		s.outs = append(s.outs, o)
		if o.Topic == "rp" {
			s.rp.feed <- Record{Topic: "rp", Offset: s.next, Key: o.Key, Value: o.Value, Headers: o.Headers}
			s.next++
		}
		o.Done.Acked(nil)
	}
	return nil
}

// TestRunnerRepartitionLegs: leg 1 (a route whose topic is the repartition
// topic) keys its outputs by Route.Key and keeps the source provenance in
// headers; leg 2 (the route the repartition input is dedicated to) reads
// only that input and publishes with the source's deident-src; a third
// route never sees the repartition records; each leg's accounting holds
// and both topics' offsets are committed to the end.
func TestRunnerRepartitionLegs(t *testing.T) {
	const n = 20
	src := &fakeClaim{topic: "edr", committed: -1}
	for i := range n {
		src.recs = append(src.recs, Record{Topic: "edr", Offset: int64(i), Key: []byte("user"), Value: fmt.Appendf(nil, `{"class":"c%d","i":%d}`, i%3, i)})
	}
	src.recs = append(src.recs, Record{Topic: "edr", Offset: n, Value: []byte(`{"noclass":1}`)})
	rp := &fakeClaim{topic: "rp", committed: -1, feed: make(chan Record, 2*n)}
	routes := testRoutes()
	leg1 := routes[0]
	leg1.Name, leg1.Topic = "a/repartition", "rp"
	leg1.Key = func(dst, out []byte) ([]byte, error) {
		i := bytes.Index(out, []byte(`"CLASS":"`))
		if i < 0 {
			return dst, fmt.Errorf("class: missing")
		}
		return append(dst, out[i+9:i+11]...), nil
	}
	leg2 := routes[0]
	leg2.NewApplier = func() Applier { return copyApplier{} }
	leg2.NewStage = func() Stage { return provStage{} }
	r, err := New(Config{
		Inputs: map[string]Input{
			"edr": {Category: "threat", Decode: decodeJSONish},
			"rp":  {Category: "threat", Decode: decodeJSONish, Route: "a"},
		},
		Routes:          []Route{leg1, leg2, routes[2]},
		DeadLetterTopic: "dlq",
		CommitInterval:  time.Millisecond, ShutdownGrace: time.Second, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &loopSink{rp: rp}
	err = runUntil(t, r, []*fakeClaim{src, rp}, sink, func() bool {
		return src.Committed() == n+1 && rp.Committed() == n
	})
	if err != nil {
		t.Fatal(err)
	}
	cnt := r.Counters()
	for name, want := range map[string][2]uint64{"a/repartition": {n + 1, n}, "a": {n, n}, "c": {n + 1, n + 1}} {
		rc := cnt.Routes[name]
		if rc.In.Load() != want[0] || rc.Out.Load() != want[1] {
			t.Errorf("route %s: in %d out %d, want %d %d", name, rc.In.Load(), rc.Out.Load(), want[0], want[1])
		}
	}
	if f := cnt.Routes["a/repartition"].Failed.Load(); f != 1 {
		t.Errorf("leg 1 failed %d, want 1 (the record without a class)", f)
	}
	if err := cnt.Check(); err != nil {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, o := range sink.outs {
		h := hdrs(o)
		switch o.Topic {
		case "rp":
			_, rest, _ := bytes.Cut(o.Value, []byte(`"CLASS":"`))
			if want, _, _ := bytes.Cut(rest, []byte(`"`)); !bytes.Equal(o.Key, want) {
				t.Errorf("repartition key %q, want the class %q", o.Key, want)
			}
		case "vendor.a":
			if seen[h[HeaderSrc]] {
				t.Errorf("source %s published twice", h[HeaderSrc])
			}
			seen[h[HeaderSrc]] = true
			var i int
			if _, err := fmt.Sscanf(h[HeaderSrc], "edr/0/%d", &i); err != nil || !bytes.Contains(o.Value, fmt.Appendf(nil, `"I":%d}`, i)) {
				t.Errorf("vendor record %s carries deident-src %q, not its source's", o.Value, h[HeaderSrc])
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%d source records reached the vendor, want %d", len(seen), n)
	}
}

// copyApplier passes the record on as it is (leg 2 reads outputs leg 1
// already de-identified).
type copyApplier struct{}

func (copyApplier) Apply(dst, src []byte) ([]byte, error) { return append(dst, src...), nil }
func (copyApplier) KeyID() string                         { return "" }
