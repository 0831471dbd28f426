package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
)

// The schema registry's basic-auth credentials come from these environment
// variables only: never from the config file, nor from the URL.
const (
	RegistryUserEnv     = "DEIDENT_SCHEMA_REGISTRY_USER"
	RegistryPasswordEnv = "DEIDENT_SCHEMA_REGISTRY_PASSWORD"
)

// Secret is a credential. It prints as [REDACTED] however it is printed,
// logged or marshalled; Reveal returns it.
type Secret string

const redacted = "[REDACTED]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }

// Reveal returns the credential itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// RegistryAuth is the schema registry's basic-auth credentials; zero when
// the registry needs none.
type RegistryAuth struct {
	User     string
	Password Secret
}

// validateRegistry checks kafka.schema_registry and reads the credentials
// from the environment. Errors print the URL redacted.
func (k *Kafka) validateRegistry() []error {
	user, pass := os.Getenv(RegistryUserEnv), os.Getenv(RegistryPasswordEnv)
	var errs []error
	if k.SchemaRegistry == "" {
		if user != "" || pass != "" {
			errs = append(errs, fmt.Errorf("kafka.schema_registry: %s or %s is set but no registry is configured", RegistryUserEnv, RegistryPasswordEnv))
		}
		return errs
	}
	const p = "kafka.schema_registry"
	u, err := url.Parse(k.SchemaRegistry)
	if err != nil {
		return append(errs, fmt.Errorf("%s: not a URL (want http(s)://host[:port][/path])", p))
	}
	shown := u.Redacted()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("%s: scheme must be http or https, got %q in %s", p, u.Scheme, shown))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("%s: no host in %s", p, shown))
	}
	if u.User != nil {
		errs = append(errs, fmt.Errorf("%s: credentials do not go in the URL (%s): set %s and %s", p, shown, RegistryUserEnv, RegistryPasswordEnv))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("%s: no query or fragment allowed in %s", p, shown))
	}
	if (user == "") != (pass == "") {
		errs = append(errs, fmt.Errorf("%s: set both %s and %s, or neither", p, RegistryUserEnv, RegistryPasswordEnv))
	}
	k.RegistryAuth = RegistryAuth{User: user, Password: Secret(pass)}
	return errs
}
