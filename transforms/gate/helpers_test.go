package gate

import (
	"errors"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// configWithFields returns a config of one route, "v", with the given
// field rules (YAML lines), keyed by GATE_TEST_KEY.
func configWithFields(t *testing.T, fields string) *config.Config {
	t.Helper()
	t.Setenv("GATE_TEST_KEY", strings.Repeat("7e", 32))
	cfg, err := config.Parse([]byte(`
vendors:
  v:
    purpose: p
    categories: [threat_telemetry]
    keys: [{env: GATE_TEST_KEY}]
    fields:
`+fields), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
