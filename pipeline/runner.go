package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Config configures a Runner.
type Config struct {
	// Inputs are the source topics, by topic name. Records of other topics are dead-lettered.
	Inputs map[string]Input
	// Routes are the vendor routes; every decoded record is offered to each.
	Routes []Route
	// DeadLetterTopic receives undecodable records and records a route cannot de-identify. Required.
	DeadLetterTopic string
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
		if in.Decode == nil {
			errs = append(errs, fmt.Errorf("input %s: decoder is required", topic))
		}
	}
	c := &Counters{Routes: map[string]*RouteCounters{}}
	for i, r := range cfg.Routes {
		if r.Name == "" || r.Topic == "" || r.Allows == nil || r.NewApplier == nil {
			errs = append(errs, fmt.Errorf("route %d (%q): name, topic, Allows and NewApplier are required", i, r.Name))
			continue
		}
		if _, dup := c.Routes[r.Name]; dup {
			errs = append(errs, fmt.Errorf("route %s: defined twice", r.Name))
		}
		c.Routes[r.Name] = &RouteCounters{}
		c.Names = append(c.Names, r.Name)
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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{cfg: cfg, log: log, counters: c, sem: make(chan struct{}, cfg.MaxInFlight), failed: make(chan struct{})}, nil
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

func (r *Runner) release() {
	r.counters.Worker.InFlight.Add(-1)
	<-r.sem
}

// claimState is the per-claim state, dropped when the claim ends.
type claimState struct {
	r         *Runner
	topic     string
	partition int
	tr        *PartitionTracker
	appliers  []Applier
	src       []byte

	commitMu  sync.Mutex
	committed int64
}

func (r *Runner) handle(ctx context.Context, c Claim) {
	st := &claimState{r: r, topic: c.Topic(), partition: c.Partition(), tr: NewPartitionTracker(), committed: -1}
	st.appliers = make([]Applier, len(r.cfg.Routes))
	for i, rt := range r.cfg.Routes {
		st.appliers[i] = rt.NewApplier()
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
	var outs []Output
fetch:
	for {
		rec, err := c.Fetch(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("fetch stopped", "err", err)
			}
			break
		}
		select {
		case r.sem <- struct{}{}:
		case <-r.failed:
			break fetch
		case <-ctx.Done():
			break fetch // not tracked, not committed: the next owner reprocesses it
		}
		r.counters.Worker.InFlight.Add(1)
		outs = st.process(outs[:0], &rec)
		if err := st.tr.Add(rec.Offset, len(outs)); err != nil {
			r.release()
			r.fail(err)
			break
		}
		if len(outs) == 0 {
			r.release()
			continue
		}
		if err := r.sink.Produce(sinkCtx, outs); err != nil {
			r.fail(fmt.Errorf("producing outputs of %s/%d/%d: %w", rec.Topic, rec.Partition, rec.Offset, err))
			break
		}
	}
	<-committerDone

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
	log.Info("claim ended", "committed", st.committed)
}

// process derives the outputs of rec, appending them to outs.
func (st *claimState) process(outs []Output, rec *Record) []Output {
	r := st.r
	cnt := r.counters
	cnt.Worker.Consumed.Add(1)
	st.src = rec.AppendSrc(st.src[:0])
	in, ok := r.cfg.Inputs[rec.Topic]
	var err error
	if !ok {
		err = fmt.Errorf("no source is configured for topic %s", rec.Topic)
	} else {
		err = in.Decode(rec.Value)
	}
	if err != nil {
		cnt.Worker.DeadLettered.Add(1)
		r.log.Warn("record dead-lettered", "stage", "decode", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return append(outs, st.deadLetter(rec, "decode", "", err))
	}
	cnt.Worker.Decoded.Add(1)
	for i, rt := range r.cfg.Routes {
		rc := cnt.Routes[rt.Name]
		rc.In.Add(1)
		if !rt.Allows(in.Category) {
			rc.FilteredByCategory.Add(1)
			continue
		}
		a := st.appliers[i]
		val, err := a.Apply(make([]byte, 0, len(rec.Value)), rec.Value)
		if err != nil {
			rc.Failed.Add(1)
			r.log.Warn("record dead-lettered", "stage", "apply", "route", rt.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
			outs = append(outs, st.deadLetter(rec, "apply", rt.Name, err))
			continue
		}
		rc.Out.Add(1)
		outs = append(outs, Output{
			Topic: rt.Topic,
			Key:   rec.Key,
			Value: val,
			Headers: []Header{
				{Key: HeaderSrc, Value: append([]byte(nil), st.src...)},
				{Key: HeaderPolicy, Value: []byte(rt.Version)},
				{Key: HeaderKey, Value: []byte(a.KeyID())},
			},
			Done: &recordAck{c: st, off: rec.Offset},
		})
	}
	return outs
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
