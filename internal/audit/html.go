package audit

import (
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// WriteHTML writes the report as one self-contained page: inline CSS and
// inline SVG charts, no scripts, no network.
func WriteHTML(w io.Writer, r *Report) error {
	s := r.Summary
	vendorBars := []bar{
		{"matched", s.Matched, "#2e7d32"},
		{"duplicates", s.Duplicates, "#81c784"},
		{"mismatched", s.Mismatched, "#c62828"},
		{"no provenance", s.NoProvenance, "#ef6c00"},
		{"unverified", s.Unverified, "#8d6e63"},
		{"crypto-shredded", s.CryptoShredded, "#90a4ae"},
		{"gate failures", s.GateFailures, "#6a1b9a"},
	}
	sourceBars := []bar{
		{"delivered", s.Delivered, "#2e7d32"},
		{"quarantined", s.Quarantined, "#6a1b9a"},
		{"failed (dead letter)", s.Failed, "#8d6e63"},
		{"missing", s.Missing, "#c62828"},
	}
	var reasonBars []bar
	for _, k := range slices.Sorted(maps.Keys(s.ByReason)) {
		reasonBars = append(reasonBars, bar{k, s.ByReason[k], "#6a1b9a"})
	}
	actions := map[string]int{}
	for _, f := range r.Fields {
		actions[f.Action]++
	}
	var actionBars []bar
	for _, a := range slices.Sorted(maps.Keys(actions)) {
		actionBars = append(actionBars, bar{a, actions[a], actionColor(a)})
	}
	data := map[string]any{
		"R":          r,
		"Clean":      r.Clean(),
		"Timeline":   template.HTML(timelineSVG(r.Timeline)),
		"Vendor":     template.HTML(barsSVG(vendorBars, s.VendorRecords)),
		"Source":     template.HTML(barsSVG(sourceBars, s.SourceRecords)),
		"Reasons":    template.HTML(barsSVG(reasonBars, s.Quarantined)),
		"Actions":    template.HTML(barsSVG(actionBars, len(r.Fields))),
		"QRate":      rate(s.Quarantined, s.SourceRecords),
		"MissRate":   rate(s.Missing, s.SourceRecords),
		"MatchRate":  rate(s.Matched+s.Duplicates, s.VendorRecords),
		"ActionCSS":  actionColor,
		"Generated":  r.GeneratedAt.Format(time.RFC3339),
		"MissingCut": cut(r.Missing, 200),
	}
	return page.Execute(w, data)
}

func cut(xs []string, n int) []string {
	if len(xs) > n {
		return xs[:n]
	}
	return xs
}

func rate(n, of int) string {
	if of == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(of))
}

func actionColor(a string) string {
	switch a {
	case "drop":
		return "#455a64"
	case "pseudonymize", "email_split":
		return "#1565c0"
	case "ip_prefix_preserving":
		return "#00838f"
	case "ip_truncate", "generalize":
		return "#f9a825"
	case "keep":
		return "#c62828"
	}
	return "#757575"
}

type bar struct {
	label string
	n     int
	color string
}

// barsSVG draws horizontal bars with their counts and share of total.
func barsSVG(bars []bar, total int) string {
	if len(bars) == 0 {
		return `<p class="muted">none</p>`
	}
	maxN := 1
	for _, b := range bars {
		maxN = max(maxN, b.n)
	}
	const rowH, labelW, barW = 26, 170, 360
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d">`, labelW+barW+120, rowH*len(bars)+6, labelW+barW+120, rowH*len(bars)+6)
	for i, b := range bars {
		y := i*rowH + 4
		w := b.n * barW / maxN
		if b.n > 0 && w < 2 {
			w = 2
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end" class="lbl">%s</text>`, labelW-8, y+15, template.HTMLEscapeString(b.label))
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%d" height="18" fill="%s"><title>%s: %d</title></rect>`, labelW, y+2, w, b.color, template.HTMLEscapeString(b.label), b.n)
		fmt.Fprintf(&sb, `<text x="%d" y="%d" class="num">%d (%s)</text>`, labelW+w+6, y+15, b.n, rate(b.n, total))
	}
	sb.WriteString(`</svg>`)
	return sb.String()
}

// timelineSVG draws stacked columns of vendor records per time step.
func timelineSVG(bs []Bucket) string {
	if len(bs) == 0 {
		return `<p class="muted">no vendor records in range</p>`
	}
	const h, left, bottom, top = 180, 50, 40, 10
	colW := max(6, min(40, 720/len(bs)))
	width := left + colW*len(bs) + 20
	maxN := 1
	for _, b := range bs {
		maxN = max(maxN, b.Records)
	}
	plot := h - bottom - top
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d">`, width, h, width, h)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>`, left, top+plot, width-10, top+plot)
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end" class="num">%d</text>`, left-6, top+10, maxN)
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end" class="num">0</text>`, left-6, top+plot)
	for i, b := range bs {
		x := left + i*colW + 1
		y := top + plot
		for _, part := range []struct {
			n     int
			color string
			what  string
		}{{b.Matched, "#2e7d32", "matched"}, {b.Mismatched, "#c62828", "mismatched"}, {b.Other, "#ef6c00", "no provenance or unverified"}, {b.Shredded, "#90a4ae", "crypto-shredded"}} {
			if part.n == 0 {
				continue
			}
			ph := max(1, part.n*plot/maxN)
			y -= ph
			fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s: %d %s</title></rect>`, x, y, colW-2, ph, part.color, b.Start.UTC().Format(time.RFC3339), part.n, part.what)
		}
	}
	// A label is about 100 px wide: label every step-th column so they never overlap.
	step := max(1, len(bs)/6, (110+colW-1)/colW)
	for i := 0; i < len(bs); i += step {
		fmt.Fprintf(&sb, `<text x="%d" y="%d" class="num">%s</text>`, left+i*colW, h-bottom+16, bs[i].Start.UTC().Format("01-02 15:04:05"))
	}
	sb.WriteString(`</svg>`)
	return sb.String()
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deident audit: {{.R.Route}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#212121;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.verdict{display:inline-block;padding:.3rem .8rem;border-radius:4px;color:#fff;font-weight:600}
.ok{background:#2e7d32}.bad{background:#c62828}
table{border-collapse:collapse;margin:.5rem 0;width:100%}td,th{border:1px solid #e0e0e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}code{font:12px ui-monospace,monospace}
.muted{color:#757575}.lbl{font-size:12px;fill:#212121}.num{font-size:11px;fill:#424242}.axis{stroke:#9e9e9e}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem}
.chip{display:inline-block;padding:0 .4rem;border-radius:3px;color:#fff;font-size:12px}
.kpi{display:flex;gap:2rem;margin:1rem 0}.kpi div{font-size:1.4rem;font-weight:600}.kpi span{display:block;font-size:12px;font-weight:400;color:#757575}
</style></head><body>
<h1>Audit of route {{.R.Route}}</h1>
<p class="muted">Vendor {{.R.Vendor}} · purpose {{.R.Purpose}} · vendor topic <code>{{.R.VendorTopic}}</code> · current policy <code>{{.R.Policy}}</code><br>
Range {{.R.From}} to {{.R.To}} · generated {{.Generated}}</p>
{{if .Clean}}<p class="verdict ok">Clean: every vendor record re-derives from its source under the policy it claims</p>
{{else}}<p class="verdict bad">Findings: see below</p>{{end}}
<div class="kpi">
<div>{{.R.Summary.VendorRecords}}<span>vendor records</span></div>
<div>{{.MatchRate}}<span>re-derived byte for byte</span></div>
<div>{{.R.Summary.Mismatched}}<span>mismatched</span></div>
<div>{{.R.Summary.NoProvenance}}<span>without provenance</span></div>
<div>{{.QRate}}<span>quarantine rate</span></div>
<div>{{.MissRate}}<span>missing rate</span></div>
</div>
<h2>Volume over time (route {{.R.Route}})</h2>
{{.Timeline}}
<p class="muted">Vendor records per time step by record timestamp: green matched, red mismatched, orange without provenance or unverifiable, grey crypto-shredded (made under a key retired since).</p>
<div class="grid">
<div><h2>Vendor topic</h2>{{.Vendor}}</div>
<div><h2>Source records in range</h2>{{.Source}}</div>
<div><h2>Quarantine reasons (gate)</h2>{{.Reasons}}</div>
<div><h2>Actions per field</h2>{{.Actions}}</div>
</div>
<h2>Mismatches</h2>
{{if .R.Mismatches}}<table><tr><th>vendor record</th><th>source</th><th>policy</th><th>field paths that differ</th></tr>
{{range .R.Mismatches}}<tr><td><code>{{.Partition}}/{{.Offset}}</code></td><td><code>{{.Src}}</code></td><td><code>{{.Policy}}</code></td><td>{{range .Paths}}<code>{{.}}</code> {{end}}</td></tr>{{end}}
</table>{{else}}<p class="muted">none</p>{{end}}
<h2>Records without provenance</h2>
{{if .R.NoProvenance}}<table><tr><th>vendor record</th><th>timestamp</th></tr>
{{range .R.NoProvenance}}<tr><td><code>{{.Partition}}/{{.Offset}}</code></td><td>{{.Time}}</td></tr>{{end}}</table>{{else}}<p class="muted">none</p>{{end}}
<h2>Unverifiable records</h2>
{{if .R.Unverified}}<table><tr><th>vendor record</th><th>source</th><th>policy</th><th>reason</th></tr>
{{range .R.Unverified}}<tr><td><code>{{.Partition}}/{{.Offset}}</code></td><td><code>{{.Src}}</code></td><td><code>{{.Policy}}</code></td><td>{{.Reason}}</td></tr>{{end}}</table>{{else}}<p class="muted">none</p>{{end}}
<h2>Crypto-shredded ranges</h2>
{{if .R.CryptoShredded}}<p>Vendor records made under keys retired since (<code>deident keys retire</code>): they can no longer be re-derived or linked, by design.</p>
<table><tr><th>key id</th><th>epoch</th><th>partition</th><th>offsets</th><th>records</th><th>timestamps</th></tr>
{{range .R.CryptoShredded}}<tr><td><code>{{.KeyID}}</code></td><td>{{if .EpochFrom}}{{.EpochFrom}}{{else}}the beginning{{end}} to {{.EpochUntil}}</td><td>{{.Partition}}</td><td>[{{.FirstOffset}}, {{.LastOffset}}]</td><td>{{.Records}}</td><td>{{.FirstTime}} to {{.LastTime}}</td></tr>{{end}}</table>{{else}}<p class="muted">none</p>{{end}}
<h2>Vendor records the gate fails</h2>
{{if .R.GateFindings}}<table><tr><th>vendor record</th><th>source</th><th>reasons</th><th>paths</th></tr>
{{range .R.GateFindings}}<tr><td><code>{{.Partition}}/{{.Offset}}</code></td><td><code>{{.Src}}</code></td><td>{{.Reasons}}</td><td><code>{{.Paths}}</code></td></tr>{{end}}</table>{{else}}<p class="muted">none</p>{{end}}
<h2>Source records with no output</h2>
{{if .R.Missing}}<p>{{len .R.Missing}} source record(s) should have produced output but have none{{if gt (len .R.Missing) (len .MissingCut)}} (first {{len .MissingCut}} listed){{end}}:</p>
<p>{{range .MissingCut}}<code>{{.}}</code> {{end}}</p>{{else}}<p class="muted">none</p>{{end}}
<h2>Policy versions claimed</h2>
<table><tr><th>version</th><th>records</th><th>config file</th></tr>
{{range .R.Policies}}<tr><td><code>{{.Version}}</code></td><td>{{.Records}}</td><td>{{if .Known}}<code>{{.File}}</code>{{else}}<b>unknown</b>{{end}}</td></tr>{{end}}</table>
<h2>Current policy: fields</h2>
<table><tr><th>path</th><th>action</th></tr>
{{range .R.Fields}}<tr><td><code>{{.Path}}</code></td><td><span class="chip" style="background:{{call $.ActionCSS .Action}}">{{.Action}}</span></td></tr>{{end}}</table>
<h2>Ranges read</h2>
<table><tr><th>topic</th><th>partition</th><th>offsets</th></tr>
{{range .R.VendorRanges}}<tr><td><code>{{.Topic}}</code></td><td>{{.Partition}}</td><td>[{{.Start}}, {{.End}})</td></tr>{{end}}
{{range .R.SourceRanges}}<tr><td><code>{{.Topic}}</code></td><td>{{.Partition}}</td><td>[{{.Start}}, {{.End}})</td></tr>{{end}}</table>
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
<p class="muted">This report holds record coordinates, policy and key ids, counts and field paths; never record values or keys.</p>
</body></html>
`))
