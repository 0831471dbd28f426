package policytest

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

// Result is the outcome of one case.
type Result struct {
	// File is the test file; Case the case's name; Line its line in File.
	File string
	Case string
	Line int
	// Failures are the failed assertions, each "check: message" (a message
	// may span lines); empty when the case passed.
	Failures []string
	// Notes say what was checked when it is worth knowing (e.g. a check
	// with nothing to compare).
	Notes []string
}

// Passed reports whether every assertion held.
func (r *Result) Passed() bool { return len(r.Failures) == 0 }

func (r *Result) fail(check, format string, args ...any) {
	r.Failures = append(r.Failures, check+": "+fmt.Sprintf(format, args...))
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// RunFile runs every case of f. A config that does not load fails every
// case with the same error. f's env is set while it runs and restored
// afterwards, so RunFile must not run concurrently with anything that reads
// the environment.
func RunFile(f *File) []Result {
	results := make([]Result, len(f.Cases))
	for i, c := range f.Cases {
		results[i] = Result{File: f.Path, Case: c.Name, Line: c.line}
	}
	failAll := func(check string, err error) []Result {
		for i := range results {
			results[i].fail(check, "%v", err)
		}
		return results
	}
	env, err := f.envFor()
	if err != nil {
		return failAll("env", err)
	}
	restore := setEnv(env)
	defer restore()
	dir := filepath.Dir(f.Path)
	cfgPath := f.Config
	if !filepath.IsAbs(cfgPath) {
		cfgPath = filepath.Join(dir, cfgPath)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return failAll("config", err)
	}
	for i := range f.Cases {
		runCase(&results[i], cfg, dir, &f.Cases[i])
	}
	return results
}

// setEnv sets vars and returns a function restoring what was there.
func setEnv(vars map[string]string) func() {
	type prev struct {
		val string
		ok  bool
	}
	old := map[string]prev{}
	for k, v := range vars {
		val, ok := os.LookupEnv(k)
		old[k] = prev{val, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, p := range old {
			if p.ok {
				os.Setenv(k, p.val)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

// applied is the route's output for one input record.
type applied struct {
	out   []byte // nil when rejected
	err   error
	keyID string
	val   any // out decoded
}

func runCase(res *Result, cfg *config.Config, dir string, c *Case) {
	rc, ok := cfg.Vendors[c.Route]
	if !ok {
		res.fail("route", "no route %q in the config (routes: %s)", c.Route, strings.Join(slices.Sorted(maps.Keys(cfg.Vendors)), ", "))
		return
	}
	r, err := route.Compile(c.Route, rc, cfg.Dir, cfg.Limits)
	if err != nil {
		res.fail("route", "%v", err)
		return
	}
	recs, err := c.inputs(dir)
	if err != nil {
		res.fail("input", "%v", err)
		return
	}
	if len(recs) == 0 {
		res.fail("input", "no input records")
		return
	}

	raw := on(c.Checks.RawIdentifiers) && c.ExpectReject == ""
	var rawCheck *rawChecker
	ap := r.NewApplier()
	if raw {
		if rawCheck, err = newRawChecker(r); err != nil {
			res.fail("raw_identifiers", "%v", err)
			return
		}
		ap.SetObserver(rawCheck.checker)
	}
	outs := make([]applied, len(recs))
	for i, rec := range recs {
		out, err := ap.Apply(nil, rec.data)
		outs[i] = applied{out: out, err: err}
		if err != nil {
			outs[i].out = nil
			continue
		}
		outs[i].keyID = ap.KeyID()
		if outs[i].val, err = decode(out); err != nil {
			res.fail("output", "%s: the route's output is not JSON: %v", rec.at, err)
			outs[i].out = nil
			continue
		}
		if raw {
			rawCheck.check(res, rec.at, out)
		}
	}

	if c.ExpectReject != "" {
		for i, rec := range recs {
			switch e := outs[i].err; {
			case e == nil:
				res.fail("expect_reject", "%s: applied, want a rejection containing %q", rec.at, c.ExpectReject)
			case !strings.Contains(e.Error(), c.ExpectReject):
				res.fail("expect_reject", "%s: rejected with %q, want an error containing %q", rec.at, e.Error(), c.ExpectReject)
			}
		}
		return
	}
	for i, rec := range recs {
		if outs[i].err != nil {
			res.fail("apply", "%s: the route rejected the record: %v", rec.at, outs[i].err)
		}
	}

	checkExpect(res, c, recs, outs)
	if on(c.Checks.Allowlist) {
		checkAllowlist(res, rc, recs, outs)
	}
	if on(c.Checks.Determinism) {
		checkDeterminism(res, r, recs, outs)
	}
	if on(c.Checks.Isolation) {
		checkIsolation(res, cfg, c, rc, recs, outs)
	}
	if on(c.Checks.MinK) {
		checkMinK(res, cfg, c, rc, recs, outs)
	}
}

func checkExpect(res *Result, c *Case, recs []record, outs []applied) {
	for i := range c.Expect {
		n := &c.Expect[i]
		if isNull(n) {
			continue
		}
		if i >= len(recs) {
			res.fail("expect", "expect[%d] (line %d): there is no input record %d", i, n.Line, i)
			continue
		}
		if outs[i].out == nil {
			continue // reported as a rejection
		}
		b, err := nodeJSON(nil, n)
		if err != nil {
			res.fail("expect", "expect[%d]: %v", i, err)
			continue
		}
		want, err := decode(b)
		if err != nil {
			res.fail("expect", "expect[%d]: %v", i, err)
			continue
		}
		if ds := diffJSON(outs[i].val, want); len(ds) > 0 {
			res.fail("expect", "%s: output differs from expect[%d] (line %d) in %d field(s):\n%s",
				recs[i].at, i, n.Line, len(ds), formatDiff(ds, "    "))
		}
	}
}

// checkDeterminism applies the input again with the same applier (its
// cache now warm) and with a fresh one in reverse order: every record must
// give the same bytes under the same key id.
func checkDeterminism(res *Result, r *route.Route, recs []record, outs []applied) {
	again := r.NewApplier()
	var warm []applied
	for i := range recs {
		out, err := again.Apply(nil, recs[i].data)
		warm = append(warm, applied{out: out, err: err, keyID: again.KeyID()})
	}
	fresh := make([]applied, len(recs))
	rev := r.NewApplier()
	for i := len(recs) - 1; i >= 0; i-- {
		out, err := rev.Apply(nil, recs[i].data)
		fresh[i] = applied{out: out, err: err, keyID: rev.KeyID()}
	}
	for i, rec := range recs {
		if outs[i].out == nil {
			continue
		}
		for _, o := range []struct {
			how string
			a   applied
		}{{"applied a second time", warm[i]}, {"applied by a fresh applier in reverse order", fresh[i]}} {
			switch {
			case o.a.err != nil:
				res.fail("determinism", "%s: %s, the record was rejected: %v", rec.at, o.how, o.a.err)
			case !bytes.Equal(o.a.out, outs[i].out):
				detail := "    same fields, different bytes (member order or number text)"
				if ds := diffJSON(mustDecode(o.a.out), outs[i].val); len(ds) > 0 {
					detail = formatDiff(ds, "    ")
				}
				res.fail("determinism", "%s: %s, the output differs:\n%s", rec.at, o.how, detail)
			case o.a.keyID != outs[i].keyID:
				res.fail("determinism", "%s: %s, key id %s instead of %s", rec.at, o.how, o.a.keyID, outs[i].keyID)
			}
		}
	}
}

func mustDecode(b []byte) any {
	v, err := decode(b)
	if err != nil {
		return string(b)
	}
	return v
}
