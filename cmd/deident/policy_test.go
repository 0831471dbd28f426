package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const policyOld = `
sources:
  edr: {topic: telemetry.edr, category: threat_telemetry}
vendors:
  acme:
    vendor: Acme
    purpose: security-detection
    categories: [threat_telemetry]
    topic: vendor.acme
    keys: [{file: a.key}]
    fields:
      - {path: user.name, action: pseudonymize, prefix: usr_}
      - {path: host, action: pseudonymize}
      - {path: pid, action: drop}
`

func writePolicyFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPolicyDiffCommand(t *testing.T) {
	newText := strings.NewReplacer(
		"{path: pid, action: drop}", "{path: pid, action: keep}",
		"{path: host, action: pseudonymize}", "{path: host, action: pseudonymize, bits: 64}",
	).Replace(policyOld)
	dir := writePolicyFiles(t, map[string]string{
		"a.key":     strings.Repeat("ab", 32),
		"old.yaml":  policyOld,
		"new.yaml":  newText,
		"same.yaml": policyOld,
	})
	oldPath, newPath := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")

	out, err := run(t, "policy", "diff", oldPath, newPath)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitMaterial {
		t.Fatalf("unacknowledged material change: err %v, want exit %d", err, exitMaterial)
	}
	for _, want := range []string{
		"! vendors.acme.fields[pid].action: drop -> keep  [field newly exported]",
		"! vendors.acme.fields[host].bits: 128 -> 64  [fewer pseudonym bits]",
		"2 change(s), 2 material",
		"----- change notice for acme -----",
		"To: Acme",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, err = run(t, "policy", "diff", oldPath, newPath, "--ack", "vendor needs pids for process trees (SEC-7)")
	if err != nil {
		t.Fatalf("acknowledged: %v", err)
	}
	if !strings.Contains(out, "Reason for the change: vendor needs pids for process trees (SEC-7)") {
		t.Errorf("notice lacks the acknowledgement:\n%s", out)
	}

	out, err = run(t, "policy", "diff", oldPath, filepath.Join(dir, "same.yaml"))
	if err != nil || !strings.Contains(out, "no changes") {
		t.Fatalf("same policy: %v\n%s", err, out)
	}

	out, err = run(t, "policy", "diff", "--json", oldPath, newPath, "--ack", "x")
	if err != nil || !strings.Contains(out, `"material": true`) || !strings.Contains(out, `"key": "vendors.acme.fields[pid].action"`) {
		t.Fatalf("json: %v\n%s", err, out)
	}
}

func TestPolicyDiffNeedsBothConfigsWithKeys(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{
		"a.key":    strings.Repeat("ab", 32),
		"old.yaml": policyOld,
		"new.yaml": strings.Replace(policyOld, "file: a.key", "file: missing.key", 1),
	})
	_, err := run(t, "policy", "diff", filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml"))
	if err == nil || !strings.Contains(err.Error(), "new config") || !strings.Contains(err.Error(), "vendors.acme.keys[0]") {
		t.Fatalf("err = %v, want the new config's key path", err)
	}
	if strings.Contains(err.Error(), strings.Repeat("ab", 32)) {
		t.Fatal("error holds key material")
	}
}
