package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"

	"github.com/deident/deident/internal/audit"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkaconn"
	"github.com/deident/deident/pipeline"
)

// replayLine is one line of replay's output file: the output with its provenance.
type replayLine struct {
	Src    string          `json:"src"`
	Policy string          `json:"policy"`
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value"`
}

func replayCmd() *cobra.Command {
	var cfgPath, routeName, fromS, toS, outPath, topic string
	var toVendor bool
	var idle time.Duration
	cmd := &cobra.Command{
		Use:   "replay --config FILE --route NAME --from TIME|OFFSET --to TIME|OFFSET [--out FILE | --topic AUDIT_TOPIC] [--to-vendor]",
		Short: "Re-apply a route to its source topics over a range, without a consumer group",
		Long: `Read every source topic whose category the route allows over [--from, --to)
(an offset, applied to every partition, or an RFC 3339 time resolved per
partition with the broker's ListOffsets; left out: the beginning, the current
end), with no consumer group and no commits; apply the route and its gate as
the worker does, and write the outputs that pass the gate:

  --out FILE    JSON lines {"src":..,"policy":..,"key":..,"value":..} ("-": stdout, the default)
  --topic T     records with the deident-src, deident-policy and deident-key headers

Writing to the route's vendor topic needs --to-vendor (then --topic may be left
out); writing to another route's vendor topic is refused. The counts go to stderr.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, to, err := parseRange(fromS, toS)
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			rc, ok := cfg.Vendors[routeName]
			if !ok {
				return fmt.Errorf("--route: no route %q in %s (routes: %s)", routeName, cfgPath, strings.Join(slices.Sorted(maps.Keys(cfg.Vendors)), ", "))
			}
			if len(cfg.Clusters) == 0 && len(cfg.Kafka.Brokers) == 0 {
				return errors.New("kafka.brokers: at least one broker is required")
			}
			if topic == "" && toVendor {
				topic = rc.Topic
			}
			if topic != "" {
				if err := replayTarget(cfg, routeName, topic, toVendor); err != nil {
					return err
				}
				if outPath != "" {
					return errors.New("give --out or --topic, not both")
				}
			}
			p, _, _, err := audit.LoadPolicies(cfg, cfgPath, routeName, "")
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			src, err := kafkaconn.New(cfg, cfg.SourceCluster())
			if err != nil {
				return err
			}
			client := src.Client(30 * time.Second)
			rd := audit.Reader{Brokers: src.Brokers, Dialer: src.Dialer(), IdleTimeout: idle}

			var emit func(audit.Output) error
			var finish func() error
			if topic != "" {
				// The route's own topic is on the route's cluster; an audit
				// topic is internal.
				cluster := cfg.InternalCluster()
				if topic == rc.Topic {
					cluster = cfg.RouteCluster(routeName)
				}
				dst, err := kafkaconn.New(cfg, cluster)
				if err != nil {
					return err
				}
				emit, finish = topicEmitter(ctx, cfg, dst, topic)
			} else {
				emit, finish, err = fileEmitter(cmd.OutOrStdout(), outPath)
				if err != nil {
					return err
				}
			}
			counts, err := audit.Replay(ctx, cfg, p, client, rd, from, to, emit)
			if ferr := finish(); err == nil {
				err = ferr
			}
			printReplayCounts(cmd.ErrOrStderr(), routeName, p.Route.Version, counts)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (YAML)")
	f.StringVar(&routeName, "route", "", "vendor route to apply")
	f.StringVar(&fromS, "from", "", "start of the range, inclusive: an offset or an RFC 3339 time (default: the beginning)")
	f.StringVar(&toS, "to", "", "end of the range, exclusive: an offset or an RFC 3339 time (default: the current end)")
	f.StringVar(&outPath, "out", "", `output file of JSON lines with provenance ("-": stdout; the default)`)
	f.StringVar(&topic, "topic", "", "audit topic to produce the outputs to, with provenance headers")
	f.BoolVar(&toVendor, "to-vendor", false, "allow writing to the route's vendor topic")
	f.DurationVar(&idle, "idle-timeout", 10*time.Second, "give up when a partition yields no record for this long (three times, each with a new reader) before the end of its range")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("route")
	return cmd
}

// replayTarget refuses vendor topics: the route's own without toVendor,
// another route's always.
func replayTarget(cfg *config.Config, routeName, topic string, toVendor bool) error {
	for _, name := range slices.Sorted(maps.Keys(cfg.Vendors)) {
		if cfg.Vendors[name].Topic != topic {
			continue
		}
		if name != routeName {
			return fmt.Errorf("--topic: %s is the vendor topic of route %s; replay never writes there", topic, name)
		}
		if !toVendor {
			return fmt.Errorf("--topic: %s is the vendor topic of route %s; give --to-vendor to write to it", topic, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Sources)) {
		if cfg.Sources[name].Topic == topic {
			return fmt.Errorf("--topic: %s is the source topic %s", topic, name)
		}
	}
	return nil
}

func fileEmitter(stdout io.Writer, path string) (func(audit.Output) error, func() error, error) {
	var w io.Writer = stdout
	closeFile := func() error { return nil }
	if path != "" && path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--out: %w", err)
		}
		w, closeFile = f, f.Close
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	emit := func(o audit.Output) error {
		return enc.Encode(replayLine{Src: o.Src, Policy: o.Policy, Key: o.KeyID, Value: o.Value})
	}
	finish := func() error {
		return errors.Join(bw.Flush(), closeFile())
	}
	return emit, finish, nil
}

func topicEmitter(ctx context.Context, cfg *config.Config, dst *kafkaconn.Conn, topic string) (func(audit.Output) error, func() error) {
	w := &kafka.Writer{
		Addr:         kafka.TCP(dst.Brokers...),
		Transport:    dst.Transport(),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    cfg.Kafka.BatchSize,
		BatchTimeout: cfg.Kafka.BatchTimeout,
	}
	batch := make([]kafka.Message, 0, 512)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := w.WriteMessages(ctx, batch...)
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("producing to %s: %w", topic, err)
		}
		return nil
	}
	emit := func(o audit.Output) error {
		batch = append(batch, kafka.Message{
			Key:   o.Key,
			Value: o.Value,
			Headers: []kafka.Header{
				{Key: pipeline.HeaderSrc, Value: []byte(o.Src)},
				{Key: pipeline.HeaderPolicy, Value: []byte(o.Policy)},
				{Key: pipeline.HeaderKey, Value: []byte(o.KeyID)},
			},
		})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	}
	finish := func() error { return errors.Join(flush(), w.Close()) }
	return emit, finish
}

func printReplayCounts(w io.Writer, routeName, version string, c audit.Counts) {
	fmt.Fprintf(w, "replay %s (policy %s): in %d, out %d, quarantined %d, failed %d\n", routeName, version, c.In, c.Out, c.Quarantined, c.Failed)
	for _, reason := range slices.Sorted(maps.Keys(c.ByReason)) {
		fmt.Fprintf(w, "  quarantined %s: %d\n", reason, c.ByReason[reason])
	}
	for _, r := range c.Ranges {
		fmt.Fprintf(w, "  %s/%d offsets [%d, %d): %d\n", r.Topic, r.Partition, r.Start, r.End, r.Len())
	}
}

// parseRange reads the --from and --to flags of replay and audit: offsets
// or RFC 3339 times, either left out for an open end.
func parseRange(fromS, toS string) (from, to audit.Bound, err error) {
	if from, err = audit.ParseBound(fromS); err != nil {
		return from, to, fmt.Errorf("--from: %w", err)
	}
	if to, err = audit.ParseBound(toS); err != nil {
		return from, to, fmt.Errorf("--to: %w", err)
	}
	return from, to, nil
}
