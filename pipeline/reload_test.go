package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tagged is a toy applier writing tag before the record, so an output
// shows which policy made it.
type tagged struct{ tag string }

func (a tagged) Apply(dst, src []byte) ([]byte, error) {
	return append(append(dst, a.tag...), src...), nil
}
func (a tagged) KeyID() string { return "k-" + a.tag }

func taggedRoutes(version string, made *atomic.Int64) []Route {
	mk := func(name string) Route {
		return Route{Name: name, Topic: "vendor." + name, Version: version + "-" + name,
			Allows: func(c string) bool { return c == "threat" },
			NewApplier: func() Applier {
				made.Add(1)
				return tagged{tag: version + ":"}
			}}
	}
	return []Route{mk("a"), mk("c")}
}

// A reload while three claims run: every record's outputs (both routes)
// are made under one route set, in each partition the records under the
// new set follow every record under the old one, the policy header names
// the set that made the value, and nothing is lost or doubled.
func TestReloadSwitchesBetweenRecords(t *testing.T) {
	var made atomic.Int64
	var claims []*fakeClaim
	const perClaim = 3000
	for p := range 3 {
		c := &fakeClaim{topic: "edr", partition: p, committed: -1}
		for i := range perClaim {
			c.recs = append(c.recs, Record{Topic: "edr", Partition: p, Offset: int64(i), Value: fmt.Appendf(nil, `{"n":%d}`, i)})
		}
		claims = append(claims, c)
	}
	r, err := New(Config{
		Inputs:          map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes:          taggedRoutes("v1", &made),
		DeadLetterTopic: "dlq",
		MaxInFlight:     50,
		CommitInterval:  time.Millisecond,
		Logger:          quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{rng: rand.New(rand.NewPCG(3, 4))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, &fakeSource{claims: claims}, sink) }()
	waitFor(t, "records flowing", 10*time.Second, func() bool { return r.Counters().Worker.Consumed.Load() >= 500 })
	if err := r.Reload(taggedRoutes("v2", &made)); err != nil {
		t.Fatal(err)
	}
	if got := r.Versions()["a"]; got != "v2-a" {
		t.Errorf("Versions()[a] = %q after the reload", got)
	}
	waitFor(t, "all committed", 20*time.Second, func() bool {
		for _, c := range claims {
			if c.Committed() != perClaim {
				return false
			}
		}
		return true
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	type key struct {
		p   int
		off int
	}
	gen := map[key]string{} // the set of each record, from its route-a output
	seen := map[string]int{}
	sink.mu.Lock()
	outs := sink.outs
	sink.mu.Unlock()
	for _, o := range outs {
		h := map[string]string{}
		for _, x := range o.Headers {
			h[x.Key] = string(x.Value)
		}
		var p, off int
		if _, err := fmt.Sscanf(h[HeaderSrc], "edr/%d/%d", &p, &off); err != nil {
			t.Fatalf("deident-src %q: %v", h[HeaderSrc], err)
		}
		v, _, _ := strings.Cut(string(o.Value), ":")
		route := strings.TrimPrefix(o.Topic, "vendor.")
		if want := v + "-" + route; h[HeaderPolicy] != want {
			t.Fatalf("%s %s: policy header %s on a value made under %s", o.Topic, h[HeaderSrc], h[HeaderPolicy], v)
		}
		if h[HeaderKey] != "k-"+v+":" {
			t.Fatalf("%s %s: key header %s on a value made under %s", o.Topic, h[HeaderSrc], h[HeaderKey], v)
		}
		seen[o.Topic+" "+h[HeaderSrc]]++
		k := key{p, off}
		if g, ok := gen[k]; ok && g != v {
			t.Fatalf("%s: processed half under %s, half under %s", h[HeaderSrc], g, v)
		}
		gen[k] = v
	}
	if len(seen) != 2*3*perClaim {
		t.Errorf("%d distinct outputs, want %d", len(seen), 2*3*perClaim)
	}
	for s, n := range seen {
		if n != 1 {
			t.Errorf("%s produced %d times", s, n)
		}
	}
	perVersion := map[string]int{}
	for p := range 3 {
		last := "v1"
		for off := range perClaim {
			g := gen[key{p, off}]
			if g < last {
				t.Fatalf("partition %d offset %d under %s after a record under %s", p, off, g, last)
			}
			last = g
			perVersion[g]++
		}
	}
	if perVersion["v1"] == 0 || perVersion["v2"] == 0 {
		t.Errorf("records per version %v: the reload did not land mid-stream", perVersion)
	}
	// One Applier per route per claim and set: 2 routes x (the claims that
	// processed records under v1, which depends on scheduling, + 3 under v2).
	claimsV1 := 0
	for p := range 3 {
		if gen[key{p, 0}] == "v1" {
			claimsV1++
		}
	}
	// A claim may also have made its v1 appliers just before the swap
	// without processing a record under them: at most 12.
	if n, least := made.Load(), int64(2*(claimsV1+3)); n < least || n > 12 {
		t.Errorf("%d appliers made, want %d to 12 (%d claims processed records under v1)", n, least, claimsV1)
	}
	t.Logf("records per version: %v", perVersion)
}

func TestReloadRefusesWhatNeedsARestart(t *testing.T) {
	var made atomic.Int64
	base := func() []Route { return taggedRoutes("v1", &made) }
	withStage := func(rs []Route) []Route {
		rs[0].NewStage = func() Stage { return &groupStage{k: 3} }
		return rs
	}
	for _, tc := range []struct {
		name    string
		running []Route
		next    func() []Route
		want    string
	}{
		{"route added", base(), func() []Route { return append(base(), taggedRoutes("v1", &made)[0]) }, "2 running, 3 new"},
		{"route renamed", base(), func() []Route { rs := base(); rs[1].Name = "d"; return rs }, "c running, d new"},
		{"topic changed", base(), func() []Route { rs := base(); rs[0].Topic = "elsewhere"; return rs }, "topic vendor.a running, elsewhere new"},
		{"stage added", base(), func() []Route { return withStage(base()) }, "k-anonymity stage"},
		{"staged route changed", withStage(base()), func() []Route { return withStage(taggedRoutes("v2", &made)) }, "k-anonymity stage holds records processed under policy v1-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(Config{Inputs: map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
				Routes: tc.running, DeadLetterTopic: "dlq", Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			err = r.Reload(tc.next())
			if !errors.Is(err, ErrNeedsRestart) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reload: %v, want ErrNeedsRestart naming %q", err, tc.want)
			}
			if got := r.Versions()["a"]; got != "v1-a" {
				t.Errorf("running version %s after a refused reload", got)
			}
		})
	}
	// A staged route whose version is unchanged may stay while another changes.
	r, err := New(Config{Inputs: map[string]Input{"edr": {Category: "threat", Decode: decodeJSONish}},
		Routes: withStage(base()), DeadLetterTopic: "dlq", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	next := withStage(base())
	next[1] = taggedRoutes("v2", &made)[1]
	if err := r.Reload(next); err != nil {
		t.Fatal(err)
	}
}
