// Package kafka is a pipeline.Source over a Kafka consumer group, built on
// segmentio/kafka-go's explicit generations: every generation's
// assignments become claims (one reader per partition, started with
// Generation.Start), commits go through Generation.CommitOffsets, and a
// rebalance ends the generation, so the runner drains and drops the state
// of every claim and the next owner resumes from the committed offset.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/pipeline"
)

// Config configures a Source.
type Config struct {
	// Brokers are bootstrap addresses. Required.
	Brokers []string
	// GroupID is the consumer group. Required.
	GroupID string
	// Topics are the topics to consume. Required.
	Topics []string
	// StartOffset applies when the group has no committed offset:
	// kafka.FirstOffset (the default, when zero) or kafka.LastOffset.
	StartOffset int64
	// HeartbeatInterval, SessionTimeout, RebalanceTimeout and
	// JoinGroupBackoff tune the group protocol; kafka-go's defaults when zero.
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	JoinGroupBackoff  time.Duration
	// MinBytes is the least data a fetch waits for (up to MaxWait); 1 when zero.
	MinBytes int
	// MaxWait bounds how long a fetch waits for data; 250ms when zero.
	MaxWait time.Duration
	// MaxBytes bounds one fetch response; 10 MiB when zero.
	MaxBytes int
	// QueueCapacity is how many fetched records each partition's reader
	// buffers ahead of the runner; 1000 when zero.
	QueueCapacity int
	// Dialer connects the consumer group and the partition readers (TLS,
	// SASL); kafka-go's default (plaintext) when nil.
	Dialer *kafka.Dialer
	// Logger receives group events; slog.Default() when nil.
	Logger *slog.Logger
}

// Source consumes a consumer group's claims.
type Source struct {
	cfg         Config
	log         *slog.Logger
	ready       atomic.Bool  // in a generation: joined, synced and assigned
	current     atomic.Int32 // id of the current generation
	partitions  atomic.Int64 // partitions assigned in the current generation
	generations atomic.Int64
}

var _ pipeline.Source = (*Source)(nil)

// New validates cfg.
func New(cfg Config) (*Source, error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("kafka source: brokers are required"))
	}
	if cfg.GroupID == "" {
		errs = append(errs, errors.New("kafka source: group id is required"))
	}
	if len(cfg.Topics) == 0 {
		errs = append(errs, errors.New("kafka source: at least one topic is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.StartOffset == 0 {
		cfg.StartOffset = kafka.FirstOffset
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 250 * time.Millisecond
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 10 << 20
	}
	if cfg.MinBytes == 0 {
		cfg.MinBytes = 1
	}
	if cfg.QueueCapacity == 0 {
		cfg.QueueCapacity = 1000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Source{cfg: cfg, log: log.With("group", cfg.GroupID)}, nil
}

// Ready reports whether the source is in a consumer-group generation:
// it has joined the group and received its assignment (possibly of no
// partition, when the group has more members than partitions). It is
// false before the first join, during a rebalance and after Run returns.
func (s *Source) Ready() bool { return s.ready.Load() }

// Partitions returns the number of partitions assigned in the current
// generation (0 when not Ready).
func (s *Source) Partitions() int { return int(s.partitions.Load()) }

// Generations returns how many generations the source has taken part in.
func (s *Source) Generations() int64 { return s.generations.Load() }

// Run joins the group and hands each generation's partitions to h until
// ctx is done; it then waits for every handler to return (they drain and
// commit), leaves the group and returns nil.
func (s *Source) Run(ctx context.Context, h pipeline.ClaimHandler) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                s.cfg.GroupID,
		Brokers:           s.cfg.Brokers,
		Topics:            s.cfg.Topics,
		StartOffset:       s.cfg.StartOffset,
		HeartbeatInterval: s.cfg.HeartbeatInterval,
		SessionTimeout:    s.cfg.SessionTimeout,
		RebalanceTimeout:  s.cfg.RebalanceTimeout,
		JoinGroupBackoff:  s.cfg.JoinGroupBackoff,
		Dialer:            s.cfg.Dialer,
	})
	if err != nil {
		return fmt.Errorf("joining consumer group %s: %w", s.cfg.GroupID, err)
	}
	defer func() {
		_ = cg.Close() // ends the generation and waits for the handlers
		s.ready.Store(false)
		s.partitions.Store(0)
	}()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// kafka-go retries joining by itself; errors here are reports.
			s.log.Warn("consumer group generation failed; retrying", "err", err)
			continue
		}
		s.generations.Add(1)
		n := 0
		for _, ps := range gen.Assignments {
			n += len(ps)
		}
		s.current.Store(gen.ID)
		s.partitions.Store(int64(n))
		s.ready.Store(true)
		// Not ready once the generation ends (rebalance, lost session,
		// shutdown), unless a newer one has started meanwhile.
		id := gen.ID
		gen.Start(func(gctx context.Context) {
			<-gctx.Done()
			if s.current.Load() == id {
				s.ready.Store(false)
				s.partitions.Store(0)
			}
		})
		s.log.Info("generation started", "generation", gen.ID, "member", gen.MemberID, "partitions", n)
		commitMu := &sync.Mutex{}
		for topic, ps := range gen.Assignments {
			for _, a := range ps {
				c := &claim{s: s, gen: gen, topic: topic, partition: a.ID, start: a.Offset, commitMu: commitMu}
				gen.Start(func(gctx context.Context) { c.run(gctx, h) })
			}
		}
	}
}

// claim is one partition for one generation.
type claim struct {
	s         *Source
	gen       *kafka.Generation
	topic     string
	partition int
	start     int64
	commitMu  *sync.Mutex // kafka-go's coordinator connection: one request at a time
	r         *kafka.Reader
}

func (c *claim) run(ctx context.Context, h pipeline.ClaimHandler) {
	c.r = kafka.NewReader(kafka.ReaderConfig{
		Brokers:       c.s.cfg.Brokers,
		Topic:         c.topic,
		Partition:     c.partition,
		MinBytes:      c.s.cfg.MinBytes,
		MaxBytes:      c.s.cfg.MaxBytes,
		MaxWait:       c.s.cfg.MaxWait,
		QueueCapacity: c.s.cfg.QueueCapacity,
		Dialer:        c.s.cfg.Dialer,
	})
	defer c.r.Close()
	if err := c.r.SetOffset(c.start); err != nil {
		c.s.log.Error("setting start offset", "topic", c.topic, "partition", c.partition, "offset", c.start, "err", err)
		return
	}
	h(ctx, c)
}

var _ pipeline.ReadyClaim = (*claim)(nil)

// Ready reports whether the partition's high watermark, as of the last
// fetch, lies beyond the last record returned: the reader holds more
// records or fetches them without waiting.
func (c *claim) Ready() bool { return c.r.Lag() > 0 }

func (c *claim) Topic() string  { return c.topic }
func (c *claim) Partition() int { return c.partition }

func (c *claim) Fetch(ctx context.Context) (pipeline.Record, error) {
	m, err := c.r.FetchMessage(ctx)
	if err != nil {
		return pipeline.Record{}, err
	}
	rec := pipeline.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
	if len(m.Headers) > 0 {
		rec.Headers = make([]pipeline.Header, len(m.Headers))
		for i, h := range m.Headers {
			rec.Headers[i] = pipeline.Header{Key: h.Key, Value: h.Value}
		}
	}
	return rec, nil
}

func (c *claim) Commit(next int64) error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	if err := c.gen.CommitOffsets(map[string]map[int]int64{c.topic: {c.partition: next}}); err != nil {
		return fmt.Errorf("committing %s/%d at %d: %w", c.topic, c.partition, next, err)
	}
	return nil
}
