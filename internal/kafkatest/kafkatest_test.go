package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/kafkatest"
)

func TestTopicUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		name := kafkatest.Topic(t, "a b/c.d")
		if !strings.HasPrefix(name, "a-b-c-d-") {
			t.Fatalf("Topic = %q, want prefix a-b-c-d-", name)
		}
		if seen[name] {
			t.Fatalf("Topic returned %q twice", name)
		}
		seen[name] = true
	}
}

type consumed struct {
	partition int
	offset    int64
	key       string
	value     string
}

// consumeGeneration starts one partition reader per assignment of gen (via
// gen.Start) and forwards every message to out until the generation ends.
func consumeGeneration(t *testing.T, brokers []string, topic string, gen *kafka.Generation, out chan<- consumed) {
	t.Helper()
	for _, a := range gen.Assignments[topic] {
		gen.Start(func(ctx context.Context) {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   brokers,
				Topic:     topic,
				Partition: a.ID,
				MinBytes:  1,
				MaxBytes:  1 << 20,
				MaxWait:   100 * time.Millisecond,
			})
			defer r.Close()
			if err := r.SetOffset(a.Offset); err != nil {
				t.Errorf("partition %d: SetOffset(%d): %v", a.ID, a.Offset, err)
				return
			}
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, kafka.ErrGenerationEnded) {
						t.Errorf("partition %d: FetchMessage: %v", a.ID, err)
					}
					return
				}
				select {
				case out <- consumed{m.Partition, m.Offset, string(m.Key), string(m.Value)}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
}

func newGroup(t *testing.T, brokers []string, group, topic string) *kafka.ConsumerGroup {
	t.Helper()
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           brokers,
		Topics:            []string{topic},
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  5 * time.Second,
		JoinGroupBackoff:  250 * time.Millisecond,
		Timeout:           10 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	return cg
}

// nextGeneration waits for the group's next generation, retrying the
// transient errors kafka-go's ConsumerGroup reports while it keeps trying
// (e.g. GroupCoordinatorNotAvailable while a fresh broker creates
// __consumer_offsets).
func nextGeneration(ctx context.Context, t *testing.T, cg *kafka.ConsumerGroup) *kafka.Generation {
	t.Helper()
	for {
		gen, err := cg.Next(ctx)
		if err == nil {
			return gen
		}
		var ke kafka.Error
		if ctx.Err() != nil || !errors.As(err, &ke) || !(ke.Temporary() || errors.Is(err, kafka.RebalanceInProgress)) {
			t.Fatalf("ConsumerGroup.Next: %v", err)
		}
		t.Logf("ConsumerGroup.Next: %v (retrying)", err)
	}
}

func produce(ctx context.Context, t *testing.T, brokers []string, topic string, from, n int) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Hash{},
		BatchSize:    100,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:   []byte(fmt.Sprintf("key-%d", from+i)),
			Value: []byte(fmt.Sprintf("value-%d", from+i)),
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("WriteMessages: %v", err)
	}
}

// collect reads exactly n messages from ch, failing on timeout.
func collect(t *testing.T, ch <-chan consumed, n int, timeout time.Duration) []consumed {
	t.Helper()
	out := make([]consumed, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case m := <-ch:
			out = append(out, m)
		case <-deadline:
			t.Fatalf("received %d of %d messages within %v", len(out), n, timeout)
		}
	}
	return out
}

// expectNone fails if any message arrives on ch within d.
func expectNone(t *testing.T, ch <-chan consumed, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message after resume: partition %d offset %d key %q", m.partition, m.offset, m.key)
	case <-time.After(d):
	}
}

// TestConsumerGroupGenerationsCommit proves kafka-go's consumer-group
// generations and offset commits work against whichever broker Brokers
// returns (kfake, or a real one via DEIDENT_KAFKA_BROKERS).
func TestConsumerGroupGenerationsCommit(t *testing.T) {
	const (
		partitions = 3
		total      = 300
		extra      = 10
	)
	brokers := kafkatest.Brokers(t)
	t.Logf("brokers %v (real=%v)", brokers, kafkatest.Real())
	topic := kafkatest.Topic(t, "kafkatest")
	group := kafkatest.Topic(t, "kafkatest-group")
	kafkatest.CreateTopic(t, brokers, topic, partitions)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now()
	produce(ctx, t, brokers, topic, 0, total)
	t.Logf("produced %d messages in %v", total, time.Since(start))

	// ---- generation 1: consume everything, commit.
	cg1 := newGroup(t, brokers, group, topic)
	closed1 := false
	defer func() {
		if !closed1 {
			cg1.Close()
		}
	}()
	gen1 := nextGeneration(ctx, t, cg1)
	assigned := map[int]bool{}
	for _, a := range gen1.Assignments[topic] {
		assigned[a.ID] = true
		if a.Offset != kafka.FirstOffset {
			t.Errorf("gen1 partition %d: initial offset %d, want FirstOffset for a new group", a.ID, a.Offset)
		}
	}
	if len(assigned) != partitions {
		t.Fatalf("gen1 (id %d, member %s) assignments %v, want all %d partitions", gen1.ID, gen1.MemberID, gen1.Assignments, partitions)
	}

	ch1 := make(chan consumed, total)
	consumeGeneration(t, brokers, topic, gen1, ch1)
	msgs := collect(t, ch1, total, 20*time.Second)
	t.Logf("gen1 (id %d) consumed %d messages after %v", gen1.ID, len(msgs), time.Since(start))

	balancer := &kafka.Hash{}
	parts := []int{0, 1, 2}
	values := map[string]bool{}
	next := map[int]int64{} // per partition: last offset + 1
	perPartition := map[int]int{}
	for _, m := range msgs {
		if values[m.value] {
			t.Errorf("duplicate message %q", m.value)
		}
		values[m.value] = true
		if want := balancer.Balance(kafka.Message{Key: []byte(m.key)}, parts...); m.partition != want {
			t.Errorf("key %q on partition %d, Hash balancer says %d", m.key, m.partition, want)
		}
		if m.offset+1 > next[m.partition] {
			next[m.partition] = m.offset + 1
		}
		perPartition[m.partition]++
	}
	for i := 0; i < total; i++ {
		if v := fmt.Sprintf("value-%d", i); !values[v] {
			t.Errorf("message %q never arrived", v)
		}
	}
	t.Logf("per-partition counts %v, next offsets %v", perPartition, next)

	if err := gen1.CommitOffsets(map[string]map[int]int64{topic: next}); err != nil {
		t.Fatalf("gen1: CommitOffsets: %v", err)
	}
	if err := cg1.Close(); err != nil {
		t.Fatalf("gen1: Close: %v", err)
	}
	closed1 = true

	// The commit is visible to an admin client, and equals the high watermark.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	of, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil || of.Error != nil {
		t.Fatalf("OffsetFetch: %v / %v", err, of.Error)
	}
	lo, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2)},
	}})
	if err != nil {
		t.Fatalf("ListOffsets: %v", err)
	}
	hwm := map[int]int64{}
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("ListOffsets partition %d: %v", p.Partition, p.Error)
		}
		hwm[p.Partition] = p.LastOffset
	}
	for _, p := range of.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("OffsetFetch partition %d: %v", p.Partition, p.Error)
		}
		want := next[p.Partition]
		if p.CommittedOffset != want || hwm[p.Partition] != want {
			t.Errorf("partition %d: committed %d, high watermark %d, want %d", p.Partition, p.CommittedOffset, hwm[p.Partition], want)
		}
	}

	// ---- generation 2: a new member of the same group resumes at the commit.
	cg2 := newGroup(t, brokers, group, topic)
	defer cg2.Close()
	gen2 := nextGeneration(ctx, t, cg2)
	if gen2.ID <= gen1.ID {
		t.Errorf("gen2 id %d, want > gen1 id %d", gen2.ID, gen1.ID)
	}
	got := map[int]int64{}
	for _, a := range gen2.Assignments[topic] {
		got[a.ID] = a.Offset
	}
	if fmt.Sprint(got) != fmt.Sprint(next) {
		t.Fatalf("gen2 (id %d) resumes at %v, want committed %v", gen2.ID, got, next)
	}
	ch2 := make(chan consumed, total)
	consumeGeneration(t, brokers, topic, gen2, ch2)
	expectNone(t, ch2, 1500*time.Millisecond)

	// New data after the commit is delivered exactly once, past the commit.
	produce(ctx, t, brokers, topic, total, extra)
	for _, m := range collect(t, ch2, extra, 15*time.Second) {
		if m.offset < next[m.partition] {
			t.Errorf("gen2 re-read partition %d offset %d (< committed %d)", m.partition, m.offset, next[m.partition])
		}
	}
	expectNone(t, ch2, 500*time.Millisecond)
	t.Logf("gen2 (id %d) resumed at the committed offsets; total %v", gen2.ID, time.Since(start))
}
