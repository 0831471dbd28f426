package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/avrocodec/registrytest"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
)

// schemaFileConfig is avroConfig with a second source whose records are
// plain Avro bodies read with the workflow schema file.
func schemaFileConfig(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir, cfg = writeAvroConfig(t)
	if err := os.WriteFile(filepath.Join(dir, "workflow.avsc"), []byte(configs.WorkflowSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(avroConfig, "vendors:", `  plain:
    topic: workflow.plain
    category: workflow_metadata
    format: avro
    schema_file: workflow.avsc
vendors:`, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// plainBodies returns n generated workflow records as plain Avro bodies and
// as the JSON they were made from.
func plainBodies(t *testing.T, seed uint64, n int) (bodies, inputs [][]byte) {
	t.Helper()
	s, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		t.Fatal(err)
	}
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: seed})
	for range n {
		rec := g.AppendWorkflowAvroJSON(nil)
		b, err := s.AppendBinary(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		bodies, inputs = append(bodies, b), append(inputs, rec)
	}
	return bodies, inputs
}

// apply --source with a schema file reads plain bodies back to back and
// writes exactly what it writes for the same records in a container file;
// a body that does not match stops it with the body's number.
func TestApplySchemaFile(t *testing.T) {
	dir, cfg := schemaFileConfig(t)
	bodies, inputs := plainBodies(t, 21, 60)
	plain := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(plain, bytes.Join(bodies, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	ocf := filepath.Join(dir, "in.avro")
	f, _ := os.Create(ocf)
	s, _ := avrocodec.ParseSchema(configs.WorkflowSchema)
	w, err := avrocodec.NewOCFWriter(f, s, [16]byte{1}, "null")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range inputs {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	fromPlain, fromOCF := filepath.Join(dir, "plain.avro"), filepath.Join(dir, "ocf.avro")
	if _, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--source", "plain", "--in", plain, "--out", fromPlain); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--source", "workflow", "--in", ocf, "--out", fromOCF); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(fromPlain)
	b, _ := os.ReadFile(fromOCF)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("plain bodies gave %d bytes, the container %d, not the same", len(a), len(b))
	}

	bad := append(append(bytes.Join(bodies[:3], nil), 0x0b, 0x0c, 0x0d), bodies[3]...)
	if err := os.WriteFile(plain, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = run(t, "apply", "--config", cfg, "--route", "flowai", "--source", "plain", "--in", plain, "--out", fromPlain)
	if err == nil || !strings.Contains(err.Error(), "avro body 4") {
		t.Fatalf("a body that does not match: %v", err)
	}
}

// A schema file that is not an Avro record schema is refused at start-up
// with its key path, by check, apply and run alike.
func TestSchemaFileInvalid(t *testing.T) {
	dir, cfg := schemaFileConfig(t)
	for text, want := range map[string]string{
		`{"type":"record","name":"R","fields":[{"name":"a","type":"nosuch"}]}`: "invalid avro schema",
		`"string"`: "the schema is a string, want a record",
	} {
		if err := os.WriteFile(filepath.Join(dir, "workflow.avsc"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"check", "--config", cfg},
			{"apply", "--config", cfg, "--route", "flowai", "--source", "plain", "--in", os.DevNull},
		} {
			_, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), "sources.plain.schema_file: workflow.avsc: ") || !strings.Contains(err.Error(), want) {
				t.Errorf("%s with %s: %v; want %q", args[0], text, err, want)
			}
		}
		c, err := config.Load(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Kafka.Brokers = []string{"127.0.0.1:1"}
		if _, err := newWorker(c, testLogger(t), workerOptions{}); err == nil || !strings.Contains(err.Error(), "sources.plain.schema_file") {
			t.Errorf("run with %s: %v", text, err)
		}
	}
}

// TestRunSchemaFile: a topic of plain Avro bodies (no Confluent header)
// read with the source's schema file. Good bodies reach the vendor topic in
// the wire format under the derived schema; a body that does not match the
// schema, one cut short, one with bytes left over and a wire-format record
// are dead-lettered at stage decode with the reason, and the worker goes on.
func TestRunSchemaFile(t *testing.T) {
	_, cfgPath := schemaFileConfig(t)
	loaded, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	brokers := kafkatest.Brokers(t)
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, brokers, reg)
	src := loaded.Sources["plain"]
	src.Topic = kafkatest.Topic(t, "workflow-plain")
	kafkatest.CreateTopic(t, brokers, src.Topic, testPartitions)
	cfg.Sources = map[string]config.Source{"plain": src}

	bodies, inputs := plainBodies(t, 23, 30)
	s, _ := avrocodec.ParseSchema(configs.WorkflowSchema)
	wire, _ := (&avrocodec.Encoder{Schema: s, ID: 1}).Append(nil, inputs[0])
	good := bodies[0]
	bad := map[string]string{ // value -> reason the dead letter must give
		string(append([]byte{0x0b, 0x0c, 0x0d}, good[3:]...)): "sources.plain.schema_file",
		string(good[:len(good)/2]):                            "the body ends early (truncated)",
		string(append(append([]byte{}, good...), 0x02, 0x04)): "2 bytes left after the record",
		string(wire): "decoding avro body with the schema of sources.plain.schema_file",
	}
	values := append([][]byte{}, bodies...)
	for v := range bad {
		values = append(values, []byte(v))
	}
	produce(t, brokers, src.Topic, values)

	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	dl := readAll(t, brokers, cfg.Kafka.DeadLetterTopic, 1)
	checkDecodeDeadLetters(t, dl, bad)
	out, outID := outputSchema(t, reg, cfg, "flowai", "")
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
		got, err := out.AppendJSON(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if !want[canonical(t, got)] {
			t.Fatalf("vendor record %s is none of the route's outputs", got)
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
