package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// An input with DecodeTo hands the routes (and their gates) what it
// decoded; a route with Encode produces what it encoded; failures of
// either are dead-lettered with the original bytes and the worker goes on.
func TestRunnerDecodeToAndEncode(t *testing.T) {
	// The "wire format": "AV:" before a JSON object; "AV:bad" does not decode.
	decodeTo := func(dst, v []byte) ([]byte, error) {
		body, ok := bytes.CutPrefix(v, []byte("AV:"))
		if !ok || bytes.Equal(body, []byte("bad")) {
			return dst, errors.New("schema id 7: schema id unknown to the registry")
		}
		return append(dst, body...), nil
	}
	encode := func(dst, out []byte, rec *Record) ([]byte, error) {
		if bytes.Contains(out, []byte("NOENC")) {
			return dst, errors.New("registering the schema under subject vendor.a-value: schema registry unavailable")
		}
		if !bytes.HasPrefix(rec.Value, []byte("AV:")) {
			return dst, errors.New("encode saw the decoded value as rec")
		}
		dst = append(dst, "ENC("...)
		return append(append(dst, out...), ')'), nil
	}
	rt := Route{Name: "a", Topic: "vendor.a", Version: "v-a",
		Allows:     func(string) bool { return true },
		NewApplier: func() Applier { return upper{} },
		NewChecker: func(Applier) Checker { return leakChecker{mu: &sync.Mutex{}, q: new(int)} },
		Encode:     encode}
	c := &fakeClaim{topic: "av", committed: -1}
	vals := []string{`AV:{"n":1}`, `AV:bad`, `AV:{"n":"noenc"}`, `AV:{"n":"leak"}`, `AV:{"n":2}`, `junk`}
	for i, v := range vals {
		c.recs = append(c.recs, Record{Topic: "av", Offset: int64(i), Value: []byte(v)})
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"av": {Category: "workflow", DecodeTo: decodeTo}},
		Routes:          []Route{rt},
		DeadLetterTopic: "dlq", QuarantineTopic: "quarantine",
		CommitInterval: time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: []*fakeClaim{c}}, sink) }()
	waitFor(t, "all committed", 10*time.Second, func() bool { return c.Committed() == int64(len(vals)) })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := r.Counters().Check(); err != nil {
		t.Error(err)
	}
	got := map[string]string{}
	for _, o := range sink.outs {
		stage := ""
		for _, h := range o.Headers {
			if h.Key == HeaderStage {
				stage = "/" + string(h.Value)
			}
		}
		got[fmt.Sprintf("%s%s %s", o.Topic, stage, o.Value)] += "x"
	}
	want := map[string]string{
		`vendor.a ENC({"N":1})`:       "x",
		`vendor.a ENC({"N":2})`:       "x",
		`dlq/decode AV:bad`:           "x",
		`dlq/decode junk`:             "x",
		`dlq/encode AV:{"n":"noenc"}`: "x",
		`quarantine {"N":"LEAK"}`:     "x", // the gate's verdict on the route's output, unencoded
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outputs\n%v\nwant\n%v", got, want)
	}
	rc := r.Counters().Routes["a"]
	if rc.Out.Load() != 2 || rc.Failed.Load() != 1 || rc.Quarantined.Load() != 1 || r.Counters().Worker.DeadLettered.Load() != 2 {
		t.Fatalf("out %d failed %d quarantined %d dead-lettered %d", rc.Out.Load(), rc.Failed.Load(), rc.Quarantined.Load(), r.Counters().Worker.DeadLettered.Load())
	}
}
