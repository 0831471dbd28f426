package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// TestRunRepartitionCountsClassesAcrossPartitions: a.exe is run by three
// users whose records lie in three source partitions, b.exe by one. Per
// source partition no class reaches k=3 (the single-leg stage suppresses
// everything); through the repartition topic the a.exe class is counted
// whole and released with each record's source provenance, b.exe is
// suppressed, both legs' accounting holds, and the offsets of the source
// and the repartition topic are committed to their ends.
func TestRunRepartitionCountsClassesAcrossPartitions(t *testing.T) {
	for _, repartition := range []bool{false, true} {
		name := "single leg"
		if repartition {
			name = "repartitioned"
		}
		t.Run(name, func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			cfg := kanonConfig(t, brokers, 300*time.Millisecond)
			rp := kafkatest.Topic(t, "repartition")
			if repartition {
				kafkatest.CreateTopic(t, brokers, rp, testPartitions)
				cfg.Vendors["acme-mdr"].KAnon.RepartitionTopic = rp
			}
			topic := cfg.Sources["edr"].Topic
			produceTo(t, brokers, topic, 0, []string{edrRecord("alice", "a.exe", "EDR"), edrRecord("bob", "b.exe", "EDR")})
			produceTo(t, brokers, topic, 1, []string{edrRecord("carol", "a.exe", "EDR")})
			produceTo(t, brokers, topic, 2, []string{edrRecord("dave", "a.exe", "EDR")})

			rw := startWorkerWith(t, cfg, func(o *workerOptions) { o.stageInterval = 20 * time.Millisecond }, nil)
			waitCommitted(t, cfg, 30*time.Second)
			if repartition {
				waitUntil(t, "the repartition topic committed", 20*time.Second, func() bool {
					ends := endOffsets(t, brokers, rp, testPartitions)
					for p, end := range ends {
						if end > 0 && committedAt(cfg, rp, p) != end {
							return false
						}
					}
					return true
				})
			}
			rw.shutdown(t)
			c := rw.w.runner.Counters()
			if err := c.Check(); err != nil {
				t.Error(err)
			}
			vendor := readAll(t, brokers, cfg.Vendors["acme-mdr"].Topic, testPartitions)
			if !repartition {
				if len(vendor) != 0 {
					t.Errorf("single leg published %d records; per partition every class is under k", len(vendor))
				}
				if rc := c.Routes["acme-mdr"]; rc.Suppressed.Load() != 4 {
					t.Errorf("single leg suppressed %d, want 4", rc.Suppressed.Load())
				}
				return
			}
			want := map[string]bool{topic + "/0/0": true, topic + "/1/0": true, topic + "/2/0": true}
			for _, m := range vendor {
				src := headers(m)[pipeline.HeaderSrc]
				if !want[src] || strings.Contains(string(m.Value), "b.exe") {
					t.Errorf("unexpected vendor record from %q", src)
				}
				delete(want, src)
			}
			if len(want) != 0 {
				t.Errorf("source records never published: %v", want)
			}
			leg1, leg2 := c.Routes["acme-mdr/repartition"], c.Routes["acme-mdr"]
			if leg1.In.Load() != 4 || leg1.Out.Load() != 4 {
				t.Errorf("leg 1 in %d out %d, want 4 4", leg1.In.Load(), leg1.Out.Load())
			}
			if leg2.In.Load() != 4 || leg2.Out.Load() != 3 || leg2.Suppressed.Load() != 1 {
				t.Errorf("leg 2 in %d out %d suppressed %d, want 4 3 1", leg2.In.Load(), leg2.Out.Load(), leg2.Suppressed.Load())
			}
			keys := map[string]int{}
			for _, m := range readAll(t, brokers, rp, testPartitions) {
				keys[string(m.Key)]++
			}
			if len(keys) != 2 || keys[""] != 0 {
				t.Errorf("repartition keys %v, want two classes", keys)
			}
		})
	}
}

// committedAt returns the group's committed offset of topic/partition, or
// -1 when there is none yet.
func committedAt(cfg *config.Config, topic string, partition int) int64 {
	client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Timeout: 10 * time.Second}
	res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: cfg.Kafka.GroupID, Topics: map[string][]int{topic: {partition}}})
	if err != nil || res.Error != nil {
		return -1
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == partition && p.Error == nil {
			return p.CommittedOffset
		}
	}
	return -1
}

// TestRepartitionTopicMustBeInternal: a repartition topic that is also a
// source, vendor, dead-letter or quarantine topic is refused at start-up,
// naming the key.
func TestRepartitionTopicMustBeInternal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		topic func(*config.Config) string
		want  string
	}{
		{"source", func(c *config.Config) string { return c.Sources["edr"].Topic }, "is a source or another route's repartition topic"},
		{"vendor", func(c *config.Config) string { return c.Vendors["flowai"].Topic }, "is the vendor topic of flowai"},
		{"dead letter", func(c *config.Config) string { return c.Kafka.DeadLetterTopic }, "is also kafka.dead_letter_topic"},
		{"quarantine", func(c *config.Config) string { return c.Kafka.QuarantineTopic }, "is also kafka.quarantine_topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kanonConfig(t, kafkatest.Brokers(t), time.Second)
			cfg.Vendors["acme-mdr"].KAnon.RepartitionTopic = tc.topic(cfg)
			_, err := newWorker(cfg, testLogger(t), workerOptions{})
			if err == nil || !strings.Contains(err.Error(), "vendors.acme-mdr.k_anonymity.repartition_topic: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming the key and %q", err, tc.want)
			}
		})
	}
}
