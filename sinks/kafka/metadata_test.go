package kafka

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/metadata"
)

type countingTransport struct {
	calls int
	code  int16
	err   error
}

func (t *countingTransport) RoundTrip(_ context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	t.calls++
	if t.err != nil {
		return nil, t.err
	}
	if mr, ok := req.(*metadata.Request); ok {
		res := &metadata.Response{}
		for _, name := range mr.TopicNames {
			res.Topics = append(res.Topics, metadata.ResponseTopic{Name: name, ErrorCode: t.code, Partitions: make([]metadata.ResponsePartition, 3)})
		}
		return res, nil
	}
	return nil, nil
}

func TestMetadataCache(t *testing.T) {
	now := time.Unix(1000, 0)
	next := &countingTransport{}
	c := newMetadataCache(next)
	c.now = func() time.Time { return now }
	ask := func(topics ...string) *metadata.Response {
		t.Helper()
		res, err := c.RoundTrip(context.Background(), nil, &metadata.Request{TopicNames: topics})
		if err != nil {
			t.Fatal(err)
		}
		return res.(*metadata.Response)
	}
	for range 5 {
		if r := ask("a"); len(r.Topics) != 1 || r.Topics[0].Name != "a" || len(r.Topics[0].Partitions) != 3 {
			t.Fatalf("response %+v", r)
		}
	}
	if next.calls != 1 {
		t.Fatalf("5 lookups of one topic within the TTL: %d round trips, want 1", next.calls)
	}
	ask("b")
	ask("a", "b") // not a one-topic lookup: passed through
	if next.calls != 3 {
		t.Fatalf("%d round trips, want 3", next.calls)
	}
	now = now.Add(metadataTTL)
	ask("a")
	if next.calls != 4 {
		t.Fatalf("after the TTL: %d round trips, want 4", next.calls)
	}
	// Answers with an error are not cached.
	next.code = int16(kafka.UnknownTopicOrPartition)
	ask("c")
	ask("c")
	if next.calls != 6 {
		t.Fatalf("error answers: %d round trips, want 6", next.calls)
	}
	next.err = errors.New("broker down")
	if _, err := c.RoundTrip(context.Background(), nil, &metadata.Request{TopicNames: []string{"d"}}); err == nil {
		t.Fatal("transport error not returned")
	}
	ask("a")             // still cached
	if next.calls != 7 { // 6 + the failed one
		t.Fatalf("%d round trips, want 7", next.calls)
	}
}
