package kafkatest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Environment of a real secure broker (scripts/kafka-local with
// DEIDENT_KAFKA_SECURE=1 prints them: `scripts/kafka-local env`).
const (
	// EnvSecureBrokers is the SASL_SSL listener (host:port, comma-separated).
	EnvSecureBrokers = "DEIDENT_KAFKA_SECURE_BROKERS"
	// EnvSecureCA is the PEM file of the CA that signed the broker's certificate.
	EnvSecureCA = "DEIDENT_KAFKA_SECURE_CA"
	// EnvSecureAdminUser and EnvSecureAdminPasswordFile are a super user's
	// SCRAM-SHA-512 credentials (creates topics and ACLs).
	EnvSecureAdminUser         = "DEIDENT_KAFKA_SECURE_ADMIN_USER"
	EnvSecureAdminPasswordFile = "DEIDENT_KAFKA_SECURE_ADMIN_PASSWORD_FILE"
	// EnvSecureUser and EnvSecurePasswordFile are the worker's SCRAM-SHA-512
	// credentials; the user holds no ACLs but the ones tests grant.
	EnvSecureUser         = "DEIDENT_KAFKA_SECURE_USER"
	EnvSecurePasswordFile = "DEIDENT_KAFKA_SECURE_PASSWORD_FILE"
)

// Secure is a cluster with TLS, SASL (SCRAM-SHA-512) and ACLs enforced.
type Secure struct {
	Brokers []string
	// CAFile is the CA (PEM) the brokers' certificates chain to.
	CAFile string
	// Mechanism is the SASL mechanism of both users.
	Mechanism string
	// AdminUser is a super user; User is the worker's principal.
	AdminUser, AdminPassword string
	User, Password           string
	// Real is true for the broker named by EnvSecureBrokers.
	Real bool
}

// SecureKfake starts an in-process kfake cluster with TLS (a CA made here),
// SASL SCRAM-SHA-512 (a super user "admin" and a user "deident" with random
// passwords) and ACLs enforced, closed by t.Cleanup.
func SecureKfake(t testing.TB) *Secure {
	t.Helper()
	dir := t.TempDir()
	caFile, cert := NewCA(t, dir, "kfake test CA")
	s := &Secure{CAFile: caFile, Mechanism: "SCRAM-SHA-512", AdminUser: "admin", AdminPassword: randomHex(t), User: "deident", Password: randomHex(t)}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(3),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser(s.Mechanism, s.AdminUser, s.AdminPassword),
		kfake.User(s.Mechanism, s.User, s.Password),
		kfake.EnableACLs(),
	)
	if err != nil {
		t.Fatalf("kafkatest: starting secure kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	s.Brokers = c.ListenAddrs()
	return s
}

// SecureReal returns the real secure broker named by the environment, or
// skips the test when EnvSecureBrokers is unset.
func SecureReal(t testing.TB) *Secure {
	t.Helper()
	brokers := os.Getenv(EnvSecureBrokers)
	if brokers == "" {
		t.Skipf("%s is not set: start a secure broker with DEIDENT_KAFKA_SECURE=1 scripts/kafka-local start and export what `scripts/kafka-local env` prints", EnvSecureBrokers)
	}
	read := func(env string) string {
		p := os.Getenv(env)
		if p == "" {
			t.Fatalf("kafkatest: %s is set but %s is not", EnvSecureBrokers, env)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("kafkatest: %s: %v", env, err)
		}
		return strings.TrimSpace(string(b))
	}
	s := &Secure{
		Brokers:       strings.Split(brokers, ","),
		CAFile:        os.Getenv(EnvSecureCA),
		Mechanism:     "SCRAM-SHA-512",
		AdminUser:     os.Getenv(EnvSecureAdminUser),
		AdminPassword: read(EnvSecureAdminPasswordFile),
		User:          os.Getenv(EnvSecureUser),
		Password:      read(EnvSecurePasswordFile),
		Real:          true,
	}
	if s.CAFile == "" || s.AdminUser == "" || s.User == "" {
		t.Fatalf("kafkatest: %s is set; %s, %s and %s are needed too", EnvSecureBrokers, EnvSecureCA, EnvSecureAdminUser, EnvSecureUser)
	}
	return s
}

// AdminTransport connects as the super user.
func (s *Secure) AdminTransport(t testing.TB) *kafka.Transport {
	t.Helper()
	m, err := scram.Mechanism(scram.SHA512, s.AdminUser, s.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	return &kafka.Transport{TLS: s.tlsConfig(t), SASL: m}
}

// AdminDialer connects readers as the super user.
func (s *Secure) AdminDialer(t testing.TB) *kafka.Dialer {
	t.Helper()
	m, err := scram.Mechanism(scram.SHA512, s.AdminUser, s.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, TLS: s.tlsConfig(t), SASLMechanism: m}
}

// AdminClient is a kafka.Client acting as the super user.
func (s *Secure) AdminClient(t testing.TB) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(s.Brokers...), Timeout: 10 * time.Second, Transport: s.AdminTransport(t)}
}

func (s *Secure) tlsConfig(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("kafkatest: no certificate in %s", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// CreateTopic creates topic as the super user and waits for its leaders.
func (s *Secure) CreateTopic(t testing.TB, topic string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := s.AdminClient(t)
	for {
		res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1}}})
		if err == nil {
			err = res.Errors[topic]
		}
		if err == nil || errors.Is(err, kafka.TopicAlreadyExists) {
			break
		}
		if !retriable(err) || ctx.Err() != nil {
			t.Fatalf("kafkatest: creating %s: %v", topic, err)
		}
		_ = sleep(ctx, 200*time.Millisecond)
	}
	for {
		n, err := readyPartitions(ctx, client, topic)
		if err == nil && n == partitions {
			return
		}
		if sleep(ctx, 100*time.Millisecond) != nil {
			t.Fatalf("kafkatest: %s: %d of %d partitions ready (%v)", topic, n, partitions, err)
		}
	}
}

// Grant creates ACLs as the super user.
func (s *Secure) Grant(t testing.TB, acls ...kafka.ACLEntry) {
	t.Helper()
	res, err := s.AdminClient(t).CreateACLs(context.Background(), &kafka.CreateACLsRequest{ACLs: acls})
	if err == nil {
		err = errors.Join(res.Errors...)
	}
	if err != nil {
		t.Fatalf("kafkatest: creating ACLs: %v", err)
	}
}

// NewCA makes a self-signed CA and a certificate it signs for 127.0.0.1
// and localhost; it writes the CA to dir/ca.pem and returns the path and
// the leaf (with its key) for a listener.
func NewCA(t testing.TB, dir, name string) (string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}
}

func randomHex(t testing.TB) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b[:])
}
