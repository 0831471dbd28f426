// Package kafkatest lets the same Kafka test suite run against a real broker
// or an in-process fake one.
//
// By default every test gets a fresh in-process kfake cluster. When
// DEIDENT_KAFKA_BROKERS is set (comma-separated host:port list, e.g. the
// address printed by `scripts/kafka-local start`), tests run against that
// external broker instead; topic and group names from Topic are unique so
// runs sharing one broker never collide.
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvBrokers names the environment variable holding external broker addresses.
const EnvBrokers = "DEIDENT_KAFKA_BROKERS"

// Real reports whether the tests run against an external broker
// (DEIDENT_KAFKA_BROKERS is set and non-empty).
func Real() bool { return len(externalBrokers()) > 0 }

func externalBrokers() []string {
	var out []string
	for _, b := range strings.Split(os.Getenv(EnvBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Brokers returns bootstrap addresses: DEIDENT_KAFKA_BROKERS (comma-separated)
// if set, else a fresh in-process kfake cluster shut down by t.Cleanup.
//
// The kfake cluster has one broker, allows auto topic creation and creates
// auto-created topics with 3 partitions, like the broker that
// scripts/kafka-local starts.
func Brokers(t testing.TB) []string {
	t.Helper()
	if b := externalBrokers(); len(b) > 0 {
		return b
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3),
	)
	if err != nil {
		t.Fatalf("kafkatest: starting kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

var topicSeq atomic.Uint64

// Topic returns a unique topic (or consumer group) name with the given
// prefix, so runs against a shared real broker never collide. Characters
// outside [A-Za-z0-9-] in prefix are replaced by '-'.
func Topic(t testing.TB, prefix string) string {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("kafkatest: random: %v", err)
	}
	p := sanitize(prefix)
	if p == "" {
		p = "test"
	}
	if len(p) > 120 {
		p = p[:120]
	}
	return fmt.Sprintf("%s-%d-%d-%s", p, time.Now().UnixMilli(), topicSeq.Add(1), hex.EncodeToString(rnd[:]))
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, s)
}

// CreateTopic creates topic with the given number of partitions (replication
// factor: the broker's default) and waits until metadata shows every
// partition with a leader. An already existing topic with the same partition
// count is accepted. Use Topic for a unique name.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int) {
	t.Helper()
	if err := createTopic(brokers, topic, partitions, 30*time.Second); err != nil {
		t.Fatalf("kafkatest: create topic %q (%d partitions) on %v: %v", topic, partitions, brokers, err)
	}
}

func createTopic(brokers []string, topic string, partitions int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}

	var lastErr error
	for created := false; !created; {
		res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
			Topics: []kafka.TopicConfig{{
				Topic:             topic,
				NumPartitions:     partitions,
				ReplicationFactor: -1, // broker default
			}},
		})
		if err == nil {
			err = res.Errors[topic]
		}
		switch {
		case err == nil, errors.Is(err, kafka.TopicAlreadyExists):
			created = true
		case retriable(err):
			lastErr = err
			if serr := sleep(ctx, 200*time.Millisecond); serr != nil {
				return fmt.Errorf("%w (last error: %v)", serr, lastErr)
			}
		default:
			return err
		}
	}

	for {
		n, err := readyPartitions(ctx, client, topic)
		if err == nil && n == partitions {
			return nil
		}
		if err == nil && n > partitions {
			return fmt.Errorf("topic exists with %d partitions, want %d", n, partitions)
		}
		if err != nil {
			lastErr = err
		} else {
			lastErr = fmt.Errorf("%d of %d partitions have a leader", n, partitions)
		}
		if serr := sleep(ctx, 100*time.Millisecond); serr != nil {
			return fmt.Errorf("waiting for metadata: %w (last: %v)", serr, lastErr)
		}
	}
}

// readyPartitions returns how many partitions of topic have a leader.
func readyPartitions(ctx context.Context, client *kafka.Client, topic string) (int, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, tp := range md.Topics {
		if tp.Name != topic {
			continue
		}
		if tp.Error != nil {
			return 0, tp.Error
		}
		n := 0
		for _, p := range tp.Partitions {
			if p.Error == nil && p.Leader.Host != "" {
				n++
			}
		}
		if n < len(tp.Partitions) {
			return n, nil
		}
		return len(tp.Partitions), nil
	}
	return 0, kafka.UnknownTopicOrPartition
}

func retriable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary() || ke == kafka.NotController || ke == kafka.RequestTimedOut
	}
	// Network errors while a freshly started broker settles.
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
