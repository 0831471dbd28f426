package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultCluster names the one cluster of a config without a clusters
// section: kafka.brokers, plaintext, no SASL, no topic allowlist. Every
// role (sources, vendor routes, internal topics) uses it.
const DefaultCluster = "default"

// Cluster is how deident connects to one Kafka cluster. The zero TLS and
// SASL mean plaintext without authentication.
type Cluster struct {
	// Brokers are bootstrap addresses (host:port). Required.
	Brokers []string `mapstructure:"brokers"`
	// TLS, when set, encrypts the connection (TLS 1.2 at least) and
	// verifies the brokers' certificates.
	TLS *TLS `mapstructure:"tls"`
	// SASL, when set, authenticates with PLAIN or SCRAM.
	SASL *SASL `mapstructure:"sasl"`
	// AllowedTopics are the topics deident may produce to on this cluster:
	// exact names, or a prefix ending in "*" ("vendor.acme.*"). A route or
	// internal topic outside the list is rejected at load. Empty allows any.
	AllowedTopics []string `mapstructure:"allowed_topics"`
}

// TLS configures a cluster's TLS. It is on when Enabled is true or any
// file or ServerName is set.
type TLS struct {
	// Enabled turns TLS on with the system's CA roots (no files needed).
	Enabled bool `mapstructure:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the brokers'
	// certificates; the system roots when empty.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key (PEM),
	// for brokers that require mutual TLS. Both or neither.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName is the name verified in the brokers' certificates; the
	// broker's host when empty.
	ServerName string `mapstructure:"server_name"`

	// Config is built by Load from the files (never nil after a
	// successful Load; MinVersion TLS 1.2).
	Config *tls.Config `mapstructure:"-"`
}

// SASLMechanism is a SASL mechanism as Kafka names it.
type SASLMechanism string

const (
	SASLPlain       SASLMechanism = "PLAIN"
	SASLScramSHA256 SASLMechanism = "SCRAM-SHA-256"
	SASLScramSHA512 SASLMechanism = "SCRAM-SHA-512"
)

// SASLMechanisms lists the supported mechanisms.
var SASLMechanisms = []SASLMechanism{SASLPlain, SASLScramSHA256, SASLScramSHA512}

// SASL configures a cluster's SASL authentication. The username and the
// password come from files or environment variables, never the config text.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Required.
	Mechanism SASLMechanism `mapstructure:"mechanism"`
	// Username and Password say where the credentials are.
	Username Credential `mapstructure:"username"`
	Password Credential `mapstructure:"password"`

	// User and Pass are read by Load; they print as [REDACTED].
	User Secret `mapstructure:"-"`
	Pass Secret `mapstructure:"-"`
}

// Credential says where a credential is: exactly one of File and Env.
type Credential struct {
	// File holds the credential (surrounding whitespace is trimmed);
	// relative to the config file.
	File string `mapstructure:"file"`
	// Env is an environment variable holding the credential.
	Env string `mapstructure:"env"`
}

// ClusterNames returns the cluster names: DefaultCluster for a config
// without clusters, else the clusters section's names, sorted.
func (c *Config) ClusterNames() []string {
	if len(c.Clusters) == 0 {
		return []string{DefaultCluster}
	}
	return sortedKeys(c.Clusters)
}

// ClusterConfig returns the named cluster; for a config without clusters,
// DefaultCluster is kafka.brokers as they are now (tests set them after
// Load).
func (c *Config) ClusterConfig(name string) (Cluster, bool) {
	if len(c.Clusters) == 0 {
		if name != DefaultCluster {
			return Cluster{}, false
		}
		return Cluster{Brokers: c.Kafka.Brokers}, true
	}
	cl, ok := c.Clusters[name]
	return cl, ok
}

// SourceCluster names the cluster of the source topics and the consumer
// group: kafka.cluster, or the only cluster there is.
func (c *Config) SourceCluster() string {
	switch {
	case c.Kafka.Cluster != "":
		return c.Kafka.Cluster
	case len(c.Clusters) == 1:
		return sortedKeys(c.Clusters)[0]
	case len(c.Clusters) == 0:
		return DefaultCluster
	}
	return "" // ambiguous: Validate reports it
}

// InternalCluster names the cluster of the dead-letter and quarantine
// topics: kafka.internal_cluster, else the source cluster.
func (c *Config) InternalCluster() string {
	if c.Kafka.InternalCluster != "" {
		return c.Kafka.InternalCluster
	}
	return c.SourceCluster()
}

// RouteCluster names the cluster of a vendor route's topic:
// vendors.NAME.cluster, else the source cluster.
func (c *Config) RouteCluster(route string) string {
	if r, ok := c.Vendors[route]; ok && r.Cluster != "" {
		return r.Cluster
	}
	return c.SourceCluster()
}

// TopicAllowed reports whether topic matches the allowlist (exact names,
// or prefixes ending in "*"); an empty allowlist allows every topic.
func TopicAllowed(allowed []string, topic string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		if p, ok := strings.CutSuffix(a, "*"); ok {
			if strings.HasPrefix(topic, p) {
				return true
			}
		} else if a == topic {
			return true
		}
	}
	return false
}

// validateClusters checks the clusters section and the references to it,
// reads the SASL credentials and builds the TLS configs.
func (c *Config) validateClusters() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if len(c.Clusters) == 0 {
		if c.Kafka.Cluster != "" {
			add("kafka.cluster", "names cluster %q but no clusters are configured", c.Kafka.Cluster)
		}
		if c.Kafka.InternalCluster != "" {
			add("kafka.internal_cluster", "names cluster %q but no clusters are configured", c.Kafka.InternalCluster)
		}
		for _, name := range sortedKeys(c.Vendors) {
			if cl := c.Vendors[name].Cluster; cl != "" {
				add("vendors."+name+".cluster", "names cluster %q but no clusters are configured", cl)
			}
		}
		return errs
	}
	if len(c.Kafka.Brokers) > 0 {
		add("kafka.brokers", "not used when clusters is set: give the brokers as clusters.NAME.brokers")
	}
	ref := func(path, name string) {
		if _, ok := c.Clusters[name]; !ok {
			add(path, "unknown cluster %q (want one of %s)", name, strings.Join(sortedKeys(c.Clusters), ", "))
		}
	}
	if c.Kafka.Cluster == "" && len(c.Clusters) > 1 {
		add("kafka.cluster", "required with more than one cluster: name the cluster of the source topics and the consumer group")
	} else if c.Kafka.Cluster != "" {
		ref("kafka.cluster", c.Kafka.Cluster)
	}
	if c.Kafka.InternalCluster != "" {
		ref("kafka.internal_cluster", c.Kafka.InternalCluster)
	}
	for _, name := range sortedKeys(c.Vendors) {
		if cl := c.Vendors[name].Cluster; cl != "" {
			ref("vendors."+name+".cluster", cl)
		}
	}
	for _, name := range sortedKeys(c.Clusters) {
		cl := c.Clusters[name]
		p := "clusters." + name
		if len(cl.Brokers) == 0 {
			add(p+".brokers", "at least one broker is required")
		}
		for i, a := range cl.AllowedTopics {
			if a == "" || strings.Contains(strings.TrimSuffix(a, "*"), "*") {
				add(fmt.Sprintf("%s.allowed_topics[%d]", p, i), "want a topic name or a prefix ending in *, got %q", a)
			}
		}
		if t := cl.TLS; t != nil {
			cfg, err := t.build(c.Dir)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.tls.%w", p, err))
			}
			t.Config = cfg
		}
		if s := cl.SASL; s != nil {
			if !slices.Contains(SASLMechanisms, s.Mechanism) {
				add(p+".sasl.mechanism", "unknown mechanism %q (want one of %s)", s.Mechanism, list(SASLMechanisms))
			}
			user, err := s.Username.read(c.Dir)
			if err != nil {
				add(p+".sasl.username", "%v", err)
			}
			pass, err := s.Password.read(c.Dir)
			if err != nil {
				add(p+".sasl.password", "%v", err)
			}
			s.User, s.Pass = Secret(user), Secret(pass)
		}
		c.Clusters[name] = cl
	}
	// Every topic deident produces to must be on its cluster's allowlist.
	produced := func(path, cluster, topic string) {
		cl, ok := c.Clusters[cluster]
		if !ok || topic == "" || TopicAllowed(cl.AllowedTopics, topic) {
			return
		}
		add(path, "topic %q is not in clusters.%s.allowed_topics", topic, cluster)
	}
	for _, name := range sortedKeys(c.Vendors) {
		produced("vendors."+name+".topic", c.RouteCluster(name), c.Vendors[name].Topic)
	}
	produced("kafka.dead_letter_topic", c.InternalCluster(), c.Kafka.DeadLetterTopic)
	produced("kafka.quarantine_topic", c.InternalCluster(), c.Kafka.QuarantineTopic)
	return errs
}

// on reports whether TLS is configured.
func (t *TLS) on() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// build reads the files into a tls.Config; nil when TLS is off. Errors
// start with the key (ca_file: ...) for the caller's prefix.
func (t *TLS) build(dir string) (*tls.Config, error) {
	if !t.on() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	var errs []error
	if t.CAFile != "" {
		pem, err := os.ReadFile(resolve(dir, t.CAFile))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("ca_file: %w", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("ca_file: no PEM certificate in %s", t.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		errs = append(errs, errors.New("cert_file: give cert_file and key_file together"))
	case t.CertFile != "":
		pair, err := tls.LoadX509KeyPair(resolve(dir, t.CertFile), resolve(dir, t.KeyFile))
		if err != nil {
			// The error names the files and the problem, never key bytes.
			errs = append(errs, fmt.Errorf("cert_file: loading the client certificate and key_file: %w", err))
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// read returns the credential. Errors never contain it.
func (c Credential) read(dir string) (string, error) {
	switch {
	case c.File != "" && c.Env != "":
		return "", errors.New("give file or env, not both")
	case c.File != "":
		b, err := os.ReadFile(resolve(dir, c.File))
		if err != nil {
			return "", fmt.Errorf("file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("file: %s is empty", c.File)
		}
		return v, nil
	case c.Env != "":
		v, ok := os.LookupEnv(c.Env)
		if !ok || v == "" {
			return "", fmt.Errorf("env: %s is not set", c.Env)
		}
		return v, nil
	}
	return "", errors.New("required: {file: PATH} or {env: VAR} (credentials never go in the config text)")
}

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// credentialsInText reports SASL credentials written as text in the file
// (username: alice), before decoding: the decoder's own error would not
// say why that is refused.
func credentialsInText(settings map[string]any) []error {
	clusters, _ := settings["clusters"].(map[string]any)
	var errs []error
	for _, name := range sortedKeys(clusters) {
		cl, _ := clusters[name].(map[string]any)
		s, _ := cl["sasl"].(map[string]any)
		for _, k := range []string{"username", "password"} {
			if v, ok := s[k]; ok {
				if _, isMap := v.(map[string]any); !isMap {
					errs = append(errs, fmt.Errorf("clusters.%s.sasl.%s: credentials never go in the config text; use {file: PATH} or {env: VAR}", name, k))
				}
			}
		}
	}
	return errs
}
