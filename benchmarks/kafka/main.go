// Command kafka measures deident's records/s from a source topic to two
// vendor topics on one machine against a real broker, side by side in one
// run with a bare kafka-go loop that consumes the same records and
// produces each twice with no transform, with the same producer batching.
//
//	scripts/kafka-local start
//	go run ./benchmarks/kafka -brokers 127.0.0.1:19092 -records 200000
//	go run ./benchmarks/kafka -gate off        # deident without the re-identification gate only
//	go run ./benchmarks/kafka -broker-pid $(cat /tmp/deident-kafka-19092/kafka.pid)   # the broker's CPU too
//	go run ./benchmarks/kafka -soak 10m        # memory over time (RSS every 10s)
//
// Both contenders read the same source topic from its first offset, produce
// with one asynchronous kafka-go Writer (acks=all, Hash balancer, the same
// -batch and -batch-timeout, 16 MiB batches) and finish when every output
// is acknowledged. deident additionally decodes, applies two routes
// (configs/bench.yaml's fields, each route with its own random key),
// adds provenance headers, tracks offsets and commits them as a consumer
// group; the bare loop reads each partition with a plain kafka.Reader and
// commits nothing. Both read with the same kafka.Reader settings
// (readerMinBytes, readerMaxBytes, readerMaxWait, readerQueue). With -gate
// both (the default) every round runs deident twice, with each route's
// re-identification gate off and on (the gate quarantines to its own topic),
// and the ratio to the bare loop is reported for each. Times run from the
// first record fetched to the last output acknowledged, so deident's group
// join is reported apart. On a shared machine wall time is noisy, so each
// row also gives this process's CPU seconds over the run (user+sys, every
// goroutine: reader, transform, writer, GC) and records per CPU-second,
// and with -broker-pid the broker's CPU seconds over the same span. With
// -cpuprofile, samples carry a "program" label (bare, deident,
// deident+gate): go tool pprof -tagfocus 'program=^deident$'.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/pipeline"
	kafkasink "github.com/deident/deident/sinks/kafka"
	kafkasrc "github.com/deident/deident/sources/kafka"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/route"
)

type options struct {
	brokers      []string
	records      int
	partitions   int
	batch        int
	batchTimeout time.Duration
	maxInFlight  int
	rounds       int
	soak         time.Duration
	sample       time.Duration
	rate         int
	cpuProfile   string
	gate         string
	brokerPID    int
}

// The kafka.Reader settings of both contenders (sources/kafka's defaults).
const (
	readerMinBytes = 1
	readerMaxBytes = 10 << 20
	readerMaxWait  = 250 * time.Millisecond
	readerQueue    = 1000
)

func main() {
	var o options
	var brokers string
	flag.StringVar(&brokers, "brokers", "127.0.0.1:19092", "bootstrap brokers (comma-separated)")
	flag.IntVar(&o.records, "records", 200000, "records loaded into the source topic")
	flag.IntVar(&o.partitions, "partitions", 3, "partitions of the source and vendor topics")
	flag.IntVar(&o.batch, "batch", 1000, "producer batch size (both contenders)")
	flag.DurationVar(&o.batchTimeout, "batch-timeout", 50*time.Millisecond, "producer batch timeout (both contenders)")
	flag.IntVar(&o.maxInFlight, "max-in-flight", 10000, "deident's kafka.max_in_flight")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds; each runs the bare loop and deident, alternating which goes first")
	flag.DurationVar(&o.soak, "soak", 0, "instead of the comparison, run deident for this long under a steady producer and sample memory")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "soak: sampling interval")
	flag.IntVar(&o.rate, "rate", 20000, "soak: records/s produced into the source topic")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (samples labelled program=bare|deident|deident+gate)")
	flag.IntVar(&o.brokerPID, "broker-pid", 0, "also report the broker process's CPU time per contender (scripts/kafka-local writes it to $DEIDENT_KAFKA_STATE/kafka.pid)")
	flag.StringVar(&o.gate, "gate", "both", "deident's re-identification gate: off, on, or both (each round runs deident twice)")
	flag.Parse()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchmark:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	o.brokers = strings.Split(brokers, ",")
	switch o.gate {
	case "off", "on", "both":
	default:
		fmt.Fprintf(os.Stderr, "benchmark: -gate must be off, on or both, got %q\n", o.gate)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "benchmark:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	version, err := brokerInfo(ctx, o.brokers)
	if err != nil {
		return err
	}
	fmt.Printf("broker %s (%s), nproc %d, GOMAXPROCS %d, %s\n", strings.Join(o.brokers, ","), version, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	run := strconv.FormatInt(time.Now().UnixMilli(), 36)
	source := "bench-src-" + run
	if err := createTopics(ctx, o.brokers, o.partitions, source); err != nil {
		return err
	}
	cfg, err := benchConfig(o, source)
	if err != nil {
		return err
	}
	if o.soak > 0 {
		return soak(ctx, o, cfg, source, run)
	}

	start := time.Now()
	if err := load(ctx, o.brokers, source, o.records, o.batch); err != nil {
		return err
	}
	fmt.Printf("loaded %d threat records (%d partitions) in %v\n", o.records, o.partitions, time.Since(start).Round(time.Millisecond))
	fmt.Printf("producer batching: %d records or %v, acks=all; deident max_in_flight %d\n\n", o.batch, o.batchTimeout, o.maxInFlight)
	progs := []string{"bare"}
	switch o.gate {
	case "off":
		progs = append(progs, "deident")
	case "on":
		progs = append(progs, "deident+gate")
	default:
		progs = append(progs, "deident", "deident+gate")
	}
	fmt.Printf("%-6s %-13s %8s %10s %10s %8s %12s %8s %12s %9s\n", "round", "program", "seconds", "records/s", "outputs/s", "join", "/bare(round)", "cpu_s", "rec/cpu_s", "broker_s")
	rps := map[string][]float64{}
	cpus := map[string][]float64{} // records per CPU-second of this process
	for r := range o.rounds {
		// Rotate the order so no contender always runs first (or right
		// after the same one).
		order := make([]string, len(progs))
		for i := range progs {
			order[i] = progs[(i+r)%len(progs)]
		}
		var round []roundResult
		for _, prog := range order {
			tag := fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(prog, "+", "-"), run, r)
			var res result
			var err error
			cpu0, b0 := cpuTime(), procCPU(o.brokerPID)
			pprof.Do(ctx, pprof.Labels("program", prog), func(ctx context.Context) {
				if prog == "bare" {
					res, err = runBare(ctx, o, source, tag)
				} else {
					res, err = runDeident(ctx, o, cfg, tag, prog == "deident+gate")
				}
			})
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, prog, err)
			}
			res.cpu, res.broker = cpuTime()-cpu0, procCPU(o.brokerPID)-b0
			x := float64(o.records) / res.elapsed.Seconds()
			rps[prog] = append(rps[prog], x)
			cpus[prog] = append(cpus[prog], float64(o.records)/res.cpu.Seconds())
			round = append(round, roundResult{prog, res, x})
		}
		var bare float64
		for _, rr := range round {
			if rr.prog == "bare" {
				bare = rr.rps
			}
		}
		for _, rr := range round {
			ratio := ""
			if rr.prog != "bare" {
				ratio = fmt.Sprintf("%.2f", rr.rps/bare)
			}
			fmt.Printf("%-6d %-13s %8.2f %10.0f %10.0f %8v %12s %8.2f %12.0f %9.2f\n", r, rr.prog, rr.res.elapsed.Seconds(), rr.rps, 2*rr.rps, rr.res.join.Round(time.Millisecond), ratio,
				rr.res.cpu.Seconds(), float64(o.records)/rr.res.cpu.Seconds(), rr.res.broker.Seconds())
		}
	}
	mb := median(rps["bare"])
	fmt.Printf("\nmedian records/s: bare %.0f", mb)
	for _, p := range progs[1:] {
		fmt.Printf(", %s %.0f", p, median(rps[p]))
	}
	fmt.Println()
	for _, p := range progs[1:] {
		var per []float64
		for i, x := range rps[p] {
			per = append(per, x/rps["bare"][i])
		}
		fmt.Printf("%s/bare = %.2f (medians), median of the per-round ratios %.2f; records per CPU-second of this process: %.2f of bare's (medians; the broker's CPU is not counted)\n",
			p, median(rps[p])/mb, median(per), median(cpus[p])/median(cpus["bare"]))
	}
	return nil
}

type roundResult struct {
	prog string
	res  result
	rps  float64
}

type result struct {
	elapsed time.Duration // first record fetched .. last output acknowledged
	join    time.Duration // start .. first record fetched
	cpu     time.Duration // this process's CPU time (user+sys) over the whole run, join included
	broker  time.Duration // the broker's CPU time over the same span (-broker-pid)
}

// procCPU returns the CPU time (user+sys) of process pid so far, from
// /proc/PID/stat (clock ticks of 10ms), or 0.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// cpuTime returns the process's CPU time so far (user+sys, every thread).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchConfig writes a config with two routes over configs/bench.yaml's
// fields, each with its own random key from the environment.
func benchConfig(o options, source string) (*config.Config, error) {
	fields := `
      - {path: time, action: keep}
      - {path: class_uid, action: keep}
      - {path: category_uid, action: keep}
      - {path: activity_id, action: keep}
      - {path: severity_id, action: keep}
      - {path: type_uid, action: keep}
      - {path: metadata.product.name, action: keep}
      - {path: actor.process.name, action: keep}
      - {path: dst_endpoint.port, action: keep}
      - {path: disposition, action: keep}
      - {path: actor.user.name, action: pseudonymize}
      - {path: actor.user.email_addr, action: pseudonymize}
      - {path: actor.user.uid, action: pseudonymize}
      - {path: device.hostname, action: pseudonymize}
      - {path: src_endpoint.ip, action: ip_truncate, ipv4_bits: 24}`
	var b strings.Builder
	fmt.Fprintf(&b, "kafka:\n  brokers: [%s]\n  batch_size: %d\n  batch_timeout: %s\n  max_in_flight: %d\n", strings.Join(o.brokers, ", "), o.batch, o.batchTimeout, o.maxInFlight)
	fmt.Fprintf(&b, "sources:\n  edr: {topic: %s, category: threat_telemetry}\nvendors:\n", source)
	for _, v := range []string{"a", "b"} {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		env := "DEIDENT_BENCH_KEY_" + strings.ToUpper(v)
		os.Setenv(env, hex.EncodeToString(key))
		fmt.Fprintf(&b, "  bench-%s:\n    purpose: benchmark\n    categories: [threat_telemetry]\n    topic: placeholder-%s\n    keys:\n      - env: %s\n    fields:%s\n", v, v, env, fields)
	}
	dir, err := os.MkdirTemp("", "deident-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return config.Load(path)
}

// runDeident runs the worker (the wiring of `deident run`) with vendor
// topics named after tag until every record's outputs are acknowledged;
// gate switches every route's re-identification gate on (its defaults)
// or off.
func runDeident(ctx context.Context, o options, cfg *config.Config, tag string, gate bool) (result, error) {
	c := *cfg
	c.Vendors = map[string]config.Route{}
	var topics []string
	for name, v := range cfg.Vendors {
		v.Topic = tag + "-" + name
		v.Gate.Enabled = &gate
		c.Vendors[name] = v
		topics = append(topics, v.Topic)
	}
	c.Kafka.GroupID = tag
	c.Kafka.DeadLetterTopic = tag + "-dead-letter"
	c.Kafka.QuarantineTopic = tag + "-quarantine"
	if err := createTopics(ctx, o.brokers, o.partitions, topics...); err != nil {
		return result{}, err
	}
	if err := createTopics(ctx, o.brokers, 1, c.Kafka.DeadLetterTopic, c.Kafka.QuarantineTopic); err != nil {
		return result{}, err
	}
	w, err := newWorker(&c)
	if err != nil {
		return result{}, err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- w.run(wctx) }()
	cnt := w.runner.Counters()
	var first time.Time
	for cnt.Worker.Consumed.Load() < uint64(o.records) || cnt.Worker.InFlight.Load() > 0 {
		select {
		case err := <-errc:
			return result{}, fmt.Errorf("worker stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
		if first.IsZero() && cnt.Worker.Consumed.Load() > 0 {
			first = time.Now()
		}
	}
	done := time.Now()
	stop()
	if err := <-errc; err != nil {
		return result{}, err
	}
	if err := cnt.Check(); err != nil {
		return result{}, err
	}
	if d := cnt.Worker.DeadLettered.Load(); d != 0 {
		return result{}, fmt.Errorf("%d records dead-lettered", d)
	}
	for _, name := range cnt.Names {
		if q := cnt.Routes[name].Quarantined.Load(); q != 0 {
			fmt.Printf("  (route %s: %d records quarantined by the gate)\n", name, q)
		}
	}
	return result{elapsed: done.Sub(first), join: first.Sub(start)}, nil
}

// runBare consumes every partition of source with a plain kafka.Reader and
// produces each record twice (to two topics) with no transform.
func runBare(ctx context.Context, o options, source, tag string) (result, error) {
	outs := []string{tag + "-a", tag + "-b"}
	if err := createTopics(ctx, o.brokers, o.partitions, outs...); err != nil {
		return result{}, err
	}
	ends, err := endOffsets(ctx, o.brokers, source, o.partitions)
	if err != nil {
		return result{}, err
	}
	var acked atomic.Int64
	var failed atomic.Value
	all := make(chan struct{})
	want := int64(2 * o.records)
	w := &kafka.Writer{
		Addr:         kafka.TCP(o.brokers...),
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		Async:        true,
		BatchSize:    o.batch,
		BatchBytes:   16 << 20,
		BatchTimeout: o.batchTimeout,
		Completion: func(msgs []kafka.Message, err error) {
			if err != nil {
				failed.Store(err)
			}
			if acked.Add(int64(len(msgs))) == want {
				close(all)
			}
		},
	}
	start := time.Now()
	var firstOnce sync.Once
	var first time.Time
	var wg sync.WaitGroup
	errs := make([]error, o.partitions)
	for p := range o.partitions {
		wg.Go(func() {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: o.brokers, Topic: source, Partition: p,
				MinBytes: readerMinBytes, MaxBytes: readerMaxBytes, MaxWait: readerMaxWait, QueueCapacity: readerQueue})
			defer r.Close()
			for off := int64(0); off < ends[p]; {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					errs[p] = err
					return
				}
				firstOnce.Do(func() { first = time.Now() })
				off = m.Offset + 1
				if err := w.WriteMessages(ctx,
					kafka.Message{Topic: outs[0], Key: m.Key, Value: m.Value},
					kafka.Message{Topic: outs[1], Key: m.Key, Value: m.Value},
				); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return result{}, err
	}
	<-all
	done := time.Now()
	if err := w.Close(); err != nil {
		return result{}, err
	}
	if err, _ := failed.Load().(error); err != nil {
		return result{}, err
	}
	return result{elapsed: done.Sub(first), join: first.Sub(start)}, nil
}

// soak runs deident under a steady producer for o.soak and prints memory
// every o.sample: RSS (from /proc/self/status; this process also runs the
// producer), Go heap in use, records in flight and throughput.
func soak(ctx context.Context, o options, cfg *config.Config, source, run string) error {
	ctx, cancel := context.WithTimeout(ctx, o.soak)
	defer cancel()
	var produced atomic.Int64
	prodErr := make(chan error, 1)
	go func() { prodErr <- produceSteady(ctx, o, source, &produced) }()

	c := *cfg
	c.Vendors = map[string]config.Route{}
	var topics []string
	gate := o.gate != "off"
	for name, v := range cfg.Vendors {
		v.Topic = "soak-" + run + "-" + name
		v.Gate.Enabled = &gate
		c.Vendors[name] = v
		topics = append(topics, v.Topic)
	}
	c.Kafka.GroupID = "soak-" + run
	c.Kafka.DeadLetterTopic = "soak-" + run + "-dead-letter"
	c.Kafka.QuarantineTopic = "soak-" + run + "-quarantine"
	if err := createTopics(ctx, o.brokers, o.partitions, append(topics, c.Kafka.DeadLetterTopic, c.Kafka.QuarantineTopic)...); err != nil {
		return err
	}
	w, err := newWorker(&c)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- w.run(ctx) }()
	cnt := w.runner.Counters()
	fmt.Printf("soak %v at %d records/s, gate %v, sampling every %v\n", o.soak, o.rate, gate, o.sample)
	fmt.Printf("%8s %10s %10s %10s %12s %12s\n", "elapsed", "rss_MiB", "heap_MiB", "in_flight", "consumed", "produced")
	t := time.NewTicker(o.sample)
	defer t.Stop()
	start := time.Now()
	var rss []float64
	for {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			if err := <-prodErr; err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return err
			}
			if len(rss) >= 2 {
				h := len(rss) / 2
				fmt.Printf("max RSS: first half %.1f MiB, second half %.1f MiB\n", maxOf(rss[:h]), maxOf(rss[h:]))
			}
			return cnt.Check()
		case <-t.C:
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			r := rssMiB()
			rss = append(rss, r)
			fmt.Printf("%8s %10.1f %10.1f %10d %12d %12d\n", time.Since(start).Round(time.Second), r, float64(ms.HeapInuse)/(1<<20), cnt.Worker.InFlight.Load(), cnt.Worker.Consumed.Load(), produced.Load())
		}
	}
}

func produceSteady(ctx context.Context, o options, topic string, produced *atomic.Int64) error {
	w := &kafka.Writer{Addr: kafka.TCP(o.brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: o.batch, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	g := gen.New(gen.Options{Kind: gen.Threat, Seed: 1})
	const tick = 100 * time.Millisecond
	per := max(1, o.rate/10)
	t := time.NewTicker(tick)
	defer t.Stop()
	i := 0
	for {
		msgs := make([]kafka.Message, per)
		for j := range msgs {
			msgs[j] = kafka.Message{Key: []byte("entity-" + strconv.Itoa(i%997)), Value: g.Append(nil)}
			i++
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return err
		}
		produced.Add(int64(per))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func rssMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// worker is the wiring of `deident run` (cmd/deident/run.go's newWorker),
// reduced to what the benchmark config uses: JSON sources, JSON routes, the
// re-identification gate where enabled, no k-anonymity stage.
type worker struct {
	runner *pipeline.Runner
	source *kafkasrc.Source
	sink   *kafkasink.Sink
}

func newWorker(cfg *config.Config) (*worker, error) {
	routes, err := route.CompileAll(cfg)
	if err != nil {
		return nil, err
	}
	inputs := map[string]pipeline.Input{}
	var topics []string
	for _, s := range cfg.Sources {
		inputs[s.Topic] = pipeline.Input{Category: string(s.Category), Decode: decodeJSON(cfg.Limits.MaxRecordBytes)}
		topics = append(topics, s.Topic)
	}
	names := make([]string, 0, len(routes))
	for name := range routes {
		names = append(names, name)
	}
	sort.Strings(names)
	var prs []pipeline.Route
	for _, name := range names {
		r := routes[name]
		pr := pipeline.Route{
			Name: name, Topic: r.Config.Topic, Version: r.Version,
			Allows:     func(c string) bool { return r.Allows(config.Category(c)) },
			NewApplier: func() pipeline.Applier { return r.NewApplier() },
			Decodes:    true, // as cmd/deident: the route's parse is the JSON source's decode check
		}
		g, err := gate.New(name, r.Config)
		if err != nil {
			return nil, err
		}
		if g.Enabled() {
			pr.NewChecker = func(a pipeline.Applier) pipeline.Checker {
				c := g.NewChecker()
				a.(*route.Applier).SetObserver(c)
				return g.ForPipeline(c, true)
			}
		}
		prs = append(prs, pr)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	runner, err := pipeline.New(pipeline.Config{
		Inputs: inputs, Routes: prs, DeadLetterTopic: cfg.Kafka.DeadLetterTopic, QuarantineTopic: cfg.Kafka.QuarantineTopic,
		MaxInFlight: cfg.Kafka.MaxInFlight, ShutdownGrace: cfg.Kafka.ShutdownGrace, Logger: quiet,
	})
	if err != nil {
		return nil, err
	}
	src, err := kafkasrc.New(kafkasrc.Config{
		Brokers: cfg.Kafka.Brokers, GroupID: cfg.Kafka.GroupID, Topics: topics, Logger: quiet,
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second, JoinGroupBackoff: 500 * time.Millisecond,
		MinBytes: readerMinBytes, MaxBytes: readerMaxBytes, MaxWait: readerMaxWait, QueueCapacity: readerQueue,
	})
	if err != nil {
		return nil, err
	}
	sink, err := kafkasink.New(kafkasink.Config{Brokers: cfg.Kafka.Brokers, BatchSize: cfg.Kafka.BatchSize, BatchTimeout: cfg.Kafka.BatchTimeout, Logger: quiet})
	if err != nil {
		return nil, err
	}
	return &worker{runner: runner, source: src, sink: sink}, nil
}

func (w *worker) run(ctx context.Context) error {
	err := w.runner.Run(ctx, w.source, w.sink)
	if cerr := w.sink.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// decodeJSON is cmd/deident's source decoder: one JSON object within the size limit.
func decodeJSON(maxBytes int) func([]byte) error {
	return func(v []byte) error {
		if len(v) > maxBytes {
			return fmt.Errorf("record of %d bytes exceeds limits.max_record_bytes %d", len(v), maxBytes)
		}
		var s jsonscan.Scanner
		s.Reset(v)
		if s.Peek() != jsonscan.Object {
			return errors.New("record is not a JSON object")
		}
		if _, err := s.Skip(); err != nil {
			return err
		}
		return s.End()
	}
}

func load(ctx context.Context, brokers []string, topic string, n, batch int) error {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: batch, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	g := gen.New(gen.Options{Kind: gen.Threat, Seed: 1})
	const chunk = 10000
	msgs := make([]kafka.Message, 0, chunk)
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: []byte("entity-" + strconv.Itoa(i%997)), Value: g.Append(nil)})
		if len(msgs) == chunk || i == n-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				return fmt.Errorf("loading %s: %w", topic, err)
			}
			msgs = msgs[:0]
		}
	}
	return nil
}

func createTopics(ctx context.Context, brokers []string, partitions int, topics ...string) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: -1})
	}
	res, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for t, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", t, err)
		}
	}
	// Wait for leaders.
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		ok := err == nil
		if ok {
			for _, t := range md.Topics {
				if t.Error != nil || len(t.Partitions) != partitions {
					ok = false
				}
				for _, p := range t.Partitions {
					ok = ok && p.Error == nil && p.Leader.Host != ""
				}
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics %v have no leaders after 30s (%v)", topics, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func endOffsets(ctx context.Context, brokers []string, topic string, partitions int) (map[int]int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	var reqs []kafka.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, p.Error
		}
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// brokerInfo returns the broker's ApiVersions summary (kafka-go cannot ask
// for the release; the highest Produce/Fetch versions identify it).
func brokerInfo(ctx context.Context, brokers []string) (string, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	res, err := client.ApiVersions(ctx, &kafka.ApiVersionsRequest{})
	if err != nil {
		return "", fmt.Errorf("reaching broker %v: %w", brokers, err)
	}
	var produce, fetch int
	for _, k := range res.ApiKeys {
		switch k.ApiName {
		case "Produce":
			produce = k.MaxVersion
		case "Fetch":
			fetch = k.MaxVersion
		}
	}
	return fmt.Sprintf("Produce v%d, Fetch v%d", produce, fetch), nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
