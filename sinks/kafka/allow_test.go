package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// failAck records an acknowledgement that must not happen.
type failAck struct {
	t *testing.T
	i int
}

func (f failAck) Acked(error) {
	f.t.Errorf("output %d of a refused batch was queued and acknowledged", f.i)
}

// TestSinkRefusesOtherTopics: a sink made for some topics refuses a batch
// holding an output for any other, queueing none of it, so a route cannot
// produce where its config does not say.
func TestSinkRefusesOtherTopics(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	allowed, other := kafkatest.Topic(t, "allowed"), kafkatest.Topic(t, "other")
	kafkatest.CreateTopic(t, brokers, allowed, 1)
	kafkatest.CreateTopic(t, brokers, other, 1)
	s, err := New(Config{Brokers: brokers, Topics: []string{allowed}, BatchTimeout: 5 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	outs := []pipeline.Output{
		{Topic: allowed, Value: []byte("a"), Done: failAck{t, 0}},
		{Topic: other, Value: []byte("b"), Done: failAck{t, 1}},
	}
	err = s.Produce(context.Background(), outs)
	if !errors.Is(err, ErrTopicNotAllowed) {
		t.Fatalf("Produce to a topic outside the sink's topics: %v, want ErrTopicNotAllowed", err)
	}
	a := newAcks(1)
	if err := s.Produce(context.Background(), []pipeline.Output{{Topic: allowed, Value: []byte("ok"), Done: ack{a, 0}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.wait(t, 20*time.Second)[0]; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := values(t, brokers, allowed, 1); len(got) != 1 || got[0] != "ok" {
		t.Errorf("allowed topic holds %q, want only the accepted record", got)
	}
	if _, err := New(Config{Brokers: brokers, Topics: []string{}}); err == nil {
		t.Error("a sink with an empty (non-nil) topic list was made")
	}
}

// TestClustersSink: outputs interleaved across two clusters each reach the
// cluster whose sink owns their topic; a topic no cluster owns is refused.
func TestClustersSink(t *testing.T) {
	b1, b2 := kafkatest.Brokers(t), kafkatest.Brokers(t)
	t1, t2 := kafkatest.Topic(t, "vendor"), kafkatest.Topic(t, "internal")
	kafkatest.CreateTopic(t, b1, t1, 1)
	kafkatest.CreateTopic(t, b2, t2, 1)
	s1, err := New(Config{Brokers: b1, Topics: []string{t1}, BatchTimeout: 5 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(Config{Brokers: b2, Topics: []string{t2}, BatchTimeout: 5 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClusters(s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Produce(context.Background(), []pipeline.Output{{Topic: "nowhere", Done: failAck{t, 0}}}); !errors.Is(err, ErrTopicNotAllowed) {
		t.Fatalf("unowned topic: %v", err)
	}
	const n = 10
	a := newAcks(n)
	var outs []pipeline.Output
	for i := range n {
		tp := t1
		if i%3 == 0 {
			tp = t2
		}
		outs = append(outs, pipeline.Output{Topic: tp, Value: fmt.Appendf(nil, "%d", i), Done: ack{a, i}})
	}
	if err := c.Produce(context.Background(), outs); err != nil {
		t.Fatal(err)
	}
	for i, err := range a.wait(t, 20*time.Second) {
		if err != nil {
			t.Errorf("output %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := values(t, b1, t1, 6); fmt.Sprint(got) != "[1 2 4 5 7 8]" {
		t.Errorf("%s on the first cluster: %v", t1, got)
	}
	if got := values(t, b2, t2, 4); fmt.Sprint(got) != "[0 3 6 9]" {
		t.Errorf("%s on the second cluster: %v", t2, got)
	}
	if _, err := NewClusters(s1, s1); err == nil {
		t.Error("two sinks owning one topic accepted")
	}
}

// values reads n records of a one-partition topic.
func values(t *testing.T, brokers []string, topic string, n int) []string {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	for range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading %s: %v", topic, err)
		}
		out = append(out, string(m.Value))
	}
	// Nothing beyond n.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if m, err := r.ReadMessage(short); err == nil {
		out = append(out, string(m.Value))
	}
	return out
}

// BenchmarkAllows is the per-output cost of the topic allowlist on the
// produce path: a worker's handful of topics, the output's topic string
// shared with the route's config (as the runner passes it) or a copy.
func BenchmarkAllows(b *testing.B) {
	topics := []string{"vendor.acme-mdr", "vendor.flowai", "deident.dead-letter", "deident.quarantine"}
	s := &Sink{topics: topics}
	shared := topics[1]
	copied := string([]byte(topics[1]))
	b.Run("shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !s.Allows(shared) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("copied", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !s.Allows(copied) {
				b.Fatal("refused")
			}
		}
	})
}
