package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyTestExamplesPass runs the example tests kept beside
// configs/deident.yaml; flowai's key comes from the test files' env.
func TestPolicyTestExamplesPass(t *testing.T) {
	t.Setenv("DEIDENT_KEY_FLOWAI", "") // restored after the test
	os.Unsetenv("DEIDENT_KEY_FLOWAI")  // the test files must set it themselves
	out, err := run(t, "test", "../../configs/tests")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "6 passed, 0 failed") {
		t.Errorf("summary:\n%s", out)
	}
}

// TestPolicyTestFailuresPrintADiff runs deliberately failing cases on a copy
// of the example config: a wrong expected record (printed field by field),
// raw identifiers in kept fields, a record that should have been rejected.
func TestPolicyTestFailuresPrintADiff(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"deident.yaml", "demo-keys/acme-mdr.key", "demo-keys/acme-mdr-2027.key", "demo-keys/flowai.key"} {
		b, err := os.ReadFile(filepath.Join("../../configs", f))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	test := `
config: deident.yaml
route: acme-mdr
env: {DEIDENT_KEY_FLOWAI: {file: demo-keys/flowai.key}}
cases:
  - name: good
    input: [{time: "2026-11-02T09:15:00Z", severity_id: 2}]
    expect: [{time: "2026-11-02T09:15:00Z", severity_id: 2}]
  - name: wrong expectation
    input:
      - {time: "2026-11-02T09:15:00Z", severity_id: 2, actor: {user: {name: alice.smith}, process: {name: sshd}}}
    expect:
      - {time: "2026-11-02T09:15:00Z", severity_id: 3, actor: {user: {name: alice.smith}}, comment: hi}
  - name: leaks through kept fields
    input:
      - {time: "2026-11-02T09:15:00Z", actor: {user: {name: alice.smith}, process: {name: "mail bob@corp.example"}}, disposition: "alice.smith 10.1.2.3"}
  - name: not rejected
    input: [{time: "2026-11-02T09:15:00Z"}]
    expect_reject: key epoch retired
`
	if err := os.WriteFile(filepath.Join(dir, "acme.test.yaml"), []byte(test), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "test", dir)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || err.Error() != "1 passed, 3 failed" {
		t.Fatalf("err %v, want exit 1 with 1 passed, 3 failed\n%s", err, out)
	}
	for _, want := range []string{
		"ok   " + filepath.Join(dir, "acme.test.yaml") + ":6  good",
		"FAIL " + filepath.Join(dir, "acme.test.yaml") + ":9  wrong expectation",
		"expect: input[0]: output differs from expect[0] (line 12) in 4 field(s):",
		`        actor.process.name  got "sshd", want no such field`,
		`        actor.user.name     got "usr_cbb9fc8281da8e3a1a28f4b56af0a1ba", want "alice.smith"`,
		`        comment             missing, want "hi"`,
		`        severity_id         got 2, want 3`,
		"raw_identifiers: input[0]: an e-mail address in actor.process.name",
		"raw_identifiers: input[0]: an IPv4 address in disposition",
		"raw_identifiers: input[0]: a raw value of a direct-identifier field in disposition",
		`expect_reject: input[0]: applied, want a rejection containing "key epoch retired"`,
		"1 passed, 3 failed",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// --run picks cases by name.
	if out, err := run(t, "test", "--run", "^good$", dir); err != nil || !strings.Contains(out, "1 passed, 0 failed") {
		t.Errorf("--run: %v\n%s", err, out)
	}
	// A directory without test files is an error, not a pass.
	if _, err := run(t, "test", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no *.test.yaml files") {
		t.Errorf("empty dir: %v", err)
	}
}
