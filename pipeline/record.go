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
	"time"
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
	// HeaderStage is where a dead letter failed: "decode", "apply" or
	// "kanon" (the route's output lacks what its k-anonymity stage reads).
	HeaderStage = "deident-stage"
	// HeaderError is the reason a record was dead-lettered. It names a field
	// path or byte offset, never a value.
	HeaderError = "deident-error"
	// HeaderGate lists the gate's reason codes on a quarantined record,
	// comma-separated ("echo,pattern:email"); transforms/gate.HeaderReasons.
	HeaderGate = "deident-gate"
	// HeaderGatePaths lists the field paths that failed the gate,
	// comma-separated, never values; transforms/gate.HeaderPaths.
	HeaderGatePaths = "deident-gate-paths"
	// HeaderSpans, on an aggregate, lists the source records it decides:
	// "topic/partition/first-last:count", comma-separated.
	HeaderSpans = "deident-spans"
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
	// It does not keep outs itself (the caller reuses it), and must not
	// modify the outputs' keys, values or headers: they may be shared
	// between outputs. Safe for concurrent use.
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

// ReadyClaim is a Claim that can tell whether more records are ready. The
// runner then hands the outputs of consecutive records to the sink in one
// Produce call while Ready is true (up to a bounded batch, and never
// holding them longer than a millisecond waiting for the next record);
// without it, every record's outputs are produced before the next Fetch.
type ReadyClaim interface {
	Claim
	// Ready reports whether Fetch is expected to return a record without
	// waiting for the broker (a hint; a wrong answer costs latency up to
	// the runner's linger, never a record). Called from the claim's goroutine.
	Ready() bool
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

// Verdict is a gate's decision on one outgoing record.
type Verdict struct {
	// Pass: the record may go to the vendor topic; otherwise it is quarantined.
	Pass bool
	// Reasons and Paths are the deident-gate and deident-gate-paths header
	// values of a quarantined record (reason codes and field paths, never
	// values). Owned by the caller.
	Reasons, Paths []byte
}

// Checker is a route's re-identification gate for one claim. Not safe for
// concurrent use: the runner makes one per route per claim. in and out are
// not retained.
type Checker interface {
	// Check observes the input record in and checks out, the route's output
	// for it. err is non-nil (and wraps the gate's fail-closed sentinel)
	// once the route's quarantine rate has tripped: from then on nothing
	// more may be published to the route.
	Check(in, out []byte) (Verdict, error)
	// Observe observes an input record whose output is checked later
	// (CheckClass, after a k-anonymity stage releases it). Call it after the
	// record was applied.
	Observe(in []byte)
	// CheckClass checks out, a record a k-anonymity stage released from a
	// class of distinct distinct entities. err as for Check.
	CheckClass(out []byte, distinct int) (Verdict, error)
	// CheckAggregate checks out, an aggregate (or late count) a
	// k-anonymity stage publishes, of distinct distinct entities. err as
	// for Check.
	CheckAggregate(out []byte, distinct int) (Verdict, error)
}

// DecisionKind is what a Stage decided.
type DecisionKind uint8

const (
	// Release publishes one record (Payload) from a class of Entities
	// distinct entities; First == Last is its offset. The gate checks it
	// with CheckClass.
	Release DecisionKind = iota + 1
	// Aggregate publishes Payload, an aggregate of Count records with
	// offsets from First to Last (not necessarily all of them).
	Aggregate
	// Suppress withholds Count records with offsets from First to Last:
	// counted as suppressed, with no output.
	Suppress
	// Info publishes Payload, deciding no record (a count of late records).
	Info
)

// Decision is one thing a Stage decided.
type Decision struct {
	Kind DecisionKind
	// Payload is owned by the runner once returned.
	Payload []byte
	// Entities is the distinct-entity count of the class or aggregate.
	Entities int
	// Count is how many source records the decision decides.
	Count int
	// First and Last bound the offsets it decides (of the claim's partition).
	First, Last int64
	// Prov, when set, is the provenance header value of a Release
	// (deident-src) or an Aggregate (deident-spans) instead of the claim's
	// own coordinates: a stage reading a repartition topic names the
	// source records its decisions derive from.
	Prov []byte
}

// Stage is a route's k-anonymity stage for one claim: the runner makes one
// per route per claim and drops it when the claim ends, so classes and
// windows are per partition, and held records of a revoked partition are
// reprocessed by its next owner. Not safe for concurrent use (the runner
// serialises calls).
type Stage interface {
	// Add feeds out, the route's output for rec, and appends what it
	// decides (about rec or records held before it). An error (naming a
	// field path, never a value) dead-letters rec for the route; rec is then
	// not held. out is not retained.
	Add(dst []Decision, rec *Record, out []byte) ([]Decision, error)
	// Advance appends what the clock decides at now.
	Advance(dst []Decision, now time.Time) []Decision
	// Held returns the lowest offset still held undecided, or -1.
	Held() int64
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
	// NewChecker returns a fresh Checker (the route's re-identification
	// gate) for the claim whose Applier is a (so that the gate may learn raw
	// identifiers as the Applier reads them); nil: no gate.
	NewChecker func(a Applier) Checker
	// NewStage returns a fresh k-anonymity Stage; nil: the route has none.
	NewStage func() Stage
	// Encode, when set, turns the route's output (what Apply wrote, which
	// the gate and a k-anonymity stage read) into the bytes produced to
	// Topic, e.g. Avro in the Confluent wire format; rec is the input
	// record, whose value is in its source's encoding. Appends to dst. A
	// failure dead-letters rec for the route at stage "encode" (counted
	// failed); its error names a field path or schema id, never a value.
	// Quarantined outputs are not encoded. Not applied to k-anonymity
	// stage outputs. Must be safe for concurrent use.
	Encode func(dst, out []byte, rec *Record) ([]byte, error)
	// Key, when set, gives the key of the route's outputs from the route's
	// output (what Apply wrote) instead of the input record's key: a
	// repartition route keys records by their class. Appends to dst. A
	// failure dead-letters the record for the route at stage "kanon"
	// (counted failed); its error names a field path, never a value. Not
	// used with a Stage or Encode. Must be safe for concurrent use.
	Key func(dst, out []byte) ([]byte, error)
	// Decodes declares that the route's Apply reads the whole input value
	// and accepts only values its input's Decode accepts (a successful
	// Apply implies a successful Decode). When the first route that may
	// receive a record's category Decodes, the runner does not call Decode
	// before it: a successful Apply stands for it, and only when that Apply
	// fails does Decode tell an undecodable record (dead-lettered at stage
	// "decode", counted dead_lettered) from one the route cannot
	// de-identify (stage "apply", counted failed). Counts and outputs are
	// the same either way.
	Decodes bool
}

// Input describes one source topic.
type Input struct {
	// Category is the data category of every record of the topic.
	Category string
	// Decode checks that value can be decoded; a failing record is dead-lettered.
	// Must be safe for concurrent use. Required unless DecodeTo is set.
	Decode func(value []byte) error
	// DecodeTo, when set, decodes value into what the routes read (JSON),
	// appending it to dst; the routes, gates and stages then see its
	// result instead of the value (dead letters still carry the original
	// bytes). A failing record is dead-lettered at stage "decode" with the
	// error, which must name a byte offset, field path or schema id, never
	// a value. Without it the routes read the value itself, uncopied. Must
	// be safe for concurrent use.
	DecodeTo func(dst, value []byte) ([]byte, error)
	// Route, when set, dedicates the input to the route of that name: its
	// records are offered to that route alone, and that route reads only
	// its dedicated inputs; the other routes and inputs neither see nor
	// count each other (the repartition topic of a k-anonymity route, read
	// by the route's second leg).
	Route string
}
