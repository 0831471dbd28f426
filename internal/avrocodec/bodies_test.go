package avrocodec_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/gen"
)

// Plain bodies back to back read as the records written, whatever the
// read sizes; the end of the input ends them.
func TestBodyReader(t *testing.T) {
	s := workflowSchema(t)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 8})
	var stream []byte
	var recs [][]byte
	for range 50 {
		rec := g.AppendWorkflowAvroJSON(nil)
		var err error
		if stream, err = s.AppendBinary(stream, rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": iotest.OneByteReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			br := avrocodec.NewBodyReader(r, s)
			var out []byte
			for i, want := range recs {
				var err error
				if out, err = br.Next(out[:0]); err != nil {
					t.Fatalf("body %d: %v", i+1, err)
				}
				jsonEqual(t, "body", out, want)
			}
			if _, err := br.Next(nil); err != io.EOF {
				t.Fatalf("after the last body: %v, want EOF", err)
			}
		})
	}
}

// A body cut short at the end of the input, or one that does not match the
// schema, stops the reader for good (there is no framing to resync on) and
// says which body, never a value; the bodies before it were read.
func TestBodyReaderErrors(t *testing.T) {
	s := workflowSchema(t)
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 9})
	one, err := s.AppendBinary(nil, g.AppendWorkflowAvroJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	two := append(append([]byte{}, one...), one...)
	for _, c := range []struct {
		name  string
		input []byte
		says  string
	}{
		{"cut short", two[:len(two)-3], "avro body 2"},
		{"not matching", append(append([]byte{}, one...), 0x0b, 0x0c, 0x0d, 0x0e), "avro body 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			br := avrocodec.NewBodyReader(bytes.NewReader(c.input), s)
			if _, err := br.Next(nil); err != nil {
				t.Fatalf("body 1: %v", err)
			}
			_, err := br.Next(nil)
			var pe *avrocodec.PathError
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "no framing") || errors.As(err, &pe) {
				t.Fatalf("got %v; want a final error saying %q", err, c.says)
			}
			if _, again := br.Next(nil); again == nil || again.Error() != err.Error() {
				t.Fatalf("after the error: %v", again)
			}
		})
	}
}
