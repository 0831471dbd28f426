package kafkaconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkatest"
)

// withoutBrokerOverride unsets DEIDENT_KAFKA_BROKERS for the test (it is
// restored afterwards): CI's real-broker phase sets it, and a config with
// clusters refuses kafka.brokers, which that variable overrides.
func withoutBrokerOverride(t *testing.T) {
	t.Setenv("DEIDENT_KAFKA_BROKERS", "")
	os.Unsetenv("DEIDENT_KAFKA_BROKERS")
}

// clusterConfig loads a config whose one cluster is brokers with the given
// tls and sasl sections (YAML flow maps, "" for none).
func clusterConfig(t *testing.T, brokers []string, tlsYAML, saslYAML string) *config.Config {
	t.Helper()
	withoutBrokerOverride(t)
	dir := t.TempDir()
	text := fmt.Sprintf(`
clusters:
  c1:
    brokers: [%s]
%s%s
vendors:
  acme:
    purpose: p
    categories: [threat_telemetry]
    keys: [{file: %s}]
`, strings.Join(brokers, ", "), indent("tls", tlsYAML), indent("sasl", saslYAML), mustAbs(t, "../../configs/testdata/a.key"))
	cfg, err := config.Parse([]byte(text), dir)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

func indent(key, flow string) string {
	if flow == "" {
		return ""
	}
	return "    " + key + ": " + flow + "\n"
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMechanisms: each SASL mechanism authenticates over TLS, in the start-up
// check and through the Transport the sinks use.
func TestMechanisms(t *testing.T) {
	caFile, cert := kafkatest.NewCA(t, t.TempDir(), "test CA")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1),
				kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
				kfake.EnableSASL(), kfake.Superuser(mech, "worker", "pw-"+mech))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pw := writeFile(t, "pw-"+mech)
			t.Setenv("TEST_SASL_USER", "worker")
			connectAs(t, c.ListenAddrs(), caFile, mech, pw)
		})
	}
}

// connectAs connects to brokers over TLS (trusting caFile) as the user in
// TEST_SASL_USER with the password in pwFile and mechanism mech: the
// start-up check passes and a request goes through the transport.
func connectAs(t *testing.T, brokers []string, caFile, mech, pwFile string) {
	t.Helper()
	cfg := clusterConfig(t, brokers, fmt.Sprintf("{ca_file: %s}", caFile),
		fmt.Sprintf("{mechanism: %s, username: {env: TEST_SASL_USER}, password: {file: %s}}", mech, pwFile))
	conn, err := New(cfg, "c1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Check(ctx, nil); err != nil {
		t.Fatalf("check: %v", err)
	}
	if _, err := conn.Client(5*time.Second).Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
		t.Fatalf("metadata through the transport: %v", err)
	}
}

// TestCheckErrors: each way of getting the connection wrong is named by
// its setting.
func TestCheckErrors(t *testing.T) {
	caFile, cert := kafkatest.NewCA(t, t.TempDir(), "test CA")
	c, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "worker", "right-password"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("TEST_SASL_USER", "worker")
	sasl := func(pw string) string {
		return fmt.Sprintf("{mechanism: SCRAM-SHA-512, username: {env: TEST_SASL_USER}, password: {file: %s}}", writeFile(t, pw))
	}
	for _, tc := range []struct {
		name      string
		tls, sasl string
		brokers   []string
		want      error
		setting   string
	}{
		{"plaintext to a TLS listener", "", sasl("right-password"), nil, nil, "clusters.c1.tls"},
		{"wrong password", fmt.Sprintf("{ca_file: %s}", caFile), sasl("wrong-password"), nil, ErrSASL, "clusters.c1.sasl.password"},
		{"untrusted CA", "{enabled: true}", sasl("right-password"), nil, ErrTLS, "clusters.c1.tls.ca_file"},
		{"wrong server name", fmt.Sprintf("{ca_file: %s, server_name: kafka.example}", caFile), sasl("right-password"), nil, ErrTLS, "clusters.c1.tls.server_name"},
		{"nothing listening", "", "", []string{"127.0.0.1:1"}, ErrUnreachable, "clusters.c1.brokers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers := tc.brokers
			if brokers == nil {
				brokers = c.ListenAddrs()
			}
			conn, err := New(clusterConfig(t, brokers, tc.tls, tc.sasl), "c1")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err = conn.Check(ctx, nil)
			if err == nil {
				t.Fatal("check passed")
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v is not %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "cluster c1: ") || !strings.Contains(err.Error(), "check "+tc.setting) {
				t.Errorf("error %q does not name the cluster and %s", err, tc.setting)
			}
			if strings.Contains(err.Error(), "right-password") || strings.Contains(err.Error(), "wrong-password") {
				t.Errorf("error holds the password: %v", err)
			}
		})
	}
}

// TestPlaintextUnchanged: a cluster without TLS or SASL uses kafka-go's
// defaults (the plain path is not touched).
func TestPlaintextUnchanged(t *testing.T) {
	cfg := clusterConfig(t, []string{"127.0.0.1:9092"}, "", "")
	conn, err := New(cfg, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if conn.Secure() || conn.Dialer() != nil || conn.Transport() != kafka.DefaultTransport {
		t.Error("a plaintext cluster got its own dialer or transport")
	}
}

// TestMechanismsRealBroker: the worker's user authenticates with each
// mechanism the secure scripts/kafka-local broker enables; skipped unless
// DEIDENT_KAFKA_SECURE_BROKERS is set.
func TestMechanismsRealBroker(t *testing.T) {
	s := kafkatest.SecureReal(t)
	pw := writeFile(t, s.Password)
	t.Setenv("TEST_SASL_USER", s.User)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			connectAs(t, s.Brokers, s.CAFile, mech, pw)
		})
	}
}
