package benchmarks

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/transforms/route"
)

// avroBenchConfig is configs/deident.yaml's flowai route adapted to the
// Avro workflow schema (configs/avro/workflow.avsc): the same rules, plus
// the two nullable unions (approver.email split, paid_at bucketed) so
// that the path crosses every kind of field the schema has.
const avroBenchConfig = `
sources:
  workflow: {topic: workflow.events, category: workflow_metadata, format: avro}
vendors:
  flowai:
    purpose: workflow-optimization
    categories: [workflow_metadata]
    topic: vendor.flowai
    output: avro
    keys: [{file: demo-keys/flowai.key}]
    gate: {enabled: false}
    fields:
      - {path: time, action: generalize, time_bucket: 1h}
      - {path: workflow_id, action: pseudonymize, namespace: workflow, prefix: wf_}
      - {path: step, action: keep}
      - {path: duration_ms, action: generalize, numeric_bucket: {edges: [60000, 3600000, 86400000]}}
      - path: approver.role
        action: generalize
        map:
          entries:
            - {from: ap_clerk, to: staff}
            - {from: finance_manager, to: manager}
            - {from: department_head, to: manager}
            - {from: controller, to: executive}
            - {from: cfo, to: executive}
          default: other
      - {path: approver.name, action: pseudonymize, namespace: approver, prefix: usr_, normalize: lower}
      - {path: approver.email, action: email_split, namespace: user_email, normalize: email}
      - {path: invoice.currency, action: keep}
      - {path: invoice.amount, action: drop}
      - {path: invoice.unit_price, action: drop}
      - {path: comment, action: drop}
      - {path: "attachments[].size_bytes", action: generalize, numeric_bucket: {edges: [100000, 1000000]}}
      - {path: paid_at, action: generalize, time_bucket: 1d}
`

// staticSource is a schema registry that knows one schema, as the
// registry client is once its cache is warm.
type staticSource struct{ s *avrocodec.Schema }

func (s staticSource) SchemaByID(context.Context, uint32) (*avrocodec.Schema, error) { return s.s, nil }

// avroBench is the Avro path's state: Confluent-framed workflow records,
// the writer schema, the flowai route and its derived output schema.
type avroBench struct {
	in   *avrocodec.Schema
	msgs [][]byte // magic byte, schema id 1, binary body
	r    *route.Route
	dec  avrocodec.Decoder
	enc  avrocodec.Encoder
}

func newAvroBench(tb testing.TB, n int) *avroBench {
	tb.Helper()
	in, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		tb.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	cfg, err := config.Parse([]byte(avroBenchConfig), filepath.Join(filepath.Dir(file), "..", "configs"))
	if err != nil {
		tb.Fatal(err)
	}
	rc := cfg.Vendors["flowai"]
	r, err := route.Compile("flowai", rc, cfg.Dir, cfg.Limits)
	if err != nil {
		tb.Fatal(err)
	}
	out, warnings, err := avrocodec.Derive(in, "flowai", rc.Fields)
	if err != nil || len(warnings) > 0 {
		tb.Fatal(err, warnings)
	}
	b := &avroBench{in: in, r: r, dec: avrocodec.Decoder{Source: staticSource{in}}, enc: avrocodec.Encoder{Schema: out, ID: 2}}
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 1})
	var rec []byte
	for range n {
		rec = g.AppendWorkflowAvroJSON(rec[:0])
		msg, err := in.AppendBinary(avrocodec.AppendWire(nil, 1), rec)
		if err != nil {
			tb.Fatal(err)
		}
		b.msgs = append(b.msgs, msg)
	}
	return b
}

func (ab *avroBench) bytesPerRecord() int64 {
	var n int
	for _, m := range ab.msgs {
		n += len(m)
	}
	return int64(n / len(ab.msgs))
}

// BenchmarkAvroPath is the worker's Avro path for one record: decode the
// Confluent-framed body to JSON (writer schema from the registry cache),
// apply the flowai route, encode the output under the derived schema in
// the wire format. Issue 6's target: at most 1.3 times
// BenchmarkAvroGoavro's time.
func BenchmarkAvroPath(b *testing.B) {
	ab := newAvroBench(b, 1000)
	a := ab.r.NewApplier()
	ctx := context.Background()
	var js, out, wire []byte
	b.SetBytes(ab.bytesPerRecord())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var err error
		if js, err = ab.dec.AppendJSON(ctx, js[:0], ab.msgs[i]); err != nil {
			b.Fatal(err)
		}
		if out, err = a.Apply(out[:0], js); err != nil {
			b.Fatal(err)
		}
		if wire, err = ab.enc.Append(wire[:0], out); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(ab.msgs) {
			i = 0
		}
	}
}

// BenchmarkAvroGoavro is the yardstick: goavro's own decode and encode of
// the same framed record with no transform (header split, NativeFromBinary,
// BinaryFromNative).
func BenchmarkAvroGoavro(b *testing.B) {
	ab := newAvroBench(b, 1000)
	codec := ab.in.Codec
	var wire []byte
	b.SetBytes(ab.bytesPerRecord())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, body, err := avrocodec.ParseWire(ab.msgs[i])
		if err != nil {
			b.Fatal(err)
		}
		native, _, err := codec.NativeFromBinary(body)
		if err != nil {
			b.Fatal(err)
		}
		if wire, err = codec.BinaryFromNative(avrocodec.AppendWire(wire[:0], id), native); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(ab.msgs) {
			i = 0
		}
	}
}

// The Avro path's parts, to see where its time goes.

func BenchmarkAvroDecode(b *testing.B) {
	ab := newAvroBench(b, 1000)
	ctx := context.Background()
	var js []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var err error
		if js, err = ab.dec.AppendJSON(ctx, js[:0], ab.msgs[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(ab.msgs) {
			i = 0
		}
	}
}

func BenchmarkAvroRoute(b *testing.B) {
	ab := newAvroBench(b, 1000)
	recs := ab.jsonRecords(b)
	a := ab.r.NewApplier()
	var out []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var err error
		if out, err = a.Apply(out[:0], recs[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(recs) {
			i = 0
		}
	}
}

func BenchmarkAvroEncode(b *testing.B) {
	ab := newAvroBench(b, 1000)
	recs := ab.jsonRecords(b)
	a := ab.r.NewApplier()
	outs := make([][]byte, len(recs))
	for i, r := range recs {
		var err error
		if outs[i], err = a.Apply(nil, r); err != nil {
			b.Fatal(err)
		}
	}
	var wire []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var err error
		if wire, err = ab.enc.Append(wire[:0], outs[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(outs) {
			i = 0
		}
	}
}

// jsonRecords decodes every message to JSON once.
func (ab *avroBench) jsonRecords(tb testing.TB) [][]byte {
	recs := make([][]byte, len(ab.msgs))
	for i, m := range ab.msgs {
		var err error
		if recs[i], err = ab.dec.AppendJSON(context.Background(), nil, m); err != nil {
			tb.Fatal(err)
		}
	}
	return recs
}
