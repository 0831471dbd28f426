// Package config loads and validates deident's YAML configuration. Load
// reports every problem at once, each prefixed with its key path, and never
// echoes key material: keys are read from files or environment variables and
// held as secret.Key values that print as [REDACTED].
package config

import (
	"time"

	"github.com/deident/deident/internal/secret"
)

// Category is a data category a source declares and a route may receive.
type Category string

const (
	ThreatTelemetry  Category = "threat_telemetry"
	WorkflowMetadata Category = "workflow_metadata"
	Corrections      Category = "corrections"
	UserContent      Category = "user_content"
	Regulated        Category = "regulated"
)

// Categories lists every category, in documentation order.
var Categories = []Category{ThreatTelemetry, WorkflowMetadata, Corrections, UserContent, Regulated}

// NeedsOptIn reports whether a route must justify receiving c.
func (c Category) NeedsOptIn() bool { return c == UserContent || c == Regulated }

// Format is a record encoding.
type Format string

const (
	JSON Format = "json"
	Avro Format = "avro"
)

// Action is what a field rule does to a field.
type Action string

const (
	Keep               Action = "keep"
	Drop               Action = "drop"
	Pseudonymize       Action = "pseudonymize"
	IPPrefixPreserving Action = "ip_prefix_preserving"
	IPTruncate         Action = "ip_truncate"
	EmailSplit         Action = "email_split"
	Generalize         Action = "generalize"
)

// Actions lists every action.
var Actions = []Action{Keep, Drop, Pseudonymize, IPPrefixPreserving, IPTruncate, EmailSplit, Generalize}

// Config is the whole file.
type Config struct {
	// Kafka holds the cluster connection and consumer group; unused by apply.
	Kafka Kafka `mapstructure:"kafka"`
	// Clusters are per-cluster connections (brokers, TLS, SASL, topic
	// allowlist), by name; when empty, kafka.brokers is the one cluster
	// (DefaultCluster), plaintext.
	Clusters map[string]Cluster `mapstructure:"clusters"`
	// Limits bounds what a record may be; zero means the default.
	Limits Limits `mapstructure:"limits"`
	// Sources are the input topics, by name.
	Sources map[string]Source `mapstructure:"sources"`
	// Vendors are the vendor routes, by name.
	Vendors map[string]Route `mapstructure:"vendors"`
	// Acknowledge lists acknowledged material policy changes (see Ack).
	Acknowledge []Ack `mapstructure:"acknowledge"`

	// Dir is the directory of the config file; relative paths resolve from it.
	Dir string `mapstructure:"-"`
}

// Kafka is the connection to the source cluster and the internal topics.
type Kafka struct {
	// Brokers are bootstrap addresses (host:port) of the one plaintext
	// cluster; must be empty when clusters is set.
	Brokers []string `mapstructure:"brokers"`
	// Cluster names the cluster (in clusters) of the source topics and the
	// consumer group; required with more than one cluster.
	Cluster string `mapstructure:"cluster"`
	// InternalCluster names the cluster of the dead-letter and quarantine
	// topics; kafka.cluster when empty.
	InternalCluster string `mapstructure:"internal_cluster"`
	// GroupID is the consumer group; "deident" when empty.
	GroupID string `mapstructure:"group_id"`
	// DeadLetterTopic receives undecodable records; "deident.dead-letter" when empty.
	DeadLetterTopic string `mapstructure:"dead_letter_topic"`
	// QuarantineTopic receives records the gate rejects; "deident.quarantine" when empty.
	QuarantineTopic string `mapstructure:"quarantine_topic"`
	// BatchSize is the producer batch size; 1000 when zero.
	BatchSize int `mapstructure:"batch_size"`
	// BatchTimeout bounds how long a partial batch waits; 50ms when zero.
	BatchTimeout time.Duration `mapstructure:"batch_timeout"`
	// MaxInFlight bounds records decoded but not yet acknowledged (backpressure); 10000 when zero.
	MaxInFlight int `mapstructure:"max_in_flight"`
	// ShutdownGrace bounds draining on SIGTERM; 30s when zero.
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
	// MetricsAddr serves /metrics, /healthz and /readyz; ":9464" when empty, "off" disables.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// SchemaRegistry is the base URL (http or https) of a Confluent-compatible
	// schema registry, which run needs for avro sources (writer schemas by
	// id) and avro routes (output schemas registered under <topic>-value);
	// none when empty. Basic-auth credentials come from the environment
	// (RegistryUserEnv, RegistryPasswordEnv), never from the URL.
	SchemaRegistry string `mapstructure:"schema_registry"`
	// RegistryAuth is filled by Load from the environment.
	RegistryAuth RegistryAuth `mapstructure:"-"`
}

// Limits bounds input records.
type Limits struct {
	// MaxRecordBytes rejects larger records; 1 MiB when zero.
	MaxRecordBytes int `mapstructure:"max_record_bytes"`
}

// Source is one input topic.
type Source struct {
	// Topic is the Kafka topic; file sources leave it empty.
	Topic string `mapstructure:"topic"`
	// Category is the data category of every record in the topic.
	Category Category `mapstructure:"category"`
	// Format is the encoding; json when empty.
	Format Format `mapstructure:"format"`
	// SchemaFile is an Avro schema (.avsc, relative to the config) for a
	// source whose records are plain Avro bodies, without the Confluent
	// header; empty means records carry a registry schema id.
	SchemaFile string `mapstructure:"schema_file"`
	// SchemaText is the text of SchemaFile, read by Load.
	SchemaText string `mapstructure:"-"`
}

// Route is one vendor's policy.
type Route struct {
	// Vendor is the legal recipient's name, for audit; the route name when empty.
	Vendor string `mapstructure:"vendor"`
	// Purpose says what the vendor may use the data for (e.g. security-detection). Required.
	Purpose string `mapstructure:"purpose"`
	// Categories the route may receive. Required.
	Categories []Category `mapstructure:"categories"`
	// OptIn justifies user_content or regulated, by category; required for them.
	OptIn map[string]string `mapstructure:"opt_in"`
	// Topic is the vendor-bound topic. Required for run; apply ignores it.
	Topic string `mapstructure:"topic"`
	// Cluster names the cluster (in clusters) of Topic; kafka.cluster when empty.
	Cluster string `mapstructure:"cluster"`
	// Output is the output encoding; json when empty.
	Output Format `mapstructure:"output"`
	// EventTime is the field path of the event time, used to pick a key epoch; required with more than one key.
	EventTime string `mapstructure:"event_time"`
	// Keys is the route's key ring. At least one.
	Keys []KeyRef `mapstructure:"keys"`
	// CacheEntries bounds the pseudonym cache per worker; 65536 when zero, -1 disables it.
	CacheEntries int `mapstructure:"cache_entries"`
	// Fields are the field rules; fields no rule names are dropped.
	Fields []FieldRule `mapstructure:"fields"`
	// KAnon, when set, holds the route's output in a k-anonymity stage
	// (aggregate windows or delayed records); nil publishes records as they come.
	KAnon *KAnon `mapstructure:"k_anonymity"`
	// Gate configures the re-identification gate every output passes
	// before the vendor sink; every check is on when unset (see Gate).
	Gate Gate `mapstructure:"gate"`
}

// KeyRef says where a key comes from. Exactly one of File and Env.
type KeyRef struct {
	// File is a path to the key, relative to the config file.
	File string `mapstructure:"file"`
	// Env is an environment variable holding the key.
	Env string `mapstructure:"env"`
	// Encoding of the key text: hex (default), base64, or raw (file bytes as they are).
	Encoding string `mapstructure:"encoding"`
	// ValidFrom starts the key's epoch (RFC 3339); zero means from the beginning.
	ValidFrom time.Time `mapstructure:"valid_from"`

	// Key is the material, filled in by Load.
	Key secret.Key `mapstructure:"-"`
	// Retired is set by Load when the key's file (or variable) is gone and
	// the RetiredKeysFile beside it lists the entry: Key is then
	// secret.Retired with the recorded id, and records of the epoch are
	// rejected. The newest epoch cannot be retired.
	Retired bool `mapstructure:"-"`
}

// FieldRule is one field's action and its options.
type FieldRule struct {
	// Path addresses the field: dot-separated names, "[]" for every array element.
	Path string `mapstructure:"path"`
	// Action is what to do with it.
	Action Action `mapstructure:"action"`

	// Pseudonymize and email_split options.

	// Namespace: fields sharing one map a value to the same pseudonym; the path when empty.
	Namespace string `mapstructure:"namespace"`
	// Bits of the HMAC kept; 128 when zero, at least 64, at most 256, a multiple of 8.
	Bits int `mapstructure:"bits"`
	// Encoding of the pseudonym: hex (default) or base64url.
	Encoding string `mapstructure:"encoding"`
	// Prefix is prepended to the pseudonym (e.g. "usr_").
	Prefix string `mapstructure:"prefix"`
	// Normalize before hashing: none (default), lower, trim, email.
	Normalize string `mapstructure:"normalize"`
	// Domain for email_split: keep (default) or pseudonymize.
	Domain string `mapstructure:"domain"`

	// ip_truncate options.

	// IPv4Bits kept of an IPv4 address; 24 when zero.
	IPv4Bits int `mapstructure:"ipv4_bits"`
	// IPv6Bits kept of an IPv6 address; 48 when zero.
	IPv6Bits int `mapstructure:"ipv6_bits"`

	// generalize options: exactly one of these.

	// TimeBucket truncates a timestamp: a duration such as 1m, 1h, or 1d.
	TimeBucket string `mapstructure:"time_bucket"`
	// NumericBucket maps a number to its bucket label.
	NumericBucket *NumericBucket `mapstructure:"numeric_bucket"`
	// Hierarchy maps a value to a level of an ARX-style hierarchy.
	Hierarchy *Hierarchy `mapstructure:"hierarchy"`
	// Map maps values through an explicit table.
	Map *MapTable `mapstructure:"map"`
}

// NumericBucket is either fixed-width buckets or explicit edges.
type NumericBucket struct {
	// Width of each bucket, starting at 0.
	Width float64 `mapstructure:"width"`
	// Edges are ascending bucket boundaries.
	Edges []float64 `mapstructure:"edges"`
}

// Hierarchy is an ARX-style CSV: one line per value, each column a coarser level.
type Hierarchy struct {
	// File is the CSV path, relative to the config file.
	File string `mapstructure:"file"`
	// Level is the column to output (1 = first generalization).
	Level int `mapstructure:"level"`
	// Separator is the column separator; ";" when empty.
	Separator string `mapstructure:"separator"`
	// Default is output for values not in the file; "*" when empty.
	Default string `mapstructure:"default"`
}

// MapTable is an explicit table. A list, not a YAML map, because map keys
// are case-folded by the config loader.
type MapTable struct {
	// Entries map From to To.
	Entries []MapEntry `mapstructure:"entries"`
	// Default is output for values not listed; "other" when empty.
	Default string `mapstructure:"default"`
}

// MapEntry is one row of a MapTable.
type MapEntry struct {
	From string `mapstructure:"from"`
	To   string `mapstructure:"to"`
}
