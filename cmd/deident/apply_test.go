package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deident/deident/internal/gen"
)

func run(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), err
}

// TestApplyRejectsBadLinesAndGoesOn feeds apply every kind of bad input a
// user sends by accident; each bad line is rejected with its line number and
// reason, never its value, and every good line still comes out.
func TestApplyRejectsBadLinesAndGoesOn(t *testing.T) {
	dir := t.TempDir()
	var good bytes.Buffer
	if err := gen.Write(&good, gen.Options{Count: 3, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(good.String()), "\n")
	huge := `{"actor":{"user":{"name":"` + strings.Repeat("S", 10<<20) + `"}}}`
	input := strings.Join([]string{
		lines[0],                                 // 1 good
		`{"actor":{"user":{"name":"SECRETVAL`,    // 2 truncated JSON
		`{"actor":{"user":{"name":4242424242}}}`, // 3 a number where a string is hashed
		huge,                                     // 4 a 10 MB line
		"{\"disposition\":\"SECRET\xff\xfe\"}",   // 5 invalid UTF-8
		"",                                       // 6 blank: skipped, not counted
		lines[1],                                 // 7 good
		`{"src_endpoint":{"ip":"SECRET-not-an-ip"}}`, // 8 not an IP
		lines[2], // 9 good, no trailing newline
	}, "\n")
	in := filepath.Join(dir, "in.jsonl")
	out := filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(in, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "apply", "--config", "../../configs/bench.yaml", "--route", "bench", "--in", in, "--out", out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitRejected || !strings.Contains(err.Error(), "5 of 8 records rejected") {
		t.Fatalf("exit: %v", err)
	}
	outText, _ := os.ReadFile(out)
	outLines := strings.Split(strings.TrimSpace(string(outText)), "\n")
	if len(outLines) != 3 {
		t.Fatalf("%d output lines, want 3:\n%s", len(outLines), outText)
	}
	rej, err := os.ReadFile(out + ".rejects.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rej), "SECRET") || strings.Contains(string(rej), "4242424242") {
		t.Fatalf("rejects file holds a value:\n%s", rej)
	}
	want := map[int64]string{
		2: "truncated JSON",
		3: "actor.user.name: needs a string, got number",
		4: fmt.Sprintf("line exceeds max_record_bytes: %d bytes, limit 1048576", len(huge)),
		5: "invalid UTF-8",
		8: "src_endpoint.ip: not an IP address",
	}
	got := map[int64]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(rej)), "\n") {
		var r reject
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		got[r.Line] = r.Reason
	}
	for line, reason := range want {
		if !strings.Contains(got[line], reason) {
			t.Errorf("line %d: reason %q, want %q", line, got[line], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rejected lines %v, want %v", got, want)
	}
}

func TestApplyIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	f, _ := os.Create(in)
	if err := gen.Write(f, gen.Options{Count: 2000, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var outs [2][]byte
	for i := range outs {
		out := filepath.Join(dir, "out.jsonl")
		if _, err := run(t, "apply", "--config", "../../configs/bench.yaml", "--route", "bench", "--in", in, "--out", out); err != nil {
			t.Fatal(err)
		}
		outs[i], _ = os.ReadFile(out)
	}
	if !bytes.Equal(outs[0], outs[1]) || len(outs[0]) == 0 {
		t.Fatal("two runs over the same input gave different bytes")
	}
	if bytes.Contains(outs[0], []byte("alice")) || bytes.Contains(outs[0], []byte("corp.example")) {
		t.Fatal("a raw identifier reached the output")
	}
}

func TestApplyRefusesSourceOutsideRouteCategories(t *testing.T) {
	t.Setenv("DEIDENT_KEY_FLOWAI", strings.Repeat("ef", 32))
	_, err := run(t, "apply", "--config", "../../configs/deident.yaml", "--route", "flowai", "--source", "edr", "--in", os.DevNull)
	if err == nil || !strings.Contains(err.Error(), "may not receive threat_telemetry") {
		t.Fatalf("got %v", err)
	}
}

func TestCheckListsUnnamedSampleFields(t *testing.T) {
	t.Setenv("DEIDENT_KEY_FLOWAI", strings.Repeat("ef", 32))
	dir := t.TempDir()
	sample := filepath.Join(dir, "s.jsonl")
	os.WriteFile(sample, []byte(`{"time":"x","actor":{"user":{"name":"a","new_field":"b"}},"extra":[{"deep":1}],"message":"m"}`+"\n"), 0o600)
	root := newRoot()
	var out bytes.Buffer
	root.SetArgs([]string{"check", "--config", "../../configs/deident.yaml", "--sample", sample})
	stdout := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	err := root.Execute()
	w.Close()
	os.Stdout = stdout
	out.ReadFrom(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"route acme-mdr", "actor.user.new_field", "extra[].deep", "policy version p", "drop (default deny)",
		"message                      in 1 records (content; suggested: drop)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if regexp.MustCompile(`(?m)^\s+time\s+in 1 records`).MatchString(out.String()) {
		t.Error("a named field is listed as unnamed")
	}
}

func TestCheckWarnsWhenSensitiveFieldIsKept(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o600)
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte(`vendors:
  v:
    purpose: p
    categories: [threat_telemetry]
    keys: [{file: k}]
    fields:
      - {path: actor.user.name, action: keep}
      - {path: class_uid, action: keep}
`), 0o600)
	stdout := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	_, err := run(t, "check", "--config", cfg)
	w.Close()
	os.Stdout = stdout
	var out bytes.Buffer
	out.ReadFrom(r)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "WARNING"); n != 1 || !strings.Contains(out.String(), "classify it direct_identifier (suggested: pseudonymize)") {
		t.Fatalf("want one warning for actor.user.name:\n%s", out.String())
	}
}

// writeConfig writes a one-route config with a test key beside it.
func writeConfig(t *testing.T, route string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k"), []byte(strings.Repeat("5a", 32)), 0o600)
	cfg := filepath.Join(dir, "c.yaml")
	text := "sources:\n  edr: {category: threat_telemetry}\nvendors:\n  v:\n    purpose: p\n    categories: [threat_telemetry]\n    keys: [{file: k}]\n" + route
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestApplyGateQuarantinesLeaks(t *testing.T) {
	cfg := writeConfig(t, `    gate: {max_quarantine_rate: 0.5}
    fields:
      - {path: user, action: pseudonymize}
      - {path: note, action: keep}
`)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	var lines []string
	for i := range 200 {
		lines = append(lines, fmt.Sprintf(`{"user":"mallory.%d","note":"routine scan %d"}`, i, i))
	}
	lines[150] = `{"user":"zed.quist","note":"login by ZED.QUIST from laptop"}` // echo of a raw identifier
	lines[170] = `{"user":"amy","note":"mail amy@corp.example about it"}`       // an e-mail address
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	_, err := run(t, "apply", "--config", cfg, "--route", "v", "--in", in, "--out", out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitRejected || !strings.Contains(err.Error(), "2 quarantined") {
		t.Fatalf("exit: %v", err)
	}
	outText, _ := os.ReadFile(out)
	if n := strings.Count(string(outText), "\n"); n != 198 {
		t.Errorf("%d records out, want 198", n)
	}
	if strings.Contains(strings.ToLower(string(outText)), "zed.quist") || strings.Contains(string(outText), "amy@") {
		t.Fatal("a leak reached the output")
	}
	q, _ := os.ReadFile(out + ".quarantine.jsonl")
	var got []quarantined
	for _, l := range strings.Split(strings.TrimSpace(string(q)), "\n") {
		var r quarantined
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if len(got) != 2 || got[0].Line != 151 || got[0].Reasons != "echo" || got[0].Paths != "note" ||
		got[1].Line != 171 || !strings.Contains(got[1].Reasons, "pattern:email") {
		t.Fatalf("quarantine: %+v", got)
	}
}

func TestApplyGateFailsClosed(t *testing.T) {
	cfg := writeConfig(t, `    gate: {max_quarantine_rate: 0.05, min_records: 20}
    fields:
      - {path: note, action: keep}
`)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	var lines []string
	for i := range 100 {
		note := fmt.Sprintf("clean %d", i)
		if i >= 40 {
			note = fmt.Sprintf("contact user%d@corp.example", i) // from line 41 on, every record leaks
		}
		lines = append(lines, fmt.Sprintf(`{"note":%q}`, note))
	}
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	_, err := run(t, "apply", "--config", cfg, "--route", "v", "--in", in, "--out", out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitFailClosed || !strings.Contains(err.Error(), "failed closed") {
		t.Fatalf("exit: %v", err)
	}
	outText, _ := os.ReadFile(out)
	if n := strings.Count(string(outText), "\n"); n != 40 {
		t.Errorf("%d records out, want the 40 clean ones", n)
	}
	q, _ := os.ReadFile(out + ".quarantine.jsonl")
	if n := strings.Count(string(q), "\n"); n < 1 || n > 10 {
		t.Errorf("%d quarantined before failing closed; the rate threshold should stop it early", n)
	}
}

func TestApplyKAnonymityRecordMode(t *testing.T) {
	cfg := writeConfig(t, `    k_anonymity:
      k: 3
      mode: record
      entity: user
      quasi_identifiers:
        - {path: dept, ladder: {hierarchy: {file: dept.csv}}}
    fields:
      - {path: user, action: pseudonymize}
      - {path: dept, action: keep}
`)
	os.WriteFile(filepath.Join(filepath.Dir(cfg), "dept.csv"), []byte("sales;business;*\nlegal;business;*\nops;tech;*\ndev;tech;*\n"), 0o600)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	var lines []string
	// sales: 3 users, published as sales. legal: 1 user with 20 events,
	// never published (business would hold only that one user among the
	// records still held, so it is suppressed at the top). ops: 1 user and
	// dev: 2 users, each short, roll up to tech with 3 users: published as
	// tech.
	for _, u := range []string{"a", "b", "c"} {
		lines = append(lines, fmt.Sprintf(`{"user":%q,"dept":"sales"}`, u))
	}
	for range 20 {
		lines = append(lines, `{"user":"lonely","dept":"legal"}`)
	}
	lines = append(lines, `{"user":"o","dept":"ops"}`, `{"user":"d1","dept":"dev"}`, `{"user":"d2","dept":"dev"}`)
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	if _, err := run(t, "apply", "--config", cfg, "--route", "v", "--in", in, "--out", out); err != nil {
		t.Fatal(err)
	}
	outText, _ := os.ReadFile(out)
	count := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(outText)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		count[fmt.Sprint(m["dept"])]++
	}
	if fmt.Sprint(count) != "map[sales:3 tech:3]" {
		t.Fatalf("published %v, want 3 sales and 3 tech; legal (one entity) never", count)
	}
}

// TestApplyKAnonymityAggregatePassesTheGate: aggregates go through the
// gate's aggregate check (not the record schema), so a published group
// passes and an e-mail address in a group value is quarantined.
func TestApplyKAnonymityAggregatePassesTheGate(t *testing.T) {
	cfg := writeConfig(t, `    gate: {max_quarantine_rate: 0.9}
    k_anonymity:
      k: 3
      mode: aggregate
      entity: user
      event_time: time
      window: 1h
      quasi_identifiers:
        - {path: dept, ladder: {hierarchy: {file: dept.csv}}}
    fields:
      - {path: time, action: keep}
      - {path: user, action: pseudonymize}
      - {path: dept, action: keep}
`)
	os.WriteFile(filepath.Join(filepath.Dir(cfg), "dept.csv"), []byte("sales;business;*\nlegal;business;*\nx@corp.example;business;*\n"), 0o600)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	var lines []string
	for i, u := range []string{"a", "b", "c", "d"} {
		lines = append(lines, fmt.Sprintf(`{"time":"2026-11-27T10:0%d:00Z","user":%q,"dept":"sales"}`, i, u))
	}
	for i, u := range []string{"e", "f", "g"} { // a group whose value is an e-mail address
		lines = append(lines, fmt.Sprintf(`{"time":"2026-11-27T12:0%d:00Z","user":%q,"dept":"x@corp.example"}`, i, u))
	}
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	_, err := run(t, "apply", "--config", cfg, "--route", "v", "--in", in, "--out", out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitRejected || !strings.Contains(err.Error(), "1 quarantined") {
		t.Fatalf("exit: %v", err)
	}
	outText, _ := os.ReadFile(out)
	var agg struct {
		Group    map[string]string `json:"group"`
		Count    int               `json:"count"`
		Entities int               `json:"entities"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(outText), &agg); err != nil {
		t.Fatalf("want one aggregate: %v\n%s", err, outText)
	}
	if agg.Group["dept"] != "sales" || agg.Count != 4 || agg.Entities != 4 {
		t.Fatalf("aggregate %+v", agg)
	}
	q, _ := os.ReadFile(out + ".quarantine.jsonl")
	if !strings.Contains(string(q), `"reasons":"pattern:email"`) {
		t.Fatalf("quarantine: %s", q)
	}
}
