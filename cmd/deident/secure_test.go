package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkaconn"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/pipeline"
)

// TestSecureClusterKfake runs the secure-cluster suite against an
// in-process kfake cluster with TLS, SCRAM-SHA-512 and ACLs enforced.
func TestSecureClusterKfake(t *testing.T) {
	testSecureCluster(t, kafkatest.SecureKfake(t))
}

// TestSecureClusterRealBroker runs it against a real Kafka broker with a
// SASL_SSL listener and the StandardAuthorizer (DEIDENT_KAFKA_SECURE=1
// scripts/kafka-local start); skipped unless DEIDENT_KAFKA_SECURE_BROKERS
// is set.
func TestSecureClusterRealBroker(t *testing.T) {
	testSecureCluster(t, kafkatest.SecureReal(t))
}

// secureTopics are one run's unique names.
type secureTopics struct {
	edr, workflow, acme, flowai, deadLetter, quarantine, group string
}

func newSecureTopics(t *testing.T) secureTopics {
	return secureTopics{
		edr: kafkatest.Topic(t, "sec-edr"), workflow: kafkatest.Topic(t, "sec-workflow"),
		acme: kafkatest.Topic(t, "sec-vendor-acme"), flowai: kafkatest.Topic(t, "sec-vendor-flowai"),
		deadLetter: kafkatest.Topic(t, "sec-dead-letter"), quarantine: kafkatest.Topic(t, "sec-quarantine"),
		group: kafkatest.Topic(t, "sec-group"),
	}
}

// withoutBrokerOverride unsets DEIDENT_KAFKA_BROKERS for the test (it is
// restored afterwards): CI's real-broker phase sets it, and a config with
// clusters refuses kafka.brokers, which that variable overrides.
func withoutBrokerOverride(t *testing.T) {
	t.Setenv("DEIDENT_KAFKA_BROKERS", "")
	os.Unsetenv("DEIDENT_KAFKA_BROKERS")
}

// secureConfig is the example config with its kafka.brokers replaced by a
// clusters section for s (TLS with caFile, SCRAM with the password in a
// file), the names set through DEIDENT_ environment overrides. It loads
// through config.Parse, as deident run would load it.
func secureConfig(t *testing.T, s *kafkatest.Secure, n secureTopics, caFile, password string) *config.Config {
	t.Helper()
	withoutBrokerOverride(t)
	key, err := os.ReadFile("../../configs/demo-keys/flowai.key")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEIDENT_KEY_FLOWAI", strings.TrimSpace(string(key)))
	text, err := os.ReadFile("../../configs/deident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const brokersLine = "  brokers: [127.0.0.1:9092]\n"
	if !bytes.Contains(text, []byte(brokersLine)) {
		t.Fatalf("configs/deident.yaml has no line %q", brokersLine)
	}
	text = bytes.Replace(text, []byte(brokersLine), nil, 1)
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text = fmt.Appendf(text, `
clusters:
  secure:
    brokers: [%s]
    tls: {ca_file: %q}
    sasl:
      mechanism: %s
      username: {env: DEIDENT_TEST_SASL_USER}
      password: {file: %q}
    allowed_topics: [%s, %s, %s, %s]
`, strings.Join(s.Brokers, ", "), caFile, s.Mechanism, pwFile, n.acme, n.flowai, n.deadLetter, n.quarantine)
	t.Setenv("DEIDENT_TEST_SASL_USER", s.User)
	for k, v := range map[string]string{
		"SOURCES_EDR_TOPIC": n.edr, "SOURCES_WORKFLOW_TOPIC": n.workflow,
		"VENDORS_ACME_MDR_TOPIC": n.acme, "VENDORS_FLOWAI_TOPIC": n.flowai,
		"KAFKA_DEAD_LETTER_TOPIC": n.deadLetter, "KAFKA_QUARANTINE_TOPIC": n.quarantine,
		"KAFKA_GROUP_ID": n.group, "KAFKA_METRICS_ADDR": "off", "KAFKA_BATCH_TIMEOUT": "5ms",
	} {
		t.Setenv("DEIDENT_"+k, v)
	}
	dir, _ := filepath.Abs("../../configs")
	cfg, err := config.Parse(text, dir)
	if err != nil {
		t.Fatalf("loading the secure config: %v", err)
	}
	cfg.Kafka.ShutdownGrace = 10 * time.Second
	return cfg
}

// aclEntries converts the listing of deident check into kafka-go ACLs for
// principal.
func aclEntries(t *testing.T, acls []config.ACL, principal string) []kafka.ACLEntry {
	t.Helper()
	var out []kafka.ACLEntry
	for _, a := range acls {
		rt := kafka.ResourceTypeTopic
		if a.Resource == config.ResourceGroup {
			rt = kafka.ResourceTypeGroup
		}
		for _, op := range a.Operations {
			var o kafka.ACLOperationType
			switch op {
			case config.OpRead:
				o = kafka.ACLOperationTypeRead
			case config.OpWrite:
				o = kafka.ACLOperationTypeWrite
			case config.OpDescribe:
				o = kafka.ACLOperationTypeDescribe
			default:
				t.Fatalf("operation %q", op)
			}
			out = append(out, kafka.ACLEntry{
				ResourceType: rt, ResourceName: a.Name, ResourcePatternType: kafka.PatternTypeLiteral,
				Principal: "User:" + principal, Host: "*", Operation: o, PermissionType: kafka.ACLPermissionTypeAllow,
			})
		}
	}
	return out
}

// syncBuffer is a log destination shared by the worker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testSecureCluster: with exactly the ACLs deident check lists the worker
// runs end to end over TLS and SCRAM and its vendor outputs are the routes'
// outputs; a missing ACL, a wrong password and an untrusted certificate each
// stop it at start-up, at once, with an error naming the cluster and the
// setting and holding neither password.
func testSecureCluster(t *testing.T, s *kafkatest.Secure) {
	n := newSecureTopics(t)
	for _, tp := range []string{n.edr, n.workflow, n.acme, n.flowai} {
		s.CreateTopic(t, tp, testPartitions)
	}
	s.CreateTopic(t, n.deadLetter, 1)
	s.CreateTopic(t, n.quarantine, 1)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wrongPassword := "wrong-" + s.Password[len(s.Password)/2:]
	secretsAbsent := func(what, text string) {
		t.Helper()
		for _, p := range []string{s.Password, wrongPassword, s.AdminPassword} {
			if strings.Contains(text, p) {
				t.Errorf("%s holds a password: %s", what, text)
			}
		}
	}
	failsFast := func(name string, cfg *config.Config, want ...string) error {
		t.Helper()
		start := time.Now()
		w, err := newWorker(cfg, log, testWorkerOptions())
		if err == nil {
			_ = w.sink.Close()
			t.Fatalf("%s: the worker started", name)
		}
		if d := time.Since(start); d > startupCheckTimeout {
			t.Errorf("%s: failed after %v, not at once", name, d)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", name, err, w)
			}
		}
		secretsAbsent(name+" error", err.Error())
		t.Logf("%s: %v", name, err)
		return err
	}

	cfg := secureConfig(t, s, n, s.CAFile, s.Password)
	acls := cfg.ACLs()
	if len(acls) != 7 {
		t.Fatalf("deident check lists %d ACLs, want 7 (2 sources, group, 2 vendor topics, 2 internal)", len(acls))
	}
	var missing, granted []config.ACL
	for _, a := range acls {
		if a.Name == n.acme {
			a2 := a
			a2.Operations = []string{config.OpWrite}
			missing = append(missing, a2)
			a.Operations = []string{config.OpDescribe}
		}
		granted = append(granted, a)
	}
	s.Grant(t, aclEntries(t, granted, s.User)...)

	err := failsFast("missing ACL", cfg, "cluster secure: acl:", "Write topic", n.acme, "vendors.acme-mdr.topic")
	if !errors.Is(err, kafkaconn.ErrUnauthorized) {
		t.Errorf("missing ACL: %v is not ErrUnauthorized", err)
	}
	err = failsFast("wrong password", secureConfig(t, s, n, s.CAFile, wrongPassword), "cluster secure: sasl:", "authentication failed", "(check clusters.secure.sasl.password)")
	if !errors.Is(err, kafkaconn.ErrSASL) {
		t.Errorf("wrong password: %v is not ErrSASL", err)
	}
	otherCA, _ := kafkatest.NewCA(t, t.TempDir(), "untrusted CA")
	err = failsFast("untrusted certificate", secureConfig(t, s, n, otherCA, s.Password), "cluster secure: tls:", "(check clusters.secure.tls.ca_file)")
	if !errors.Is(err, kafkaconn.ErrTLS) {
		t.Errorf("untrusted certificate: %v is not ErrTLS", err)
	}

	// Now exactly the listed ACLs: the worker runs end to end.
	s.Grant(t, aclEntries(t, missing, s.User)...)
	const perSource = 150
	secureProduce(t, s, n.edr, generate(gen.Threat, 11, perSource))
	secureProduce(t, s, n.workflow, generate(gen.Workflow, 12, perSource))
	w, err := newWorker(cfg, log, testWorkerOptions())
	if err != nil {
		t.Fatalf("newWorker with the listed ACLs: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	c := w.runner.Counters()
	for c.Worker.Consumed.Load() < 2*perSource || c.Worker.InFlight.Load() > 0 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("consumed %d of %d in 60s (in flight %d); log:\n%s", c.Worker.Consumed.Load(), 2*perSource, c.Worker.InFlight.Load(), logs.String())
		}
		select {
		case err := <-errc:
			t.Fatalf("worker stopped: %v\nlog:\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("worker: %v", err)
	}
	if err := c.Check(); err != nil {
		t.Error(err)
	}
	for _, name := range []string{"acme-mdr", "flowai"} {
		if rc := c.Routes[name]; rc.Out.Load() != perSource {
			t.Errorf("route %s: out %d, want %d", name, rc.Out.Load(), perSource)
		}
	}
	secureCheckOutputs(t, s, cfg, w)
	secretsAbsent("worker log", logs.String())
}

func secureProduce(t *testing.T, s *kafkatest.Secure, topic string, values [][]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(s.Brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond, Transport: s.AdminTransport(t)}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "entity-%d", i%37), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("producing to %s: %v", topic, err)
	}
}

// secureReadAll reads every record of topic as the super user.
func secureReadAll(t *testing.T, s *kafkatest.Secure, topic string, partitions int) []kafka.Message {
	t.Helper()
	var reqs []kafka.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	res, err := s.AdminClient(t).ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("ListOffsets %s: %v", topic, err)
	}
	var out []kafka.Message
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("ListOffsets %s/%d: %v", topic, po.Partition, po.Error)
		}
		if po.LastOffset == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.Brokers, Topic: topic, Partition: po.Partition, MaxWait: 50 * time.Millisecond, Dialer: s.AdminDialer(t)})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("reading %s/%d: %v", topic, po.Partition, err)
			}
			out = append(out, m)
			if m.Offset >= po.LastOffset-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	return out
}

// secureCheckOutputs compares every vendor record with its route applied
// directly to the source record its deident-src names.
func secureCheckOutputs(t *testing.T, s *kafkatest.Secure, cfg *config.Config, w *worker) {
	t.Helper()
	want := map[string]map[string][]byte{} // vendor topic -> src -> value
	for _, sname := range sortedNames(cfg.Sources) {
		src := cfg.Sources[sname]
		for _, m := range secureReadAll(t, s, src.Topic, testPartitions) {
			for _, rname := range sortedNames(w.routes) {
				r := w.routes[rname]
				if !r.Allows(src.Category) {
					continue
				}
				v, err := r.NewApplier().Apply(nil, m.Value)
				if err != nil {
					t.Fatalf("route %s on %s: %v", rname, srcOf(m), err)
				}
				if want[r.Config.Topic] == nil {
					want[r.Config.Topic] = map[string][]byte{}
				}
				want[r.Config.Topic][srcOf(m)] = v
			}
		}
	}
	for topic, exp := range want {
		got := map[string]bool{}
		for _, m := range secureReadAll(t, s, topic, testPartitions) {
			src := headers(m)[pipeline.HeaderSrc]
			if !bytes.Equal(m.Value, exp[src]) {
				t.Errorf("%s: output for %q:\n got %s\nwant %s", topic, src, m.Value, exp[src])
			}
			got[src] = true
		}
		if len(got) != len(exp) {
			t.Errorf("%s: %d distinct outputs, want %d", topic, len(got), len(exp))
		}
	}
	if len(want) != 2 {
		t.Errorf("outputs expected on %d vendor topics, want 2", len(want))
	}
}

// TestCheckListsACLs: deident check prints, per cluster, kafka-acls
// commands for exactly what the worker needs, and no credential.
func TestCheckListsACLs(t *testing.T) {
	withoutBrokerOverride(t)
	out, err := runStdout(t, "check", "--config", "../../configs/testdata/clusters.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, acls, ok := strings.Cut(out, "ACLs the worker needs")
	if !ok {
		t.Fatalf("no ACL listing in:\n%s", out)
	}
	company, egress, ok := strings.Cut(acls, "\ncluster egress ")
	if !ok || !strings.Contains(company, "\ncluster company (brokers kafka-1.internal:9093,kafka-2.internal:9093; PRINCIPAL is the user of clusters.company.sasl.username)") {
		t.Fatalf("clusters not listed in order:\n%s", acls)
	}
	cmd := "kafka-acls.sh --bootstrap-server %s --command-config admin.properties --add --allow-principal User:PRINCIPAL %s   # %s"
	for _, c := range []struct{ section, line string }{
		{company, fmt.Sprintf(cmd, "kafka-1.internal:9093", "--operation Read --operation Describe --topic telemetry.edr", "sources.edr.topic")},
		{company, fmt.Sprintf(cmd, "kafka-1.internal:9093", "--operation Read --group deident", "kafka.group_id")},
		{company, fmt.Sprintf(cmd, "kafka-1.internal:9093", "--operation Write --operation Describe --topic deident.dead-letter", "kafka.dead_letter_topic")},
		{company, fmt.Sprintf(cmd, "kafka-1.internal:9093", "--operation Write --operation Describe --topic deident.quarantine", "kafka.quarantine_topic")},
		{egress, fmt.Sprintf(cmd, "egress.example:9093", "--operation Write --operation Describe --topic vendor.acme.edr", "vendors.acme.topic")},
	} {
		if !strings.Contains(c.section, c.line) {
			t.Errorf("missing %q in:\n%s", c.line, c.section)
		}
	}
	if n := strings.Count(acls, "kafka-acls.sh"); n != 5 {
		t.Errorf("%d ACL commands, want 5", n)
	}
	if strings.Contains(out, "test-password") || strings.Contains(out, "deident-worker") {
		t.Errorf("check prints a credential:\n%s", out)
	}
}
