package main

import (
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/kanon"
)

// aggregateSrc is the deident-src value of an aggregate or a late count
// (pipeline.AppendAggregateSrc): its window and the source offset ranges
// it decides (spans, one per source partition; none for a late count).
func aggregateSrc(s *kanon.Stage, o *kanon.Output, from []kanon.Span) []byte {
	spans := make([]pipeline.SrcSpan, len(from))
	for i, sp := range from {
		spans[i] = pipeline.SrcSpan{Topic: sp.Topic, Partition: sp.Partition, First: sp.First, Last: sp.Last, Count: sp.Count}
	}
	return pipeline.AppendAggregateSrc(nil, o.Window, o.Window.Add(s.Window()), spans)
}
