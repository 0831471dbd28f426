package pipeline

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// RouteCounters count one route's records. A record is counted once per
// route when its outcome is decided: In and exactly one of the others.
type RouteCounters struct {
	In                 atomic.Uint64
	Out                atomic.Uint64 // handed to the sink for the vendor topic
	Suppressed         atomic.Uint64 // held back by k-anonymity (no such stage yet: always 0)
	Quarantined        atomic.Uint64 // rejected by the gate (no gate yet: always 0)
	FilteredByCategory atomic.Uint64 // the route may not receive the source's category
	Failed             atomic.Uint64 // could not be de-identified; sent to the dead-letter topic
}

// WorkerCounters count the worker's input records.
type WorkerCounters struct {
	Consumed     atomic.Uint64
	Decoded      atomic.Uint64
	DeadLettered atomic.Uint64 // undecodable; sent to the dead-letter topic
	// Acked counts outputs (vendor records and dead letters) the sink acknowledged.
	Acked atomic.Uint64
	// Committed counts successful offset commits.
	Commits atomic.Uint64
	// InFlight is the number of records with unacknowledged outputs.
	InFlight atomic.Int64
}

// Counters are the accounting of one Runner. Routes is fixed at
// construction; all counters are atomic and safe to read at any time.
type Counters struct {
	Worker WorkerCounters
	Routes map[string]*RouteCounters
	// Names lists the route names in order.
	Names []string
}

// Check verifies the accounting identities
//
//	per route:  in = out + suppressed + quarantined + filtered_by_category + failed
//	worker:     consumed = decoded + dead_lettered
//
// and that every route saw every decoded record. Counters are read one by
// one, so Check is exact only while no record is being processed.
func (c *Counters) Check() error {
	var errs []error
	w := &c.Worker
	consumed, decoded, dead := w.Consumed.Load(), w.Decoded.Load(), w.DeadLettered.Load()
	if consumed != decoded+dead {
		errs = append(errs, fmt.Errorf("worker: consumed %d != decoded %d + dead_lettered %d", consumed, decoded, dead))
	}
	for _, name := range c.Names {
		r := c.Routes[name]
		in, out, sup, q, f, fail := r.In.Load(), r.Out.Load(), r.Suppressed.Load(), r.Quarantined.Load(), r.FilteredByCategory.Load(), r.Failed.Load()
		if in != out+sup+q+f+fail {
			errs = append(errs, fmt.Errorf("route %s: in %d != out %d + suppressed %d + quarantined %d + filtered_by_category %d + failed %d", name, in, out, sup, q, f, fail))
		}
		if in != decoded {
			errs = append(errs, fmt.Errorf("route %s: in %d != decoded %d", name, in, decoded))
		}
	}
	return errors.Join(errs...)
}
