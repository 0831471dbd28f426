// Package benchmarks holds the hot-path benchmarks and end-to-end harnesses;
// see README.md for the commands and RESULTS.md for the figures.
package benchmarks

import (
	"bytes"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/transforms/route"
)

// benchRecords returns n generated threat records (~450 bytes, skewed values).
func benchRecords(tb testing.TB, n int) [][]byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := gen.Write(&buf, gen.Options{Count: n, Seed: 1}); err != nil {
		tb.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte{'\n'})
}

// benchRoute compiles configs/bench.yaml: 4 pseudonymized fields, 1 IP
// truncated, 10 kept, the rest dropped.
func benchRoute(tb testing.TB, cacheEntries int) *route.Route {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	cfg, err := config.Load(filepath.Join(filepath.Dir(file), "..", "configs", "bench.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	rc := cfg.Vendors["bench"]
	rc.CacheEntries = cacheEntries
	r, err := route.Compile("bench", rc, cfg.Dir, cfg.Limits)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func benchmarkRoute(b *testing.B, cacheEntries int) {
	recs := benchRecords(b, 10000)
	a := benchRoute(b, cacheEntries).NewApplier()
	var out []byte
	var bytesIn int64
	for _, r := range recs {
		bytesIn += int64(len(r))
	}
	b.SetBytes(bytesIn / int64(len(recs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var err error
		out, err = a.Apply(out[:0], recs[i])
		if err != nil {
			b.Fatal(err)
		}
		i++
		if i == len(recs) {
			i = 0
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if c := a.Cache(); c != nil {
		b.ReportMetric(100*float64(c.Hits)/float64(c.Hits+c.Misses), "%cache-hits")
	}
}

// BenchmarkRouteCacheWarm is the hot path with the pseudonym cache on.
// Target: at least 1,000,000 records/s and at most 1 allocation per record.
func BenchmarkRouteCacheWarm(b *testing.B) { benchmarkRoute(b, 1<<16) }

// BenchmarkRouteNoCache hashes every value.
func BenchmarkRouteNoCache(b *testing.B) { benchmarkRoute(b, -1) }
