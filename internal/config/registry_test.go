package config

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSchemaRegistry(t *testing.T) {
	const base = `
vendors:
  acme:
    purpose: p
    categories: [threat_telemetry]
    keys: [{file: a.key}]
kafka:
`
	cases := []struct {
		name, yaml string
		user, pass string
		err        string // "" when it loads
	}{
		{"none", ``, "", "", ""},
		{"http", `  schema_registry: http://registry:8081`, "", "", ""},
		{"https with path and credentials", `  schema_registry: https://registry.example/sr/`, "svc", "hunter22", ""},
		{"credentials in the URL", `  schema_registry: https://svc:hunter22@registry.example`, "", "",
			"kafka.schema_registry: credentials do not go in the URL (https://svc:xxxxx@registry.example): set DEIDENT_SCHEMA_REGISTRY_USER and DEIDENT_SCHEMA_REGISTRY_PASSWORD"},
		{"scheme", `  schema_registry: ftp://registry`, "", "", `kafka.schema_registry: scheme must be http or https, got "ftp"`},
		{"no host", `  schema_registry: http://`, "", "", "kafka.schema_registry: no host"},
		{"query", `  schema_registry: http://r/?token=x`, "", "", "kafka.schema_registry: no query or fragment"},
		{"user without password", `  schema_registry: http://r`, "svc", "", "set both DEIDENT_SCHEMA_REGISTRY_USER and DEIDENT_SCHEMA_REGISTRY_PASSWORD, or neither"},
		{"credentials without registry", ``, "svc", "hunter22", "is set but no registry is configured"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(RegistryUserEnv, c.user)
			t.Setenv(RegistryPasswordEnv, c.pass)
			cfg, err := Parse([]byte(base+c.yaml), testdata)
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := cfg.Kafka.RegistryAuth; got.User != c.user || got.Password.Reveal() != c.pass {
					t.Fatalf("credentials %q/%q not read from the environment", got.User, got.Password.Reveal())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want an error containing %q", err, c.err)
			}
			if strings.Contains(err.Error(), "hunter22") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter22")
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("x", "auth", RegistryAuth{User: "u", Password: s}, "p", s)
	text, _ := s.MarshalText()
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q", s, s, s, s, s), fmt.Sprintf("%+v", RegistryAuth{Password: s}), string(text), log.String()} {
		if strings.Contains(out, "hunter22") {
			t.Fatalf("secret printed: %s", out)
		}
	}
}
