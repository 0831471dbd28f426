package config

import (
	"cmp"
	"slices"
)

// ACL operations and resource types, as kafka-acls names them.
const (
	OpRead     = "Read"
	OpWrite    = "Write"
	OpDescribe = "Describe"

	ResourceTopic = "topic"
	ResourceGroup = "group"
)

// ACL is one permission the worker's principal needs on one cluster: the
// operations on one literal resource, and why.
type ACL struct {
	// Cluster is the cluster name (DefaultCluster without clusters).
	Cluster string
	// Resource is ResourceTopic or ResourceGroup; Name is the literal name.
	Resource, Name string
	// Operations are kafka-acls operation names (Read, Write, Describe).
	Operations []string
	// Why names the config key the permission serves (sources.edr.topic).
	Why string
}

// aclNeeds lists what each part of the worker needs. Another part (a
// repartition topic, say) adds its function here.
var aclNeeds = []func(*Config) []ACL{sourceACLs, routeACLs, repartitionACLs, internalACLs}

// ACLs returns every permission the worker (deident run) needs, sorted by
// cluster, then as aclNeeds lists them. Nothing beyond these: no Create
// (topics are made by the operator), no cluster-level operation.
func (c *Config) ACLs() []ACL {
	var out []ACL
	for _, f := range aclNeeds {
		out = append(out, f(c)...)
	}
	slices.SortStableFunc(out, func(a, b ACL) int { return cmp.Compare(a.Cluster, b.Cluster) })
	return out
}

func sourceACLs(c *Config) []ACL {
	cl := c.SourceCluster()
	var out []ACL
	for _, name := range sortedKeys(c.Sources) {
		if t := c.Sources[name].Topic; t != "" {
			out = append(out, ACL{cl, ResourceTopic, t, []string{OpRead, OpDescribe}, "sources." + name + ".topic"})
		}
	}
	return append(out, ACL{cl, ResourceGroup, c.Kafka.GroupID, []string{OpRead}, "kafka.group_id"})
}

func routeACLs(c *Config) []ACL {
	var out []ACL
	for _, name := range sortedKeys(c.Vendors) {
		if t := c.Vendors[name].Topic; t != "" {
			out = append(out, ACL{c.RouteCluster(name), ResourceTopic, t, []string{OpWrite, OpDescribe}, "vendors." + name + ".topic"})
		}
	}
	return out
}

func internalACLs(c *Config) []ACL {
	cl := c.InternalCluster()
	return []ACL{
		{cl, ResourceTopic, c.Kafka.DeadLetterTopic, []string{OpWrite, OpDescribe}, "kafka.dead_letter_topic"},
		{cl, ResourceTopic, c.Kafka.QuarantineTopic, []string{OpWrite, OpDescribe}, "kafka.quarantine_topic"},
	}
}

// repartitionACLs: a route's repartition topic is written by its first
// leg and read by its second, in the group, on the source cluster.
func repartitionACLs(c *Config) []ACL {
	var out []ACL
	for _, name := range sortedKeys(c.Vendors) {
		if k := c.Vendors[name].KAnon; k != nil && k.RepartitionTopic != "" {
			out = append(out, ACL{c.SourceCluster(), ResourceTopic, k.RepartitionTopic, []string{OpRead, OpWrite, OpDescribe}, "vendors." + name + ".k_anonymity.repartition_topic"})
		}
	}
	return out
}
