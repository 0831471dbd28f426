// Package audit reads Kafka topics over a time or offset range without a
// consumer group (nothing is committed), re-derives a route's outputs from
// their sources, and reports how what a vendor topic holds compares with
// what the policy produces (design section 7: `deident replay` and
// `deident audit`). Reports name records by topic/partition/offset and
// fields by path; they never hold record values or keys.
package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Bound is one end of a range: an offset (applied to every partition) or a
// time (resolved per partition with ListOffsets). The zero Bound is open:
// the beginning of the partition for From, the end (high watermark) for To.
type Bound struct {
	Offset int64 // valid when IsOffset
	Time   time.Time
	// IsOffset: Offset is set; otherwise Time, or open when zero.
	IsOffset bool
}

// ParseBound parses "" (open), an offset ("4711") or an RFC 3339 time.
func ParseBound(s string) (Bound, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Bound{}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return Bound{}, fmt.Errorf("offset must not be negative, got %d", n)
		}
		return Bound{Offset: n, IsOffset: true}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Bound{}, fmt.Errorf("%q is neither an offset nor an RFC 3339 time", s)
	}
	return Bound{Time: t}, nil
}

// IsTime reports whether b is a time.
func (b Bound) IsTime() bool { return !b.IsOffset && !b.Time.IsZero() }

func (b Bound) String() string {
	switch {
	case b.IsOffset:
		return strconv.FormatInt(b.Offset, 10)
	case b.IsTime():
		return b.Time.UTC().Format(time.RFC3339Nano)
	}
	return "(open)"
}

// Range is a half-open offset range [Start, End) of one partition.
type Range struct {
	Topic      string `json:"topic"`
	Partition  int    `json:"partition"`
	Start, End int64
}

// Len is the number of offsets in r.
func (r Range) Len() int64 { return max(r.End-r.Start, 0) }

// Resolve turns [from, to) into offset ranges, one per partition of topic.
// Offsets are clamped to what the partition holds; a time resolves to the
// first offset whose timestamp is at or after it (the end when there is none).
func Resolve(ctx context.Context, client *kafka.Client, topic string, from, to Bound) ([]Range, error) {
	parts, err := Partitions(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	first, err := listOffsets(ctx, client, topic, parts, func(p int) kafka.OffsetRequest { return kafka.FirstOffsetOf(p) })
	if err != nil {
		return nil, err
	}
	last, err := listOffsets(ctx, client, topic, parts, func(p int) kafka.OffsetRequest { return kafka.LastOffsetOf(p) })
	if err != nil {
		return nil, err
	}
	resolve := func(b Bound, open map[int]int64) (map[int]int64, error) {
		out := map[int]int64{}
		switch {
		case b.IsOffset:
			for _, p := range parts {
				out[p] = min(max(b.Offset, first[p]), last[p])
			}
		case b.IsTime():
			at, err := listOffsets(ctx, client, topic, parts, func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, b.Time) })
			if err != nil {
				return nil, err
			}
			for _, p := range parts {
				o, ok := at[p]
				if !ok || o < 0 {
					o = last[p] // no record at or after the time
				}
				out[p] = min(max(o, first[p]), last[p])
			}
		default:
			return open, nil
		}
		return out, nil
	}
	start, err := resolve(from, first)
	if err != nil {
		return nil, err
	}
	end, err := resolve(to, last)
	if err != nil {
		return nil, err
	}
	rs := make([]Range, 0, len(parts))
	for _, p := range parts {
		rs = append(rs, Range{Topic: topic, Partition: p, Start: start[p], End: max(end[p], start[p])})
	}
	return rs, nil
}

// Partitions lists the partition ids of topic, ascending.
func Partitions(ctx context.Context, client *kafka.Client, topic string) ([]int, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("reading metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("reading metadata of %s: %w", topic, t.Error)
		}
		ps := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ps = append(ps, p.ID)
		}
		sort.Ints(ps)
		return ps, nil
	}
	return nil, fmt.Errorf("reading metadata of %s: %w", topic, kafka.UnknownTopicOrPartition)
}

// listOffsets asks for one offset per partition; time lookups that find no
// record give -1.
func listOffsets(ctx context.Context, client *kafka.Client, topic string, parts []int, req func(int) kafka.OffsetRequest) (map[int]int64, error) {
	rq := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		rq[i] = req(p)
	}
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: rq}})
	if err != nil {
		return nil, fmt.Errorf("listing offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("listing offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		o := int64(-1)
		switch rq[0].Timestamp {
		case kafka.FirstOffset:
			o = po.FirstOffset
		case kafka.LastOffset:
			o = po.LastOffset
		default:
			for off := range po.Offsets {
				o = off
			}
		}
		out[po.Partition] = o
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			out[p] = -1
		}
	}
	return out, nil
}

// ErrIncomplete is returned by Read when a range could not be read to its
// end (records deleted, or the broker stopped answering).
var ErrIncomplete = errors.New("range not read to its end")

// Reader reads offset ranges. The zero value is not usable; set Brokers.
type Reader struct {
	Brokers []string
	// Dialer connects to a TLS or SASL cluster; plaintext when nil.
	Dialer *kafka.Dialer
	// IdleTimeout bounds the wait for the next record of a range; 10s when zero.
	IdleTimeout time.Duration
}

// Read calls fn for every record of r in offset order, with a kafka-go
// Reader on the one partition at an explicit offset: no consumer group,
// nothing committed. kafka-go allocates each message's slices, so fn may
// keep them.
func (rd Reader) Read(ctx context.Context, r Range, fn func(kafka.Message) error) error {
	if r.Len() == 0 {
		return nil
	}
	idle := rd.IdleTimeout
	if idle == 0 {
		idle = 10 * time.Second
	}
	open := func(at int64) (*kafka.Reader, error) {
		kr := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   rd.Brokers,
			Topic:     r.Topic,
			Partition: r.Partition,
			MinBytes:  1,
			MaxBytes:  16 << 20,
			MaxWait:   200 * time.Millisecond,
			Dialer:    rd.Dialer,
		})
		if err := kr.SetOffset(at); err != nil {
			kr.Close()
			return nil, fmt.Errorf("reading %s/%d from %d: %w", r.Topic, r.Partition, at, err)
		}
		return kr, nil
	}
	kr, err := open(r.Start)
	if err != nil {
		return err
	}
	defer func() {
		if kr != nil {
			kr.Close()
		}
	}()
	// A kafka-go partition reader started right after the topic was
	// created was seen (on a real broker under load) to deliver nothing
	// for the whole idle timeout although the range's records were
	// there; a fresh reader at the same offset gets them. So an idle
	// timeout is retried with a new reader before the range is declared
	// incomplete.
	const attempts = 3
	next, idles := r.Start, 0
	for next < r.End {
		rctx, cancel := context.WithTimeout(ctx, idle)
		m, err := kr.ReadMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("reading %s/%d at offset %d: %w", r.Topic, r.Partition, next, err)
			}
			if idles++; idles == attempts {
				return fmt.Errorf("reading %s/%d: no record at offset %d to %d within %d x %v: %w", r.Topic, r.Partition, next, r.End-1, attempts, idle, ErrIncomplete)
			}
			kr.Close()
			if kr, err = open(next); err != nil {
				return err // kr is nil: nothing left to close
			}
			continue
		}
		idles = 0
		if m.Offset >= r.End {
			break // offsets can skip (compaction, transaction markers)
		}
		next = m.Offset + 1
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// ParseSrc parses a deident-src header value "topic/partition/offset".
func ParseSrc(s string) (topic string, partition int, offset int64, err error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", 0, 0, fmt.Errorf("deident-src %q: want topic/partition/offset", s)
	}
	j := strings.LastIndexByte(s[:i], '/')
	if j <= 0 {
		return "", 0, 0, fmt.Errorf("deident-src %q: want topic/partition/offset", s)
	}
	p, err1 := strconv.Atoi(s[j+1 : i])
	o, err2 := strconv.ParseInt(s[i+1:], 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return "", 0, 0, fmt.Errorf("deident-src %q: want topic/partition/offset", s)
	}
	return s[:j], p, o, nil
}

// Src formats a deident-src value.
func Src(topic string, partition int, offset int64) string {
	return topic + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}

// Header returns the value of the first header named key.
func Header(hs []kafka.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
