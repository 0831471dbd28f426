package avrocodec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/deident/deident/configs"
	"github.com/deident/deident/internal/gen"
)

// kitchenSink uses every Avro type, nested, so that the direct decoder and
// encoder are compared with goavro and the generic encoder on all of them.
const kitchenSink = `{"type":"record","name":"K","namespace":"t","fields":[
 {"name":"n","type":"null"},
 {"name":"b","type":"boolean"},
 {"name":"i","type":"int"},
 {"name":"l","type":"long"},
 {"name":"f","type":"float"},
 {"name":"d","type":"double"},
 {"name":"s","type":"string"},
 {"name":"by","type":"bytes"},
 {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
 {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b","c"]}},
 {"name":"arr","type":{"type":"array","items":{"type":"map","values":"long"}}},
 {"name":"m","type":{"type":"map","values":["null","string",{"type":"record","name":"R","fields":[{"name":"x","type":"int"}]}]}},
 {"name":"u","type":["null","long","string","R","E"]},
 {"name":"ts","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
 {"name":"dt","type":{"type":"int","logicalType":"date"}},
 {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
 {"name":"next","type":["null","K"],"default":null},
 {"name":"def","type":"string","default":"x\"y"}
]}`

func mustParse(t testing.TB, text string) *Schema {
	t.Helper()
	s, err := ParseSchema(text)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// viaGoavro is the decoder this package had before the direct one:
// goavro's native values, then AppendJSON.
func viaGoavro(s *Schema, body []byte) ([]byte, error) {
	native, rest, err := s.Codec.NativeFromBinary(body)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, errors.New("bytes left")
	}
	return AppendJSON(nil, s.Root, native)
}

func kitchenRecords(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "a", "zz", "caf\u00e9", "q\"\\\n\t\u0001", "\u2603 snow", "{\"x\":1}"}
	pick := func() string { return strs[r.IntN(len(strs))] }
	var out [][]byte
	for i := range n {
		var b bytes.Buffer
		b.WriteString(`{"n":null,"b":`)
		if i%2 == 0 {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
		b.WriteString(`,"i":` + itoa(int64(r.Int32())-1<<30) + `,"l":` + itoa(r.Int64()-1<<62))
		b.WriteString(`,"f":1.5,"d":-1234.5678e10,"s":` + quote(pick()) + `,"by":"\u0000\u00ffA","fx":"ab\u00fe\"",`)
		b.WriteString(`"e":"` + []string{"a", "b", "c"}[r.IntN(3)] + `","arr":[`)
		for j := range r.IntN(3) {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString(`{"k` + itoa(int64(j)) + `":` + itoa(int64(j)) + `,"a":-1}`)
		}
		b.WriteString(`],"m":{"zeta":null,"alpha":` + quote(pick()) + `,` + quote(pick()+"k") + `:{"x":3}},`)
		b.WriteString(`"u":` + []string{"null", "42", `"s"`, `{"x":-7}`}[r.IntN(4)])
		if i%3 == 0 {
			b.WriteString(`,"ts":1793491201054`)
		}
		b.WriteString(`,"dt":20000,"dec":-12.34`)
		if i%4 == 0 {
			b.WriteString(`,"next":{"n":null,"b":true,"i":1,"l":2,"f":0,"d":0,"s":"","by":"","fx":"abcd","e":"a","arr":[],"m":{},"u":null,"dt":0,"dec":0.5}`)
		}
		b.WriteString("}")
		out = append(out, b.Bytes())
	}
	return out
}

func itoa(i int64) string { return string(appendInt(nil, i)) }
func appendInt(dst []byte, i int64) []byte {
	return append(dst, []byte(func() string { return stringInt(i) }())...)
}
func stringInt(i int64) string {
	var b [24]byte
	n := len(b)
	neg := i < 0
	u := uint64(i)
	if neg {
		u = uint64(-i)
	}
	for {
		n--
		b[n] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	if neg {
		n--
		b[n] = '-'
	}
	return string(b[n:])
}
func quote(s string) string {
	q, _ := appendJSONString(nil, []byte(s))
	return string(q)
}

// The direct encoder writes the generic encoder's bytes, and the direct
// decoder reads them back as goavro plus AppendJSON does.
func TestDirectMatchesGeneric(t *testing.T) {
	type set struct {
		s    *Schema
		recs [][]byte
	}
	wf := mustParse(t, configs.WorkflowSchema)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 7})
	var wrecs [][]byte
	for range 200 {
		wrecs = append(wrecs, g.AppendWorkflowAvroJSON(nil))
	}
	for _, c := range []set{{wf, wrecs}, {mustParse(t, kitchenSink), kitchenRecords(300)}} {
		for i, rec := range c.recs {
			want, err := c.s.appendBinaryGeneric(nil, rec)
			if err != nil {
				t.Fatalf("record %d: generic: %v\n%s", i, err, rec)
			}
			got, err := c.s.AppendBinary(nil, rec)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("record %d: direct encoder gives %x (%v), generic %x\n%s", i, got, err, want, rec)
			}
			js, err := c.s.AppendJSON(nil, got)
			if err != nil {
				t.Fatalf("record %d: decoding: %v", i, err)
			}
			ref, err := viaGoavro(c.s, got)
			if err != nil || !bytes.Equal(js, ref) {
				t.Fatalf("record %d: direct decoder gives\n%s\ngoavro and AppendJSON (%v)\n%s", i, js, err, ref)
			}
			// And goavro's own encoding of its decoded value reads the same.
			native, _, _ := c.s.Codec.NativeFromBinary(got)
			gb, err := c.s.Codec.BinaryFromNative(nil, native)
			if err != nil {
				t.Fatal(err)
			}
			if js2, err := c.s.AppendJSON(nil, gb); err != nil || !bytes.Equal(js2, ref) {
				t.Fatalf("record %d: goavro's bytes decode to %s (%v)", i, js2, err)
			}
		}
	}
}

// Members out of schema order, missing fields with defaults, escaped keys
// and unsorted map entries encode as the generic encoder does.
func TestEncodeUnordered(t *testing.T) {
	s := mustParse(t, kitchenSink)
	rec := []byte(`{"def":"d","m":{"b":"1","a":null,"\u0063":{"x":1}},"by":"","fx":"abcd","e":"c","arr":[{"z":1,"y":2}],` +
		`"u":{"x":1},"dt":1,"dec":1,"n":null,"b":false,"i":0,"l":0,"f":0,"d":0,"\u0073":"v"}`)
	want, err := s.appendBinaryGeneric(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.AppendBinary(nil, rec)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %x (%v), want %x", got, err, want)
	}
	for _, bad := range []string{
		`{"n":null,"n":null}`, `{"x":1}`, `[1]`, `{"n":null,`, `{}`,
	} {
		if _, err := s.AppendBinary(nil, []byte(bad)); !errors.Is(err, ErrSchemaMismatch) {
			t.Errorf("%s: %v, want ErrSchemaMismatch", bad, err)
		}
	}
}

// Maps written unsorted (as goavro writes them) decode sorted; a key given
// twice is refused, as goavro refuses it.
func TestDecodeMapOrder(t *testing.T) {
	s := mustParse(t, `{"type":"record","name":"M","fields":[{"name":"m","type":{"type":"map","values":"int"}}]}`)
	body := []byte{6, 2, 'c', 2, 2, 'a', 4, 2, 'b', 6, 0} // c:1, a:2, b:3
	got, err := s.AppendJSON(nil, body)
	if err != nil || string(got) != `{"m":{"a":2,"b":3,"c":1}}` {
		t.Fatalf("got %s (%v)", got, err)
	}
	dup := []byte{4, 2, 'b', 2, 2, 'b', 4, 0}
	if _, err := s.AppendJSON(nil, dup); !errors.Is(err, ErrSchemaMismatch) || !bytes.Contains([]byte(err.Error()), []byte("twice")) {
		t.Fatalf("duplicate key: %v", err)
	}
	ref, err := viaGoavro(s, body)
	if err != nil || !bytes.Equal(got, ref) {
		t.Fatalf("goavro: %s (%v)", ref, err)
	}
}

func FuzzDecodeMatchesGoavro(f *testing.F) {
	s := mustParse(f, kitchenSink)
	for _, rec := range kitchenRecords(5) {
		body, err := s.AppendBinary(nil, rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(body[:len(body)/2])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := s.AppendJSON(nil, body)
		ref, rerr := viaGoavro(s, body)
		// Refusals by design: nesting deeper than the scanner's limit, and
		// malformed varints that goavro silently truncates (an int wider
		// than 32 bits, a long varint with bits beyond 64): the spec has no
		// such values.
		if rerr == nil && err != nil && !errors.Is(err, errTooDeep) && !errors.Is(err, errIntRange) && !errors.Is(err, errVarint) {
			t.Fatalf("goavro reads %s, the direct decoder fails: %v", ref, err)
		}
		if err == nil && rerr == nil && !bytes.Equal(got, ref) {
			t.Fatalf("direct %s\ngoavro %s", got, ref)
		}
	})
}

func FuzzEncodeMatchesGeneric(f *testing.F) {
	s := mustParse(f, kitchenSink)
	for _, rec := range kitchenRecords(5) {
		f.Add(rec)
	}
	f.Add([]byte(`{"m":{"a":null,"a":"x"}}`))
	f.Fuzz(func(t *testing.T, rec []byte) {
		got, err := s.AppendBinary(nil, rec)
		want, gerr := s.appendBinaryGeneric(nil, rec)
		if err == nil && gerr == nil && !bytes.Equal(got, want) {
			t.Fatalf("direct %x, generic %x", got, want)
		}
		if err == nil && gerr != nil {
			t.Fatalf("direct accepts what the generic encoder refuses (%v)", gerr)
		}
	})
}
