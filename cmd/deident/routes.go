package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/deident/deident/internal/avrocodec"
	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/kanon"
	"github.com/deident/deident/transforms/route"
)

// routeBuilder turns compiled routes into the runner's routes, with their
// gates, k-anonymity stages and output encoders: at start and on every
// config reload (what it reads besides the routes, the schema registry
// and the source formats, cannot change without a restart).
type routeBuilder struct {
	reg     *avrocodec.Registry
	formats map[string]config.Format // by category: json if any of its sources is, else avro
	// fileSchemas are the writer schemas of sources with a schema_file, by topic.
	fileSchemas map[string]*avrocodec.Schema
	now         func() time.Time
	log         *slog.Logger
}

// build returns the runner's routes of cfg in name order and the enabled
// gates by route. prev are the gates of the running policy (nil at start):
// a route's new gate continues its old one (gate.WithState).
func (b *routeBuilder) build(cfg *config.Config, routes map[string]*route.Route, prev map[string]*gate.Gate) ([]pipeline.Route, map[string]*gate.Gate, error) {
	var errs []error
	gates := map[string]*gate.Gate{}
	var prs []pipeline.Route
	for _, name := range sortedNames(cfg.Vendors) {
		r := routes[name]
		if r == nil {
			continue // compile error reported by the caller
		}
		if r.Config.Topic == "" {
			errs = append(errs, fmt.Errorf("vendors.%s.topic: required for run", name))
			continue
		}
		var encode func(dst, out []byte, rec *pipeline.Record) ([]byte, error)
		if r.Config.Output == config.Avro {
			var err error
			if encode, err = avroOutput(cfg, name, b.reg, b.formats, b.fileSchemas, b.log); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		pr := pipeline.Route{
			Name:       name,
			Topic:      r.Config.Topic,
			Version:    r.Version,
			Allows:     func(c string) bool { return r.Allows(config.Category(c)) },
			NewApplier: func() pipeline.Applier { return r.NewApplier() },
			Encode:     encode,
			// A route's Applier parses the whole record, accepting only what
			// decodeJSON accepts (same scanner, same limits.max_record_bytes;
			// FuzzApplyImpliesDecode): for JSON sources its parse is the
			// decode check. Avro sources always decode first (DecodeTo).
			Decodes: true,
		}
		if kc := r.Config.KAnon; kc != nil && kc.RepartitionTopic != "" {
			leg1, leg2, err := repartitionLegs(cfg, name, r, pr, b.now, gates, prev)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			prs = append(prs, leg1, leg2)
			continue
		}
		g, err := gate.New(name, r.Config, gate.WithClock(b.now), gate.WithState(prev[name]))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if g.Enabled() {
			gates[name] = g
			pr.NewChecker = observedChecker(g)
		}
		if kc := r.Config.KAnon; kc != nil {
			// Compile once to report config errors at start-up; each claim gets its own.
			if _, err := kanon.New(*kc, cfg.Dir, kanon.Options{Now: b.now}); err != nil {
				errs = append(errs, fmt.Errorf("vendors.%s.%w", name, err))
				continue
			}
			pr.NewStage = func() pipeline.Stage {
				s, _ := kanon.New(*kc, cfg.Dir, kanon.Options{Now: b.now})
				return &kanonStage{s: s}
			}
		}
		prs = append(prs, pr)
	}
	return prs, gates, errors.Join(errs...)
}
