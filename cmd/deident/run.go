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
	"strings"
	"syscall"
	"time"

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

// serveHTTP serves /metrics (Prometheus text format), /healthz and /readyz.
func (w *worker) serveHTTP(addr string) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("kafka.metrics_addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = rw.Write([]byte(w.metricsText()))
	})
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		if err := w.runner.Err(); err != nil {
			http.Error(rw, "failed", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if w.runner.Err() != nil || !w.source.Ready() {
			http.Error(rw, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String(), nil
}

// metricsText renders the counters in the Prometheus text exposition format.
func (w *worker) metricsText() string {
	c := w.runner.Counters()
	var b strings.Builder
	metric := func(name, typ, help string, samples ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, s := range samples {
			b.WriteString(name + s + "\n")
		}
	}
	wc := &c.Worker
	metric("deident_records_consumed_total", "counter", "Records read from source topics.", fmt.Sprintf(" %d", wc.Consumed.Load()))
	metric("deident_records_decoded_total", "counter", "Records decoded.", fmt.Sprintf(" %d", wc.Decoded.Load()))
	metric("deident_records_dead_lettered_total", "counter", "Undecodable records sent to the dead-letter topic.", fmt.Sprintf(" %d", wc.DeadLettered.Load()))
	metric("deident_outputs_acked_total", "counter", "Outputs acknowledged by the broker.", fmt.Sprintf(" %d", wc.Acked.Load()))
	metric("deident_offset_commits_total", "counter", "Offset commits.", fmt.Sprintf(" %d", wc.Commits.Load()))
	metric("deident_records_in_flight", "gauge", "Records with unacknowledged outputs.", fmt.Sprintf(" %d", wc.InFlight.Load()))
	metric("deident_consumer_generations_total", "counter", "Consumer group generations joined.", fmt.Sprintf(" %d", w.source.Generations()))
	var samples []string
	for _, name := range c.Names {
		r := c.Routes[name]
		for _, kv := range []struct {
			outcome string
			n       uint64
		}{{"in", r.In.Load()}, {"out", r.Out.Load()}, {"suppressed", r.Suppressed.Load()}, {"quarantined", r.Quarantined.Load()}, {"filtered_by_category", r.FilteredByCategory.Load()}, {"failed", r.Failed.Load()}} {
			samples = append(samples, fmt.Sprintf("{route=%q,outcome=%q} %d", name, kv.outcome, kv.n))
		}
	}
	metric("deident_route_records_total", "counter", "Records per vendor route and outcome; in = out + suppressed + quarantined + filtered_by_category + failed.", samples...)
	return b.String()
}
