package kanon

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
)

// telemetryConfig is an aggregate route over threat telemetry: entity the
// pseudonymized user, quasi-identifiers a 10-second time bucket (up to the
// minute), the source address (/24, /16, /8), the process (ARX-style
// hierarchy: process, family) and the disposition (value or "*"); 1-minute
// windows; sum and max of severity.
func telemetryConfig(k int) config.KAnon {
	return config.KAnon{
		K: k, Entity: "actor.user.uid", Mode: config.KAnonAggregate, EventTime: "time",
		Window: time.Minute, AllowedLateness: 5 * time.Second,
		QuasiIdentifiers: []config.QuasiIdentifier{
			{Path: "bucket", Ladder: config.Ladder{TimeBucket: []string{"1m"}}},
			{Path: "src_endpoint.ip", Ladder: config.Ladder{IPPrefix: []int{24, 16, 8}}},
			{Path: "process.name", Ladder: config.Ladder{Hierarchy: &config.LadderHierarchy{File: "process.csv"}}},
			{Path: "disposition"},
		},
		Sums: []string{"severity_id"},
		Max:  []string{"severity_id"},
	}
}

// telemetry returns n route outputs of skewed threat telemetry (Zipf users,
// hosts, processes; internal/gen) as the route would emit them: the user
// pseudonymized (HMAC-SHA-256, 16 hex digits), the time kept, a 10-second
// bucket added, about 1,000 events per second.
func telemetry(tb testing.TB, n int) [][]byte {
	tb.Helper()
	g := gen.New(gen.Options{Seed: 7})
	mac := hmac.New(sha256.New, []byte("bench key"))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var buf []byte
	out := make([][]byte, 0, n)
	for i := range n {
		buf = g.Append(buf[:0])
		var ev struct {
			Actor struct {
				User    struct{ Name string } `json:"user"`
				Process struct{ Name string } `json:"process"` // gen puts the process under the actor
			} `json:"actor"`
			Src struct{ IP string } `json:"src_endpoint"`
			Dst struct {
				IP   string
				Port int
			} `json:"dst_endpoint"`
			Disposition string `json:"disposition"`
			Severity    int    `json:"severity_id"`
		}
		if err := json.Unmarshal(buf, &ev); err != nil {
			tb.Fatal(err)
		}
		mac.Reset()
		mac.Write([]byte(ev.Actor.User.Name))
		at := t0.Add(time.Duration(i) * time.Millisecond)
		b := append([]byte(nil), `{"time":"`...)
		b = at.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		b = append(b, `","bucket":"`...)
		b = at.Truncate(10*time.Second).AppendFormat(b, time.RFC3339)
		b = append(b, `","class_uid":1007,"severity_id":`...)
		b = strconv.AppendInt(b, int64(ev.Severity), 10)
		b = append(b, `,"actor":{"user":{"uid":"`...)
		b = hex.AppendEncode(b, mac.Sum(nil)[:8])
		b = append(b, `"}},"process":{"name":`...)
		if ev.Actor.Process.Name == "" {
			tb.Fatal("a generated event has no process name: the process quasi-identifier would be constant")
		}
		b = strconv.AppendQuote(b, ev.Actor.Process.Name)
		b = append(b, `},"src_endpoint":{"ip":"`...)
		b = append(b, ev.Src.IP...)
		b = append(b, `"},"dst_endpoint":{"ip":"`...)
		b = append(b, ev.Dst.IP...)
		b = append(b, `","port":`...)
		b = strconv.AppendInt(b, int64(ev.Dst.Port), 10)
		b = append(b, `},"disposition":"`...)
		b = append(b, ev.Disposition...)
		b = append(b, `"}`...)
		out = append(out, b)
	}
	return out
}

// benchRecords extracts the route outputs once (extraction is the caller's
// step before Add; see BenchmarkAggregateExtract for both), dealing them
// round robin to parts partitions with offsets rising in each.
//
// Compact (what BenchmarkAggregate feeds): each record's entity and
// quasi-identifier values are copied into one arena in record order, and
// its QI and metric slices are cut from one backing array each, so reading
// the next record is a sequential stream the hardware prefetcher follows.
// That is the worker's case: Add gets a record whose values Extract has
// just parsed, in cache. Scattered (the layout before session 7): the
// values alias their payloads, about 100 MB of separately allocated route
// outputs cycled through, so every record's values are read from memory
// for the first time inside Add (about 80 ns per record on this machine:
// RESULTS, issue 4, sixth round). Both give Add the same records, values,
// order and partitions; only where the bytes lie differs.
func benchRecords(b *testing.B, s *Stage, payloads [][]byte, parts int, compact bool) []Record {
	recs := make([]Record, len(payloads))
	size := 0
	for i, p := range payloads {
		if err := s.Extract(&recs[i], p); err != nil {
			b.Fatal(err)
		}
		recs[i].Topic, recs[i].Partition, recs[i].Offset = "telemetry", i%parts, int64(i)
		recs[i].Payload = nil // aggregate mode never reads it
		recs[i].QI = append([]string(nil), recs[i].QI...)
		recs[i].Metrics = append([]float64(nil), recs[i].Metrics...)
		size += len(recs[i].Entity)
		for _, v := range recs[i].QI {
			size += len(v)
		}
	}
	if !compact {
		return recs
	}
	nq, nm := len(s.qis), len(s.metrics)
	arena := make([]byte, 0, size)
	qis := make([]string, 0, len(recs)*nq)
	metrics := make([]float64, 0, len(recs)*nm)
	str := func(v string) string {
		n := len(arena)
		arena = append(arena, v...) // never grows: sized above
		return alias(arena[n:])
	}
	for i := range recs {
		r := &recs[i]
		r.Entity = str(r.Entity)
		n := len(qis)
		for _, v := range r.QI {
			qis = append(qis, str(v))
		}
		r.QI = qis[n:len(qis):len(qis)]
		n = len(metrics)
		metrics = append(metrics, r.Metrics...)
		r.Metrics = metrics[n:len(metrics):len(metrics)]
	}
	return recs
}

// benchN is how many distinct records the benchmarks cycle through
// (4.4 minutes of telemetry); each cycle shifts event times and offsets on,
// so windows keep opening and closing as in a live stream.
const benchN = 1 << 18

// BenchmarkAggregate measures the aggregate stage alone: Stage.Add on
// extracted records (window assignment, group key, group lookup or
// creation, distinct-entity counting, sums and max, offset spans) and, as
// the watermark passes, closing windows (roll-up, publishing aggregates,
// suppression). Extraction from JSON is outside the timed loop.
// allocs/rec is the exact mean (allocs/op rounds down). The records are
// spread over 6 partitions of one stage (a stage that sees many), their
// values laid out compactly in record order (see benchRecords: warm, as
// in the worker, where Extract has just parsed them).
func BenchmarkAggregate(b *testing.B) { benchAggregate(b, 6, true) }

// BenchmarkAggregateOnePartition is BenchmarkAggregate with every record
// in one partition: what a worker's stage sees, one per partition claim.
func BenchmarkAggregateOnePartition(b *testing.B) { benchAggregate(b, 1, true) }

// BenchmarkAggregateScattered is BenchmarkAggregate with the records'
// values left in their payloads (benchRecords): each read cold inside
// Add, as every figure before session 7 was measured.
func BenchmarkAggregateScattered(b *testing.B) { benchAggregate(b, 6, false) }

func benchAggregate(b *testing.B, parts int, compact bool) {
	payloads := telemetry(b, benchN)
	s, err := New(telemetryConfig(10), "testdata", Options{})
	if err != nil {
		b.Fatal(err)
	}
	recs := benchRecords(b, s, payloads, parts, compact)
	payloads = nil // compact: the records no longer reference them
	span := recs[len(recs)-1].EventTime.Sub(recs[0].EventTime) + time.Millisecond
	var outs []Output
	// Warm up: one full cycle, so windows, groups and buffers exist.
	for _, r := range recs {
		outs = s.Add(outs[:0], r)
	}
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	st0 := s.Stats()
	i, cycle := 0, int64(1)
	shift := time.Duration(cycle) * span
	for b.Loop() {
		r := recs[i]
		r.EventTime = r.EventTime.Add(shift)
		r.Offset += cycle * benchN
		outs = s.Add(outs[:0], r)
		if i++; i == benchN {
			i, cycle = 0, cycle+1
			shift = time.Duration(cycle) * span
		}
	}
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	st := s.Stats()
	b.ReportMetric(float64(st.Groups-st0.Groups)/float64(b.N), "aggs/rec")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/rec")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/rec")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "recs/s")
}

// cpuTime is the process's user+system CPU time: on a loaded machine a
// steadier measure than wall time (it includes the GC's work).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAggregateExtract is Extract then Add per record: what the
// pipeline runs per record on a JSON route output.
func BenchmarkAggregateExtract(b *testing.B) {
	payloads := telemetry(b, benchN)
	s, err := New(telemetryConfig(10), "testdata", Options{})
	if err != nil {
		b.Fatal(err)
	}
	var outs []Output
	var r Record
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Extract(&r, payloads[i%benchN]); err != nil {
			b.Fatal(err)
		}
		r.Offset = int64(i)
		outs = s.Add(outs[:0], r)
		i++
		if i%benchN == 0 {
			b.StopTimer()
			s, _ = New(telemetryConfig(10), "testdata", Options{})
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "recs/s")
}
