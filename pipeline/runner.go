package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Config configures a Runner.
type Config struct {
	// Inputs are the source topics, by topic name. Records of other topics are dead-lettered.
	Inputs map[string]Input
	// Routes are the vendor routes; every decoded record is offered to each.
	Routes []Route
	// DeadLetterTopic receives undecodable records and records a route cannot de-identify. Required.
	DeadLetterTopic string
	// QuarantineTopic receives records a route's gate rejects (internal,
	// never vendor-bound). Required when a route has a gate.
	QuarantineTopic string
	// StageInterval is how often k-anonymity stages are advanced by the
	// clock (record mode's max_delay); 1s when zero.
	StageInterval time.Duration
	// Now is the clock given to Stage.Advance; time.Now when nil.
	Now func() time.Time
	// MaxInFlight bounds the records whose outputs are not yet acknowledged
	// (backpressure: fetching waits); 10000 when zero.
	MaxInFlight int
	// ShutdownGrace bounds how long a revoked or stopped claim waits for
	// its outputs to be acknowledged before its final commit; 30s when zero.
	ShutdownGrace time.Duration
	// CommitInterval is the least time between two commits of one claim; 1s when zero.
	CommitInterval time.Duration
	// Logger receives structured logs, never record values; slog.Default() when nil.
	Logger *slog.Logger
}

// Runner consumes claims from a Source, fans every record out to the
// routes that may receive it, produces to a Sink and commits offsets once
// every derived output is acknowledged.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	counters *Counters
	sem      chan struct{}
	sink     Sink
	// dedicated marks the routes an Input is dedicated to (Input.Route):
	// they read only such inputs.
	dedicated []bool

	// routes is the running route set; Reload swaps it and each claim
	// switches to it between two records (see claimState.sync).
	routes atomic.Pointer[routeSet]

	failed chan struct{} // closed on the first fatal error
	mu     sync.Mutex
	fatal  error
	stop   context.CancelCauseFunc
}

// New validates cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	var errs []error
	if cfg.DeadLetterTopic == "" {
		errs = append(errs, errors.New("dead-letter topic is required"))
	}
	if len(cfg.Inputs) == 0 {
		errs = append(errs, errors.New("at least one input is required"))
	}
	for topic, in := range cfg.Inputs {
		if in.Decode == nil && in.DecodeTo == nil {
			errs = append(errs, fmt.Errorf("input %s: decoder is required", topic))
		}
	}
	c := &Counters{Routes: map[string]*RouteCounters{}}
	for i, r := range cfg.Routes {
		if r.Name == "" || r.Topic == "" || r.Allows == nil || r.NewApplier == nil {
			errs = append(errs, fmt.Errorf("route %d (%q): name, topic, Allows and NewApplier are required", i, r.Name))
			continue
		}
		if r.NewChecker != nil && cfg.QuarantineTopic == "" {
			errs = append(errs, fmt.Errorf("route %s: a quarantine topic is required for its gate", r.Name))
		}
		if _, dup := c.Routes[r.Name]; dup {
			errs = append(errs, fmt.Errorf("route %s: defined twice", r.Name))
		}
		c.Routes[r.Name] = &RouteCounters{}
		c.Names = append(c.Names, r.Name)
	}
	dedicated := make([]bool, len(cfg.Routes))
	for topic, in := range cfg.Inputs {
		if in.Route == "" {
			continue
		}
		if i := slices.IndexFunc(cfg.Routes, func(r Route) bool { return r.Name == in.Route }); i >= 0 {
			dedicated[i] = true
		} else {
			errs = append(errs, fmt.Errorf("input %s: dedicated to route %s, which does not exist", topic, in.Route))
		}
	}
	if cfg.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max in flight must be positive, got %d", cfg.MaxInFlight))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 10000
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.StageInterval <= 0 {
		cfg.StageInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	for i, d := range dedicated {
		c.Routes[cfg.Routes[i].Name].dedicated = d
	}
	r := &Runner{cfg: cfg, log: log, counters: c, dedicated: dedicated, sem: make(chan struct{}, cfg.MaxInFlight), failed: make(chan struct{})}
	r.routes.Store(&routeSet{routes: cfg.Routes})
	return r, nil
}

// MaxInFlight returns the bound on records with unacknowledged outputs.
func (r *Runner) MaxInFlight() int { return r.cfg.MaxInFlight }

// Counters returns the runner's live counters.
func (r *Runner) Counters() *Counters { return r.counters }

// Err returns the fatal error that stopped the runner, if any.
func (r *Runner) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fatal
}

func (r *Runner) fail(err error) {
	r.mu.Lock()
	if r.fatal == nil {
		r.fatal = err
		close(r.failed)
		r.log.Error("runner stopping", "err", err)
	}
	stop := r.stop
	r.mu.Unlock()
	if stop != nil {
		stop(err)
	}
}

// Run consumes src into sink until ctx is done or a fatal error (a sink
// that gives up on an output, a failing commit). On ctx done it returns
// nil once every claim has drained (within ShutdownGrace) and committed.
// The caller closes the sink after Run returns.
func (r *Runner) Run(ctx context.Context, src Source, sink Sink) error {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	r.mu.Lock()
	r.sink, r.stop = sink, stop
	fatal := r.fatal
	r.mu.Unlock()
	if fatal != nil {
		return fatal
	}
	err := src.Run(ctx, r.handle)
	if f := r.Err(); f != nil {
		return f
	}
	return err
}

// recordAck is the Acker shared by the outputs of one record.
type recordAck struct {
	c   *claimState
	off int64
}

func (a *recordAck) Acked(err error) {
	r := a.c.r
	if err != nil {
		r.fail(fmt.Errorf("producing output of %s/%d/%d: %w", a.c.topic, a.c.partition, a.off, err))
		return
	}
	r.counters.Worker.Acked.Add(1)
	done, terr := a.c.tr.Ack(a.off)
	if terr != nil {
		r.fail(terr)
		return
	}
	if done {
		r.release()
	}
}

// stageAck is the Acker of one output a k-anonymity stage decided: it
// holds the tracker at hold (the lowest offset the output decides; -1 for
// an output deciding none) and one in-flight slot.
type stageAck struct {
	c    *claimState
	hold int64
}

func (a *stageAck) Acked(err error) {
	r := a.c.r
	if err != nil {
		r.fail(fmt.Errorf("producing k-anonymity output of %s/%d deciding offsets from %d: %w", a.c.topic, a.c.partition, a.hold, err))
		return
	}
	r.counters.Worker.Acked.Add(1)
	if a.hold >= 0 {
		if terr := a.c.tr.Unhold(a.hold); terr != nil {
			r.fail(terr)
			return
		}
	}
	r.release()
}

func (r *Runner) release() {
	r.counters.Worker.InFlight.Add(-1)
	<-r.sem
}

// routeTally is one record's (or one Advance's) effect on a route's
// counters, applied only once every route has processed it, so that a
// record abandoned half-way (the gate failed closed) is counted nowhere.
type routeTally struct {
	in, out, sup, q, filt, fail uint64
	held                        int64
}

// claimState is the per-claim state, dropped when the claim ends.
type claimState struct {
	r         *Runner
	set       *routeSet // the routes the claim's appliers, checkers and stages belong to
	topic     string
	partition int
	tr        *PartitionTracker
	appliers  []Applier
	checkers  []Checker // nil entries: no gate
	src       []byte
	decoded   []byte // the record as the routes read it, when its input has DecodeTo
	encoded   []byte // a route's Encode output, before it is carved from the arena
	key       []byte // a route's Key output, before it is carved from the arena

	// The input the claim's records come from (cached by topic: a claim's
	// records normally share one) and which routes may receive its category.
	inSet   bool
	inTopic string
	in      Input
	inOK    bool
	allowed []bool
	first   int // the first allowed route, -1: none

	// Per-route header values shared by every output of the route: the
	// policy version, and the key id with the string it was made from.
	policy [][]byte
	keyID  []string
	keyHdr [][]byte

	// Arenas the outputs are carved from (one allocation per many records
	// instead of several per output). A carved piece is never written again:
	// when an arena is used up a new one is allocated, and the garbage
	// collector frees the old one once the sink has dropped every output
	// that points into it.
	bytes []byte      // output values and deident-src header values
	hdrs  []Header    // output header lists
	acks  []recordAck // one per record with outputs, shared by its outputs

	// stageMu serialises the stages (the fetch loop and the advancer) and
	// keeps "register holds, then raise the floor" atomic for the tracker.
	stageMu sync.Mutex
	stages  []Stage // nil entries: no k-anonymity
	held    []int64 // records each stage holds
	decs    []Decision
	staged  []Output // stage outputs whose holds are registered, to produce
	tally   []routeTally

	commitMu  sync.Mutex
	committed int64
}

func (r *Runner) handle(ctx context.Context, c Claim) {
	st := &claimState{r: r, set: r.routes.Load(), topic: c.Topic(), partition: c.Partition(), tr: NewPartitionTracker(), committed: -1}
	n := len(st.set.routes)
	st.appliers = make([]Applier, n)
	st.checkers = make([]Checker, n)
	st.stages = make([]Stage, n)
	st.held = make([]int64, n)
	st.tally = make([]routeTally, n)
	st.allowed = make([]bool, n)
	st.policy = make([][]byte, n)
	st.keyID = make([]string, n)
	st.keyHdr = make([][]byte, n)
	hasStage := false
	for i, rt := range st.set.routes {
		st.policy[i] = []byte(rt.Version)
		st.appliers[i] = rt.NewApplier()
		if rt.NewChecker != nil {
			st.checkers[i] = rt.NewChecker(st.appliers[i])
		}
		if rt.NewStage != nil {
			st.stages[i] = rt.NewStage()
			hasStage = true
		}
	}
	log := r.log.With("topic", st.topic, "partition", st.partition)
	log.Info("claim started")

	commit := func() {
		st.commitMu.Lock()
		defer st.commitMu.Unlock()
		off := st.tr.Committable()
		if off <= st.committed {
			return
		}
		if err := c.Commit(off); err != nil {
			log.Warn("commit failed; will retry", "offset", off, "err", err)
			return
		}
		st.committed = off
		r.counters.Worker.Commits.Add(1)
	}

	// Committer: commits at most every CommitInterval while the claim runs.
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		t := time.NewTicker(r.cfg.CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				commit()
			}
		}
	}()

	sinkCtx := context.WithoutCancel(ctx)
	fetchDone := make(chan struct{})
	// Advancer: lets the clock decide what stages hold (record mode's max_delay).
	advancerDone := make(chan struct{})
	go func() {
		defer close(advancerDone)
		if !hasStage {
			return
		}
		t := time.NewTicker(r.cfg.StageInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-fetchDone:
				return
			case <-r.failed:
				return
			case <-t.C:
			}
			st.stageMu.Lock()
			err := st.advance(r.cfg.Now())
			staged := st.takeStaged()
			st.stageMu.Unlock()
			if err != nil {
				r.fail(err)
				return
			}
			if !st.produceStaged(ctx, sinkCtx, staged) {
				return
			}
		}
	}()

	// Outputs of consecutive records are handed to the sink together while
	// the claim has more records ready (see ReadyClaim): pending holds them,
	// from the record at pendingFrom on. They are flushed before anything
	// could wait for them: before waiting for an in-flight slot, before
	// stage outputs, when the claim has nothing ready, produceLinger after
	// the first, and when the loop ends.
	ready, _ := c.(ReadyClaim)
	var (
		pending     []Output
		pendingFrom int64
		linger      struct { // done produceLinger after the first pending output; stopped by flush
			ctx  context.Context
			stop context.CancelFunc
		}
	)
	flush := func() bool {
		if linger.stop != nil {
			linger.stop()
			linger.ctx, linger.stop = nil, nil
		}
		if len(pending) == 0 {
			return true
		}
		err := r.sink.Produce(sinkCtx, pending)
		clear(pending) // the sink owns the outputs' contents now
		pending = pending[:0]
		if err != nil {
			r.fail(fmt.Errorf("producing outputs of %s/%d/%d and on: %w", st.topic, st.partition, pendingFrom, err))
			return false
		}
		return true
	}
fetch:
	for {
		fctx := ctx
		if len(pending) > 0 {
			if ready == nil || !ready.Ready() || len(pending) >= produceBatch || linger.ctx.Err() != nil {
				if !flush() {
					break
				}
			} else {
				fctx = linger.ctx
			}
		}
		rec, err := c.Fetch(fctx)
		if err != nil {
			if fctx != ctx && ctx.Err() == nil && fctx.Err() != nil {
				continue // lingered long enough: flush, then wait for the next record
			}
			if ctx.Err() == nil {
				log.Warn("fetch stopped", "err", err)
			}
			break
		}
		select {
		case r.sem <- struct{}{}:
		default:
			if !flush() { // pending outputs hold slots: let them go first
				break fetch
			}
			select {
			case r.sem <- struct{}{}:
			case <-r.failed:
				break fetch
			case <-ctx.Done():
				break fetch // not tracked, not committed: the next owner reprocesses it
			}
		}
		r.counters.Worker.InFlight.Add(1)
		n := len(pending)
		st.stageMu.Lock()
		st.sync() // a reload takes effect here, between two records
		pending, err = st.process(pending, &rec)
		if err == nil {
			err = st.tr.Add(rec.Offset, len(pending)-n)
		}
		staged := st.takeStaged()
		st.stageMu.Unlock()
		if err != nil {
			// Not tracked: nothing at or after rec is committed.
			clear(pending[n:])
			pending = pending[:n]
			r.release()
			r.fail(err)
			break
		}
		switch {
		case len(pending) == n:
			r.release()
		case n == 0:
			pendingFrom = rec.Offset
			if ready != nil && linger.ctx == nil {
				linger.ctx, linger.stop = context.WithTimeout(ctx, produceLinger)
			}
		}
		if len(staged) > 0 && (!flush() || !st.produceStaged(ctx, sinkCtx, staged)) {
			break
		}
	}
	// Outputs of tracked records go to the sink even when the claim ends
	// (or the runner failed: they precede what failed it).
	flush()
	close(fetchDone)
	<-committerDone
	<-advancerDone

	// Drain: wait for outstanding outputs, bounded by the grace period.
	grace := time.NewTimer(r.cfg.ShutdownGrace)
	defer grace.Stop()
drain:
	for st.tr.Pending() > 0 && r.Err() == nil {
		select {
		case <-st.tr.Changed():
		case <-r.failed:
		case <-grace.C:
			log.Warn("grace period over; committing what is acknowledged", "pending", st.tr.Pending())
			break drain
		}
	}
	if r.Err() == nil {
		commit()
	}
	// What the stages still hold is left to the partition's next owner.
	st.stageMu.Lock()
	var revoked int64
	for i, n := range st.held {
		if n > 0 {
			rc := r.counters.Routes[st.set.routes[i].Name]
			rc.Held.Add(-n)
			rc.Revoked.Add(uint64(n))
			revoked += n
		}
		st.held[i] = 0
	}
	st.stageMu.Unlock()
	if revoked > 0 {
		log.Info("claim ended", "committed", st.committed, "held_undecided", revoked)
		return
	}
	log.Info("claim ended", "committed", st.committed)
}

// takeStaged returns the staged outputs and clears them. st.stageMu is held.
func (st *claimState) takeStaged() []Output {
	if len(st.staged) == 0 {
		return nil
	}
	s := st.staged
	st.staged = nil
	return s
}

// produceStaged produces stage outputs, each taking an in-flight slot. It
// never holds a slot while waiting for another (the fetch loop and the
// advancer both produce). Outputs it cannot produce (the claim ends, the
// runner fails) pin the tracker below the offsets they decide. It reports
// whether the claim may go on.
func (st *claimState) produceStaged(ctx, sinkCtx context.Context, outs []Output) bool {
	r := st.r
	for len(outs) > 0 {
		select {
		case r.sem <- struct{}{}:
		case <-r.failed:
			st.abandon(outs)
			return false
		case <-ctx.Done():
			st.abandon(outs)
			return false
		}
		n := 1
	more:
		for n < len(outs) {
			select {
			case r.sem <- struct{}{}:
				n++
			default:
				break more
			}
		}
		r.counters.Worker.InFlight.Add(int64(n))
		if err := r.sink.Produce(sinkCtx, outs[:n]); err != nil {
			r.fail(fmt.Errorf("producing k-anonymity outputs of %s/%d: %w", st.topic, st.partition, err))
			return false
		}
		outs = outs[n:]
	}
	return true
}

// abandon gives up on stage outputs never handed to the sink: their
// offsets stay uncommitted for the claim's life.
func (st *claimState) abandon(outs []Output) {
	for _, o := range outs {
		if a := o.Done.(*stageAck); a.hold >= 0 {
			st.tr.Pin(a.hold)
			_ = st.tr.Unhold(a.hold)
		}
	}
}

// Batching of the outputs of consecutive records (see handle).
const (
	// produceBatch is the most outputs handed to the sink in one Produce.
	produceBatch = 512
	// produceLinger bounds how long the first of them waits for the batch
	// to fill when the claim said more records were ready and none came.
	produceLinger = time.Millisecond
)

// Arena sizes: outputs and headers are carved from chunks this large.
const (
	byteArena   = 64 << 10
	headerArena = 3 * 256
	ackArena    = 256
)

// alloc returns an empty slice with room for at least n bytes at the free
// end of the byte arena. Nothing is carved until commit.
func (st *claimState) alloc(n int) []byte {
	if cap(st.bytes)-len(st.bytes) < n {
		st.bytes = make([]byte, 0, max(byteArena, 2*n))
	}
	return st.bytes[len(st.bytes):len(st.bytes)]
}

// commit carves b, the result of appending to alloc's slice, from the
// arena when it lies there (an append past the room moved it elsewhere)
// and returns it with its capacity clipped, so that appending to it never
// writes into a neighbour.
func (st *claimState) commit(b []byte) []byte {
	free := st.bytes[len(st.bytes):cap(st.bytes)]
	if len(b) > 0 && len(free) >= len(b) && unsafe.SliceData(b) == unsafe.SliceData(free) {
		st.bytes = st.bytes[:len(st.bytes)+len(b)]
	}
	return b[:len(b):len(b)]
}

// headers carves a header list of length n (capacity clipped) from the
// header arena.
func (st *claimState) headers(n int) []Header {
	if cap(st.hdrs)-len(st.hdrs) < n {
		st.hdrs = make([]Header, 0, max(headerArena, n))
	}
	h := st.hdrs[len(st.hdrs) : len(st.hdrs)+n : len(st.hdrs)+n]
	st.hdrs = st.hdrs[:len(st.hdrs)+n]
	return h
}

// ack carves the Acker shared by the outputs of the record at off.
func (st *claimState) ack(off int64) *recordAck {
	if len(st.acks) == cap(st.acks) {
		st.acks = make([]recordAck, 0, ackArena)
	}
	st.acks = append(st.acks, recordAck{c: st, off: off})
	return &st.acks[len(st.acks)-1]
}

// input returns the input of topic and caches which routes may receive
// its category.
func (st *claimState) input(topic string) (Input, bool) {
	if st.inSet && topic == st.inTopic {
		return st.in, st.inOK
	}
	r := st.r
	st.inSet, st.inTopic = true, topic
	st.in, st.inOK = r.cfg.Inputs[topic]
	st.first = -1
	if !st.inOK {
		return st.in, false
	}
	for i, rt := range st.set.routes {
		st.allowed[i] = r.reads(i, st.in) && rt.Allows(st.in.Category)
		if st.allowed[i] && st.first < 0 {
			st.first = i
		}
	}
	return st.in, true
}

// reads reports whether route i reads input in at all (see Input.Route).
func (r *Runner) reads(i int, in Input) bool {
	if in.Route != "" {
		return in.Route == r.cfg.Routes[i].Name
	}
	return !r.dedicated[i]
}

// keyHeader returns route i's deident-key header value for the key id of
// its last applied record.
func (st *claimState) keyHeader(i int, id string) []byte {
	if st.keyHdr[i] == nil || id != st.keyID[i] {
		st.keyID[i], st.keyHdr[i] = id, []byte(id)
	}
	return st.keyHdr[i]
}

// process derives the outputs of rec, appending them to outs; outputs of
// k-anonymity decisions go to st.staged with their holds registered. An
// error (a gate failed closed) leaves rec uncounted and untracked.
// st.stageMu is held.
//
// The input's Decode runs first unless the first route that may receive
// rec Decodes (see Route.Decodes): that route's Apply is then the decode
// check, and Decode runs only when it fails. An input with DecodeTo is
// always decoded first, and the routes read what it decoded.
func (st *claimState) process(outs []Output, rec *Record) ([]Output, error) {
	r := st.r
	cnt := r.counters
	st.src = rec.AppendSrc(st.src[:0])
	in, ok := st.input(rec.Topic)
	var err error
	lazy := false
	value := rec.Value // what the routes read
	switch {
	case !ok:
		err = fmt.Errorf("no source is configured for topic %s", rec.Topic)
	case in.DecodeTo != nil:
		st.decoded, err = in.DecodeTo(st.decoded[:0], rec.Value)
		value = st.decoded
	default:
		if lazy = st.first >= 0 && st.set.routes[st.first].Decodes; !lazy {
			err = in.Decode(rec.Value)
		}
	}
	if err != nil {
		return st.undecodable(outs, rec, err), nil
	}
	clear(st.tally)
	var src []byte // the deident-src header value, shared by rec's outputs
	var ack *recordAck
	for i, rt := range st.set.routes {
		if !r.reads(i, in) {
			continue // not this route's input (see Input.Route): not counted
		}
		t := &st.tally[i]
		t.in++
		if !st.allowed[i] {
			t.filt++
			continue
		}
		a := st.appliers[i]
		val, err := a.Apply(st.alloc(len(value)), value)
		if err != nil {
			if lazy && i == st.first {
				// Routes before this one only filtered rec: nothing is
				// produced or counted yet.
				if derr := in.Decode(rec.Value); derr != nil {
					return st.undecodable(outs, rec, derr), nil
				}
			}
			t.fail++
			r.log.Warn("record dead-lettered", "stage", "apply", "route", rt.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
			outs = append(outs, st.deadLetter(rec, "apply", rt.Name, err))
			continue
		}
		chk := st.checkers[i]
		if stg := st.stages[i]; stg != nil {
			if chk != nil {
				chk.Observe(value)
			}
			// val is not retained by the stage: it stays in the arena's free end.
			st.decs, err = stg.Add(st.decs[:0], rec, val)
			if err != nil {
				t.fail++
				r.log.Warn("record dead-lettered", "stage", "kanon", "route", rt.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				outs = append(outs, st.deadLetter(rec, "kanon", rt.Name, err))
				continue
			}
			t.held++
			if err := st.decide(i, st.decs); err != nil {
				return outs, err
			}
			continue
		}
		if rt.Encode != nil {
			// val stays in the arena's free end while it is encoded aside.
			if st.encoded, err = rt.Encode(st.encoded[:0], val, rec); err != nil {
				t.fail++
				r.log.Warn("record dead-lettered", "stage", "encode", "route", rt.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				outs = append(outs, st.deadLetter(rec, "encode", rt.Name, err))
				continue
			}
		}
		rekey := rt.Key != nil && rt.Encode == nil
		if rekey {
			// val stays in the arena's free end while its key is made aside.
			if st.key, err = rt.Key(st.key[:0], val); err != nil {
				t.fail++
				r.log.Warn("record dead-lettered", "stage", "kanon", "route", rt.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				outs = append(outs, st.deadLetter(rec, "kanon", rt.Name, err))
				continue
			}
		}
		verdict := Verdict{Pass: true}
		if chk != nil {
			// The gate reads the route's output as Apply wrote it.
			if verdict, err = chk.Check(value, val); err != nil {
				return outs, fmt.Errorf("checking %s for route %s: %w", st.src, rt.Name, err)
			}
		}
		if verdict.Pass && rt.Encode != nil {
			val = append(st.alloc(len(st.encoded)), st.encoded...)
		}
		val = st.commit(val)
		key := rec.Key
		if rekey {
			key = st.commit(append(st.alloc(len(st.key)), st.key...))
		}
		if src == nil {
			src = st.commit(append(st.alloc(len(st.src)), st.src...))
			ack = st.ack(rec.Offset)
		}
		headers := st.headers(3)
		headers[0] = Header{Key: HeaderSrc, Value: src}
		headers[1] = Header{Key: HeaderPolicy, Value: st.policy[i]}
		headers[2] = Header{Key: HeaderKey, Value: st.keyHeader(i, a.KeyID())}
		if !verdict.Pass {
			t.q++
			outs = append(outs, st.quarantine(key, val, headers, rt.Name, verdict, rec.Offset))
			continue
		}
		t.out++
		outs = append(outs, Output{Topic: rt.Topic, Key: key, Value: val, Headers: headers, Done: ack})
	}
	cnt.Worker.Consumed.Add(1)
	cnt.Worker.Decoded.Add(1)
	if in.Route != "" {
		cnt.Worker.DecodedDedicated.Add(1)
		cnt.Routes[in.Route].Dedicated.Add(1)
	}
	st.applyTally()
	st.setFloor()
	return outs, nil
}

// undecodable counts rec as consumed and dead-lettered at stage decode and
// appends its dead letter.
func (st *claimState) undecodable(outs []Output, rec *Record, err error) []Output {
	cnt := st.r.counters
	cnt.Worker.Consumed.Add(1)
	cnt.Worker.DeadLettered.Add(1)
	st.r.log.Warn("record dead-lettered", "stage", "decode", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
	return append(outs, st.deadLetter(rec, "decode", "", err))
}

// advance lets the clock decide what the stages hold. st.stageMu is held.
func (st *claimState) advance(now time.Time) error {
	clear(st.tally)
	for i, stg := range st.stages {
		if stg == nil {
			continue
		}
		st.decs = stg.Advance(st.decs[:0], now)
		if err := st.decide(i, st.decs); err != nil {
			return err
		}
	}
	st.applyTally()
	st.setFloor()
	return nil
}

func (st *claimState) applyTally() {
	for i := range st.tally {
		t := &st.tally[i]
		rc := st.r.counters.Routes[st.set.routes[i].Name]
		for _, c := range [...]struct {
			n uint64
			a *atomic.Uint64
		}{{t.in, &rc.In}, {t.out, &rc.Out}, {t.sup, &rc.Suppressed}, {t.q, &rc.Quarantined}, {t.filt, &rc.FilteredByCategory}, {t.fail, &rc.Failed}} {
			if c.n > 0 {
				c.a.Add(c.n)
			}
		}
		if t.held != 0 {
			rc.Held.Add(t.held)
			st.held[i] += t.held
		}
	}
}

// setFloor raises the tracker's floor to the lowest offset any stage still
// holds; call it after the holds of what the stages decided are registered.
func (st *claimState) setFloor() {
	floor := int64(-1)
	for _, stg := range st.stages {
		if stg == nil {
			continue
		}
		if h := stg.Held(); h >= 0 && (floor < 0 || h < floor) {
			floor = h
		}
	}
	st.tr.SetFloor(floor)
}

// decide turns route i's stage decisions into staged outputs, registering
// a tracker hold for each at the lowest offset it decides. st.stageMu is held.
func (st *claimState) decide(i int, decs []Decision) error {
	rt := &st.set.routes[i]
	t := &st.tally[i]
	for _, d := range decs {
		switch d.Kind {
		case Suppress:
			t.sup += uint64(d.Count)
			t.held -= int64(d.Count)
		case Info:
			headers := []Header{{Key: HeaderPolicy, Value: []byte(rt.Version)}}
			if chk := st.checkers[i]; chk != nil {
				v, err := chk.CheckAggregate(d.Payload, -1)
				if err != nil {
					return fmt.Errorf("checking a late count for route %s: %w", rt.Name, err)
				}
				if !v.Pass {
					o := st.quarantine(nil, d.Payload, headers, rt.Name, v, -1)
					o.Done = &stageAck{c: st, hold: -1}
					st.staged = append(st.staged, o)
					continue
				}
			}
			st.staged = append(st.staged, Output{Topic: rt.Topic, Value: d.Payload, Headers: headers,
				Done: &stageAck{c: st, hold: -1}})
		case Aggregate:
			spans := d.Prov
			if spans == nil {
				spans = fmt.Appendf(nil, "%s/%d/%d-%d:%d", st.topic, st.partition, d.First, d.Last, d.Count)
			}
			headers := []Header{{Key: HeaderSpans, Value: spans}, {Key: HeaderPolicy, Value: []byte(rt.Version)}}
			if err := st.publishDecided(i, d, headers, spans, Checker.CheckAggregate); err != nil {
				return err
			}
		case Release:
			src := d.Prov
			if src == nil {
				src = (&Record{Topic: st.topic, Partition: st.partition, Offset: d.First}).AppendSrc(nil)
			}
			headers := []Header{{Key: HeaderSrc, Value: src}, {Key: HeaderPolicy, Value: []byte(rt.Version)}}
			if err := st.publishDecided(i, d, headers, src, Checker.CheckClass); err != nil {
				return err
			}
		default:
			return fmt.Errorf("route %s: stage decision of unknown kind %d", rt.Name, d.Kind)
		}
	}
	return nil
}

// publishDecided stages what a stage released (a record or an aggregate)
// for route i after the gate's check (CheckClass or CheckAggregate): to the
// vendor topic, or to the quarantine topic when it fails. Either way its
// acknowledgement releases the hold on the lowest offset it decides. A
// tripped gate pins that offset (never committed) and stops the claim.
func (st *claimState) publishDecided(i int, d Decision, headers []Header, what []byte, check func(Checker, []byte, int) (Verdict, error)) error {
	rt := &st.set.routes[i]
	t := &st.tally[i]
	t.held -= int64(d.Count)
	if chk := st.checkers[i]; chk != nil {
		v, err := check(chk, d.Payload, d.Entities)
		if err != nil {
			st.tr.Pin(d.First)
			return fmt.Errorf("checking %s for route %s: %w", what, rt.Name, err)
		}
		if !v.Pass {
			t.q += uint64(d.Count)
			st.tr.Hold(d.First)
			o := st.quarantine(nil, d.Payload, headers, rt.Name, v, -1)
			o.Done = &stageAck{c: st, hold: d.First}
			st.staged = append(st.staged, o)
			return nil
		}
	}
	t.out += uint64(d.Count)
	st.tr.Hold(d.First)
	st.staged = append(st.staged, Output{Topic: rt.Topic, Value: d.Payload, Headers: headers,
		Done: &stageAck{c: st, hold: d.First}})
	return nil
}

// quarantine builds the quarantined form of a route output: the output
// (never the raw input), its provenance headers, the route, and the gate's
// reasons and paths.
func (st *claimState) quarantine(key, val []byte, headers []Header, route string, v Verdict, off int64) Output {
	h := append(headers,
		Header{Key: HeaderRoute, Value: []byte(route)},
		Header{Key: HeaderGate, Value: v.Reasons},
		Header{Key: HeaderGatePaths, Value: v.Paths},
	)
	return Output{Topic: st.r.cfg.QuarantineTopic, Key: key, Value: val, Headers: h, Done: &recordAck{c: st, off: off}}
}

// deadLetter builds the dead letter of rec: the original bytes, the
// source coordinates, the stage, the route and the reason.
func (st *claimState) deadLetter(rec *Record, stage, route string, err error) Output {
	h := []Header{
		{Key: HeaderSrc, Value: append([]byte(nil), st.src...)},
		{Key: HeaderStage, Value: []byte(stage)},
		{Key: HeaderError, Value: []byte(err.Error())},
	}
	if route != "" {
		h = append(h, Header{Key: HeaderRoute, Value: []byte(route)})
	}
	return Output{Topic: st.r.cfg.DeadLetterTopic, Key: rec.Key, Value: rec.Value, Headers: h, Done: &recordAck{c: st, off: rec.Offset}}
}
