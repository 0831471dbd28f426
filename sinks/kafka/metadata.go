package kafka

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/metadata"
)

// metadataTTL bounds how stale a topic's cached partition list may be,
// on top of the Transport's own metadata cache (kafka.Transport.MetadataTTL).
const metadataTTL = time.Second

// metadataCache is the Writer's RoundTripper. kafka-go's Writer asks its
// Transport for the metadata of a message's topic once per message (to
// count its partitions); the Transport answers from its cache but builds
// a filtered copy of the whole response each time. metadataCache keeps
// that one-topic answer per topic for metadataTTL and passes every other
// request (and every answer with an error) through. Safe for concurrent
// use; the cached responses are shared and read-only (the Writer only
// reads them).
type metadataCache struct {
	next kafka.RoundTripper
	now  func() time.Time

	mu     sync.Mutex                               // serialises updates of topics
	topics atomic.Pointer[map[string]topicMetadata] // copy on write
}

type topicMetadata struct {
	res     *metadata.Response
	expires int64 // unix nanoseconds
}

var _ kafka.RoundTripper = (*metadataCache)(nil)

func newMetadataCache(next kafka.RoundTripper) *metadataCache {
	c := &metadataCache{next: next, now: time.Now}
	c.topics.Store(&map[string]topicMetadata{})
	return c
}

func (c *metadataCache) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	mr, ok := req.(*metadata.Request)
	if !ok || len(mr.TopicNames) != 1 {
		return c.next.RoundTrip(ctx, addr, req)
	}
	topic := mr.TopicNames[0]
	now := c.now().UnixNano()
	if m, ok := (*c.topics.Load())[topic]; ok && now < m.expires {
		return m.res, nil
	}
	res, err := c.next.RoundTrip(ctx, addr, req)
	if err != nil {
		return res, err
	}
	r, ok := res.(*metadata.Response)
	if !ok || len(r.Topics) != 1 || r.Topics[0].Name != topic || r.Topics[0].ErrorCode != 0 {
		return res, nil
	}
	c.mu.Lock()
	old := *c.topics.Load()
	next := make(map[string]topicMetadata, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[topic] = topicMetadata{res: r, expires: now + int64(metadataTTL)}
	c.topics.Store(&next)
	c.mu.Unlock()
	return res, nil
}
