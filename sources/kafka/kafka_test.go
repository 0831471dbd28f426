package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testSource(t *testing.T, brokers []string, group string, topics ...string) *Source {
	t.Helper()
	s, err := New(Config{
		Brokers: brokers, GroupID: group, Topics: topics,
		HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second,
		RebalanceTimeout: 5 * time.Second, JoinGroupBackoff: 250 * time.Millisecond,
		MaxWait: 50 * time.Millisecond, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func produce(t *testing.T, brokers []string, topic string, n, from int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%5), Value: fmt.Appendf(nil, "v%d", i), Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// collector is a ClaimHandler that fetches every record of its claims and
// commits after each one.
type collector struct {
	mu     sync.Mutex
	seen   map[string]bool // "topic value"
	claims map[string]int  // topic/partition -> times claimed
}

func (c *collector) handle(ctx context.Context, cl pipeline.Claim) {
	c.mu.Lock()
	c.claims[fmt.Sprintf("%s/%d", cl.Topic(), cl.Partition())]++
	c.mu.Unlock()
	for {
		rec, err := cl.Fetch(ctx)
		if err != nil {
			return
		}
		if rec.Topic != cl.Topic() || rec.Partition != cl.Partition() || len(rec.Headers) != 1 || rec.Headers[0].Key != "h" {
			panic(fmt.Sprintf("record %+v does not match claim %s/%d", rec, cl.Topic(), cl.Partition()))
		}
		c.mu.Lock()
		c.seen[rec.Topic+" "+string(rec.Value)] = true
		c.mu.Unlock()
		if err := cl.Commit(rec.Offset + 1); err != nil {
			return
		}
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSourceClaimsCommitsAndResumes: one claim per partition of every
// topic, Ready while in a generation, commits through the generation, and
// a second run of the group resumes from the committed offsets.
func TestSourceClaimsCommitsAndResumes(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topics := []string{kafkatest.Topic(t, "src-a"), kafkatest.Topic(t, "src-b")}
	for _, tp := range topics {
		kafkatest.CreateTopic(t, brokers, tp, 3)
		produce(t, brokers, tp, 60, 0)
	}
	group := kafkatest.Topic(t, "src-group")

	run := func(want int) *collector {
		s := testSource(t, brokers, group, topics...)
		if s.Ready() {
			t.Fatal("ready before Run")
		}
		c := &collector{seen: map[string]bool{}, claims: map[string]int{}}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx, c.handle) }()
		waitFor(t, "ready with 6 partitions", func() bool { return s.Ready() && s.Partitions() == 6 })
		waitFor(t, fmt.Sprintf("%d records", want), func() bool {
			if c.count() >= want {
				return true
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			return false
		})
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
		}
		if s.Ready() || s.Partitions() != 0 {
			t.Error("still ready after Run returned")
		}
		if len(c.claims) != 6 {
			t.Errorf("claims %v, want one per partition of 2 topics x 3", c.claims)
		}
		return c
	}
	first := run(120)
	if first.count() != 120 {
		t.Errorf("first run saw %d distinct records, want 120", first.count())
	}
	for _, tp := range topics {
		produce(t, brokers, tp, 10, 1000)
	}
	second := run(20)
	if second.count() != 20 {
		t.Errorf("second run saw %d records, want only the 20 new ones", second.count())
	}
	for v := range second.seen {
		if _, val, _ := strings.Cut(v, " "); !strings.HasPrefix(val, "v10") {
			t.Errorf("second run re-read %s below the committed offset", v)
		}
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New with an empty config succeeded")
	}
	for _, want := range []string{"brokers", "group id", "topic"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
