// Package pipeline defines the contracts between sources, transforms and
// sinks (Record, Output, Source, Claim, Sink, Route) and the Runner that
// connects them with at-least-once delivery: a source offset is committed
// only once every output derived from it has been acknowledged.
//
// The package imports no Kafka client and no transform implementation;
// cmd/deident wires concrete ones together.
package pipeline

import (
	"context"
	"strconv"
)

// Provenance and dead-letter header names.
const (
	// HeaderSrc is "topic/partition/offset" of the input record.
	HeaderSrc = "deident-src"
	// HeaderPolicy is the route's policy version id.
	HeaderPolicy = "deident-policy"
	// HeaderKey is the id of the key the record was pseudonymized with.
	HeaderKey = "deident-key"
	// HeaderRoute names the route a dead letter failed in (absent for decode failures).
	HeaderRoute = "deident-route"
	// HeaderStage is where a dead letter failed: "decode" or "apply".
	HeaderStage = "deident-stage"
	// HeaderError is the reason a record was dead-lettered. It names a field
	// path or byte offset, never a value.
	HeaderError = "deident-error"
)

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one input record. The runner does not modify it; Value and Key
// are retained only as long as a dead letter derived from them is in flight.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
}

// AppendSrc appends the record's coordinates in the deident-src form
// "topic/partition/offset".
func (r *Record) AppendSrc(dst []byte) []byte {
	dst = append(dst, r.Topic...)
	dst = append(dst, '/')
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, '/')
	return strconv.AppendInt(dst, r.Offset, 10)
}

// Acker is told once whether an output was acknowledged by the sink's
// broker (err == nil) or given up on (err != nil). Must be safe for
// concurrent use.
type Acker interface {
	Acked(err error)
}

// Output is one record derived from an input: a vendor record or a dead
// letter. After Sink.Produce the sink owns Key, Value and Headers.
type Output struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
	// Done is called exactly once by the sink when the output is
	// acknowledged or has failed.
	Done Acker
}

// Sink delivers outputs, possibly asynchronously.
type Sink interface {
	// Produce queues outs. It may return before they are acknowledged; it
	// calls outs[i].Done.Acked exactly once for each, from any goroutine.
	// Safe for concurrent use.
	Produce(ctx context.Context, outs []Output) error
}

// Claim is one partition owned by this worker for one consumer-group
// generation. Its methods are called from the one goroutine that handles
// the claim, except Commit, which the runner may also call from a
// committer goroutine; implementations serialise commits.
type Claim interface {
	Topic() string
	Partition() int
	// Fetch blocks until the next record or until ctx is done.
	Fetch(ctx context.Context) (Record, error)
	// Commit stores next (the offset of the next record to consume) as the
	// group's committed offset for this partition.
	Commit(next int64) error
}

// ClaimHandler processes one claim. ctx is done when the claim is revoked
// (rebalance) or the source shuts down; the handler then stops fetching,
// drains, commits and returns. Called concurrently, one call per claim.
type ClaimHandler func(ctx context.Context, c Claim)

// Source assigns claims to a handler.
type Source interface {
	// Run blocks until ctx is done (then returns nil after every handler
	// has returned) or a fatal error.
	Run(ctx context.Context, h ClaimHandler) error
}

// Applier applies a route to one record. Not safe for concurrent use:
// the runner makes one per route per claim.
type Applier interface {
	// Apply appends the de-identified form of src to dst. Errors name a
	// field path, never a value.
	Apply(dst, src []byte) ([]byte, error)
	// KeyID is the id of the key used for the last applied record.
	KeyID() string
}

// Route is a vendor route as the runner sees it.
type Route struct {
	// Name is the route's name; it labels counters and dead letters.
	Name string
	// Topic receives the route's records.
	Topic string
	// Version is the policy version id, sent as the deident-policy header.
	Version string
	// Allows reports whether the route may receive records of a category.
	Allows func(category string) bool
	// NewApplier returns a fresh Applier.
	NewApplier func() Applier
}

// Input describes one source topic.
type Input struct {
	// Category is the data category of every record of the topic.
	Category string
	// Decode checks that value can be decoded; a failing record is dead-lettered.
	// Must be safe for concurrent use.
	Decode func(value []byte) error
}
