// Package kafkaconn turns a config.Cluster into kafka-go's connection
// settings (a Dialer for readers and consumer groups, a Transport for
// writers and clients) and checks, once at start-up, that the cluster can
// be reached, trusted and authenticated with, and that the principal holds
// the permissions the worker needs, so that a wrong password, an untrusted
// certificate or a missing ACL fails at once with an error naming the
// cluster and the config key, never the secret.
package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/findcoordinator"
	"github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/deident/deident/internal/config"
)

// Conn is how to reach one cluster.
type Conn struct {
	// Name is the cluster's name in the config.
	Name string
	// Brokers are the bootstrap addresses.
	Brokers []string
	// TLS is nil for plaintext.
	TLS *tls.Config
	// SASL is nil without authentication.
	SASL sasl.Mechanism
	// key is the config path of the cluster's settings ("clusters.NAME",
	// or "kafka" for the implicit cluster).
	key string
}

// New builds the named cluster's connection from a loaded config.
func New(cfg *config.Config, name string) (*Conn, error) {
	cl, ok := cfg.ClusterConfig(name)
	if !ok {
		return nil, fmt.Errorf("cluster %s: not configured", name)
	}
	c := &Conn{Name: name, Brokers: cl.Brokers, key: "clusters." + name}
	if len(cfg.Clusters) == 0 {
		c.key = "kafka"
	}
	if cl.TLS != nil {
		c.TLS = cl.TLS.Config
	}
	if s := cl.SASL; s != nil {
		var err error
		switch s.Mechanism {
		case config.SASLPlain:
			c.SASL = plain.Mechanism{Username: s.User.Reveal(), Password: s.Pass.Reveal()}
		case config.SASLScramSHA256:
			c.SASL, err = scram.Mechanism(scram.SHA256, s.User.Reveal(), s.Pass.Reveal())
		case config.SASLScramSHA512:
			c.SASL, err = scram.Mechanism(scram.SHA512, s.User.Reveal(), s.Pass.Reveal())
		default:
			err = fmt.Errorf("unknown mechanism %q", s.Mechanism)
		}
		if err != nil {
			// scram's errors are about the username's characters, never its value.
			return nil, fmt.Errorf("cluster %s: sasl: %w (check %s.sasl)", name, err, c.key)
		}
	}
	return c, nil
}

// Secure reports whether the connection uses TLS or SASL.
func (c *Conn) Secure() bool { return c.TLS != nil || c.SASL != nil }

// Dialer returns the Dialer for readers and consumer groups; nil (kafka-go's
// default) for a plaintext cluster, so the plain path is unchanged.
func (c *Conn) Dialer() *kafka.Dialer {
	if !c.Secure() {
		return nil
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: c.TLS, SASLMechanism: c.SASL}
}

// Transport returns the RoundTripper for writers and clients;
// kafka.DefaultTransport for a plaintext cluster.
func (c *Conn) Transport() kafka.RoundTripper {
	if !c.Secure() {
		return kafka.DefaultTransport
	}
	return &kafka.Transport{DialTimeout: 10 * time.Second, TLS: c.TLS, SASL: c.SASL}
}

// Client returns a kafka.Client for the cluster.
func (c *Conn) Client(timeout time.Duration) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: timeout, Transport: c.Transport()}
}

// Need is a permission the start-up check verifies.
type Need struct {
	// Resource is config.ResourceTopic or config.ResourceGroup.
	Resource, Name string
	// Operations are config.OpRead, OpWrite, OpDescribe.
	Operations []string
	// Why is the config key that names the resource, for the error.
	Why string
}

// Needs converts the ACLs of one cluster to Needs.
func Needs(acls []config.ACL, cluster string) []Need {
	var out []Need
	for _, a := range acls {
		if a.Cluster == cluster {
			out = append(out, Need{a.Resource, a.Name, a.Operations, a.Why})
		}
	}
	return out
}

// Sentinels of Check, for errors.Is.
var (
	ErrUnreachable  = errors.New("no broker reachable")
	ErrTLS          = errors.New("tls")
	ErrSASL         = errors.New("sasl")
	ErrUnauthorized = errors.New("not authorized")
)

// Check connects to one bootstrap broker as the worker will (TLS, SASL),
// then verifies needs: topics through Metadata's authorized operations
// (Kafka 2.3+; KIP-430), groups through FindCoordinator, which needs
// Describe on the group (implied by Read). It returns the first failure,
// naming the cluster and the setting to check; it never retries, so a
// broker that refuses the credentials stops start-up at once. Topics that
// do not exist (and the principal may describe) are not an error here.
func (c *Conn) Check(ctx context.Context, needs []Need) error {
	pc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer pc.Close()
	if dl, ok := ctx.Deadline(); ok {
		pc.SetDeadline(dl)
	}
	var topics []string
	for _, n := range needs {
		if n.Resource == config.ResourceTopic {
			topics = append(topics, n.Name)
		}
	}
	ops := map[string]int32{}
	if len(topics) > 0 {
		m, err := pc.RoundTrip(&metadata.Request{TopicNames: topics, IncludeTopicAuthorizedOperations: true})
		if err != nil {
			return fmt.Errorf("cluster %s: metadata: %w", c.Name, err)
		}
		for _, t := range m.(*metadata.Response).Topics {
			switch kafka.Error(t.ErrorCode) {
			case 0:
				ops[t.Name] = t.TopicAuthorizedOperations
			case kafka.TopicAuthorizationFailed:
				ops[t.Name] = 0
			default:
				ops[t.Name] = -1 // unknown topic and the like: not checked here
			}
		}
	}
	for _, n := range needs {
		switch n.Resource {
		case config.ResourceTopic:
			got, ok := ops[n.Name]
			if !ok || got == -1 || got == unknownOps {
				continue // the broker did not say (older broker, unknown topic)
			}
			for _, op := range n.Operations {
				if got&(1<<aclOp(op)) == 0 {
					return c.unauthorized(op, n)
				}
			}
		case config.ResourceGroup:
			r, err := pc.RoundTrip(&findcoordinator.Request{Key: n.Name, KeyType: 0})
			if err != nil {
				return fmt.Errorf("cluster %s: finding the coordinator of group %q: %w", c.Name, n.Name, err)
			}
			if code := r.(*findcoordinator.Response).ErrorCode; kafka.Error(code) == kafka.GroupAuthorizationFailed {
				return c.unauthorized(n.Operations[0], n)
			}
		}
	}
	return nil
}

// unknownOps is what a broker answers for authorized operations it was not
// asked for or does not compute (Int32 min).
const unknownOps = -2147483648

func (c *Conn) unauthorized(op string, n Need) error {
	return fmt.Errorf("cluster %s: acl: %w to %s %s %q (%s); grant the ACLs `deident check` lists", c.Name, ErrUnauthorized, op, n.Resource, n.Name, n.Why)
}

// aclOp is Kafka's AclOperation code of an operation name.
func aclOp(op string) uint {
	switch op {
	case config.OpRead:
		return 3
	case config.OpWrite:
		return 4
	case config.OpDescribe:
		return 8
	}
	return 0
}

// connect dials a bootstrap broker, runs the TLS handshake, negotiates API
// versions and authenticates, classifying each failure.
func (c *Conn) connect(ctx context.Context) (*protocol.Conn, error) {
	var d net.Dialer
	var nc net.Conn
	var dialErrs []error
	for _, b := range c.Brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			nc = conn
			break
		}
		dialErrs = append(dialErrs, err)
	}
	if nc == nil {
		return nil, fmt.Errorf("cluster %s: %w: %w (check %s.brokers)", c.Name, ErrUnreachable, errors.Join(dialErrs...), c.key)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if c.TLS != nil {
		cfg := c.TLS
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(nc.RemoteAddr().String())
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, c.tlsError(err)
		}
		nc = tc
	}
	pc := protocol.NewConn(nc, "deident")
	r, err := pc.RoundTrip(new(apiversions.Request))
	if err != nil {
		pc.Close()
		if c.TLS == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("cluster %s: the broker closed the connection (does it need TLS? check %s.tls): %w", c.Name, c.key, err)
		}
		return nil, fmt.Errorf("cluster %s: api versions: %w", c.Name, err)
	}
	res := r.(*apiversions.Response)
	ver := make(map[protocol.ApiKey]int16, len(res.ApiKeys))
	for _, k := range res.ApiKeys {
		ver[protocol.ApiKey(k.ApiKey)] = protocol.ApiKey(k.ApiKey).SelectVersion(k.MinVersion, k.MaxVersion)
	}
	pc.SetVersions(ver)
	if c.SASL != nil {
		if err := c.authenticate(ctx, pc, nc); err != nil {
			pc.Close()
			return nil, err
		}
	}
	return pc, nil
}

func (c *Conn) tlsError(err error) error {
	setting := "tls.ca_file"
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("cluster %s: %w: the broker's certificate is not signed by a trusted CA (check %s.%s): %w", c.Name, ErrTLS, c.key, setting, err)
	case errors.As(err, &host):
		setting = "tls.server_name"
	case errors.As(err, &invalid):
	case errors.As(err, &alert):
		setting = "tls.cert_file"
	}
	return fmt.Errorf("cluster %s: %w: handshake failed (check %s.%s): %w", c.Name, ErrTLS, c.key, setting, err)
}

// authenticate runs the SASL exchange as kafka-go's Transport does.
func (c *Conn) authenticate(ctx context.Context, pc *protocol.Conn, nc net.Conn) error {
	host, port, _ := net.SplitHostPort(nc.RemoteAddr().String())
	p, _ := strconv.Atoi(port)
	ctx = sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p})
	fail := func(setting string, err error) error {
		return fmt.Errorf("cluster %s: %w: %w (check %s.sasl.%s)", c.Name, ErrSASL, err, c.key, setting)
	}
	r, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: c.SASL.Name()})
	if err != nil {
		return fail("mechanism", err)
	}
	if hs := r.(*saslhandshake.Response); hs.ErrorCode != 0 {
		return fail("mechanism", fmt.Errorf("the broker offers %s: %w", strings.Join(hs.Mechanisms, ", "), kafka.Error(hs.ErrorCode)))
	}
	sess, state, err := c.SASL.Start(ctx)
	if err != nil {
		return fail("username", err)
	}
	for done := false; !done; {
		r, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// Brokers may end a failed exchange by closing the connection.
				err = fmt.Errorf("authentication failed (the broker closed the connection): %w", kafka.SASLAuthenticationFailed)
			}
			return fail("password", err)
		}
		res := r.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			// The broker's message says "Authentication failed ... invalid
			// credentials"; it never holds the password.
			return fail("password", fmt.Errorf("authentication failed: %w", kafka.Error(res.ErrorCode)))
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return fail("password", fmt.Errorf("authentication failed: %w", err))
		}
	}
	return nil
}
