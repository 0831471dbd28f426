package gate

import "github.com/deident/deident/pipeline"

// PipelineChecker is a route's gate as the runner sees it (one per claim):
// a Checker whose verdicts are tallied on the Gate, so a tripped quarantine
// rate stops the route. Not safe for concurrent use.
type PipelineChecker struct {
	g *Gate
	c *Checker
	// observed: the claim's route.Applier reports raw identifiers to c
	// (route.Observer), so the input needs no second pass.
	observed bool
}

var _ pipeline.Checker = (*PipelineChecker)(nil)

// ForPipeline returns a PipelineChecker over c. observed says whether the
// route's Applier reports raw identifiers to c.
func (g *Gate) ForPipeline(c *Checker, observed bool) *PipelineChecker {
	return &PipelineChecker{g: g, c: c, observed: observed}
}

func (p *PipelineChecker) Check(in, out []byte) (pipeline.Verdict, error) {
	if p.observed {
		return p.verdict(p.c.Check(out))
	}
	return p.verdict(p.c.CheckRecord(in, out))
}

func (p *PipelineChecker) Observe(in []byte) {
	if !p.observed {
		p.c.Observe(in)
	}
}

func (p *PipelineChecker) CheckClass(out []byte, distinct int) (pipeline.Verdict, error) {
	return p.verdict(p.c.CheckClass(out, distinct))
}

func (p *PipelineChecker) CheckAggregate(out []byte, distinct int) (pipeline.Verdict, error) {
	return p.verdict(p.c.CheckAggregate(out, distinct))
}

func (p *PipelineChecker) verdict(v Verdict) (pipeline.Verdict, error) {
	err := p.g.Tally(v)
	if v.Pass() {
		return pipeline.Verdict{Pass: true}, err
	}
	return pipeline.Verdict{Reasons: v.Reasons.Append(nil), Paths: v.AppendPaths(nil)}, err
}
