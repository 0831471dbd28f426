package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/gen"
)

// avroConfig is a workflow route that uses every action on every Avro type
// the workflow schema has (records, a nested record, an array of records, a
// map, nullable unions, an enum, timestamp-millis, doubles, free text).
const avroConfig = `
sources:
  workflow:
    topic: workflow.events
    category: workflow_metadata
    format: avro
vendors:
  flowai:
    purpose: workflow-optimization
    categories: [workflow_metadata]
    output: avro
    keys: [{env: DEIDENT_TEST_AVRO_KEY}]
    gate: {patterns: []}
    fields:
      - {path: time, action: generalize, time_bucket: 1h}
      - {path: workflow_id, action: pseudonymize, namespace: workflow, prefix: wf_}
      - {path: step, action: keep}
      - {path: duration_ms, action: generalize, numeric_bucket: {edges: [60000, 3600000, 86400000]}}
      - {path: invoice.id, action: drop}
      - {path: invoice.amount, action: generalize, numeric_bucket: {width: 1000}}
      - {path: invoice.currency, action: keep}
      - path: invoice.supplier
        action: generalize
        map: {entries: [{from: Globex Ltd, to: globex}], default: other}
      - {path: approver.name, action: pseudonymize, namespace: user, prefix: usr_}
      - {path: approver.email, action: email_split, namespace: user_email, normalize: email}
      - path: approver.role
        action: generalize
        map: {entries: [{from: cfo, to: executive}, {from: controller, to: executive}], default: staff}
      - {path: approver.ip, action: ip_truncate}
      - {path: comment, action: drop}
      - {path: "attachments[].name", action: pseudonymize, namespace: file}
      - {path: "attachments[].size_bytes", action: generalize, numeric_bucket: {width: 100000}}
      - {path: labels.region, action: keep}
      - {path: labels.cost_center, action: pseudonymize, namespace: cc}
      - {path: paid_at, action: generalize, time_bucket: 1d}
`

// fastavroPlain is the Python both fastavro scripts share: plain(v) turns a
// decoded value into JSON's types, timestamps as epoch milliseconds.
const fastavroPlain = `import fastavro
def plain(v):
    if isinstance(v, datetime.datetime):
        return int(round(v.timestamp() * 1000))
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v
`

// fastavroScript decodes an Avro container file with fastavro (an
// independent implementation) and prints its writer schema, then one JSON
// record per line, timestamps as epoch milliseconds.
const fastavroScript = `
import datetime, json, sys
` + fastavroPlain + `with open(sys.argv[1], "rb") as f:
    r = fastavro.reader(f)
    print(json.dumps(r.writer_schema))
    for rec in r:
        print(json.dumps(plain(rec)))
`

// fastavroRead runs fastavroScript on path; it skips the test when python3
// or fastavro is missing.
func fastavroRead(t *testing.T, path string) (schema map[string]any, recs []map[string]any) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found; the independent Avro reader (fastavro) needs it")
	}
	if err := exec.Command(py, "-c", "import fastavro").Run(); err != nil {
		t.Skip("python3 has no fastavro: python3 -m pip install fastavro")
	}
	script := filepath.Join(t.TempDir(), "read.py")
	if err := os.WriteFile(script, []byte(fastavroScript), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, script, path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("fastavro could not read %s: %v\n%s", path, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for i := 0; sc.Scan(); i++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("fastavro line %d: %v", i, err)
		}
		if i == 0 {
			schema = m
			continue
		}
		recs = append(recs, m)
	}
	return schema, recs
}

func readJSONLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	return recs
}

func writeAvroConfig(t *testing.T) (dir, cfg string) {
	t.Helper()
	t.Setenv("DEIDENT_TEST_AVRO_KEY", strings.Repeat("c3", 32))
	dir = t.TempDir()
	cfg = filepath.Join(dir, "deident.yaml")
	if err := os.WriteFile(cfg, []byte(avroConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// TestApplyAvroRoundTrip: generated workflow events (an Avro container)
// through a route with every action, written as Avro; fastavro decodes the
// output, and it must equal what the same route writes as JSON. fastavro
// must also read the generator's file as the events the generator makes.
func TestApplyAvroRoundTrip(t *testing.T) {
	dir, cfg := writeAvroConfig(t)
	in := filepath.Join(dir, "in.avro")
	if _, err := run(t, "gen", "--kind", "workflow", "--format", "avro", "--count", "400", "--seed", "3", "-o", in); err != nil {
		t.Fatal(err)
	}

	// The generator's file, read by fastavro, is the generator's events.
	_, inRecs := fastavroRead(t, in)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 3, Users: 5000})
	if len(inRecs) != 400 {
		t.Fatalf("fastavro read %d generated records, want 400", len(inRecs))
	}
	for i, got := range inRecs {
		var want map[string]any
		_ = json.Unmarshal(g.AppendWorkflowAvroJSON(nil), &want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("generated record %d: fastavro reads\n%v\nwant\n%v", i, got, want)
		}
	}

	outAvro := filepath.Join(dir, "out.avro")
	if _, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--source", "workflow", "--in", in, "--out", outAvro); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(dir, "again.avro")
	if _, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--in", in, "--out", again); err != nil {
		t.Fatal(err) // without --source: the container magic says avro
	}
	a, _ := os.ReadFile(outAvro)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Fatal("the same input, config and key gave different Avro bytes")
	}

	t.Setenv("DEIDENT_VENDORS_FLOWAI_OUTPUT", "json")
	outJSON := filepath.Join(dir, "out.jsonl")
	if _, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--in", in, "--out", outJSON); err != nil {
		t.Fatal(err)
	}
	want := readJSONLines(t, outJSON)
	schema, got := fastavroRead(t, outAvro)
	if len(got) != len(want) || len(got) != 400 {
		t.Fatalf("fastavro read %d records, the JSON output has %d, want 400", len(got), len(want))
	}
	for i := range got {
		if _, ok := want[i]["labels"]; !ok {
			want[i]["labels"] = nil // a map addressed by key: null when no named key is there
		}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("record %d: fastavro reads\n%v\nthe JSON route wrote\n%v", i, got[i], want[i])
		}
	}
	// The output schema as fastavro sees it.
	s, _ := json.Marshal(schema)
	for _, frag := range []string{
		`"name":"deident.flowai.WorkflowEvent"`,
		`"name":"time","type":{"logicalType":"timestamp-millis","type":"long"}}`,
		`{"default":null,"name":"email","type":["null","string"]}`,
		`{"default":null,"name":"paid_at","type":["null",{"logicalType":"timestamp-millis","type":"long"}]}`,
		`"symbols":["received","coded","approved","rejected","escalated","paid"]`,
	} {
		if !bytes.Contains(s, []byte(frag)) {
			t.Errorf("output schema lacks %s:\n%s", frag, s)
		}
	}
	for _, gone := range []string{`"comment"`, `"unit_price"`, `"INV-`} {
		if bytes.Contains(s, []byte(gone)) || bytes.Contains(a, []byte(gone)) {
			t.Errorf("output holds %s, which no rule exports", gone)
		}
	}
}

// TestApplyAvroRejects: records the route cannot de-identify are rejected
// with their record number and reason, never the value; the rest go on.
func TestApplyAvroRejects(t *testing.T) {
	dir, cfg := writeAvroConfig(t)
	s, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.avro")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	w, err := avrocodec.NewOCFWriter(f, s, [16]byte{9}, "null")
	if err != nil {
		t.Fatal(err)
	}
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 5})
	for i := 1; i <= 6; i++ {
		rec := g.AppendWorkflowAvroJSON(nil)
		switch i {
		case 2:
			rec = regexpReplace(rec, `"ip":"[^"]*"`, `"ip":"SECRET-not-an-ip"`)
		case 4:
			rec = regexpReplace(rec, `"email":("[^"]*"|null)`, `"email":"SECRET-no-at-sign"`)
		}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(dir, "out.avro")
	_, err = run(t, "apply", "--config", cfg, "--route", "flowai", "--in", in, "--out", out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitRejected || !strings.Contains(err.Error(), "2 of 6 records rejected") {
		t.Fatalf("exit: %v", err)
	}
	rej, _ := os.ReadFile(out + ".rejects.jsonl")
	if bytes.Contains(rej, []byte("SECRET")) {
		t.Fatalf("rejects hold a value:\n%s", rej)
	}
	for _, want := range []string{`"line":2,`, "approver.ip: not an IP address", `"line":4,`, "approver.email: not an e-mail address"} {
		if !bytes.Contains(rej, []byte(want)) {
			t.Errorf("rejects lack %q:\n%s", want, rej)
		}
	}
	_, recs := fastavroRead(t, out)
	if len(recs) != 4 {
		t.Fatalf("%d records out, want 4", len(recs))
	}
}

func TestApplyAvroOutputNeedsAvroInput(t *testing.T) {
	dir, cfg := writeAvroConfig(t)
	in := filepath.Join(dir, "in.jsonl")
	if _, err := run(t, "gen", "--kind", "workflow", "--count", "3", "-o", in); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "apply", "--config", cfg, "--route", "flowai", "--in", in, "--out", filepath.Join(dir, "out.avro"))
	if err == nil || !strings.Contains(err.Error(), "needs Avro input: a container file, or plain bodies") {
		t.Fatalf("got %v", err)
	}
	_, err = run(t, "apply", "--config", cfg, "--route", "flowai", "--source", "workflow", "--in", in, "--out", filepath.Join(dir, "out.avro"))
	if err == nil || !strings.Contains(err.Error(), "avro container header") {
		t.Fatalf("JSON input for an avro source: got %v", err)
	}
}

func regexpReplace(b []byte, expr, repl string) []byte {
	return regexpMust(expr).ReplaceAll(b, []byte(repl))
}

func regexpMust(expr string) *regexp.Regexp { return regexp.MustCompile(expr) }
