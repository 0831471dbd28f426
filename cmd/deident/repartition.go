package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/kanon"
	"github.com/deident/deident/transforms/route"
)

// A route with k_anonymity.repartition_topic runs in two legs, both plain
// runner routes in the one consumer group:
//
//   - leg 1, "NAME/repartition", reads the source topics: the route's field
//     rules and its gate (without the k check, which needs the stage), then
//     produces each output to the repartition topic keyed by the xxhash of
//     its quasi-identifiers at the partition level, with the source's
//     deident-src, deident-policy and deident-key headers. Its source
//     offsets commit once the repartition record is acknowledged.
//   - leg 2, "NAME", reads only the repartition topic (a dedicated input):
//     its applier passes the record on as it is, its k-anonymity stage and
//     gate decide, and what it releases goes to the vendor topic with the
//     source record's deident-src (an aggregate's deident-spans name the
//     source records). Its offsets commit once every record's fate is
//     decided and its outputs acknowledged.
//
// Every class the stage can publish lies within one key (the stage never
// generalizes beyond the partition level), so one replica counts it.

// repartitionSuffix names a route's first leg.
const repartitionSuffix = "/repartition"

// errPolicyChanged dead-letters a repartition record produced under
// another policy version than the worker's (a rolling config change):
// nothing is published under a version it was not derived by.
var errPolicyChanged = errors.New("repartition record was produced under another policy version")

// repartitionInputs adds the repartition topics of cfg's routes to inputs
// (each dedicated to its route's second leg) and returns them. Read at
// start only: a reload that adds, removes or renames one needs a restart
// (the runner's routes change).
func repartitionInputs(cfg *config.Config, inputs map[string]pipeline.Input) ([]string, error) {
	var topics []string
	var errs []error
	for _, name := range sortedNames(cfg.Vendors) {
		kc := cfg.Vendors[name].KAnon
		if kc == nil || kc.RepartitionTopic == "" {
			continue
		}
		t := kc.RepartitionTopic
		if _, dup := inputs[t]; dup {
			errs = append(errs, fmt.Errorf("vendors.%s.k_anonymity.repartition_topic: topic %s is a source or another route's repartition topic", name, t))
			continue
		}
		inputs[t] = pipeline.Input{Category: "repartition", Decode: decodeJSON(cfg.Limits.MaxRecordBytes), Route: name}
		topics = append(topics, t)
	}
	return topics, errors.Join(errs...)
}

// repartitionLegs returns the two routes of route name, whose single-leg
// form is pr (its gate not yet attached); prev are the running gates (a
// reload continues them).
func repartitionLegs(cfg *config.Config, name string, r *route.Route, pr pipeline.Route, now func() time.Time, gates, prev map[string]*gate.Gate) (leg1, leg2 pipeline.Route, err error) {
	kc := *r.Config.KAnon
	if _, err := kanon.New(kc, cfg.Dir, kanon.Options{Now: now}); err != nil {
		return leg1, leg2, fmt.Errorf("vendors.%s.%w", name, err)
	}
	for what, topic := range map[string]string{"kafka.dead_letter_topic": cfg.Kafka.DeadLetterTopic, "kafka.quarantine_topic": cfg.Kafka.QuarantineTopic} {
		if topic == kc.RepartitionTopic {
			return leg1, leg2, fmt.Errorf("vendors.%s.k_anonymity.repartition_topic: topic %s is also %s", name, topic, what)
		}
	}
	for other, rc := range cfg.Vendors {
		if rc.Topic == kc.RepartitionTopic {
			return leg1, leg2, fmt.Errorf("vendors.%s.k_anonymity.repartition_topic: topic %s is the vendor topic of %s (it must be internal)", name, rc.Topic, other)
		}
	}
	if pr.Encode != nil {
		return leg1, leg2, fmt.Errorf("vendors.%s.k_anonymity.repartition_topic: not supported with output avro", name)
	}
	keyers := sync.Pool{New: func() any {
		s, _ := kanon.New(kc, cfg.Dir, kanon.Options{Now: now})
		return &partitionKeyer{s: s}
	}}

	leg1 = pr
	leg1.Name = name + repartitionSuffix
	leg1.Topic = kc.RepartitionTopic
	leg1.Key = func(dst, out []byte) ([]byte, error) {
		k := keyers.Get().(*partitionKeyer)
		defer keyers.Put(k)
		return k.appendKey(dst, out)
	}
	// Leg 1's gate sees the raw input (echo) and every check but k.
	rc1 := r.Config
	rc1.KAnon = nil
	g1, err := gate.New(name, rc1, gate.WithClock(now), gate.WithState(prev[leg1.Name]))
	if err != nil {
		return leg1, leg2, err
	}
	if g1.Enabled() {
		gates[leg1.Name] = g1
		leg1.NewChecker = observedChecker(g1)
	}

	version := []byte(r.Version)
	leg2 = pipeline.Route{
		Name:       name,
		Topic:      r.Config.Topic,
		Version:    r.Version,
		Allows:     func(string) bool { return true }, // its input is dedicated to it
		NewApplier: func() pipeline.Applier { return passApplier{} },
		NewStage: func() pipeline.Stage {
			s, _ := kanon.New(kc, cfg.Dir, kanon.Options{Now: now, ListOffsets: true})
			rs := &repartStage{version: version, srcs: map[int64][]byte{}}
			rs.kanonStage = kanonStage{s: s, prov: rs.prov}
			return rs
		},
	}
	// Leg 2's gate: the echo check ran in leg 1 against the raw input,
	// which leg 2 never sees (observing its de-identified input would
	// flag every pseudonym as an echo).
	rc2 := r.Config
	rc2.Gate.Echo = new(bool)
	g2, err := gate.New(name, rc2, gate.WithClock(now), gate.WithState(prev[name]))
	if err != nil {
		return leg1, leg2, err
	}
	if g2.Enabled() {
		gates[name] = g2
		leg2.NewChecker = func(pipeline.Applier) pipeline.Checker { return g2.ForPipeline(g2.NewChecker(), false) }
	}
	return leg1, leg2, nil
}

// observedChecker makes a route's gate learn raw identifiers as the
// route's Applier reads them.
func observedChecker(g *gate.Gate) func(a pipeline.Applier) pipeline.Checker {
	return func(a pipeline.Applier) pipeline.Checker {
		c := g.NewChecker()
		ra, observed := a.(*route.Applier)
		if observed {
			ra.SetObserver(c)
		}
		return g.ForPipeline(c, observed)
	}
}

// partitionKeyer computes repartition keys. Not safe for concurrent use.
type partitionKeyer struct {
	s   *kanon.Stage
	rec kanon.Record
	buf []byte
}

// appendKey appends the 8-byte xxhash of out's class at the partition
// level; an output the stage cannot read fails as it would in the stage.
func (k *partitionKeyer) appendKey(dst, out []byte) ([]byte, error) {
	if err := k.s.Extract(&k.rec, out); err != nil {
		return dst, err
	}
	k.buf = k.s.AppendPartitionKey(k.buf[:0], &k.rec)
	k.rec.Payload = nil
	return binary.BigEndian.AppendUint64(dst, xxhash.Sum64(k.buf)), nil
}

// passApplier passes a repartition record on as it is: leg 1 applied the
// route's field rules already.
type passApplier struct{}

func (passApplier) Apply(dst, src []byte) ([]byte, error) { return append(dst, src...), nil }
func (passApplier) KeyID() string                         { return "" }

// repartStage is leg 2's k-anonymity stage for one repartition partition:
// the kanon stage over the claim's offsets, plus the deident-src of each
// held record, to name the source records in what it publishes.
type repartStage struct {
	kanonStage
	version []byte
	srcs    map[int64][]byte // held repartition offset -> deident-src of its source record
}

var _ pipeline.Stage = (*repartStage)(nil)

func (r *repartStage) Add(dst []pipeline.Decision, rec *pipeline.Record, out []byte) ([]pipeline.Decision, error) {
	var src, policy []byte
	for _, h := range rec.Headers {
		switch h.Key {
		case pipeline.HeaderSrc:
			src = h.Value
		case pipeline.HeaderPolicy:
			policy = h.Value
		}
	}
	if _, _, _, ok := splitSrc(src); !ok {
		return dst, fmt.Errorf("%s header: missing or malformed", pipeline.HeaderSrc)
	}
	if !bytes.Equal(policy, r.version) {
		return dst, fmt.Errorf("%w (%.40s, this worker runs %s)", errPolicyChanged, policy, r.version)
	}
	r.srcs[rec.Offset] = bytes.Clone(src)
	dst, err := r.kanonStage.Add(dst, rec, out)
	if err != nil {
		delete(r.srcs, rec.Offset)
	}
	return dst, err
}

// prov names the source records o decides (a Release's deident-src, an
// Aggregate's deident-spans) and forgets them.
func (r *repartStage) prov(o *kanon.Output) []byte {
	defer func() {
		for _, p := range o.Offsets {
			delete(r.srcs, p.Offset)
		}
	}()
	switch o.Kind {
	case kanon.Released:
		if len(o.Offsets) == 1 {
			return r.srcs[o.Offsets[0].Offset]
		}
	case kanon.Aggregate:
		var spans []kanon.Span
		for _, p := range o.Offsets {
			topic, part, off, ok := splitSrc(r.srcs[p.Offset])
			if !ok {
				continue
			}
			spans = addSpan(spans, topic, part, off)
		}
		var b []byte
		for i, sp := range spans {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, "%s/%d/%d-%d:%d", sp.Topic, sp.Partition, sp.First, sp.Last, sp.Count)
		}
		return b
	}
	return nil
}

func addSpan(spans []kanon.Span, topic string, part int, off int64) []kanon.Span {
	for i := range spans {
		if sp := &spans[i]; sp.Topic == topic && sp.Partition == part {
			sp.First, sp.Last, sp.Count = min(sp.First, off), max(sp.Last, off), sp.Count+1
			return spans
		}
	}
	return append(spans, kanon.Span{Topic: topic, Partition: part, First: off, Last: off, Count: 1})
}

// splitSrc splits a deident-src value "topic/partition/offset".
func splitSrc(src []byte) (topic string, part int, off int64, ok bool) {
	j := bytes.LastIndexByte(src, '/')
	if j <= 0 {
		return "", 0, 0, false
	}
	i := bytes.LastIndexByte(src[:j], '/')
	if i <= 0 {
		return "", 0, 0, false
	}
	p, err1 := strconv.Atoi(string(src[i+1 : j]))
	o, err2 := strconv.ParseInt(string(src[j+1:]), 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return string(src[:i]), p, o, true
}
