package main

import (
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/kanon"
)

// aggregateSrc is the deident-src value of an aggregate or a late count
// (pipeline.AppendAggregateSrc): its window and the source offset ranges
// it decides, one per partition.
func aggregateSrc(s *kanon.Stage, o *kanon.Output) []byte {
	spans := make([]pipeline.SrcSpan, len(o.Spans))
	for i, sp := range o.Spans {
		spans[i] = pipeline.SrcSpan{Topic: sp.Topic, Partition: sp.Partition, First: sp.First, Last: sp.Last, Count: sp.Count}
	}
	return pipeline.AppendAggregateSrc(nil, o.Window, o.Window.Add(s.Window()), spans)
}
