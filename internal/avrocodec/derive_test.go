package avrocodec_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/transforms/route"
)

// workflowRules exercises every action on every Avro type of the workflow
// schema: records, a nested record, an array of records, a map, nullable
// unions, an enum, a timestamp-millis long, doubles and free text.
const workflowRules = `
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
      - {path: approver.ip, action: ip_prefix_preserving}
      - {path: comment, action: drop}
      - {path: "attachments[].name", action: pseudonymize, namespace: file}
      - {path: "attachments[].size_bytes", action: generalize, numeric_bucket: {width: 100000}}
      - {path: labels.region, action: keep}
      - {path: labels.cost_center, action: pseudonymize, namespace: cc}
      - {path: paid_at, action: generalize, time_bucket: 1d}
`

func compileRoute(t testing.TB, name, rules string) *route.Route {
	t.Helper()
	t.Setenv("TEST_AVRO_KEY", strings.Repeat("5a", 32))
	yaml := "vendors:\n  " + name + ":\n    purpose: test\n    categories: [workflow_metadata]\n    output: avro\n    keys: [{env: TEST_AVRO_KEY}]\n    fields:\n" + rules
	cfg, err := config.Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.Compile(name, cfg.Vendors[name], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fieldTypes(t *testing.T, s *avrocodec.Schema) map[string]string {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal([]byte(s.Text), &root); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, typ any)
	walk = func(prefix string, typ any) {
		b, _ := json.Marshal(typ)
		if m, ok := typ.(map[string]any); ok && m["type"] == "record" {
			for _, f := range m["fields"].([]any) {
				fm := f.(map[string]any)
				walk(prefix+fm["name"].(string)+".", fm["type"])
			}
			if prefix != "" {
				out[strings.TrimSuffix(prefix, ".")] = "record"
			}
			return
		}
		if m, ok := typ.(map[string]any); ok && m["type"] == "array" {
			if im, ok := m["items"].(map[string]any); ok && im["type"] == "record" {
				walk(strings.TrimSuffix(prefix, ".")+"[].", im)
				return
			}
		}
		out[strings.TrimSuffix(prefix, ".")] = string(b)
	}
	walk("", root)
	return out
}

func TestDeriveWorkflow(t *testing.T) {
	r := compileRoute(t, "flow-ai", workflowRules)
	out, warnings, err := avrocodec.Derive(workflowSchema(t), r.Name, r.Config.Fields)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	want := map[string]string{
		"time":                     `{"logicalType":"timestamp-millis","type":"long"}`,
		"workflow_id":              `"string"`,
		"step":                     `{"name":"com.deident.workflow.Step","symbols":["received","coded","approved","rejected","escalated","paid"],"type":"enum"}`,
		"duration_ms":              `"string"`,
		"invoice":                  "record",
		"invoice.amount":           `"string"`,
		"invoice.currency":         `"string"`,
		"invoice.supplier":         `"string"`,
		"approver":                 "record",
		"approver.name":            `"string"`,
		"approver.email":           `["null","string"]`,
		"approver.role":            `"string"`,
		"approver.ip":              `"string"`,
		"attachments[]":            "record",
		"attachments[].name":       `"string"`,
		"attachments[].size_bytes": `"string"`,
		"labels":                   `["null",{"type":"map","values":"string"}]`,
		"paid_at":                  `["null",{"logicalType":"timestamp-millis","type":"long"}]`,
	}
	got := fieldTypes(t, out)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %s, want %s", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected output field %s: %s", k, got[k])
		}
	}
	if !strings.Contains(out.Text, `"name":"deident.flow_ai.WorkflowEvent"`) {
		t.Errorf("root record name: %s", out.Text)
	}
}

// Records decoded from Avro go through the compiled route and encode under
// the derived schema; decoding that gives back exactly the route's output.
func TestRouteThroughAvro(t *testing.T) {
	in := workflowSchema(t)
	r := compileRoute(t, "flowai", workflowRules)
	out, _, err := avrocodec.Derive(in, r.Name, r.Config.Fields)
	if err != nil {
		t.Fatal(err)
	}
	a := r.NewApplier()
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 11})
	var rec, body, decoded, applied, outBody, back []byte
	for i := range 500 {
		rec = g.AppendWorkflowAvroJSON(rec[:0])
		if body, err = in.AppendBinary(body[:0], rec); err != nil {
			t.Fatal(err)
		}
		if decoded, err = in.AppendJSON(decoded[:0], body); err != nil {
			t.Fatal(err)
		}
		if applied, err = a.Apply(applied[:0], decoded); err != nil {
			t.Fatalf("record %d: route: %v", i, err)
		}
		if outBody, err = out.AppendBinary(outBody[:0], applied); err != nil {
			t.Fatalf("record %d: encoding %s: %v", i, applied, err)
		}
		if back, err = out.AppendJSON(back[:0], outBody); err != nil {
			t.Fatal(err)
		}
		var gotM, wantM map[string]any
		_ = json.Unmarshal(back, &gotM)
		_ = json.Unmarshal(applied, &wantM)
		// A map addressed by key is null, not absent, when no named key is there.
		if _, ok := wantM["labels"]; !ok {
			wantM["labels"] = nil
		}
		gb, _ := json.Marshal(gotM)
		wb, _ := json.Marshal(wantM)
		jsonEqual(t, "through avro", gb, wb)
	}
}

func TestDeriveErrorsAndWarnings(t *testing.T) {
	in := workflowSchema(t)
	cases := []struct {
		name, rules string
		err, warn   string
	}{
		{"pseudonymize a long", "      - {path: duration_ms, action: pseudonymize}\n",
			"vendors.v.fields[0] (duration_ms): pseudonymize needs a string, the schema has long", ""},
		{"ip on a record", "      - {path: invoice, action: ip_truncate}\n",
			"ip_truncate needs a string, the schema has record com.deident.workflow.Invoice", ""},
		{"time bucket on a double", "      - {path: invoice.amount, action: generalize, time_bucket: 1h}\n",
			"time_bucket needs", ""},
		{"unknown field", "      - {path: invoice.iban, action: keep}\n      - {path: step, action: keep}\n",
			"", "invoice.iban: not in record com.deident.workflow.Invoice"},
		{"array expected", "      - {path: \"step[]\", action: keep}\n",
			"", "step: the rule expects an array"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := compileRoute(t, "v", c.rules)
			_, warnings, err := avrocodec.Derive(in, r.Name, r.Config.Fields)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(warnings, "\n"), c.warn) {
				t.Fatalf("warnings %v, want %q", warnings, c.warn)
			}
		})
	}
}

// Keeping a whole record writes it with every named type it uses, even one
// defined elsewhere in the input schema.
func TestDeriveKeepSubtree(t *testing.T) {
	in, err := avrocodec.ParseSchema(`{"type":"record","name":"R","namespace":"n","fields":[
		{"name":"a","type":{"type":"enum","name":"E","symbols":["x","y"]}},
		{"name":"b","type":{"type":"record","name":"B","fields":[{"name":"e","type":"E"},{"name":"f","type":["null","E"],"default":null}]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	r := compileRoute(t, "v", "      - {path: b, action: keep}\n")
	out, _, err := avrocodec.Derive(in, r.Name, r.Config.Fields)
	if err != nil {
		t.Fatal(err)
	}
	body, err := out.AppendBinary(nil, []byte(`{"b":{"e":"y","f":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := out.AppendJSON(nil, body)
	jsonEqual(t, "kept", got, []byte(`{"b":{"e":"y","f":"x"}}`))
}
