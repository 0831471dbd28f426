// Package kafka is a pipeline.Sink over a segmentio/kafka-go Writer in
// asynchronous mode: batched, acks=all, records keyed by the input record's
// key so one entity's records keep their order, and every output
// acknowledged through the Writer's Completion callback.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/pipeline"
)

// Config configures a Sink.
type Config struct {
	// Brokers are bootstrap addresses. Required.
	Brokers []string
	// BatchSize is the most records in one produce batch; 1000 when zero.
	BatchSize int
	// BatchTimeout bounds how long a partial batch waits; 50ms when zero.
	BatchTimeout time.Duration
	// WriteTimeout bounds one produce request; 10s when zero.
	WriteTimeout time.Duration
	// MaxAttempts bounds retries of a batch before its outputs fail; 10 when zero.
	MaxAttempts int
	// AllowAutoTopicCreation lets producing create missing topics (tests, demo).
	AllowAutoTopicCreation bool
	// Topics are the only topics the sink produces to: Produce refuses an
	// output for any other with ErrTopicNotAllowed (before queueing any of
	// the batch). The worker passes its route and internal topics; nil
	// allows every topic (tests, the benchmark harness).
	Topics []string
	// Transport connects to the cluster (TLS, SASL); kafka.DefaultTransport
	// (plaintext) when nil.
	Transport kafka.RoundTripper
	// Logger receives produce errors; slog.Default() when nil.
	Logger *slog.Logger
}

// ErrTopicNotAllowed is returned by Produce for an output whose topic is not
// among Config.Topics.
var ErrTopicNotAllowed = errors.New("topic not allowed for this sink")

// Sink produces outputs to the topic each names.
type Sink struct {
	w      *kafka.Writer
	topics []string // nil: any
	log    *slog.Logger
	msgs   sync.Pool // *[]kafka.Message
}

var _ pipeline.Sink = (*Sink)(nil)

// New validates cfg and returns a Sink; Close it to flush.
func New(cfg Config) (*Sink, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka sink: brokers are required")
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 1000
	}
	if cfg.BatchTimeout == 0 {
		cfg.BatchTimeout = 50 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{log: log, topics: slices.Clone(cfg.Topics)}
	if cfg.Topics != nil && len(cfg.Topics) == 0 {
		return nil, errors.New("kafka sink: topics is empty: the sink could produce to nothing")
	}
	transport := cfg.Transport
	if transport == nil {
		transport = kafka.DefaultTransport
	}
	s.msgs.New = func() any { return new([]kafka.Message) }
	s.w = &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Balancer:               &kafka.Hash{}, // by key; round-robin for records without one
		RequiredAcks:           kafka.RequireAll,
		Async:                  true,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             16 << 20,
		BatchTimeout:           cfg.BatchTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		MaxAttempts:            cfg.MaxAttempts,
		AllowAutoTopicCreation: cfg.AllowAutoTopicCreation,
		Completion:             s.complete,
		Transport:              newMetadataCache(transport),
	}
	return s, nil
}

// Produce queues outs; each output's Done is called from the Writer's
// Completion callback once its batch is acknowledged by all in-sync
// replicas, or has failed after MaxAttempts. Keys, values and header
// values are passed to the Writer as they are (not copied), and the
// output's header list is passed as the message's: the Writer only reads
// them.
func (s *Sink) Produce(ctx context.Context, outs []pipeline.Output) error {
	if s.topics != nil {
		for i := range outs {
			if !s.Allows(outs[i].Topic) {
				return fmt.Errorf("producing to %q: %w", outs[i].Topic, ErrTopicNotAllowed)
			}
		}
	}
	// The Writer copies each Message into its batch, so the slice handed to
	// WriteMessages is reused.
	bp := s.msgs.Get().(*[]kafka.Message)
	msgs := (*bp)[:0]
	for _, o := range outs {
		msgs = append(msgs, kafka.Message{Topic: o.Topic, Key: o.Key, Value: o.Value, Headers: kafkaHeaders(o.Headers), WriterData: o.Done})
	}
	if err := s.w.WriteMessages(ctx, msgs...); err != nil {
		return err // may refer to msgs (MessageTooLargeError): not pooled
	}
	clear(msgs) // drop the references before pooling
	*bp = msgs[:0]
	s.msgs.Put(bp)
	return nil
}

// kafkaHeaders views a pipeline header list as kafka-go's: the two types
// have the same definition (the conversion below compiles only while they
// do), so the view needs no copy.
func kafkaHeaders(h []pipeline.Header) []kafka.Header {
	if len(h) == 0 {
		return nil
	}
	return unsafe.Slice((*kafka.Header)(unsafe.Pointer(unsafe.SliceData(h))), len(h))
}

var _ = kafka.Header(pipeline.Header{}) // identical underlying types

func (s *Sink) complete(msgs []kafka.Message, err error) {
	if err != nil && len(msgs) > 0 {
		s.log.Error("produce failed", "records", len(msgs), "topic", msgs[0].Topic, "err", err)
	}
	for _, m := range msgs {
		if a, ok := m.WriterData.(pipeline.Acker); ok && a != nil {
			a.Acked(err)
		}
	}
}

// Allows reports whether the sink may produce to topic. A worker has a
// handful of topics and passes each output the very string it gave New
// (the route's config), so a scan comparing string data pointers answers
// first; other strings are compared by value.
func (s *Sink) Allows(topic string) bool {
	if s.topics == nil {
		return true
	}
	p := unsafe.StringData(topic)
	for _, t := range s.topics {
		if unsafe.StringData(t) == p && len(t) == len(topic) {
			return true
		}
	}
	return slices.Contains(s.topics, topic)
}

// Stats returns the Writer's statistics since the last call.
func (s *Sink) Stats() kafka.WriterStats { return s.w.Stats() }

// Close flushes pending batches (their Completion callbacks run) and
// closes the Writer.
func (s *Sink) Close() error { return s.w.Close() }
