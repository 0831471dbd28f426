package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/policydiff"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/kanon"
	"github.com/deident/deident/transforms/route"
)

// Config reload (`deident run`, SIGHUP or the config file changing).
//
// A reload may change, in the routes the running config has: field rules,
// keys (re-read from their files and variables), gate settings, vendor,
// purpose, categories, opt-ins and event_time. Everything else needs a
// restart and is refused with that reason rather than half-applied: the
// kafka, clusters, limits, sources (and any other top-level) sections,
// routes added or removed, a route's topic, cluster, output or
// cache_entries, and any change to a
// route with a k-anonymity stage (its classes hold records processed under
// the running policy). A material change (policydiff) must be acknowledged
// in the new file at the route's new policy version.

// reloadResult is what a reload did.
type reloadResult string

const (
	reloadApplied reloadResult = "applied" // the new config runs (or it changed no policy)
	reloadRefused reloadResult = "refused" // valid, but weaker without acknowledgement or needs a restart
	reloadInvalid reloadResult = "invalid" // it does not load or compile
)

// reloadPlan is the verdict on a new config against the running one.
type reloadPlan struct {
	Result reloadResult
	// Reasons say why a reload is refused or invalid: key paths and
	// policy versions, never values or keys.
	Reasons []string
	// Changes are the policy changes (policydiff) of a valid config.
	Changes []policydiff.Change
	// Versions are the old and new policy version of every route whose
	// version changes.
	Versions map[string][2]string
	// Acked are the reasons the new file gives for material changes, by route.
	Acked map[string]string

	cfg    *config.Config
	routes map[string]*route.Route
}

// Changed reports whether an applied plan changes any route's policy.
func (p *reloadPlan) Changed() bool { return len(p.Versions) > 0 }

// policyState is the running policy: the config, its compiled routes and
// their gates. Never modified; a reload stores a new one.
type policyState struct {
	cfg    *config.Config
	routes map[string]*route.Route
	gates  map[string]*gate.Gate
}

// reloadCounters count reloads by result (deident_config_reloads_total).
type reloadCounters struct {
	applied, refused, invalid atomic.Uint64
}

func (c *reloadCounters) add(r reloadResult) {
	switch r {
	case reloadApplied:
		c.applied.Add(1)
	case reloadRefused:
		c.refused.Add(1)
	case reloadInvalid:
		c.invalid.Add(1)
	}
}

// loadPlan loads the config at path and plans its reload over running.
func loadPlan(running *policyState, path string) *reloadPlan {
	cfg, err := config.Load(path)
	if err != nil {
		return &reloadPlan{Result: reloadInvalid, Reasons: []string{err.Error()}}
	}
	routes, err := route.CompileAll(cfg)
	if err != nil {
		return &reloadPlan{Result: reloadInvalid, Reasons: []string{err.Error()}}
	}
	return planReload(running, cfg, routes)
}

// planReload decides whether cfg (loaded, routes compiled) may replace the
// running policy.
func planReload(running *policyState, cfg *config.Config, routes map[string]*route.Route) *reloadPlan {
	p := &reloadPlan{cfg: cfg, routes: routes, Versions: map[string][2]string{}, Acked: map[string]string{}}
	if errs := validateForRun(cfg, routes); len(errs) > 0 {
		p.Result = reloadInvalid
		for _, err := range errs {
			p.Reasons = append(p.Reasons, err.Error())
		}
		return p
	}
	old := running.cfg
	restart := func(key, why string) {
		p.Reasons = append(p.Reasons, key+": "+why+": needs a restart")
	}
	// Every top-level section but the routes and the acknowledgements.
	ot, nt := reflect.ValueOf(*old), reflect.ValueOf(*cfg)
	for i := range ot.NumField() {
		f := ot.Type().Field(i)
		tag := strings.Split(f.Tag.Get("mapstructure"), ",")[0]
		if tag == "" || tag == "-" || tag == "vendors" || tag == "acknowledge" {
			continue
		}
		of, nf := ot.Field(i), nt.Field(i)
		if reflect.DeepEqual(of.Interface(), nf.Interface()) {
			continue
		}
		if of.Kind() == reflect.Struct { // name the changed keys
			for j := range of.NumField() {
				sub := strings.Split(of.Type().Field(j).Tag.Get("mapstructure"), ",")[0]
				if !reflect.DeepEqual(of.Field(j).Interface(), nf.Field(j).Interface()) {
					if sub == "" || sub == "-" {
						sub = strings.ToLower(of.Type().Field(j).Name) // filled from the environment
					}
					restart(tag+"."+sub, "changed")
				}
			}
			continue
		}
		restart(tag, "changed")
	}
	for _, name := range slices.Sorted(maps.Keys(old.Vendors)) {
		if _, ok := cfg.Vendors[name]; !ok {
			restart("vendors."+name, "route removed")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Vendors)) {
		n := cfg.Vendors[name]
		o, ok := old.Vendors[name]
		key := "vendors." + name
		if !ok {
			restart(key, "route added")
			continue
		}
		ov, nv := running.routes[name].Version, routes[name].Version
		if ov != nv {
			p.Versions[name] = [2]string{ov, nv}
		}
		if o.Topic != n.Topic {
			restart(key+".topic", "changed")
		}
		if o.Cluster != n.Cluster {
			restart(key+".cluster", "changed")
		}
		if o.Output != n.Output {
			restart(key+".output", "changed")
		}
		if o.CacheEntries != n.CacheEntries {
			restart(key+".cache_entries", "changed")
		}
		if (o.KAnon != nil || n.KAnon != nil) && ov != nv {
			restart(key, fmt.Sprintf("the route has a k-anonymity stage holding records processed under policy %s", ov))
		}
	}
	p.Changes = policydiff.Diff(old, cfg)
	versions := map[string]string{}
	for name, v := range p.Versions {
		versions[name] = v[1]
	}
	for _, c := range policydiff.Unacknowledged(p.Changes, cfg, versions, "") {
		if _, ok := old.Vendors[c.Route]; !ok {
			continue // sources, routes added: refused above
		}
		p.Reasons = append(p.Reasons, fmt.Sprintf("%s: material change (%s) not acknowledged for policy %s", c.Key, c.Why, versions[c.Route]))
	}
	for _, c := range p.Changes {
		if c.Material && c.Route != "" {
			if why := cfg.Acked(c.Route, versions[c.Route]); why != "" {
				p.Acked[c.Route] = why
			}
		}
	}
	p.Result = reloadApplied
	if len(p.Reasons) > 0 {
		p.Result = reloadRefused
	}
	return p
}

// validateForRun checks what run needs beyond what Load and CompileAll
// check: topics, gates and k-anonymity stages that compile.
func validateForRun(cfg *config.Config, routes map[string]*route.Route) []error {
	var errs []error
	for _, name := range sortedNames(routes) {
		r := routes[name]
		if r.Config.Topic == "" {
			errs = append(errs, fmt.Errorf("vendors.%s.topic: required for run", name))
		}
		if _, err := gate.New(name, r.Config); err != nil {
			errs = append(errs, err)
		}
		if kc := r.Config.KAnon; kc != nil {
			if _, err := kanon.New(*kc, cfg.Dir, kanon.Options{}); err != nil {
				errs = append(errs, fmt.Errorf("vendors.%s.%w", name, err))
			}
		}
	}
	return errs
}

// current returns the running policy.
func (w *worker) current() *policyState { return w.pol.Load() }

// reload loads the config at path and, if the plan allows, swaps it in:
// the runner's claims switch to it before their next record. The old
// policy keeps running otherwise. Logged (reasons, versions, never values
// or keys) and counted. Off the hot path; safe for concurrent use.
func (w *worker) reload(path string) *reloadPlan {
	w.reloadMu.Lock()
	defer w.reloadMu.Unlock()
	cur := w.current()
	p := loadPlan(cur, path)
	if p.Result == reloadApplied && p.Changed() {
		prs, gates, err := w.rb.build(p.cfg, p.routes, cur.gates)
		switch {
		case err != nil:
			p.Result, p.Reasons = reloadInvalid, []string{err.Error()}
		default:
			if err := w.runner.Reload(prs); err != nil {
				// planReload refuses what Reload does; this is a backstop.
				p.Result, p.Reasons = reloadRefused, []string{err.Error()}
			} else {
				w.pol.Store(&policyState{cfg: p.cfg, routes: p.routes, gates: gates})
			}
		}
	}
	w.reloads.add(p.Result)
	log := w.log.With("config", path, "result", string(p.Result))
	var versions []string
	for _, name := range slices.Sorted(maps.Keys(p.Versions)) {
		v := p.Versions[name]
		versions = append(versions, name+": "+v[0]+" -> "+v[1])
	}
	switch {
	case p.Result == reloadApplied && !p.Changed():
		log.Info("config reload: no policy change")
	case p.Result == reloadApplied:
		log.Info("config reloaded", "policies", versions, "material_acknowledged", p.Acked)
	default:
		log.Warn("config reload refused; the running policy continues", "reasons", p.Reasons, "policies", versions)
	}
	return p
}

// reloadLoop reloads path on every trigger until ctx is done. Triggers
// closer together than debounce make one reload, debounce after the last
// (an editor's save is several writes). done, if not nil, is called with
// each plan.
func (w *worker) reloadLoop(ctx context.Context, path string, trig <-chan struct{}, debounce time.Duration, done func(*reloadPlan)) {
	timer := time.NewTimer(0)
	<-timer.C
	armed := false
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-trig:
			if debounce <= 0 {
				if p := w.reload(path); done != nil {
					done(p)
				}
				continue
			}
			if armed && !timer.Stop() {
				<-timer.C
			}
			timer.Reset(debounce)
			armed = true
		case <-timer.C:
			armed = false
			if p := w.reload(path); done != nil {
				done(p)
			}
		}
	}
}

// watchConfig sends on trig whenever the config file at path may have
// changed: written, created, renamed or removed, directly or by a swap of
// its directory's "..data" symlink (a Kubernetes ConfigMap volume). It
// watches the directory, not the file, so editors that save by renaming
// a new file over the old one are seen too.
func watchConfig(ctx context.Context, path string, trig chan<- struct{}) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watching config %s: %w", path, err)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching config %s: %w", path, err)
	}
	if err := fw.Add(filepath.Dir(abs)); err != nil {
		fw.Close()
		return fmt.Errorf("watching config %s: %w", path, err)
	}
	go func() {
		defer fw.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				if ev.Op == fsnotify.Chmod {
					continue
				}
				if b := filepath.Base(ev.Name); filepath.Clean(ev.Name) != abs && b != "..data" {
					continue
				}
				select {
				case trig <- struct{}{}:
				default: // a reload is pending already
				}
			case _, ok := <-fw.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return nil
}

// errNoReload marks check --against's refusal.
var errNoReload = errors.New("a running worker would refuse this config")

// reloadDebounce is how long run waits after the last trigger (SIGHUP, a
// write to the config file) before it reloads.
const reloadDebounce = 500 * time.Millisecond

// notifyReloads makes SIGHUP, and changes of the file at path when watch
// is set, trigger reloads of w until ctx is done. Call it before anything
// slow: SIGHUP would otherwise end the process.
func notifyReloads(ctx context.Context, w *worker, path string, watch bool) error {
	trig := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case trig <- struct{}{}:
				default:
				}
			}
		}
	}()
	if watch {
		if err := watchConfig(ctx, path, trig); err != nil {
			return err
		}
	}
	go w.reloadLoop(ctx, path, trig, reloadDebounce, nil)
	return nil
}
