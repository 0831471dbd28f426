package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/gate"
	"github.com/deident/deident/transforms/route"
)

// ErrKAnonUnsupported: replay and audit re-derive record by record; routes
// with a k-anonymity stage (delayed records, aggregates) are not supported
// yet: what such a route publishes depends on the records around each one
// (its class or window), so re-deriving it means replaying the stage over
// the source partition, which neither does.
var ErrKAnonUnsupported = errors.New("routes with k_anonymity are not supported by replay and audit yet: their outputs depend on the records around each source record (classes, windows)")

// Policy is one version of a route, compiled, with its gate: it re-derives
// the route's output from a source record the way the worker does (the
// gate learns raw identifiers as the route reads them). Not safe for
// concurrent use.
type Policy struct {
	Route *route.Route
	// File is the config file the policy came from.
	File string

	gate    *gate.Gate // nil when the route's gate is off
	checker *gate.Checker
	applier *route.Applier
}

// NewPolicy compiles the gate of r and prepares an Applier.
func NewPolicy(r *route.Route, file string) (*Policy, error) {
	if r.Config.KAnon != nil {
		return nil, fmt.Errorf("vendors.%s.k_anonymity: %w", r.Name, ErrKAnonUnsupported)
	}
	p := &Policy{Route: r, File: file, applier: r.NewApplier()}
	g, err := gate.New(r.Name, r.Config)
	if err != nil {
		return nil, err
	}
	if g.Enabled() {
		p.gate, p.checker = g, g.NewChecker()
		p.applier.SetObserver(p.checker)
	}
	return p, nil
}

// Derived is what a policy makes of one source record.
type Derived struct {
	// Out is the route's output (nil when Err is set).
	Out []byte
	// KeyID is the id of the key Out was made with.
	KeyID string
	// Err is why the route could not de-identify the record (names a field, never a value).
	Err error
	// Verdict of the gate on Out.
	Verdict Verdict
}

// Verdict is a gate verdict with its reasons and paths as text.
type Verdict struct {
	Pass    bool   `json:"pass"`
	Reasons string `json:"reasons,omitempty"`
	Paths   string `json:"paths,omitempty"`
}

// Derive applies the policy to src and checks the output with the gate.
func (p *Policy) Derive(src []byte) Derived {
	out, err := p.applier.Apply(nil, src)
	if err != nil {
		return Derived{Err: err, Verdict: Verdict{Pass: true}}
	}
	return Derived{Out: out, KeyID: p.applier.KeyID(), Verdict: p.Check(out)}
}

// Check runs the gate on out, a record the route produced (or claims to
// have produced) from the source record last given to Derive.
func (p *Policy) Check(out []byte) Verdict {
	if p.checker == nil {
		return Verdict{Pass: true}
	}
	v := p.checker.Check(out)
	if v.Pass() {
		return Verdict{Pass: true}
	}
	return Verdict{Reasons: v.Reasons.String(), Paths: v.Paths()}
}

// Policies are the known versions of one route, by version id.
type Policies map[string]*Policy

// LoadPolicies compiles route name from the current config (returned as
// cur) and from every config file (*.yaml, *.yml) in dir (dir may be
// empty). A file in dir that does not load, or whose route does not
// compile, is skipped and reported in the returned notes (its error names
// key paths, never key material); a file without the route is ignored.
func LoadPolicies(current *config.Config, currentFile, name, dir string) (cur *Policy, ps Policies, notes []string, err error) {
	ps = Policies{}
	rc, ok := current.Vendors[name]
	if !ok {
		return nil, nil, nil, fmt.Errorf("vendors.%s: no such route in %s", name, currentFile)
	}
	r, err := route.Compile(name, rc, current.Dir, current.Limits)
	if err != nil {
		return nil, nil, nil, err
	}
	cur, err = NewPolicy(r, currentFile)
	if err != nil {
		return nil, nil, nil, err
	}
	ps[r.Version] = cur
	if dir == "" {
		return cur, ps, nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading policy directory: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		file := filepath.Join(dir, n)
		cfg, err := config.Load(file)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: skipped: %v", file, err))
			continue
		}
		rc, ok := cfg.Vendors[name]
		if !ok {
			continue
		}
		r, err := route.Compile(name, rc, cfg.Dir, cfg.Limits)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: skipped: %v", file, err))
			continue
		}
		if _, dup := ps[r.Version]; dup {
			continue
		}
		p, err := NewPolicy(r, file)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: skipped: %v", file, err))
			continue
		}
		ps[r.Version] = p
	}
	return cur, ps, notes, nil
}
