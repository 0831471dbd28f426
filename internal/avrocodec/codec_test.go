package avrocodec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/gen"
)

func workflowSchema(t testing.TB) *avrocodec.Schema {
	t.Helper()
	s, err := avrocodec.ParseSchema(configs.WorkflowSchema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: output is not JSON: %v\n%s", what, err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: want is not JSON: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
}

// Every generated workflow event goes JSON -> Avro binary -> JSON unchanged.
func TestWorkflowRoundTrip(t *testing.T) {
	s := workflowSchema(t)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 1})
	var rec, body, back []byte
	var nulls, paid int
	for i := range 300 {
		rec = g.AppendWorkflowAvroJSON(rec[:0])
		var err error
		if body, err = s.AppendBinary(body[:0], rec); err != nil {
			t.Fatalf("record %d: encoding: %v", i, err)
		}
		if back, err = s.AppendJSON(back[:0], body); err != nil {
			t.Fatalf("record %d: decoding: %v", i, err)
		}
		jsonEqual(t, "round trip", back, rec)
		if bytes.Contains(back, []byte(`"email":null`)) {
			nulls++
		}
		if !bytes.Contains(back, []byte(`"paid_at":null`)) {
			paid++
		}
	}
	if nulls == 0 || paid == 0 {
		t.Fatalf("the generator never exercised a null email (%d) or a paid_at (%d)", nulls, paid)
	}
}

// Each Avro type maps to the JSON the package documents, and back.
func TestTypeMapping(t *testing.T) {
	cases := []struct {
		name, schema string
		native       any    // what goavro holds
		json         string // what the route sees
	}{
		{"null", `"null"`, nil, `null`},
		{"boolean", `"boolean"`, true, `true`},
		{"int", `"int"`, int32(-7), `-7`},
		{"long", `"long"`, int64(1) << 40, `1099511627776`},
		{"float", `"float"`, float32(1.5), `1.5`},
		{"double", `"double"`, 1234.56, `1234.56`},
		{"string", `"string"`, "a\"b\\c\n", `"a\"b\\c\n"`},
		{"bytes", `"bytes"`, []byte{0, 'A', 0xff}, `"\u0000Aÿ"`},
		{"fixed", `{"type":"fixed","name":"F","size":2}`, []byte{1, 2}, `"\u0001\u0002"`},
		{"enum", `{"type":"enum","name":"E","symbols":["a","b"]}`, "b", `"b"`},
		{"array", `{"type":"array","items":"long"}`, []any{int64(1), int64(2)}, `[1,2]`},
		{"map sorted", `{"type":"map","values":"int"}`, map[string]any{"b": int32(2), "a": int32(1)}, `{"a":1,"b":2}`},
		{"nullable null", `["null","string"]`, nil, `null`},
		{"nullable value", `["null","string"]`, goavro.Union("string", "x"), `"x"`},
		{"union of two", `["null","long","string"]`, goavro.Union("string", "x"), `"x"`},
		{"union long", `["null","long","string"]`, goavro.Union("long", int64(3)), `3`},
		{"union record", `["null",{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}]`, goavro.Union("R", map[string]any{"a": int32(1)}), `{"a":1}`},
		{"timestamp-millis", `{"type":"long","logicalType":"timestamp-millis"}`, int64(1793491200123), `1793491200123`},
		{"timestamp-micros", `{"type":"long","logicalType":"timestamp-micros"}`, int64(1793491200123456), `1793491200123456`},
		{"date", `{"type":"int","logicalType":"date"}`, int32(20000), `20000`},
		{"nullable timestamp", `["null",{"type":"long","logicalType":"timestamp-millis"}]`, goavro.Union("long.timestamp-millis", int64(5000)), `5000`},
		{"decimal", `{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}`, nil, `12.34`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			schema := `{"type":"record","name":"T","fields":[{"name":"v","type":` + c.schema + `}]}`
			s, err := avrocodec.ParseSchema(schema)
			if err != nil {
				t.Fatal(err)
			}
			rec := []byte(`{"v":` + c.json + `}`)
			var body []byte
			if c.name != "decimal" {
				// Encode the native value with goavro alone: the decoder must
				// read what goavro writes.
				if body, err = s.Codec.BinaryFromNative(nil, map[string]any{"v": c.native}); err != nil {
					t.Fatal(err)
				}
				ours, err := s.AppendBinary(nil, rec)
				if err != nil {
					t.Fatalf("encoding JSON: %v", err)
				}
				if c.name == "map sorted" {
					// goavro writes map entries in Go's random order; ours are sorted.
					n1, _, err1 := s.Codec.NativeFromBinary(ours)
					n2, _, err2 := s.Codec.NativeFromBinary(body)
					if err1 != nil || err2 != nil || !reflect.DeepEqual(n1, n2) {
						t.Fatalf("goavro reads %v (%v), wrote %v", n1, err1, n2)
					}
					body = ours
				}
				if !bytes.Equal(ours, body) {
					t.Fatalf("JSON encodes to %x, goavro to %x", ours, body)
				}
			} else if body, err = s.AppendBinary(nil, rec); err != nil {
				t.Fatal(err)
			}
			got, err := s.AppendJSON(nil, body)
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, c.name, got, rec)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	s := workflowSchema(t)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 3})
	rec := g.AppendWorkflowAvroJSON(nil)
	body, err := s.AppendBinary(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(rec, &m)
	secret := m["approver"].(map[string]any)["name"].(string)

	nan, _ := avrocodec.ParseSchema(`{"type":"record","name":"N","fields":[{"name":"x","type":"double"}]}`)
	nanBody, _ := nan.Codec.BinaryFromNative(nil, map[string]any{"x": math.NaN()})
	str, _ := avrocodec.ParseSchema(`{"type":"record","name":"S","fields":[{"name":"s","type":"string"}]}`)
	badUTF8, _ := str.Codec.BinaryFromNative(nil, map[string]any{"s": "caf\xe9"})
	enum, _ := avrocodec.ParseSchema(`{"type":"record","name":"E","fields":[{"name":"e","type":{"type":"enum","name":"En","symbols":["a"]}}]}`)

	cases := []struct {
		name   string
		s      *avrocodec.Schema
		body   []byte
		want   error
		inText string
	}{
		{"truncated", s, body[:len(body)/2], avrocodec.ErrTruncated, ""},
		{"empty", s, nil, avrocodec.ErrTruncated, ""},
		{"trailing bytes", s, append(append([]byte{}, body...), 1, 2, 3), avrocodec.ErrSchemaMismatch, "3 bytes left"},
		{"enum index out of range", enum, []byte{0x0a}, avrocodec.ErrSchemaMismatch, "index out of range"},
		{"NaN", nan, nanBody, avrocodec.ErrNotJSONable, "x: "},
		{"invalid UTF-8", str, badUTF8, avrocodec.ErrNotJSONable, "s: "},
		{"negative length", str, []byte{0x03}, avrocodec.ErrSchemaMismatch, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.s.AppendJSON(nil, c.body)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.inText) {
				t.Fatalf("%q does not say %q", err, c.inText)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "caf") {
				t.Fatalf("error holds a value: %v", err)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	s := workflowSchema(t)
	rec := gen.New(gen.Options{Kind: gen.Workflow, Seed: 3}).AppendWorkflowAvroJSON(nil)
	cases := []struct{ name, from, to, path string }{
		{"string for a long", `"duration_ms":`, `"duration_ms":"x","x":`, "duration_ms"},
		{"unknown symbol", `"step":"`, `"step":"bogus","x":"`, "step"},
		{"fraction for a long", `"duration_ms":`, `"duration_ms":1.5,"x":`, "duration_ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := bytes.Replace(rec, []byte(c.from), []byte(c.to), 1)
			_, err := s.AppendBinary(nil, bad)
			var pe *avrocodec.PathError
			if !errors.As(err, &pe) || !errors.Is(err, avrocodec.ErrSchemaMismatch) {
				t.Fatalf("got %v, want a PathError wrapping ErrSchemaMismatch", err)
			}
			if !strings.HasPrefix(pe.Path, c.path) && pe.Path != "x" {
				t.Fatalf("path %q, want %q", pe.Path, c.path)
			}
			if strings.Contains(err.Error(), "bogus") {
				t.Fatalf("error holds the value: %v", err)
			}
		})
	}
	// A missing field without a default.
	_, err := s.AppendBinary(nil, []byte(`{"time":1}`))
	if !errors.Is(err, avrocodec.ErrSchemaMismatch) || !strings.Contains(err.Error(), "workflow_id: ") {
		t.Fatalf("missing field: %v", err)
	}
}

func TestOCFRoundTrip(t *testing.T) {
	s := workflowSchema(t)
	var buf bytes.Buffer
	w, err := avrocodec.NewOCFWriter(&buf, s, [16]byte{1}, "deflate")
	if err != nil {
		t.Fatal(err)
	}
	w.BlockSize = 7
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 9})
	var recs [][]byte
	for range 50 {
		rec := g.AppendWorkflowAvroJSON(nil)
		recs = append(recs, rec)
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write([]byte(`{"time":"not a number"}`)); !errors.Is(err, avrocodec.ErrSchemaMismatch) {
		t.Fatalf("bad record: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !avrocodec.IsOCF(buf.Bytes()) {
		t.Fatal("no container magic")
	}
	r, err := avrocodec.NewOCFReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		got, err := r.Next(nil)
		if err != nil {
			if i != len(recs) {
				t.Fatalf("read %d records, wrote %d: %v", i, len(recs), err)
			}
			break
		}
		jsonEqual(t, "record", got, recs[i])
	}
}

func FuzzDecode(f *testing.F) {
	s := workflowSchema(f)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 5})
	for range 3 {
		body, err := s.AppendBinary(nil, g.AppendWorkflowAvroJSON(nil))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(body[:len(body)-1])
		f.Add(append(body, 0))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := s.AppendJSON(nil, body)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q", out)
		}
		// What decodes must encode back, and decode to the same JSON (the
		// bytes may differ: map order, block layout, varint padding).
		again, err := s.AppendBinary(nil, out)
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		out2, err := s.AppendJSON(nil, again)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("re-encoded record decodes to %q (%v), was %q", out2, err, out)
		}
	})
}
