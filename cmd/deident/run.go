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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/pipeline"
	kafkasink "github.com/deident/deident/sinks/kafka"
	kafkasrc "github.com/deident/deident/sources/kafka"
	"github.com/deident/deident/transforms/route"
)

func runCmd() *cobra.Command {
	var cfgPath, logLevel string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the de-identification worker in the consumer group",
		Long: `Consume every source topic of the config as a member of kafka.group_id, de-identify
each record for every vendor route that may receive its category, and produce to the
route's topic with provenance headers. Undecodable records and records a route cannot
de-identify go to kafka.dead_letter_topic with the reason. Offsets are committed only
once every derived output is acknowledged (acks=all). SIGTERM or SIGINT drains and
commits within kafka.shutdown_grace, then exits 0.`,
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
			if err := w.run(ctx); err != nil {
				return err
			}
			log.Info("worker stopped", "consumed", w.runner.Counters().Worker.Consumed.Load())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	_ = cmd.MarkFlagRequired("config")
	return cmd
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
}

// worker is the wiring shared by run, demo and the tests: a consumer-group
// source over every source topic, the compiled routes, a Kafka sink.
type worker struct {
	cfg    *config.Config
	log    *slog.Logger
	routes map[string]*route.Route
	topics []string
	source *kafkasrc.Source
	sink   *kafkasink.Sink
	runner *pipeline.Runner
}

func newWorker(cfg *config.Config, log *slog.Logger, opt workerOptions) (*worker, error) {
	var errs []error
	if len(cfg.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	routes, err := route.CompileAll(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	inputs := map[string]pipeline.Input{}
	var topics []string
	for _, name := range sortedNames(cfg.Sources) {
		s := cfg.Sources[name]
		switch {
		case s.Topic == "":
			errs = append(errs, fmt.Errorf("sources.%s.topic: required for run", name))
			continue
		case s.Format != config.JSON:
			errs = append(errs, fmt.Errorf("sources.%s.format: %s is not supported by run yet (json only)", name, s.Format))
			continue
		}
		if _, dup := inputs[s.Topic]; dup {
			errs = append(errs, fmt.Errorf("sources.%s.topic: topic %s is used by another source", name, s.Topic))
			continue
		}
		inputs[s.Topic] = pipeline.Input{Category: string(s.Category), Decode: decodeJSON(cfg.Limits.MaxRecordBytes)}
		topics = append(topics, s.Topic)
	}
	var prs []pipeline.Route
	for _, name := range sortedNames(cfg.Vendors) {
		r := routes[name]
		if r == nil {
			continue // compile error reported above
		}
		if r.Config.Topic == "" {
			errs = append(errs, fmt.Errorf("vendors.%s.topic: required for run", name))
			continue
		}
		if r.Config.Output != config.JSON {
			errs = append(errs, fmt.Errorf("vendors.%s.output: %s is not supported by run yet (json only)", name, r.Config.Output))
			continue
		}
		prs = append(prs, pipeline.Route{
			Name:       name,
			Topic:      r.Config.Topic,
			Version:    r.Version,
			Allows:     func(c string) bool { return r.Allows(config.Category(c)) },
			NewApplier: func() pipeline.Applier { return r.NewApplier() },
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	runner, err := pipeline.New(pipeline.Config{
		Inputs:          inputs,
		Routes:          prs,
		DeadLetterTopic: cfg.Kafka.DeadLetterTopic,
		MaxInFlight:     cfg.Kafka.MaxInFlight,
		ShutdownGrace:   cfg.Kafka.ShutdownGrace,
		CommitInterval:  opt.commitInterval,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	scfg := kafkasrc.Config{Brokers: cfg.Kafka.Brokers, GroupID: cfg.Kafka.GroupID, Topics: topics, Logger: log}
	if opt.tuneSource != nil {
		opt.tuneSource(&scfg)
	}
	src, err := kafkasrc.New(scfg)
	if err != nil {
		return nil, err
	}
	sink, err := kafkasink.New(kafkasink.Config{
		Brokers:                cfg.Kafka.Brokers,
		BatchSize:              cfg.Kafka.BatchSize,
		BatchTimeout:           cfg.Kafka.BatchTimeout,
		MaxAttempts:            opt.sinkMaxAttempts,
		AllowAutoTopicCreation: opt.autoCreateTopics,
		Logger:                 log,
	})
	if err != nil {
		return nil, err
	}
	return &worker{cfg: cfg, log: log, routes: routes, topics: topics, source: src, sink: sink, runner: runner}, nil
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
		"Records per vendor route and outcome; in = out + suppressed + quarantined + filtered_by_category + failed (failed: sent to the dead-letter topic).",
		[]string{"route", "outcome"}, nil)
	descConsumed     = prometheus.NewDesc("deident_records_consumed_total", "Records read from source topics; consumed = decoded + dead_lettered.", nil, nil)
	descDecoded      = prometheus.NewDesc("deident_records_decoded_total", "Records decoded.", nil, nil)
	descDeadLettered = prometheus.NewDesc("deident_records_dead_lettered_total", "Undecodable records sent to the dead-letter topic.", nil, nil)
	descAcked        = prometheus.NewDesc("deident_outputs_acked_total", "Outputs (vendor records and dead letters) acknowledged by the broker.", nil, nil)
	descCommits      = prometheus.NewDesc("deident_offset_commits_total", "Successful offset commits.", nil, nil)
	descInFlight     = prometheus.NewDesc("deident_records_in_flight", "Records with unacknowledged outputs (at most kafka.max_in_flight).", nil, nil)
	descMaxInFlight  = prometheus.NewDesc("deident_records_in_flight_max", "The kafka.max_in_flight bound.", nil, nil)
	descGenerations  = prometheus.NewDesc("deident_consumer_generations_total", "Consumer-group generations joined.", nil, nil)
	descAssigned     = prometheus.NewDesc("deident_assigned_partitions", "Partitions assigned in the current generation.", nil, nil)
	descReady        = prometheus.NewDesc("deident_ready", "1 while /readyz answers 200.", nil, nil)
)

// workerCollector is a prometheus.Collector over a worker's counters.
type workerCollector struct{ w *worker }

var _ prometheus.Collector = (*workerCollector)(nil)

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRoute, descConsumed, descDecoded, descDeadLettered, descAcked, descCommits, descInFlight, descMaxInFlight, descGenerations, descAssigned, descReady} {
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
	for _, name := range cnt.Names {
		r := cnt.Routes[name]
		counter(descRoute, r.In.Load(), name, "in")
		counter(descRoute, r.Out.Load(), name, "out")
		counter(descRoute, r.Suppressed.Load(), name, "suppressed")
		counter(descRoute, r.Quarantined.Load(), name, "quarantined")
		counter(descRoute, r.FilteredByCategory.Load(), name, "filtered_by_category")
		counter(descRoute, r.Failed.Load(), name, "failed")
	}
	wc := &cnt.Worker
	counter(descConsumed, wc.Consumed.Load())
	counter(descDecoded, wc.Decoded.Load())
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
