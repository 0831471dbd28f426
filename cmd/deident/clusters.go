package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/kafkaconn"
	"github.com/deident/deident/pipeline"
	kafkasink "github.com/deident/deident/sinks/kafka"
)

// closingSink is the worker's sink: one cluster's kafkasink.Sink, or a
// kafkasink.Clusters over several.
type closingSink interface {
	pipeline.Sink
	Close() error
}

// startupCheckTimeout bounds the connectivity check of each cluster.
const startupCheckTimeout = 15 * time.Second

// clusterConns connects the clusters a worker uses. With a clusters
// section, each is checked once (TLS, SASL, the ACLs `deident check`
// lists) before anything starts, so bad credentials or a missing ACL stop
// start-up with an error naming the cluster and the setting instead of
// retrying forever. A config without clusters is not checked: kafka.brokers
// plaintext, as it always was.
func clusterConns(cfg *config.Config) (map[string]*kafkaconn.Conn, error) {
	used := map[string]bool{cfg.SourceCluster(): true, cfg.InternalCluster(): true}
	for name := range cfg.Vendors {
		used[cfg.RouteCluster(name)] = true
	}
	conns := map[string]*kafkaconn.Conn{}
	var errs []error
	for _, name := range sortedNames(used) {
		c, err := kafkaconn.New(cfg, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conns[name] = c
	}
	if err := errors.Join(errs...); err != nil || len(cfg.Clusters) == 0 {
		return conns, err
	}
	acls := cfg.ACLs()
	for _, name := range sortedNames(conns) {
		ctx, cancel := context.WithTimeout(context.Background(), startupCheckTimeout)
		err := conns[name].Check(ctx, kafkaconn.Needs(acls, name))
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return conns, errors.Join(errs...)
}

// newSink makes one Sink per cluster, each allowed exactly the topics the
// config puts on it (the routes' topics, repartition topics on the source
// cluster, and the internal topics on the internal cluster).
func newSink(cfg *config.Config, conns map[string]*kafkaconn.Conn, base kafkasink.Config) (closingSink, error) {
	topics := map[string][]string{}
	add := func(cluster, topic string) {
		for _, t := range topics[cluster] {
			if t == topic {
				return
			}
		}
		topics[cluster] = append(topics[cluster], topic)
	}
	for _, name := range sortedNames(cfg.Vendors) {
		if t := cfg.Vendors[name].Topic; t != "" {
			add(cfg.RouteCluster(name), t)
		}
	}
	for _, name := range sortedNames(cfg.Vendors) {
		// A repartition topic is consumed by the group: the source cluster.
		if kc := cfg.Vendors[name].KAnon; kc != nil && kc.RepartitionTopic != "" {
			add(cfg.SourceCluster(), kc.RepartitionTopic)
		}
	}
	add(cfg.InternalCluster(), cfg.Kafka.DeadLetterTopic)
	add(cfg.InternalCluster(), cfg.Kafka.QuarantineTopic)
	var sinks []*kafkasink.Sink
	for _, name := range sortedNames(topics) {
		c := base
		c.Brokers = conns[name].Brokers
		c.Topics = topics[name]
		if conns[name].Secure() {
			c.Transport = conns[name].Transport()
		}
		s, err := kafkasink.New(c)
		if err != nil {
			for _, s := range sinks {
				_ = s.Close()
			}
			return nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		sinks = append(sinks, s)
	}
	if len(sinks) == 1 {
		return sinks[0], nil
	}
	return kafkasink.NewClusters(sinks...)
}

// printACLs writes, per cluster, the ACLs the worker's principal needs, as
// kafka-acls commands an operator can run (with an admin's
// --command-config). The principal is the cluster's SASL user, which is a
// secret here and so left for the operator to fill in.
func printACLs(w io.Writer, cfg *config.Config) {
	acls := cfg.ACLs()
	fmt.Fprintf(w, "\nACLs the worker needs (deident run), per cluster; nothing else (no Create, no cluster operation):\n")
	cluster := ""
	for _, a := range acls {
		if a.Cluster != cluster {
			cluster = a.Cluster
			cl, _ := cfg.ClusterConfig(cluster)
			principal := "the worker's principal"
			if cl.SASL != nil {
				principal = fmt.Sprintf("the user of clusters.%s.sasl.username", cluster)
			}
			fmt.Fprintf(w, "\ncluster %s (brokers %s; PRINCIPAL is %s):\n", cluster, strings.Join(cl.Brokers, ","), principal)
		}
		ops := ""
		for _, op := range a.Operations {
			ops += " --operation " + op
		}
		fmt.Fprintf(w, "  kafka-acls.sh --bootstrap-server %s --command-config admin.properties --add --allow-principal User:PRINCIPAL%s --%s %s   # %s\n",
			firstBroker(cfg, cluster), ops, a.Resource, shellQuote(a.Name), a.Why)
	}
}

func firstBroker(cfg *config.Config, cluster string) string {
	cl, _ := cfg.ClusterConfig(cluster)
	if len(cl.Brokers) == 0 {
		return "BROKER"
	}
	return cl.Brokers[0]
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe
// characters (topic names are [A-Za-z0-9._-]; group ids may hold more).
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)) {
			safe = false
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// logClusters says which cluster each role uses (names and brokers only).
func logClusters(log *slog.Logger, conns map[string]*kafkaconn.Conn) {
	for _, name := range sortedNames(conns) {
		c := conns[name]
		log.Info("cluster", "name", name, "brokers", c.Brokers, "tls", c.TLS != nil, "sasl", c.SASL != nil)
	}
}
