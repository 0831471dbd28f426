package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/pipeline"
	kafkasink "github.com/deident/deident/sinks/kafka"
	kafkasrc "github.com/deident/deident/sources/kafka"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/kanon"
	"github.com/deident/deident/transforms/route"
)

func runCmd() *cobra.Command {
	var cfgPath, logLevel string
	var watch bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the de-identification worker in the consumer group",
		Long: `Consume every source topic of the config as a member of kafka.group_id, de-identify
each record for every vendor route that may receive its category, and produce to the
route's topic with provenance headers. Undecodable records and records a route cannot
de-identify go to kafka.dead_letter_topic with the reason. Offsets are committed only
once every derived output is acknowledged (acks=all). SIGTERM or SIGINT drains and
commits within kafka.shutdown_grace, then exits 0.

SIGHUP, or a change of the config file (--watch-config), reloads the config: a
valid config that is not materially weaker (or whose material changes the file
acknowledges) replaces the running policy between two records; any other is
refused and the running policy continues. Sources, topics, kafka settings, added
or removed routes and routes with k-anonymity need a restart. deident check
--against shows what a reload would do.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			w, err := newWorker(cfg, log, workerOptions{})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			if err := notifyReloads(ctx, w, cfgPath, watch); err != nil {
				return err
			}
			if addr := cfg.Kafka.MetricsAddr; addr != "off" {
				srv, bound, err := w.serveHTTP(addr)
				if err != nil {
					return err
				}
				defer srv.Close()
				log.Info("serving /metrics, /healthz, /readyz", "addr", bound)
			}
			go func() {
				<-ctx.Done()
				// Hard stop if draining hangs past the grace period.
				time.Sleep(cfg.Kafka.ShutdownGrace + 5*time.Second)
				log.Error("shutdown exceeded the grace period; exiting", "grace", cfg.Kafka.ShutdownGrace)
				os.Exit(1)
			}()
			log.Info("worker starting", "group", cfg.Kafka.GroupID, "topics", w.topics, "routes", len(w.routes))
			if err := runExit(w.run(ctx)); err != nil {
				return err
			}
			log.Info("worker stopped", "consumed", w.runner.Counters().Worker.Consumed.Load())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().BoolVar(&watch, "watch-config", true, "reload the config when its file changes (SIGHUP always reloads)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// runExit maps the worker's error to the process's: exit 4 (as apply)
// when a route's gate failed closed, 1 for any other error.
func runExit(err error) error {
	if err != nil && errors.Is(err, gate.ErrFailClosed) {
		return &exitError{code: exitFailClosed, err: err}
	}
	return err
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// workerOptions tune a worker for tests and the demo.
type workerOptions struct {
	// tuneSource adjusts the source config (e.g. shorter group timeouts).
	tuneSource func(*kafkasrc.Config)
	// commitInterval overrides the runner's 1s default.
	commitInterval time.Duration
	// autoCreateTopics lets the sink create missing topics.
	autoCreateTopics bool
	// sinkMaxAttempts overrides the sink's retry budget per batch (10).
	sinkMaxAttempts int
	// now is the clock of the gates and k-anonymity stages; time.Now when nil.
	now func() time.Time
	// stageInterval overrides how often stages are advanced (1s).
	stageInterval time.Duration
}

// worker is the wiring shared by run, demo and the tests: a consumer-group
// source over every source topic, the compiled routes, a Kafka sink.
type worker struct {
	cfg    *config.Config // at start; current().cfg after reloads
	log    *slog.Logger
	routes map[string]*route.Route // at start; current().routes after reloads
	gates  map[string]*gate.Gate   // routes with an enabled gate, at start
	topics []string
	source *kafkasrc.Source
	sink   closingSink
	runner *pipeline.Runner

	rb       *routeBuilder
	pol      atomic.Pointer[policyState] // the running policy (config reload: reload.go)
	reloadMu sync.Mutex                  // serialises reloads
	reloads  reloadCounters
}

func newWorker(cfg *config.Config, log *slog.Logger, opt workerOptions) (*worker, error) {
	var errs []error
	if len(cfg.Clusters) == 0 && len(cfg.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	routes, err := route.CompileAll(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	var reg *avrocodec.Registry
	if u := cfg.Kafka.SchemaRegistry; u != "" {
		if reg, err = avrocodec.NewRegistry(u, nil); err != nil {
			errs = append(errs, fmt.Errorf("kafka.schema_registry: %w", err))
		} else if a := cfg.Kafka.RegistryAuth; a.User != "" {
			reg.SetBasicAuth(a.User, a.Password.Reveal())
		}
	}
	schemas, err := sourceSchemas(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	fileSchemas := map[string]*avrocodec.Schema{} // by topic
	inputs := map[string]pipeline.Input{}
	formats := map[string]config.Format{} // by category: json if any of its sources is, else avro
	var topics []string
	for _, name := range sortedNames(cfg.Sources) {
		s := cfg.Sources[name]
		if s.Topic == "" {
			errs = append(errs, fmt.Errorf("sources.%s.topic: required for run", name))
			continue
		}
		if _, dup := inputs[s.Topic]; dup {
			errs = append(errs, fmt.Errorf("sources.%s.topic: topic %s is used by another source", name, s.Topic))
			continue
		}
		in := pipeline.Input{Category: string(s.Category)}
		switch s.Format {
		case config.JSON:
			in.Decode = decodeJSON(cfg.Limits.MaxRecordBytes)
		case config.Avro:
			if s.SchemaFile != "" {
				if schemas[name] != nil {
					in.DecodeTo = decodeAvroBody(schemas[name], name, cfg.Limits.MaxRecordBytes)
					fileSchemas[s.Topic] = schemas[name]
				}
				break
			}
			if cfg.Kafka.SchemaRegistry == "" {
				errs = append(errs, fmt.Errorf("sources.%s.format: avro needs kafka.schema_registry (records carry a schema id, and their writer schema is looked up there)", name))
				continue
			}
			in.DecodeTo = decodeAvro(&avrocodec.Decoder{Source: reg}, cfg.Limits.MaxRecordBytes)
		default:
			errs = append(errs, fmt.Errorf("sources.%s.format: %s is not supported by run", name, s.Format))
			continue
		}
		inputs[s.Topic] = in
		if formats[in.Category] != config.JSON {
			formats[in.Category] = s.Format
		}
		topics = append(topics, s.Topic)
	}
	now := opt.now
	if now == nil {
		now = time.Now
	}
	rb := &routeBuilder{reg: reg, formats: formats, fileSchemas: fileSchemas, now: now, log: log}
	prs, gates, err := rb.build(cfg, routes, nil)
	if err != nil {
		errs = append(errs, err)
	}
	rpTopics, err := repartitionInputs(cfg, inputs)
	if err != nil {
		errs = append(errs, err)
	}
	topics = append(topics, rpTopics...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	runner, err := pipeline.New(pipeline.Config{
		Inputs:          inputs,
		Routes:          prs,
		DeadLetterTopic: cfg.Kafka.DeadLetterTopic,
		QuarantineTopic: cfg.Kafka.QuarantineTopic,
		StageInterval:   opt.stageInterval,
		Now:             now,
		MaxInFlight:     cfg.Kafka.MaxInFlight,
		ShutdownGrace:   cfg.Kafka.ShutdownGrace,
		CommitInterval:  opt.commitInterval,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	conns, err := clusterConns(cfg)
	if err != nil {
		return nil, err
	}
	logClusters(log, conns)
	srcConn := conns[cfg.SourceCluster()]
	scfg := kafkasrc.Config{Brokers: srcConn.Brokers, Dialer: srcConn.Dialer(), GroupID: cfg.Kafka.GroupID, Topics: topics, Logger: log}
	if opt.tuneSource != nil {
		opt.tuneSource(&scfg)
	}
	src, err := kafkasrc.New(scfg)
	if err != nil {
		return nil, err
	}
	sink, err := newSink(cfg, conns, kafkasink.Config{
		BatchSize:              cfg.Kafka.BatchSize,
		BatchTimeout:           cfg.Kafka.BatchTimeout,
		MaxAttempts:            opt.sinkMaxAttempts,
		AllowAutoTopicCreation: opt.autoCreateTopics,
		Logger:                 log,
	})
	if err != nil {
		return nil, err
	}
	w := &worker{cfg: cfg, log: log, routes: routes, gates: gates, topics: topics, source: src, sink: sink, runner: runner, rb: rb}
	w.pol.Store(&policyState{cfg: cfg, routes: routes, gates: gates})
	return w, nil
}

// kanonStage is a route's k-anonymity stage for one claim (one partition).
// The runner checks what it releases with the gate (CheckClass for
// records, CheckAggregate for aggregates and late counts).
type kanonStage struct {
	s    *kanon.Stage
	rec  kanon.Record
	outs []kanon.Output
	// prov, when set, gives each output's Decision.Prov (a repartitioned
	// stage names the source records); called for every output.
	prov func(*kanon.Output) []byte
}

var _ pipeline.Stage = (*kanonStage)(nil)

func (k *kanonStage) Add(dst []pipeline.Decision, rec *pipeline.Record, out []byte) ([]pipeline.Decision, error) {
	if err := k.s.Extract(&k.rec, out); err != nil {
		return dst, err
	}
	k.rec.Topic, k.rec.Partition, k.rec.Offset = rec.Topic, rec.Partition, rec.Offset
	k.outs = k.s.Add(k.outs[:0], k.rec)
	k.rec.Payload = nil // Add copied what it keeps; out is not retained
	return k.decisions(dst), nil
}

func (k *kanonStage) Advance(dst []pipeline.Decision, now time.Time) []pipeline.Decision {
	k.outs = k.s.Advance(k.outs[:0], now)
	return k.decisions(dst)
}

func (k *kanonStage) Held() int64 {
	h := k.s.Held() // one claim: at most one partition
	if len(h) == 0 {
		return -1
	}
	return h[0].Offset
}

func (k *kanonStage) decisions(dst []pipeline.Decision) []pipeline.Decision {
	for i := range k.outs {
		o := &k.outs[i]
		d := pipeline.Decision{Payload: o.Payload, Entities: o.Entities, Count: o.Count, First: -1, Last: -1}
		if k.prov != nil {
			d.Prov = k.prov(o)
		}
		for _, sp := range o.Spans {
			if d.First < 0 || sp.First < d.First {
				d.First = sp.First
			}
			d.Last = max(d.Last, sp.Last)
		}
		switch o.Kind {
		case kanon.Released:
			d.Kind = pipeline.Release
		case kanon.Aggregate:
			d.Kind = pipeline.Aggregate
		case kanon.Suppressed, kanon.Late:
			d.Kind, d.Payload = pipeline.Suppress, nil
		case kanon.LateCount:
			d.Kind, d.Count = pipeline.Info, 0
		default:
			continue
		}
		dst = append(dst, d)
		o.Payload = nil
	}
	return dst
}

// run consumes until ctx is done (nil after draining) or a fatal error,
// then flushes and closes the sink.
func (w *worker) run(ctx context.Context) error {
	err := w.runner.Run(ctx, w.source, w.sink)
	if cerr := w.sink.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing sink: %w", cerr)
	}
	return err
}

// decodeJSON checks a source value is one JSON object within the size limit.
func decodeJSON(maxBytes int) func([]byte) error {
	return func(v []byte) error {
		if len(v) > maxBytes {
			return fmt.Errorf("record of %d bytes exceeds limits.max_record_bytes %d", len(v), maxBytes)
		}
		var s jsonscan.Scanner
		s.Reset(v)
		if s.Peek() != jsonscan.Object {
			if _, err := s.Skip(); err != nil {
				return err
			}
			return errors.New("record is not a JSON object")
		}
		if _, err := s.Skip(); err != nil {
			return err
		}
		return s.End()
	}
}

// serveHTTP serves /metrics (Prometheus), /healthz and /readyz on addr.
func (w *worker) serveHTTP(addr string) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("kafka.metrics_addr: %w", err)
	}
	srv := &http.Server{Handler: w.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String(), nil
}

// httpHandler routes /metrics, /healthz and /readyz:
//
//	/healthz  200 while the process serves HTTP (liveness);
//	/readyz   200 while the worker is in a consumer-group generation (joined
//	          and assigned) and has not failed, 503 otherwise.
func (w *worker) httpHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		&workerCollector{w: w},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		switch {
		case w.runner.Err() != nil:
			http.Error(rw, "not ready: worker failed", http.StatusServiceUnavailable)
		case !w.source.Ready():
			http.Error(rw, "not ready: not in a consumer group generation", http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(rw, "ready: %d partitions assigned\n", w.source.Partitions())
		}
	})
	return mux
}

// Metric descriptors. The pipeline keeps its accounting in atomic counters
// (read by tests, demo and Check); workerCollector exposes them at scrape
// time, so there is one source of truth and nothing is counted twice.
var (
	descRoute = prometheus.NewDesc("deident_route_records_total",
		"Records per vendor route and outcome; in = out + suppressed + quarantined + filtered_by_category + failed + deident_route_records_held + revoked (failed: sent to the dead-letter topic; revoked: held by a k-anonymity stage when the partition was revoked, reprocessed by its next owner).",
		[]string{"route", "outcome"}, nil)
	descConsumed     = prometheus.NewDesc("deident_records_consumed_total", "Records read from source topics; consumed = decoded + dead_lettered.", nil, nil)
	descDecoded      = prometheus.NewDesc("deident_records_decoded_total", "Records decoded.", nil, nil)
	descDedicated    = prometheus.NewDesc("deident_records_repartition_decoded_total", "Records decoded from repartition topics (read only by their route's second leg; every other route's in counts decoded minus these).", nil, nil)
	descDeadLettered = prometheus.NewDesc("deident_records_dead_lettered_total", "Undecodable records sent to the dead-letter topic.", nil, nil)
	descAcked        = prometheus.NewDesc("deident_outputs_acked_total", "Outputs (vendor records and dead letters) acknowledged by the broker.", nil, nil)
	descCommits      = prometheus.NewDesc("deident_offset_commits_total", "Successful offset commits.", nil, nil)
	descInFlight     = prometheus.NewDesc("deident_records_in_flight", "Records with unacknowledged outputs (at most kafka.max_in_flight).", nil, nil)
	descMaxInFlight  = prometheus.NewDesc("deident_records_in_flight_max", "The kafka.max_in_flight bound.", nil, nil)
	descGenerations  = prometheus.NewDesc("deident_consumer_generations_total", "Consumer-group generations joined.", nil, nil)
	descAssigned     = prometheus.NewDesc("deident_assigned_partitions", "Partitions assigned in the current generation.", nil, nil)
	descReady        = prometheus.NewDesc("deident_ready", "1 while /readyz answers 200.", nil, nil)
	descHeld         = prometheus.NewDesc("deident_route_records_held", "Records a route's k-anonymity stage holds undecided (their offsets are not committed).", []string{"route"}, nil)
	descGateQuar     = prometheus.NewDesc("deident_gate_quarantined_total",
		"Records the re-identification gate quarantined, per route and reason code; a record failing two checks counts under both.",
		[]string{"route", "reason"}, nil)
	descGateChecked = prometheus.NewDesc("deident_gate_checked_total", "Records the re-identification gate checked, per route.", []string{"route"}, nil)
	descGateClosed  = prometheus.NewDesc("deident_gate_failed_closed", "1 once the route's quarantine rate has passed max_quarantine_rate.", []string{"route"}, nil)
	descReloads     = prometheus.NewDesc("deident_config_reloads_total",
		"Config reloads (SIGHUP or the file changing) by result: applied (including no policy change), refused (materially weaker without acknowledgement, or needs a restart), invalid.",
		[]string{"result"}, nil)
	descPolicy = prometheus.NewDesc("deident_policy_info", "1 for the policy version each route runs under.", []string{"route", "version"}, nil)
)

// workerCollector is a prometheus.Collector over a worker's counters.
type workerCollector struct{ w *worker }

var _ prometheus.Collector = (*workerCollector)(nil)

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRoute, descConsumed, descDecoded, descDedicated, descDeadLettered, descAcked, descCommits, descInFlight, descMaxInFlight, descGenerations, descAssigned, descReady, descHeld, descGateQuar, descGateChecked, descGateClosed, descReloads, descPolicy} {
		ch <- d
	}
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	cnt := c.w.runner.Counters()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gates := c.w.current().gates
	versions := c.w.runner.Versions()
	for _, name := range cnt.Names {
		r := cnt.Routes[name]
		ch <- prometheus.MustNewConstMetric(descPolicy, prometheus.GaugeValue, 1, name, versions[name])
		counter(descRoute, r.In.Load(), name, "in")
		counter(descRoute, r.Out.Load(), name, "out")
		counter(descRoute, r.Suppressed.Load(), name, "suppressed")
		counter(descRoute, r.Quarantined.Load(), name, "quarantined")
		counter(descRoute, r.FilteredByCategory.Load(), name, "filtered_by_category")
		counter(descRoute, r.Failed.Load(), name, "failed")
		counter(descRoute, r.Revoked.Load(), name, "revoked")
		ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(r.Held.Load()), name)
		if g := gates[name]; g != nil {
			s := g.Stats()
			counter(descGateChecked, s.Checked, name)
			s.Each(func(reason string, n uint64) { counter(descGateQuar, n, name, reason) })
			closed := 0.0
			if g.Err() != nil {
				closed = 1
			}
			ch <- prometheus.MustNewConstMetric(descGateClosed, prometheus.GaugeValue, closed, name)
		}
	}
	counter(descReloads, c.w.reloads.applied.Load(), string(reloadApplied))
	counter(descReloads, c.w.reloads.refused.Load(), string(reloadRefused))
	counter(descReloads, c.w.reloads.invalid.Load(), string(reloadInvalid))
	wc := &cnt.Worker
	counter(descConsumed, wc.Consumed.Load())
	counter(descDecoded, wc.Decoded.Load())
	counter(descDedicated, wc.DecodedDedicated.Load())
	counter(descDeadLettered, wc.DeadLettered.Load())
	counter(descAcked, wc.Acked.Load())
	counter(descCommits, wc.Commits.Load())
	gauge(descInFlight, float64(wc.InFlight.Load()))
	gauge(descMaxInFlight, float64(c.w.runner.MaxInFlight()))
	counter(descGenerations, uint64(c.w.source.Generations()))
	gauge(descAssigned, float64(c.w.source.Partitions()))
	ready := 0.0
	if c.w.source.Ready() && c.w.runner.Err() == nil {
		ready = 1
	}
	gauge(descReady, ready)
}
