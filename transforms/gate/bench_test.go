package gate

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

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

// BenchmarkApplyGateSideBySide measures what the gate adds to apply's
// time per record on the benchmark route, with the gate off and on side
// by side in one process: each iteration generates the next 20,000
// records of the stream (as `deident gen` writes them: fresh identifiers
// keep arriving, as in a file) and runs them through an Applier without
// the gate and through one with it (learning from the Applier, checking
// and tallying, as apply does), in alternating order. Alternating short
// stretches cancels the drift of a shared machine's load that separate
// runs of apply suffer. It reports the medians of the two per-record
// times and of their per-iteration ratio, and the ratio of the total
// times (on/off-total), which counts the warm-up as apply's total does
// (the first stretch's ratio is far above the rest): -benchtime 50x is
// a stream of 1,000,000 records.
func BenchmarkApplyGateSideBySide(b *testing.B) {
	const stretch = 20000
	r := benchRoute(b, 0)
	g, err := New(r.Name, r.Config)
	if err != nil {
		b.Fatal(err)
	}
	off, on, c, tl := r.NewApplier(), r.NewApplier(), g.NewChecker(), g.NewTallier()
	on.SetObserver(c)
	gn := gen.New(gen.Options{Seed: 1})
	recs := make([][]byte, stretch)
	// The records lie end to end in one buffer, as apply reads them. Each
	// in a buffer of its own (Append's, grown by doubling), both arms
	// took about 90 ns more per record, and the gate's share read about 5
	// points lower than with apply's layout (benchmarks/RESULTS.md, issue
	// 5, eleventh round).
	arena := make([]byte, 0, stretch*1024)
	var out []byte
	timed := func(gate bool) time.Duration {
		start := time.Now()
		for _, rec := range recs {
			if !gate {
				out, err = off.Apply(out[:0], rec)
				if err != nil {
					b.Fatal(err)
				}
				continue
			}
			out, err = on.Apply(out[:0], rec)
			if err != nil {
				b.Fatal(err)
			}
			v := c.Check(out)
			if err := tl.Tally(v); err != nil || !v.Pass() {
				b.Fatalf("a clean record failed the gate: %v %s", err, verdictString(v))
			}
		}
		return time.Since(start)
	}
	var offNs, onNs, ratios []float64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		arena = arena[:0]
		for i := range recs {
			n := len(arena)
			arena = gn.Append(arena)
			recs[i] = arena[n:len(arena):len(arena)]
		}
		b.StartTimer()
		var t0, t1 time.Duration
		if len(ratios)%2 == 0 {
			t0 = timed(false)
			t1 = timed(true)
		} else {
			t1 = timed(true)
			t0 = timed(false)
		}
		offNs = append(offNs, float64(t0.Nanoseconds())/stretch)
		onNs = append(onNs, float64(t1.Nanoseconds())/stretch)
		ratios = append(ratios, float64(t1)/float64(t0))
	}
	median := func(x []float64) float64 {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	b.ReportMetric(median(offNs), "off-ns/rec")
	b.ReportMetric(median(onNs), "on-ns/rec")
	b.ReportMetric(median(ratios), "on/off")
	var totalOff, totalOn float64
	for i := range offNs {
		totalOff += offNs[i]
		totalOn += onNs[i]
	}
	b.ReportMetric(totalOn/totalOff, "on/off-total")
}
