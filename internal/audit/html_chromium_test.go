package audit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleReport is a report with something in every section.
func sampleReport() *Report {
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	r := &Report{
		Route: "acme-mdr", Vendor: "Acme Managed Detection", Purpose: "security-detection",
		VendorTopic: "vendor.acme-mdr", Policy: "p2828f754319698de",
		From: t0.Format(time.RFC3339), To: t0.Add(6 * time.Hour).Format(time.RFC3339), GeneratedAt: t0.Add(7 * time.Hour),
		Summary: Summary{VendorRecords: 1204, Matched: 1190, Duplicates: 11, Mismatched: 1, NoProvenance: 1, Unverified: 1,
			SourceRecords: 1210, Delivered: 1201, Missing: 2, Quarantined: 5, Failed: 2, ByReason: map[string]int{"echo": 3, "pattern:email": 2}},
		Mismatches:   []Mismatch{{Loc: Loc{Partition: 1, Offset: 77, Time: t0.Add(time.Hour)}, Src: "telemetry.edr/1/402", Policy: "p2828f754319698de", Paths: []string{"actor.user.name"}}},
		NoProvenance: []Loc{{Partition: 2, Offset: 1203, Time: t0.Add(5 * time.Hour)}},
		Unverified:   []Unverified{{Loc: Loc{Partition: 0, Offset: 9}, Src: "telemetry.edr/0/9", Policy: "p0000000000000000", Reason: "unknown policy version"}},
		Missing:      []string{"telemetry.edr/0/1000", "telemetry.edr/2/31"},
		Policies:     []PolicyUse{{Version: "p2828f754319698de", Records: 1202, Known: true}, {Version: "p0000000000000000", Records: 1}},
		Fields:       []FieldAction{{"time", "keep"}, {"actor.user.name", "pseudonymize"}, {"src_endpoint.ip", "ip_truncate"}, {"file.path", "drop"}},
		Notes:        []string{"a note with <markup> & quotes \" to escape"},
	}
	for i := range 6 {
		r.Timeline = append(r.Timeline, Bucket{Start: t0.Add(time.Duration(i) * time.Hour), Records: 200 + i, Matched: 198 + i, Mismatched: i % 2, Other: 1})
	}
	return r
}

// chromium renders page headless, writes a screenshot, and returns what
// the page logged to its console (Chromium writes console messages to
// stderr as lines holding "CONSOLE").
func chromium(t *testing.T, bin, page, png string) []string {
	t.Helper()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0",
		"--window-size=1280,2200", "--screenshot="+png, "file://"+page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		t.Fatal("chromium did not finish in 90 s")
	}
	var console []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "CONSOLE") {
			console = append(console, l)
		}
	}
	return console
}

// TestHTMLReportInChromium opens report.html in headless Chromium (Debian's
// chromium package; .ci/run installs it), requires a clean console and
// writes a screenshot: to $DEIDENT_REPORT_SCREENSHOT when set (see
// scripts/report-screenshot), else to a temporary directory.
func TestHTMLReportInChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, sampleReport()); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The check can fail: a page with a script error is caught.
	bad := filepath.Join(dir, "bad.html")
	os.WriteFile(bad, []byte(`<html><body><script>undefinedFunction()</script></body></html>`), 0o600)
	if got := chromium(t, bin, bad, filepath.Join(dir, "bad.png")); len(got) == 0 {
		t.Fatal("a page with a script error logged nothing: the console check proves nothing")
	}

	png := os.Getenv("DEIDENT_REPORT_SCREENSHOT")
	if png == "" {
		png = filepath.Join(dir, "report.png")
	}
	if console := chromium(t, bin, page, png); len(console) > 0 {
		t.Fatalf("report.html logged to the console:\n%s", strings.Join(console, "\n"))
	}
	img, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte("\x89PNG\r\n\x1a\n")) || len(img) < 20000 {
		t.Fatalf("screenshot %s is not a rendered page (%d bytes)", png, len(img))
	}
	t.Logf("screenshot: %s (%d bytes)", png, len(img))
}
