package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deident/deident/internal/secret"
)

const retiredConfig = `
vendors:
  acme:
    purpose: security-detection
    categories: [threat_telemetry]
    event_time: time
    keys:
      - {file: keys/old.key}
      - {env: DEIDENT_TEST_RETIRED_MID, valid_from: 2026-06-01T00:00:00Z}
      - {file: keys/new.key, valid_from: 2027-01-01T00:00:00Z}
    fields: [{path: user, action: pseudonymize}]
`

func TestLoadAcceptsKeysListedAsRetired(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "keys"), 0o700)
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("deident.yaml", retiredConfig)
	write("keys/new.key", strings.Repeat("ab", 32))
	t.Setenv("DEIDENT_TEST_RETIRED_MID", strings.Repeat("cd", 32))
	load := func() (*Config, error) { return Load(filepath.Join(dir, "deident.yaml")) }

	// The old key's file is gone and nothing says it was retired: an error.
	if _, err := load(); err == nil || !strings.Contains(err.Error(), "vendors.acme.keys[0]: file: reading key") {
		t.Fatalf("missing key without a marker: %v", err)
	}
	// A marker for another epoch of the same file name does not cover it.
	m := &RetiredKeys{}
	m.Add(RetiredKey{Route: "acme", File: "old.key", KeyID: "k0123456789abcdef", ValidFrom: "2020-01-01T00:00:00Z", ValidUntil: "2026-06-01T00:00:00Z"})
	if err := m.Write(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := load(); err == nil || !strings.Contains(err.Error(), "keys[0]: file: reading key") {
		t.Fatalf("marker for another epoch: %v", err)
	}
	// Listed: the epoch is retired, under its recorded id.
	m.Add(RetiredKey{Route: "acme", File: "old.key", KeyID: "k1111111111111111", ValidUntil: "2026-06-01T00:00:00Z"})
	if err := m.Write(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Vendors["acme"].Keys
	if !k[0].Retired || !k[0].Key.IsRetired() || k[0].Key.ID() != "k1111111111111111" || k[1].Retired || k[2].Retired {
		t.Fatalf("keys: %+v", k)
	}
	if got := k[0].Key.String(); got != secret.Redacted {
		t.Errorf("a retired key prints %q", got)
	}
	retired, err := cfg.RetiredKeys("acme")
	if err != nil || len(retired) != 2 || retired["k1111111111111111"].ValidUntil != "2026-06-01T00:00:00Z" {
		t.Errorf("RetiredKeys = %+v, %v", retired, err)
	}

	// An env key: once the variable is gone, the config directory's marker covers it.
	os.Unsetenv("DEIDENT_TEST_RETIRED_MID")
	if _, err := load(); err == nil || !strings.Contains(err.Error(), "keys[1]: env: DEIDENT_TEST_RETIRED_MID is not set") {
		t.Fatalf("unset env without a marker: %v", err)
	}
	env := &RetiredKeys{}
	env.Add(RetiredKey{Route: "acme", Env: "DEIDENT_TEST_RETIRED_MID", KeyID: "k2222222222222222", ValidFrom: "2026-06-01T00:00:00Z", ValidUntil: "2027-01-01T00:00:00Z"})
	if err := env.Write(dir); err != nil {
		t.Fatal(err)
	}
	if cfg, err = load(); err != nil || !cfg.Vendors["acme"].Keys[1].Retired {
		t.Fatalf("retired env key: %v", err)
	}

	// The newest epoch cannot be retired: its file gone and listed, the config fails.
	os.Remove(filepath.Join(dir, "keys/new.key"))
	m.Add(RetiredKey{Route: "acme", File: "new.key", KeyID: "k3333333333333333", ValidFrom: "2027-01-01T00:00:00Z"})
	if err := m.Write(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := load(); err == nil || !strings.Contains(err.Error(), "vendors.acme.keys: the newest key epoch is retired") {
		t.Fatalf("newest retired: %v", err)
	}

	// A marker that is not JSON is an error, not silence.
	os.WriteFile(filepath.Join(dir, "keys", RetiredKeysFile), []byte("{"), 0o600)
	if _, err := load(); err == nil || !strings.Contains(err.Error(), RetiredKeysFile) {
		t.Fatalf("bad marker: %v", err)
	}
}

func TestRetiredKeysAddIsIdempotent(t *testing.T) {
	m := &RetiredKeys{}
	e := RetiredKey{Route: "a", File: "a.key", KeyID: "k1", ValidUntil: "2027-01-01T00:00:00Z"}
	m.Add(e)
	m.Add(e)
	if len(m.Retired) != 1 {
		t.Fatalf("%+v", m.Retired)
	}
	dir := t.TempDir()
	if err := m.Write(dir); err != nil {
		t.Fatal(err)
	}
	back, err := ReadRetiredKeys(dir)
	if err != nil || len(back.Retired) != 1 || back.Retired[0] != e {
		t.Fatalf("read back %+v, %v", back, err)
	}
	if none, err := ReadRetiredKeys(t.TempDir()); err != nil || len(none.Retired) != 0 {
		t.Fatalf("no marker: %+v, %v", none, err)
	}
}
