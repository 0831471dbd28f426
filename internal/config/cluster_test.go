package config

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestClustersLoad(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "clusters.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SourceCluster(); got != "company" {
		t.Errorf("source cluster %q, want company", got)
	}
	if got := c.InternalCluster(); got != "company" {
		t.Errorf("internal cluster %q, want company (kafka.cluster)", got)
	}
	if got := c.RouteCluster("acme"); got != "egress" {
		t.Errorf("route cluster %q, want egress", got)
	}
	eg := c.Clusters["egress"]
	if eg.TLS.Config == nil || eg.TLS.Config.MinVersion != tls.VersionTLS12 || eg.TLS.Config.RootCAs == nil || eg.TLS.Config.ServerName != "egress.example" {
		t.Errorf("egress tls config not built from the files: %+v", eg.TLS.Config)
	}
	if eg.SASL.User.Reveal() != "deident-worker" || eg.SASL.Pass.Reveal() != "test-password-not-a-secret" {
		t.Errorf("credentials not read from their files")
	}
	// However the config is printed or logged, the credentials are not.
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("cfg", "sasl", eg.SASL, "user", eg.SASL.User)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", c.Clusters, c.Clusters, c.Clusters, eg.SASL.Pass), log.String()} {
		if strings.Contains(s, "test-password") || strings.Contains(s, "deident-worker") {
			t.Errorf("credential printed: %s", s)
		}
	}
}

// A config without clusters has one implicit cluster, kafka.brokers, for
// every role, read when asked (tests set the brokers after Load).
func TestNoClustersIsKafkaBrokers(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Kafka.Brokers = []string{"h:1"}
	if c.SourceCluster() != DefaultCluster || c.InternalCluster() != DefaultCluster || c.RouteCluster("acme") != DefaultCluster {
		t.Fatalf("roles: %s %s %s", c.SourceCluster(), c.InternalCluster(), c.RouteCluster("acme"))
	}
	cl, ok := c.ClusterConfig(DefaultCluster)
	if !ok || !slices.Equal(cl.Brokers, []string{"h:1"}) || cl.TLS != nil || cl.SASL != nil {
		t.Fatalf("default cluster %+v", cl)
	}
}

func TestClusterEnvOverrides(t *testing.T) {
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_BROKERS", "e1:9093,e2:9093")
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_TLS_SERVER_NAME", "other.example")
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_SASL_MECHANISM", "SCRAM-SHA-256")
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_SASL_PASSWORD_FILE", "sasl.username")
	t.Setenv("DEIDENT_KAFKA_INTERNAL_CLUSTER", "egress")
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_ALLOWED_TOPICS", "vendor.*,deident.*")
	c, err := Load(filepath.Join(testdata, "clusters.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	eg := c.Clusters["egress"]
	if !slices.Equal(eg.Brokers, []string{"e1:9093", "e2:9093"}) || eg.TLS.Config.ServerName != "other.example" ||
		eg.SASL.Mechanism != SASLScramSHA256 || eg.SASL.Pass.Reveal() != "deident-worker" || c.InternalCluster() != "egress" {
		t.Fatalf("overrides not applied: %+v %+v internal %s", eg, eg.TLS, c.InternalCluster())
	}
	// The internal topics now go to egress, whose allowlist must hold them.
	t.Setenv("DEIDENT_CLUSTERS_EGRESS_ALLOWED_TOPICS", "vendor.*")
	if _, err := Load(filepath.Join(testdata, "clusters.good.yaml")); err == nil || !strings.Contains(err.Error(), `kafka.quarantine_topic: topic "deident.quarantine" is not in clusters.egress.allowed_topics`) {
		t.Fatalf("internal topic outside the allowlist accepted: %v", err)
	}
}

func TestTopicAllowed(t *testing.T) {
	for _, c := range []struct {
		allowed []string
		topic   string
		want    bool
	}{
		{nil, "anything", true},
		{[]string{"vendor.acme"}, "vendor.acme", true},
		{[]string{"vendor.acme"}, "vendor.acme2", false},
		{[]string{"vendor.acme.*"}, "vendor.acme.edr", true},
		{[]string{"vendor.acme.*"}, "vendor.acme", false},
		{[]string{"vendor.acme.*"}, "vendor.flowai.edr", false},
		{[]string{"x", "vendor.*"}, "vendor.flowai", true},
	} {
		if got := TopicAllowed(c.allowed, c.topic); got != c.want {
			t.Errorf("TopicAllowed(%q, %q) = %v", c.allowed, c.topic, got)
		}
	}
}

func TestACLs(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "clusters.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range c.ACLs() {
		got = append(got, fmt.Sprintf("%s %s %s %v", a.Cluster, a.Resource, a.Name, a.Operations))
	}
	want := []string{
		"company topic telemetry.edr [Read Describe]",
		"company group deident [Read]",
		"company topic deident.dead-letter [Write Describe]",
		"company topic deident.quarantine [Write Describe]",
		"egress topic vendor.acme.edr [Write Describe]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ACLs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
