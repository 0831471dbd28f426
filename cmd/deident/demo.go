package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/pipeline"
	kafkasrc "github.com/deident/deident/sources/kafka"
)

// demoFlowAIKey is the public demo key for flowai (configs/demo-keys/flowai.key);
// used when neither DEIDENT_KEY_FLOWAI nor that file is available.
const demoFlowAIKey = "8c5d1f0e3b7a29644e1d7c0b5a3f29e86d4c1b0a9f8e7d6c5b4a39281706f5e4"

func demoCmd() *cobra.Command {
	var cfgPath, logLevel string
	var records, partitions int
	cmd := &cobra.Command{
		Use:   "demo [--config FILE]",
		Short: "Run the worker against an in-process Kafka cluster with generated records",
		Long: `Start an in-process Kafka cluster (franz-go kfake), create the config's topics,
load generated threat and workflow records into the source topics, run the same worker
as 'deident run' against it as a consumer group, and print per vendor route: counts,
one record before and after, the accounting identity and throughput. The config's
brokers are ignored. DEIDENT_KEY_FLOWAI gets the public demo key when unset.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), cfgPath, logLevel, records, partitions)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "configs/deident.yaml", "config file (YAML)")
	cmd.Flags().IntVar(&records, "records", 20000, "records to generate, split over the source topics")
	cmd.Flags().IntVar(&partitions, "partitions", 3, "partitions per source topic")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "worker log level (logs go to stderr)")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, cfgPath, logLevel string, records, partitions int) error {
	if ctx == nil {
		ctx = context.Background()
	}
	log, err := newLogger(logLevel)
	if err != nil {
		return err
	}
	if os.Getenv("DEIDENT_KEY_FLOWAI") == "" {
		key := demoFlowAIKey
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), "demo-keys", "flowai.key")); err == nil {
			key = strings.TrimSpace(string(b))
		}
		os.Setenv("DEIDENT_KEY_FLOWAI", key)
		defer os.Unsetenv("DEIDENT_KEY_FLOWAI")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(partitions), kfake.AllowAutoTopicCreation())
	if err != nil {
		return fmt.Errorf("starting in-process kafka: %w", err)
	}
	defer cluster.Close()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.MetricsAddr = "off"
	fmt.Fprintf(out, "deident demo: in-process Kafka (kfake) at %s, config %s\n", strings.Join(cfg.Kafka.Brokers, ","), cfgPath)

	// Topics.
	topics := map[string]int{cfg.Kafka.DeadLetterTopic: 1, cfg.Kafka.QuarantineTopic: 1}
	type source struct {
		name, topic string
		kind        gen.Kind
	}
	var sources []source
	for _, name := range sortedNames(cfg.Sources) {
		s := cfg.Sources[name]
		topics[s.Topic] = partitions
		switch s.Category {
		case config.ThreatTelemetry:
			sources = append(sources, source{name, s.Topic, gen.Threat})
		case config.WorkflowMetadata:
			sources = append(sources, source{name, s.Topic, gen.Workflow})
		}
	}
	for _, v := range cfg.Vendors {
		topics[v.Topic] = partitions
	}
	if err := createTopics(ctx, cfg.Kafka.Brokers, topics); err != nil {
		return err
	}
	if len(sources) == 0 {
		return errors.New("no source of category threat_telemetry or workflow_metadata to generate records for")
	}

	// Load generated records.
	start := time.Now()
	per := records / len(sources)
	total := 0
	for i, s := range sources {
		n := per
		if i == len(sources)-1 {
			n = records - per*(len(sources)-1)
		}
		if err := produceGenerated(ctx, cfg.Kafka.Brokers, s.topic, s.kind, uint64(i+1), n); err != nil {
			return err
		}
		total += n
		fmt.Fprintf(out, "loaded %d %s records into %s (%d partitions)\n", n, s.kind, s.topic, partitions)
	}
	fmt.Fprintf(out, "loading took %v\n\n", time.Since(start).Round(time.Millisecond))

	// Run the worker until every record is processed.
	w, err := newWorker(cfg, log, workerOptions{tuneSource: func(c *kafkasrc.Config) {
		c.HeartbeatInterval = 500 * time.Millisecond
		c.SessionTimeout = 6 * time.Second
		c.RebalanceTimeout = 5 * time.Second
	}})
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	runStart := time.Now()
	go func() { errc <- w.run(wctx) }()
	c := w.runner.Counters()
	var first time.Time
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.Worker.Consumed.Load() < uint64(total) || c.Worker.InFlight.Load() > 0 {
		select {
		case err := <-errc:
			return fmt.Errorf("worker stopped early: %v", err)
		case <-tick.C:
		case <-time.After(2 * time.Minute):
			return fmt.Errorf("timed out: %d of %d records processed", c.Worker.Consumed.Load(), total)
		}
		if first.IsZero() && c.Worker.Consumed.Load() > 0 {
			first = time.Now()
		}
	}
	done := time.Now()
	stop()
	if err := <-errc; err != nil {
		return err
	}
	if first.IsZero() {
		first = runStart
	}

	// Report.
	for _, name := range c.Names {
		r := w.routes[name]
		rc := c.Routes[name]
		fmt.Fprintf(out, "== route %s (%s, purpose %s) -> %s\n", name, r.Config.Vendor, r.Config.Purpose, r.Config.Topic)
		fmt.Fprintf(out, "   policy %s, categories %v\n", r.Version, r.Config.Categories)
		fmt.Fprintf(out, "   in %d = out %d + suppressed %d + quarantined %d + filtered_by_category %d + failed %d  [%s]\n",
			rc.In.Load(), rc.Out.Load(), rc.Suppressed.Load(), rc.Quarantined.Load(), rc.FilteredByCategory.Load(), rc.Failed.Load(),
			holds(rc.In.Load() == rc.Out.Load()+rc.Suppressed.Load()+rc.Quarantined.Load()+rc.FilteredByCategory.Load()+rc.Failed.Load()+uint64(max(rc.Held.Load(), 0))+rc.Revoked.Load()))
		if h, rv := rc.Held.Load(), rc.Revoked.Load(); h != 0 || rv != 0 {
			fmt.Fprintf(out, "   k-anonymity: %d held undecided, %d left to the next owner at shutdown\n", h, rv)
		}
		if g := w.gates[name]; g != nil {
			st := g.Stats()
			fmt.Fprintf(out, "   gate: %d checked, %d quarantined to %s", st.Checked, st.Quarantined, cfg.Kafka.QuarantineTopic)
			st.Each(func(reason string, n uint64) { fmt.Fprintf(out, "; %s %d", reason, n) })
			fmt.Fprintln(out)
		} else {
			fmt.Fprintln(out, "   gate: off")
		}
		if rc.Out.Load() > 0 {
			before, after, hdrs, err := demoExample(ctx, cfg.Kafka.Brokers, r.Config.Topic)
			if err != nil {
				fmt.Fprintf(out, "   example: %v\n", err)
			} else {
				fmt.Fprintf(out, "   before (%s):\n     %s\n", hdrs[pipeline.HeaderSrc], before)
				fmt.Fprintf(out, "   after  (deident-policy %s, deident-key %s):\n     %s\n", hdrs[pipeline.HeaderPolicy], hdrs[pipeline.HeaderKey], after)
			}
		}
		fmt.Fprintln(out)
	}
	wc := &c.Worker
	fmt.Fprintf(out, "worker: consumed %d = decoded %d + dead_lettered %d  [%s]; outputs acknowledged %d; commits %d\n",
		wc.Consumed.Load(), wc.Decoded.Load(), wc.DeadLettered.Load(),
		holds(wc.Consumed.Load() == wc.Decoded.Load()+wc.DeadLettered.Load()), wc.Acked.Load(), wc.Commits.Load())
	if err := c.Check(); err != nil {
		return fmt.Errorf("accounting identity violated: %w", err)
	}
	secs := done.Sub(first).Seconds()
	fmt.Fprintf(out, "throughput: %d records in %.2fs = %.0f records/s (group join took %v before the first record)\n",
		total, secs, float64(total)/secs, first.Sub(runStart).Round(time.Millisecond))
	return nil
}

func holds(ok bool) string {
	if ok {
		return "holds"
	}
	return "VIOLATED"
}

func createTopics(ctx context.Context, brokers []string, topics map[string]int) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	var req kafka.CreateTopicsRequest
	for _, t := range sortedNames(topics) {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: topics[t], ReplicationFactor: 1})
	}
	res, err := client.CreateTopics(ctx, &req)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for t, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", t, err)
		}
	}
	return nil
}

func produceGenerated(ctx context.Context, brokers []string, topic string, kind gen.Kind, seed uint64, n int) error {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	g := gen.New(gen.Options{Kind: kind, Seed: seed})
	const chunk = 5000
	msgs := make([]kafka.Message, 0, chunk)
	for i := 0; i < n; i++ {
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

// demoExample reads the first record of the vendor topic's partition 0 and
// the source record its deident-src header names.
func demoExample(ctx context.Context, brokers []string, topic string) (before, after []byte, hdrs map[string]string, err error) {
	m, err := readAt(ctx, brokers, topic, 0, kafka.FirstOffset)
	if err != nil {
		return nil, nil, nil, err
	}
	hdrs = map[string]string{}
	for _, h := range m.Headers {
		hdrs[h.Key] = string(h.Value)
	}
	src := hdrs[pipeline.HeaderSrc]
	i, j := strings.LastIndexByte(src, '/'), -1
	if i > 0 {
		j = strings.LastIndexByte(src[:i], '/')
	}
	if j <= 0 {
		return nil, nil, nil, fmt.Errorf("no deident-src header on %s/0", topic)
	}
	p, perr := strconv.Atoi(src[j+1 : i])
	off, oerr := strconv.ParseInt(src[i+1:], 10, 64)
	if perr != nil || oerr != nil {
		return nil, nil, nil, fmt.Errorf("malformed deident-src %q", src)
	}
	s, err := readAt(ctx, brokers, src[:j], p, off)
	if err != nil {
		return nil, nil, nil, err
	}
	return bytes.TrimSpace(s.Value), m.Value, hdrs, nil
}

func readAt(ctx context.Context, brokers []string, topic string, partition int, offset int64) (kafka.Message, error) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond, Logger: nil})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		return kafka.Message{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("reading %s/%d/%d: %w", topic, partition, offset, err)
	}
	return m, nil
}
