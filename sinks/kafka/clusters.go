package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/deident/deident/pipeline"
)

// Clusters is a pipeline.Sink over one Sink per cluster: each output goes
// to the Sink whose Topics hold its topic. A worker with a separate egress
// cluster produces vendor records there and dead letters and quarantined
// records to its internal cluster. A worker with one cluster uses its Sink
// directly.
type Clusters struct {
	sinks []*Sink
}

var _ pipeline.Sink = (*Clusters)(nil)

// NewClusters returns a Sink over sinks. Each must have Topics, and no topic
// may belong to two of them.
func NewClusters(sinks ...*Sink) (*Clusters, error) {
	owner := map[string]int{}
	for i, s := range sinks {
		if s.topics == nil {
			return nil, errors.New("kafka sink: each cluster's sink needs its topics")
		}
		for _, t := range s.topics {
			if j, dup := owner[t]; dup && j != i {
				return nil, fmt.Errorf("kafka sink: topic %q is on two clusters", t)
			}
			owner[t] = i
		}
	}
	return &Clusters{sinks: sinks}, nil
}

// Produce hands each run of consecutive outputs bound for one cluster to
// that cluster's Sink. An output whose topic no Sink allows fails the call
// with ErrTopicNotAllowed before anything is queued.
func (c *Clusters) Produce(ctx context.Context, outs []pipeline.Output) error {
	for i := range outs {
		if c.owner(outs[i].Topic) == nil {
			return fmt.Errorf("producing to %q: %w", outs[i].Topic, ErrTopicNotAllowed)
		}
	}
	for i := 0; i < len(outs); {
		s := c.owner(outs[i].Topic)
		j := i + 1
		for j < len(outs) && c.owner(outs[j].Topic) == s {
			j++
		}
		if err := s.Produce(ctx, outs[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (c *Clusters) owner(topic string) *Sink {
	for _, s := range c.sinks {
		if s.Allows(topic) {
			return s
		}
	}
	return nil
}

// Close flushes and closes every cluster's Sink.
func (c *Clusters) Close() error {
	var errs []error
	for _, s := range c.sinks {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
