package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/avrocodec/registrytest"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

// avroRunConfig is avroConfig (every action on every Avro type of the
// workflow schema) for run: the source reads the Confluent wire format
// through reg, the route writes it, with unique topics on brokers. reg is
// registrytest.Open's: the real registry of DEIDENT_SCHEMA_REGISTRY_URL
// when it is set (which ignores the credentials), else the fake (which
// requires them).
func avroRunConfig(t *testing.T, brokers []string, reg *registrytest.Registry) *config.Config {
	t.Helper()
	t.Setenv("DEIDENT_TEST_AVRO_KEY", strings.Repeat("c3", 32))
	t.Setenv(config.RegistryUserEnv, "svc")
	t.Setenv(config.RegistryPasswordEnv, "hunter22")
	reg.RequireAuth("svc", "hunter22")
	cfg, err := config.Parse([]byte(avroConfig+"kafka:\n  schema_registry: "+reg.URL+"\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.GroupID = kafkatest.Topic(t, "deident-group")
	cfg.Kafka.DeadLetterTopic = kafkatest.Topic(t, "dead-letter")
	cfg.Kafka.QuarantineTopic = kafkatest.Topic(t, "quarantine")
	cfg.Kafka.BatchTimeout = 5 * time.Millisecond
	cfg.Kafka.MetricsAddr = "off"
	cfg.Kafka.ShutdownGrace = 10 * time.Second
	kafkatest.CreateTopic(t, brokers, cfg.Kafka.DeadLetterTopic, 1)
	kafkatest.CreateTopic(t, brokers, cfg.Kafka.QuarantineTopic, 1)
	s := cfg.Sources["workflow"]
	s.Topic = kafkatest.Topic(t, "workflow-avro")
	cfg.Sources["workflow"] = s
	kafkatest.CreateTopic(t, brokers, s.Topic, testPartitions)
	v := cfg.Vendors["flowai"]
	v.Topic = kafkatest.Topic(t, "vendor-flowai")
	cfg.Vendors["flowai"] = v
	kafkatest.CreateTopic(t, brokers, v.Topic, testPartitions)
	return cfg
}

// workflowV2 is the workflow schema with a field the policy does not name.
var workflowV2 = strings.Replace(configs.WorkflowSchema, `"fields": [`,
	`"fields": [{"name": "internal_note", "type": "string", "default": ""},`, 1)

// TestRunAvro runs Confluent wire-format workflow records through the
// worker: good records under two writer schemas (the second adds a field
// the policy does not name) reach the vendor topic in the wire format
// under the derived schema registered as <topic>-value; a record whose
// schema id the registry does not know, a truncated body, a body that does
// not match its schema and a value that is not the wire format are
// dead-lettered at stage decode with the reason, and the worker goes on.
func TestRunAvro(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, brokers, reg)
	v1, v2 := reg.Add(configs.WorkflowSchema), reg.Add(workflowV2)
	s1, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := avrocodec.ParseSchema(workflowV2)
	if err != nil {
		t.Fatal(err)
	}
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 11})
	var values, inputs [][]byte // inputs: the JSON of the good values
	for i := range 40 {
		rec := g.AppendWorkflowAvroJSON(nil)
		enc := avrocodec.Encoder{Schema: s1, ID: v1}
		if i%2 == 1 {
			rec = append([]byte(`{"internal_note":"do not share",`), rec[1:]...)
			enc = avrocodec.Encoder{Schema: s2, ID: v2}
		}
		msg, err := enc.Append(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		values, inputs = append(values, msg), append(inputs, rec)
	}
	good := values[0]
	bad := map[string]string{ // value -> reason the dead letter must give
		string(append(avrocodec.AppendWire(nil, registrytest.UnknownID), good[5:]...)): fmt.Sprintf("schema id %d: schema id unknown to the registry", registrytest.UnknownID),
		string(good[:len(good)/2]):                                      "the body ends early (truncated)",
		string(append(append([]byte{}, good...), 0x02, 0x04)):           "2 bytes left after the record",
		string(append(avrocodec.AppendWire(nil, v1), 0x0b, 0x0c, 0x0d)): "does not match the schema",
		`{"json":"not the wire format"}`:                                "not the confluent wire format",
	}
	for v := range bad {
		values = append(values, []byte(v))
	}
	produce(t, brokers, cfg.Sources["workflow"].Topic, values)

	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	// Dead letters: the original bytes, stage decode, the reason; no value.
	dl := readAll(t, brokers, cfg.Kafka.DeadLetterTopic, 1)
	checkDecodeDeadLetters(t, dl, bad)
	for _, m := range dl {
		h := headers(m)
		if strings.Contains(h[pipeline.HeaderError], "hunter22") || strings.Contains(h[pipeline.HeaderError], "alice") {
			t.Errorf("reason %q shows a credential or a value", h[pipeline.HeaderError])
		}
	}

	// Vendor records: the wire format under the registered output schema,
	// holding what the route makes of the input, and nothing of the new field.
	out, outID := outputSchema(t, reg, cfg, "flowai", " (both writer schemas derive the same output schema)")
	if out.Root.Field("internal_note") != nil {
		t.Fatal("the output schema has the field the policy does not name")
	}
	want := expectedAvro(t, cfg, inputs)
	vend := readAll(t, brokers, cfg.Vendors["flowai"].Topic, testPartitions)
	if len(vend) != len(inputs) {
		t.Fatalf("%d vendor records, want %d", len(vend), len(inputs))
	}
	for _, m := range vend {
		id, body, err := avrocodec.ParseWire(m.Value)
		if err != nil || id != uint32(outID) {
			t.Fatalf("vendor record: schema id %d (%v), want %d", id, err, outID)
		}
		// goavro reads it with the registered schema, to the last byte.
		if _, rest, err := out.Codec.NativeFromBinary(body); err != nil || len(rest) > 0 {
			t.Fatalf("goavro cannot read the vendor record: %v (%d bytes left)", err, len(rest))
		}
		got, err := out.AppendJSON(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(got, []byte("do not share")) || bytes.Contains(got, []byte("internal_note")) {
			t.Fatalf("vendor record holds the unnamed field: %s", got)
		}
		if !want[canonical(t, got)] {
			t.Fatalf("vendor record %s is none of the route's outputs", got)
		}
		if h := headers(m); h[pipeline.HeaderSrc] == "" || h[pipeline.HeaderPolicy] == "" {
			t.Fatalf("vendor record without provenance headers: %v", h)
		}
	}
	c := rw.w.runner.Counters()
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	if c.Worker.DeadLettered.Load() != uint64(len(bad)) || c.Routes["flowai"].Out.Load() != uint64(len(inputs)) {
		t.Errorf("dead_lettered %d out %d, want %d and %d", c.Worker.DeadLettered.Load(), c.Routes["flowai"].Out.Load(), len(bad), len(inputs))
	}
}

// TestRunAvroRegistryDown: while the registry is down every record is
// dead-lettered with the reason and the worker goes on; once it is back,
// records decode (nothing about the outage is remembered).
func TestRunAvroRegistryDown(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, brokers, reg)
	id := reg.Add(configs.WorkflowSchema)
	s, _ := avrocodec.ParseSchema(configs.WorkflowSchema)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 12})
	batch := func(n int) [][]byte {
		var out [][]byte
		for range n {
			msg, err := (&avrocodec.Encoder{Schema: s, ID: id}).Append(nil, g.AppendWorkflowAvroJSON(nil))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, msg)
		}
		return out
	}
	reg.Down.Store(true)
	produce(t, brokers, cfg.Sources["workflow"].Topic, batch(5))
	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	for _, m := range readAll(t, brokers, cfg.Kafka.DeadLetterTopic, 1) {
		if h := headers(m); h[pipeline.HeaderStage] != "decode" || !strings.Contains(h[pipeline.HeaderError], "schema registry unavailable") {
			t.Fatalf("dead letter headers %v, want stage decode, registry unavailable", h)
		}
	}
	reg.Down.Store(false)
	produce(t, brokers, cfg.Sources["workflow"].Topic, batch(5))
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)
	c := rw.w.runner.Counters()
	if c.Worker.DeadLettered.Load() != 5 || c.Routes["flowai"].Out.Load() != 5 {
		t.Fatalf("dead_lettered %d, out %d; want 5 and 5", c.Worker.DeadLettered.Load(), c.Routes["flowai"].Out.Load())
	}
	if err := c.Check(); err != nil {
		t.Error(err)
	}
}

// TestRunAvroConfigErrors: what run refuses at start-up.
func TestRunAvroConfigErrors(t *testing.T) {
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, kafkatest.Brokers(t), reg)
	noReg := *cfg
	noReg.Kafka.SchemaRegistry = ""
	_, err := newWorker(&noReg, testLogger(t), workerOptions{})
	for _, want := range []string{
		"sources.workflow.format: avro needs kafka.schema_registry",
		"vendors.flowai.output: avro needs kafka.schema_registry",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("without a registry: %v; want %q", err, want)
		}
	}
	mixed := *cfg
	mixed.Sources = map[string]config.Source{
		"workflow": cfg.Sources["workflow"],
		"json":     {Topic: "wf.json", Category: config.WorkflowMetadata, Format: config.JSON},
	}
	if _, err := newWorker(&mixed, testLogger(t), workerOptions{}); err == nil || !strings.Contains(err.Error(), "category workflow_metadata comes from a json source") {
		t.Errorf("avro route fed by a JSON source: %v", err)
	}
}

// outputSchema returns the one schema registered for route's vendor
// topic and its id; why says why there must be one.
func outputSchema(t *testing.T, reg *registrytest.Registry, cfg *config.Config, route, why string) (*avrocodec.Schema, int) {
	t.Helper()
	subject := avrocodec.ValueSubject(cfg.Vendors[route].Topic)
	ids := reg.Subject(subject)
	if len(ids) != 1 {
		t.Fatalf("subject %s has versions %v, want one%s", subject, ids, why)
	}
	out, err := avrocodec.ParseSchema(reg.Schema(ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	return out, ids[0]
}

// expectedAvro returns the route's outputs for the inputs, canonical.
func expectedAvro(t *testing.T, cfg *config.Config, inputs [][]byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, o := range routeOutputs(t, cfg, inputs) {
		out[o] = true
	}
	return out
}

// routeOutputs returns the flowai route's JSON output for each input, in
// order, canonical: what the route writes when its output is json.
func routeOutputs(t *testing.T, cfg *config.Config, inputs [][]byte) []string {
	t.Helper()
	r, err := route.Compile("flowai", cfg.Vendors["flowai"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	a := r.NewApplier()
	s1, _ := avrocodec.ParseSchema(configs.WorkflowSchema)
	s2, _ := avrocodec.ParseSchema(workflowV2)
	var out []string
	for _, in := range inputs {
		// As the worker sees it: decoded from Avro, in schema order.
		s := s1
		if bytes.Contains(in, []byte("internal_note")) {
			s = s2
		}
		body, err := s.AppendBinary(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		js, err := s.AppendJSON(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		o, err := a.Apply(nil, js)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, canonical(t, o))
	}
	return out
}

func canonical(t *testing.T, js []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// checkDecodeDeadLetters checks that dl holds exactly the bad values (by
// their bytes), each dead-lettered at stage decode with a reason containing
// bad's text for it.
func checkDecodeDeadLetters(t *testing.T, dl []kafka.Message, bad map[string]string) {
	t.Helper()
	if len(dl) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bad))
	}
	for _, m := range dl {
		h := headers(m)
		reason, ok := bad[string(m.Value)]
		if !ok {
			t.Errorf("dead letter of a value not produced as bad: %x", m.Value)
			continue
		}
		if h[pipeline.HeaderStage] != "decode" || !strings.Contains(h[pipeline.HeaderError], reason) {
			t.Errorf("dead letter headers %v, want stage decode and a reason containing %q", h, reason)
		}
	}
}
