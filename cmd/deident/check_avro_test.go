package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/gen"
)

// check --sample on Avro: a container file's records and a schema file
// list the fields no rule names, as a JSON sample does; a writer schema
// that adds a field the policy does not name shows that field, and a map
// whose keys a rule names is not reported.
func TestCheckSampleAvro(t *testing.T) {
	dir, cfg := writeAvroConfig(t)
	v1 := filepath.Join(dir, "v1.avro")
	if _, err := run(t, "gen", "--kind", "workflow", "--format", "avro", "--count", "30", "-o", v1); err != nil {
		t.Fatal(err)
	}
	// The same events under the second writer schema, with the new field.
	s2, err := avrocodec.ParseSchema(workflowV2)
	if err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(dir, "v2.avro")
	f, _ := os.Create(v2)
	w, err := avrocodec.NewOCFWriter(f, s2, [16]byte{2}, "null")
	if err != nil {
		t.Fatal(err)
	}
	g := gen.New(gen.Options{Kind: gen.Workflow, Seed: 1})
	for range 30 {
		rec := append([]byte(`{"internal_note":"do not share",`), g.AppendWorkflowAvroJSON(nil)[1:]...)
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	avsc := filepath.Join(dir, "v2.avsc")
	if err := os.WriteFile(avsc, []byte(workflowV2), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		sample string
		want   []string // lines of the sample section, in order
	}{
		{v1, []string{`sample: 30 records, 19 fields, 1 named by no rule \(dropped\):`, `invoice.unit_price +in 30 records`}},
		{v2, []string{`sample: 30 records, 20 fields, 2 named by no rule \(dropped\):`, `internal_note +in 30 records`, `invoice.unit_price +in 30 records`}},
		{avsc, []string{`sample schema: 19 fields, 2 named by no rule \(dropped\):`, `internal_note$`, `invoice.unit_price$`}},
	} {
		t.Run(filepath.Base(c.sample), func(t *testing.T) {
			out, err := runStdout(t, "check", "--config", cfg, "--sample", c.sample)
			if err != nil {
				t.Fatal(err)
			}
			_, section, ok := strings.Cut(out, "sample")
			if !ok {
				t.Fatalf("no sample section:\n%s", out)
			}
			section, _, _ = strings.Cut(section, "\n\n") // the route's sample lines end at a blank line
			lines := strings.Split(strings.TrimSpace("sample"+section), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("sample section:\n%s\nwant %d lines", strings.Join(lines, "\n"), len(c.want))
			}
			for i, re := range c.want {
				if !regexp.MustCompile(re).MatchString(strings.TrimSpace(lines[i])) {
					t.Errorf("line %d: %q, want %q", i, lines[i], re)
				}
			}
			if strings.Contains(out, "do not share") || strings.Contains(section, "labels") {
				t.Errorf("check printed a value or a map whose keys a rule names:\n%s", out)
			}
		})
	}
}
