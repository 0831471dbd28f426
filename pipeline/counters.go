package pipeline

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// RouteCounters count one route's records. A record is counted In when it
// reaches the route and in exactly one of the others once its outcome is
// decided; a record a k-anonymity stage holds is Held until then.
type RouteCounters struct {
	In  atomic.Uint64
	Out atomic.Uint64 // handed to the sink for the vendor topic (records an aggregate covers count one each)
	// Suppressed: withheld by the k-anonymity stage (short class or group,
	// memory cap, late record).
	Suppressed         atomic.Uint64
	Quarantined        atomic.Uint64 // rejected by the gate; sent to the quarantine topic
	FilteredByCategory atomic.Uint64 // the route may not receive the source's category
	Failed             atomic.Uint64 // could not be de-identified; sent to the dead-letter topic
	// Held is the number of records a k-anonymity stage holds undecided
	// (a gauge: it falls as they are decided).
	Held atomic.Int64
	// Revoked counts records a stage still held when their claim ended
	// (rebalance, shutdown): not decided here, their offsets not committed,
	// the partition's next owner reprocesses them.
	Revoked atomic.Uint64
	// Dedicated counts decoded records of the inputs dedicated to the route
	// (Input.Route, a repartition topic): such a route reads only them.
	Dedicated atomic.Uint64

	dedicated bool
}

// WorkerCounters count the worker's input records.
type WorkerCounters struct {
	Consumed atomic.Uint64
	Decoded  atomic.Uint64
	// DecodedDedicated counts the decoded records of dedicated inputs
	// (Input.Route): every route but theirs ignores them.
	DecodedDedicated atomic.Uint64
	DeadLettered     atomic.Uint64 // undecodable; sent to the dead-letter topic
	// Acked counts outputs (vendor records and dead letters) the sink acknowledged.
	Acked atomic.Uint64
	// Committed counts successful offset commits.
	Commits atomic.Uint64
	// InFlight is the number of records with unacknowledged outputs plus
	// unacknowledged outputs of k-anonymity stages.
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
//	per route:  in = out + suppressed + quarantined + filtered_by_category + failed + held + revoked
//	worker:     consumed = decoded + dead_lettered
//
// (held and revoked are zero for routes without a k-anonymity stage) and
// that every route saw every decoded record it reads: a route with a
// dedicated input (Input.Route) those of its dedicated inputs, every other
// route every other decoded record. Counters are read one by one, so Check
// is exact only while no record is being processed.
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
		held, rev := uint64(max(r.Held.Load(), 0)), r.Revoked.Load()
		if in != out+sup+q+f+fail+held+rev {
			errs = append(errs, fmt.Errorf("route %s: in %d != out %d + suppressed %d + quarantined %d + filtered_by_category %d + failed %d + held %d + revoked %d", name, in, out, sup, q, f, fail, held, rev))
		}
		switch ded := w.DecodedDedicated.Load(); {
		case r.dedicated && in != r.Dedicated.Load():
			errs = append(errs, fmt.Errorf("route %s: in %d != decoded %d of its dedicated inputs", name, in, r.Dedicated.Load()))
		case !r.dedicated && in != decoded-ded:
			errs = append(errs, fmt.Errorf("route %s: in %d != decoded %d - decoded of dedicated inputs %d", name, in, decoded, ded))
		}
	}
	return errors.Join(errs...)
}
