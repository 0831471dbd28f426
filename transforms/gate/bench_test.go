package gate

import (
	"path/filepath"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/transforms/route"
)

// benchCorpus returns n corpus records (generated threat events with free
// text kept) and their outputs under the corpus route.
func benchCorpus(b *testing.B, n int) (*route.Route, [][]byte, [][]byte) {
	r := corpusRoute(b)
	uas := zeekUserAgents(b)
	gn := gen.New(gen.Options{Seed: 1})
	a := r.NewApplier()
	var ins, outs [][]byte
	for i := range n {
		in := corpusRecord(gn.Append(nil), cleanCmds[i%len(cleanCmds)], uas[i%len(uas)], cleanURLs[i%len(cleanURLs)], cleanComments[i%len(cleanComments)])
		out, err := a.Apply(nil, in)
		if err != nil {
			b.Fatal(err)
		}
		ins, outs = append(ins, in), append(outs, out)
	}
	return r, ins, outs
}

// BenchmarkCheck checks acme-mdr outputs with free text kept (~500 bytes,
// 4 pseudonyms, 2 addresses, 4 free-text fields), the Bloom filter filled
// from the inputs.
func BenchmarkCheck(b *testing.B) {
	r, ins, outs := benchCorpus(b, 4096)
	g, err := New(r.Name, r.Config)
	if err != nil {
		b.Fatal(err)
	}
	c := g.NewChecker()
	size := 0
	for i := range ins {
		c.Observe(ins[i])
		size += len(outs[i])
	}
	b.SetBytes(int64(size / len(outs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if v := c.Check(outs[i]); !v.Pass() {
			b.Fatal(verdictString(v))
		}
		i = (i + 1) % len(outs)
	}
}

// BenchmarkObserve records the raw identifiers of ~600-byte inputs.
func BenchmarkObserve(b *testing.B) {
	r, ins, _ := benchCorpus(b, 4096)
	g, err := New(r.Name, r.Config)
	if err != nil {
		b.Fatal(err)
	}
	c := g.NewChecker()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Observe(ins[i])
		i = (i + 1) % len(ins)
	}
}

// benchRoute compiles the benchmark route (configs/bench.yaml) with its
// gate on; bloomCapacity, when not 0, sizes the gate's filter.
func benchRoute(tb testing.TB, bloomCapacity int) *route.Route {
	tb.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "configs", "bench.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	rc := cfg.Vendors["bench"]
	on := true
	rc.Gate.Enabled = &on
	rc.Gate.BloomCapacity = bloomCapacity
	r, err := route.Compile("bench", rc, cfg.Dir, cfg.Limits)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// BenchmarkApplyGate is apply's per-record work on the benchmark route
// (configs/bench.yaml, which switches the gate off for the comparison with
// Benthos): without the gate; with it learning raw identifiers from the
// Applier (as apply does); with Observe's own second pass; and, to see
// what learning alone costs the route, with the Applier telling the
// Checker its identifiers but no output checked.
func BenchmarkApplyGate(b *testing.B) {
	r := benchRoute(b, 0)
	gn := gen.New(gen.Options{Seed: 1})
	recs := make([][]byte, 10000)
	for i := range recs {
		recs[i] = gn.Append(nil)
	}
	for _, mode := range []string{"off", "observer", "two-pass", "learn-only"} {
		b.Run("gate="+mode, func(b *testing.B) {
			g, err := New(r.Name, r.Config)
			if err != nil {
				b.Fatal(err)
			}
			if !g.Enabled() {
				b.Fatal("gate is off")
			}
			a, c, tl := r.NewApplier(), g.NewChecker(), g.NewTallier()
			if mode == "observer" || mode == "learn-only" {
				a.SetObserver(c)
			}
			var out []byte
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				out, err = a.Apply(out[:0], recs[i])
				if err != nil {
					b.Fatal(err)
				}
				var v Verdict
				switch mode {
				case "observer":
					v = c.Check(out)
				case "two-pass":
					v = c.CheckRecord(recs[i], out)
				}
				if mode == "observer" || mode == "two-pass" {
					if err := tl.Tally(v); err != nil { // as apply tallies
						b.Fatal(err)
					}
				}
				i = (i + 1) % len(recs)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
