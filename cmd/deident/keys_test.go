package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/transforms/route"
)

func runIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// runStdout runs a command that prints to os.Stdout (check).
func runStdout(t *testing.T, args ...string) (string, error) {
	t.Helper()
	stdout := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout = w
	_, runErr := run(t, args...)
	w.Close()
	os.Stdout = stdout
	var out bytes.Buffer
	out.ReadFrom(r)
	return out.String(), runErr
}

// retireEnv is a config with a route of three key epochs (two file keys,
// the middle one from the environment) and a second route with one key.
type retireEnv struct {
	dir, cfg string
	keys     map[string]string // file name -> hex
}

func newRetireEnv(t *testing.T) *retireEnv {
	t.Helper()
	e := &retireEnv{dir: t.TempDir(), keys: map[string]string{
		"acme-2025.key": strings.Repeat("a1", 32),
		"acme-2027.key": strings.Repeat("a3", 32),
		"other.key":     strings.Repeat("b1", 32),
	}}
	os.Mkdir(filepath.Join(e.dir, "keys"), 0o700)
	for name, hex := range e.keys {
		if err := os.WriteFile(filepath.Join(e.dir, "keys", name), []byte(hex+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DEIDENT_TEST_ACME_2026", strings.Repeat("a2", 32))
	e.cfg = filepath.Join(e.dir, "deident.yaml")
	if err := os.WriteFile(e.cfg, []byte(`
vendors:
  acme:
    purpose: security-detection
    categories: [threat_telemetry]
    event_time: time
    keys:
      - {file: keys/acme-2025.key}
      - {env: DEIDENT_TEST_ACME_2026, valid_from: 2026-01-01T00:00:00Z}
      - {file: keys/acme-2027.key, valid_from: 2027-01-01T00:00:00Z}
    fields:
      - {path: time, action: keep}
      - {path: user, action: pseudonymize, prefix: usr_}
  other:
    purpose: analytics
    categories: [threat_telemetry]
    keys: [{file: keys/other.key}]
    fields: [{path: user, action: pseudonymize}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *retireEnv) version(t *testing.T) (string, []string) {
	t.Helper()
	cfg, err := config.Load(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.Compile("acme", cfg.Vendors["acme"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range r.KeyRing().Len() {
		ids = append(ids, r.KeyRing().ID(i))
	}
	return r.Version, ids
}

func TestKeysRetireListsConfirmsAndRemoves(t *testing.T) {
	e := newRetireEnv(t)
	version, ids := e.version(t)
	args := []string{"keys", "retire", "--config", e.cfg, "--before", "2027-01-01"}
	keyFile := filepath.Join(e.dir, "keys", "acme-2025.key")

	// Not confirmed: listed, nothing removed.
	out, err := runIn(t, "no\n", args...)
	if err == nil || !strings.Contains(err.Error(), "not confirmed; nothing removed") {
		t.Fatalf("not confirmed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"acme: key " + ids[0] + " (file " + keyFile + "), epoch from the beginning until 2026-01-01T00:00:00Z: to remove",
		"acme: key " + ids[1] + " (env DEIDENT_TEST_ACME_2026), epoch from 2026-01-01T00:00:00Z until 2027-01-01T00:00:00Z: remove the variable yourself",
		"Retire 2 key epoch(s)?",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ids[2]) || strings.Contains(out, "other") {
		t.Errorf("the newest epoch and single-key routes are never retired:\n%s", out)
	}
	if _, err := os.Stat(keyFile); err != nil {
		t.Fatalf("removed without confirmation: %v", err)
	}
	if out, err := runIn(t, "", append(args, "--dry-run")...); err != nil || !strings.Contains(out, "dry run: nothing removed") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}

	// Confirmed on stdin.
	out, err = runIn(t, "yes\n", args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"acme: key " + ids[0] + ": removed " + keyFile,
		"acme: key " + ids[1] + ": remove DEIDENT_TEST_ACME_2026 from the environment yourself",
		"recorded in " + filepath.Join(e.dir, "keys", config.RetiredKeysFile),
		"recorded in " + filepath.Join(e.dir, config.RetiredKeysFile),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("key file still there: %v", err)
	}
	// Key ids only: no key material in the output or the markers.
	markers := mustRead(t, filepath.Join(e.dir, "keys", config.RetiredKeysFile)) + mustRead(t, filepath.Join(e.dir, config.RetiredKeysFile))
	for _, hex := range append([]string{strings.Repeat("a2", 32)}, e.keys["acme-2025.key"]) {
		if strings.Contains(out+markers, hex[:16]) {
			t.Errorf("key material printed or recorded")
		}
	}
	var m config.RetiredKeys
	if err := json.Unmarshal([]byte(mustRead(t, filepath.Join(e.dir, "keys", config.RetiredKeysFile))), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Retired) != 1 || m.Retired[0].File != "acme-2025.key" || m.Retired[0].KeyID != ids[0] || m.Retired[0].ValidUntil != "2026-01-01T00:00:00Z" || m.Retired[0].Route != "acme" {
		t.Errorf("marker %+v", m.Retired)
	}

	// The config still loads, under the same policy version; the retired
	// epoch's records are rejected, the others applied.
	os.Unsetenv("DEIDENT_TEST_ACME_2026")
	if v, got := e.version(t); v != version || strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("after retiring: version %s ids %v, want %s %v", v, got, version, ids)
	}
	in := filepath.Join(e.dir, "in.jsonl")
	outFile := filepath.Join(e.dir, "out.jsonl")
	os.WriteFile(in, []byte(`{"time":"2025-06-01T00:00:00Z","user":"alice"}
{"time":"2026-06-01T00:00:00Z","user":"alice"}
{"time":"2027-06-01T00:00:00Z","user":"alice"}
`), 0o600)
	_, err = run(t, "apply", "--config", e.cfg, "--route", "acme", "--in", in, "--out", outFile)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 records rejected") {
		t.Fatalf("apply: %v", err)
	}
	rejects := mustRead(t, outFile+".rejects.jsonl")
	if strings.Count(rejects, "time: key epoch retired") != 2 || !strings.Contains(mustRead(t, outFile), `"time":"2027-06-01T00:00:00Z"`) {
		t.Errorf("rejects:\n%s\nout:\n%s", rejects, mustRead(t, outFile))
	}
	if out, err := runStdout(t, "check", "--config", e.cfg); err != nil || strings.Count(out, "(retired: key destroyed") != 2 {
		t.Errorf("check: %v\n%s", err, out)
	}

	// Again: nothing left to do.
	out, err = runIn(t, "", append(args, "--yes")...)
	if err != nil || !strings.Contains(out, "already retired") || !strings.Contains(out, "no key epoch to retire") {
		t.Errorf("second run: %v\n%s", err, out)
	}
}

func TestKeysRetireBeforeDate(t *testing.T) {
	e := newRetireEnv(t)
	for _, c := range []struct {
		before string
		want   int // epochs listed
	}{
		{"2025-12-31", 0},
		{"2026-01-01T00:00:00Z", 1}, // ended at DATE: every record of it is before DATE
		{"2026-12-31", 1},
		{"2027-01-01", 2},
		{"2099-01-01", 2}, // the newest epoch never ends
	} {
		out, err := runIn(t, "", "keys", "retire", "--config", e.cfg, "--before", c.before, "--dry-run")
		if err != nil {
			t.Fatalf("%s: %v", c.before, err)
		}
		if n := strings.Count(out, ": key k"); n != c.want {
			t.Errorf("--before %s: %d epochs listed, want %d\n%s", c.before, n, c.want, out)
		}
	}
	if _, err := runIn(t, "", "keys", "retire", "--config", e.cfg, "--before", "last year"); err == nil || !strings.Contains(err.Error(), "--before") {
		t.Errorf("bad date: %v", err)
	}
}
