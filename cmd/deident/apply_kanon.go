package main

import (
	"fmt"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/kanon"
)

// emitFunc passes one output of the stage on: the first input line it
// covers, whether it is an aggregate (or a late count) rather than a
// released record, its class's distinct-entity count, the record.
type emitFunc func(line int64, aggregate bool, entities int, rec []byte) (passed bool, err error)

// kanonSink runs a route's k-anonymity stage in apply. Its clock is frozen
// so that file runs are deterministic: records wait for
// max_delay_records, or until the end of the input, never for wall time.
type kanonSink struct {
	st   *kanon.Stage
	rec  kanon.Record
	outs []kanon.Output
	src  string
	// out counts input records released or covered by a published
	// aggregate; lines counts output lines written.
	out, lines, suppressed, late, quarantined uint64
}

func newKanonSink(cfg *config.Config, rc config.Route, in string) (*kanonSink, error) {
	if rc.KAnon == nil {
		return nil, nil
	}
	start := time.Unix(0, 0)
	st, err := kanon.New(*rc.KAnon, cfg.Dir, kanon.Options{Now: func() time.Time { return start }})
	if err != nil {
		return nil, err
	}
	return &kanonSink{st: st, src: in}, nil
}

// add feeds the route's output for input line lineNo; an error rejects the
// line (it names a field path, never a value).
func (k *kanonSink) add(emit emitFunc, lineNo int64, out []byte) error {
	if err := k.st.Extract(&k.rec, out); err != nil {
		return err
	}
	k.rec.Topic, k.rec.Partition, k.rec.Offset = k.src, 0, lineNo
	k.outs = k.st.Add(k.outs[:0], k.rec)
	return k.write(emit)
}

// flush decides everything still held at the end of the input.
func (k *kanonSink) flush(emit emitFunc) error {
	k.outs = k.st.Flush(k.outs[:0])
	return k.write(emit)
}

func (k *kanonSink) write(emit emitFunc) error {
	for _, o := range k.outs {
		switch o.Kind {
		case kanon.Released, kanon.Aggregate, kanon.LateCount:
			var line int64
			if len(o.Spans) > 0 {
				line = o.Spans[0].First
			}
			passed, err := emit(line, o.Kind != kanon.Released, o.Entities, o.Payload)
			if err != nil {
				return err
			}
			if !passed {
				if o.Kind != kanon.LateCount {
					k.quarantined += uint64(o.Count)
				}
				continue
			}
			k.lines++
			if o.Kind != kanon.LateCount {
				k.out += uint64(o.Count)
			}
		case kanon.Suppressed:
			k.suppressed += uint64(o.Count)
		case kanon.Late:
			k.late += uint64(o.Count)
		}
	}
	return nil
}

func (k *kanonSink) summary() string {
	return fmt.Sprintf("k-anonymity: %d records published in %d lines, %d suppressed, %d late, %d in quarantined outputs", k.out, k.lines, k.suppressed, k.late, k.quarantined)
}
