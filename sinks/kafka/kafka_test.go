package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// acks collects acknowledgements by output index.
type acks struct {
	mu   sync.Mutex
	errs map[int]error
	all  chan struct{}
	want int
}

type ack struct {
	a *acks
	i int
}

func (k ack) Acked(err error) {
	k.a.mu.Lock()
	defer k.a.mu.Unlock()
	if _, dup := k.a.errs[k.i]; dup {
		panic(fmt.Sprintf("output %d acknowledged twice", k.i))
	}
	k.a.errs[k.i] = err
	if len(k.a.errs) == k.a.want {
		close(k.a.all)
	}
}

func newAcks(n int) *acks { return &acks{errs: map[int]error{}, all: make(chan struct{}), want: n} }

func (a *acks) wait(t *testing.T, timeout time.Duration) map[int]error {
	t.Helper()
	select {
	case <-a.all:
	case <-time.After(timeout):
		a.mu.Lock()
		defer a.mu.Unlock()
		t.Fatalf("%d of %d outputs acknowledged within %v", len(a.errs), a.want, timeout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.errs
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestSinkAcknowledgesEveryOutput produces to two topics in several calls
// and checks each output is acknowledged exactly once without error, and
// the records arrive with their keys, values and headers, in order per key.
func TestSinkAcknowledgesEveryOutput(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topics := []string{kafkatest.Topic(t, "sink-a"), kafkatest.Topic(t, "sink-b")}
	for _, tp := range topics {
		kafkatest.CreateTopic(t, brokers, tp, 3)
	}
	s, err := New(Config{Brokers: brokers, BatchSize: 50, BatchTimeout: 5 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	a := newAcks(n)
	for start := 0; start < n; start += 40 {
		var outs []pipeline.Output
		for i := start; i < start+40; i++ {
			outs = append(outs, pipeline.Output{
				Topic:   topics[i%2],
				Key:     fmt.Appendf(nil, "k%d", i%7),
				Value:   fmt.Appendf(nil, "v%04d", i),
				Headers: []pipeline.Header{{Key: pipeline.HeaderSrc, Value: fmt.Appendf(nil, "src/0/%d", i)}},
				Done:    ack{a, i},
			})
		}
		if err := s.Produce(context.Background(), outs); err != nil {
			t.Fatal(err)
		}
	}
	for i, err := range a.wait(t, 20*time.Second) {
		if err != nil {
			t.Errorf("output %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for ti, tp := range topics {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: kafkatest.Topic(t, "sink-read"), Topic: tp, MaxWait: 50 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		last := map[string]string{}
		for range n / 2 {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("reading %s: %v", tp, err)
			}
			var i int
			if _, err := fmt.Sscanf(string(m.Value), "v%d", &i); err != nil || i%2 != ti {
				t.Fatalf("%s: unexpected value %q", tp, m.Value)
			}
			if string(m.Key) != fmt.Sprintf("k%d", i%7) || len(m.Headers) != 1 || string(m.Headers[0].Value) != fmt.Sprintf("src/0/%d", i) {
				t.Errorf("%s: record %q has key %q headers %v", tp, m.Value, m.Key, m.Headers)
			}
			if prev := last[string(m.Key)]; prev >= string(m.Value) {
				t.Errorf("%s: key %s: %s after %s", tp, m.Key, m.Value, prev)
			}
			last[string(m.Key)] = string(m.Value)
		}
		cancel()
		r.Close()
	}
}

// TestSinkMissingTopicFails: with topic auto-creation off, producing to a
// topic that does not exist fails (at once or through every output's
// Done) instead of being reported as acknowledged.
func TestSinkMissingTopicFails(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	s, err := New(Config{Brokers: brokers, BatchTimeout: 5 * time.Millisecond, MaxAttempts: 2, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := newAcks(3)
	var outs []pipeline.Output
	for i := range 3 {
		outs = append(outs, pipeline.Output{Topic: kafkatest.Topic(t, "missing"), Value: []byte("v"), Done: ack{a, i}})
	}
	if err := s.Produce(context.Background(), outs); err != nil {
		t.Logf("Produce: %v", err)
		return
	}
	for i, err := range a.wait(t, 20*time.Second) {
		if err == nil {
			t.Errorf("output %d to a missing topic acknowledged", i)
		}
	}
}

func TestNewRequiresBrokers(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without brokers succeeded")
	}
}
