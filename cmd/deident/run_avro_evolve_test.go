package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/avrocodec/registrytest"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
)

// workflowValues returns n generated workflow records in the wire format
// under schema text registered as id, and the JSON they were made from; v2
// records carry the field the policy does not name.
func workflowValues(t *testing.T, g *gen.Generator, text string, id uint32, n int) (values, inputs [][]byte) {
	t.Helper()
	s, err := avrocodec.ParseSchema(text)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		rec := g.AppendWorkflowAvroJSON(nil)
		if text == workflowV2 {
			rec = append([]byte(`{"internal_note":"do not share",`), rec[1:]...)
		}
		msg, err := (&avrocodec.Encoder{Schema: s, ID: id}).Append(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		values, inputs = append(values, msg), append(inputs, rec)
	}
	return values, inputs
}

// TestRunAvroSchemaEvolution: a second writer schema, registered while the
// worker runs and adding a field the policy does not name, is picked up
// without a restart; its records come out default-deny (no trace of the
// new field) under the same output schema, which is not registered again.
func TestRunAvroSchemaEvolution(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, brokers, reg)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 31})
	v1 := reg.Add(configs.WorkflowSchema)
	first, in1 := workflowValues(t, g, configs.WorkflowSchema, v1, 15)
	produce(t, brokers, cfg.Sources["workflow"].Topic, first)
	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	gets := reg.Gets.Load()

	v2 := reg.Add(workflowV2) // mid-stream, the worker running
	second, in2 := workflowValues(t, g, workflowV2, v2, 15)
	produce(t, brokers, cfg.Sources["workflow"].Topic, second)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	if n := reg.Gets.Load() - gets; n != 1 {
		t.Errorf("%d registry lookups for the new writer schema, want 1", n)
	}
	out, _ := outputSchema(t, reg, cfg, "flowai", "")
	want := expectedAvro(t, cfg, append(in1, in2...))
	vend := readAll(t, brokers, cfg.Vendors["flowai"].Topic, testPartitions)
	if len(vend) != len(in1)+len(in2) {
		t.Fatalf("%d vendor records, want %d", len(vend), len(in1)+len(in2))
	}
	for _, m := range vend {
		_, body, _ := avrocodec.ParseWire(m.Value)
		got, err := out.AppendJSON(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(m.Value, []byte("do not share")) || bytes.Contains(got, []byte("internal_note")) {
			t.Fatalf("vendor record holds the field the policy does not name: %s", got)
		}
		if !want[canonical(t, got)] {
			t.Fatalf("vendor record %s is none of the route's outputs", got)
		}
	}
	c := rw.w.runner.Counters()
	if c.Worker.DeadLettered.Load() != 0 || c.Routes["flowai"].Out.Load() != 30 {
		t.Errorf("dead_lettered %d, out %d; want 0 and 30", c.Worker.DeadLettered.Load(), c.Routes["flowai"].Out.Load())
	}
}

// fastavroWireScript decodes Confluent wire-format values (hex, one per
// line on stdin) with fastavro, fetching each writer schema by its id from
// the registry at argv[1], and prints one JSON record per line, timestamps
// as epoch milliseconds.
const fastavroWireScript = `
import datetime, io, json, struct, sys, urllib.request
` + fastavroPlain + `schemas = {}
for line in sys.stdin:
    msg = bytes.fromhex(line.strip())
    magic, sid = struct.unpack(">bI", msg[:5])
    assert magic == 0, "magic byte %d" % magic
    if sid not in schemas:
        with urllib.request.urlopen("%s/schemas/ids/%d" % (sys.argv[1], sid)) as r:
            schemas[sid] = fastavro.parse_schema(json.loads(json.load(r)["schema"]))
    body = io.BytesIO(msg[5:])
    rec = fastavro.schemaless_reader(body, schemas[sid])
    assert body.read() == b"", "bytes left after the record"
    print(json.dumps(plain(rec)))
`

// TestRunAvroFastavro: the vendor topic's Avro output, read by fastavro (an
// independent Avro implementation) with the schema the registry holds for
// each record's id, is exactly what the route writes as JSON for the same
// inputs (compared as multisets; field order and number spelling aside).
func TestRunAvroFastavro(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found; the independent Avro reader (fastavro) needs it")
	}
	if err := exec.Command(py, "-c", "import fastavro").Run(); err != nil {
		t.Skip("python3 has no fastavro: python3 -m pip install fastavro")
	}
	brokers := kafkatest.Brokers(t)
	reg := registrytest.Open(t)
	cfg := avroRunConfig(t, brokers, reg)
	reg.RequireAuth("", "") // the script reads the registry without credentials
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 41})
	v1, v2 := reg.Add(configs.WorkflowSchema), reg.Add(workflowV2)
	a, in1 := workflowValues(t, g, configs.WorkflowSchema, v1, 60)
	b, in2 := workflowValues(t, g, workflowV2, v2, 60)
	produce(t, brokers, cfg.Sources["workflow"].Topic, append(a, b...))
	rw := startWorker(t, cfg)
	waitCommitted(t, cfg, 25*time.Second)
	rw.shutdown(t)

	vend := readAll(t, brokers, cfg.Vendors["flowai"].Topic, testPartitions)
	var stdin bytes.Buffer
	for _, m := range vend {
		stdin.WriteString(hex.EncodeToString(m.Value) + "\n")
	}
	script := filepath.Join(t.TempDir(), "wire.py")
	if err := os.WriteFile(script, []byte(fastavroWireScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, reg.URL)
	cmd.Stdin = &stdin
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("fastavro could not read the vendor topic: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("fastavro line: %v", err)
		}
		got = append(got, canonicalAny(t, m))
	}
	var want []string
	for _, js := range routeOutputs(t, cfg, append(in1, in2...)) {
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			t.Fatal(err)
		}
		if _, ok := m["labels"]; !ok {
			m["labels"] = nil // a map addressed by key: null when no named key is there
		}
		want = append(want, canonicalAny(t, m))
	}
	sort.Strings(got)
	sort.Strings(want)
	if len(got) != 120 || !reflect.DeepEqual(got, want) {
		t.Fatalf("fastavro read %d records, the route's JSON has %d; first difference:\n%s", len(got), len(want), firstDiff(got, want))
	}
}

func canonicalAny(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return "fastavro: " + got[i] + "\nroute:    " + want[i]
		}
	}
	return "(one list is a prefix of the other)"
}
