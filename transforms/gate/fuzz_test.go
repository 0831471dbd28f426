package gate

import (
	"testing"

	"github.com/deident/deident/internal/gen"
)

// FuzzShapesMatchFullPass: on the benchmark route (whose shapes have runs,
// recent values, timestamps, pseudonyms and a /24 address), a Checker with
// its shapes gives the same verdict, findings included, as one that checks
// every record in full: for any output after a warm-up, for the warm-up's
// outputs again (remembered now), and for both after the filter learns any
// raw identifier.
func FuzzShapesMatchFullPass(f *testing.F) {
	r := benchRoute(f, 1<<12) // a filter per input: a small one
	gn := gen.New(gen.Options{Seed: 5, Users: 8})
	a := r.NewApplier()
	var ins, outs [][]byte
	for range 48 {
		in := gn.Append(nil)
		out, err := a.Apply(nil, in)
		if err != nil {
			f.Fatal(err)
		}
		ins, outs = append(ins, in), append(outs, out)
	}
	for i, s := range []string{"Sentinel", "detected", "2026-11-01T00", "443", "chrome", ""} {
		f.Add(outs[i], []byte(s))
	}
	f.Add([]byte(`{"time":"2026-11-01T00:00:01.054Z","class_uid":1007,"category_uid":1,"activity_id":1,"severity_id":4,"type_uid":100701,"metadata":{"product":{"name":"Sentinel EDR"}},"device":{"hostname":"e2d750363acd557736c38873bd45a560"},"actor":{"user":{"name":"06988ada99fbfc771c20a1c633e9a911","email_addr":"6782491f53e2b2f2161013184d8cfb4e","uid":"a5d3bbdb5b5ddbdcd8ba383e953c0969"},"process":{"name":"chrome.exe"}},"src_endpoint":{"ip":"10.0.1.0"},"dst_endpoint":{"port":80},"disposition":"Detected"}`), []byte("wks-1"))
	f.Fuzz(func(t *testing.T, x, ident []byte) {
		g, err := New(r.Name, r.Config)
		if err != nil {
			t.Fatal(err)
		}
		fast, full := g.NewChecker(), g.NewChecker()
		full.reference = true
		same := func(what string, o []byte) {
			// fast first: the identifiers it was told reach the filter
			// at its next check (flush)
			got := verdictString(fast.Check(o))
			if want := verdictString(full.Check(o)); got != want {
				t.Fatalf("%s %q: with shapes %s, in full %s", what, o, got, want)
			}
		}
		for i := range ins {
			fast.Observe(ins[i])
			same("warm-up", outs[i])
		}
		same("input", x)
		for _, o := range outs {
			same("again", o)
		}
		fast.ObserveIdentifier(13, ident) // device.hostname's rule: any raw value
		same("after the identifier, input", x)
		for _, o := range outs {
			same("after the identifier", o)
		}
	})
}
