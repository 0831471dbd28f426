package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/deident/deident/internal/fieldpath"
	"github.com/deident/deident/internal/secret"
)

// EnvPrefix prefixes environment overrides: vendors.acme.topic is DEIDENT_VENDORS_ACME_TOPIC.
const EnvPrefix = "DEIDENT"

// Defaults.
const (
	DefaultMaxRecordBytes = 1 << 20
	DefaultCacheEntries   = 1 << 16
	DefaultBits           = 128
)

// Load reads, decodes and validates the YAML file at path. Errors name the
// key path; all are reported, joined.
func Load(path string) (*Config, error) {
	v := newViper()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	return decode(v, dir)
}

// Parse is Load for YAML text; relative paths resolve from dir.
func Parse(yamlText []byte, dir string) (*Config, error) {
	v := newViper()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(string(yamlText))); err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	return decode(v, dir)
}

func newViper() *viper.Viper {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return v
}

func decode(v *viper.Viper, dir string) (*Config, error) {
	bindEnv(v, "", reflect.TypeOf(Config{}), v.AllSettings())
	settings := v.AllSettings()
	if errs := append(credentialsInText(settings), unknownKeys("", settings, reflect.TypeOf(Config{}))...); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var c Config
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToTimeHookFunc(time.RFC3339),
		mapstructure.StringToSliceHookFunc(","),
	))
	if err := v.UnmarshalExact(&c, hook); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	c.Dir = dir
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// bindEnv tells viper about every key the schema has, so that
// DEIDENT_... overrides keys the file leaves out too (viper only consults
// the environment for keys it knows). Map entries (vendors, sources) are the
// ones the file names; list elements are not addressable, a whole list of
// strings is (comma-separated).
func bindEnv(v *viper.Viper, prefix string, t reflect.Type, val any) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeOf(time.Time{}):
		_ = v.BindEnv(prefix)
	case t.Kind() == reflect.Struct:
		m, _ := val.(map[string]any)
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			bindEnv(v, join(prefix, tag), t.Field(i).Type, m[tag])
		}
	case t.Kind() == reflect.Map:
		if m, ok := val.(map[string]any); ok && t.Elem().Kind() != reflect.String {
			for k, e := range m {
				bindEnv(v, join(prefix, k), t.Elem(), e)
			}
		}
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.String && t.Elem().Kind() != reflect.Float64:
		// Lists of records (keys, fields) are set in the file only.
	default:
		_ = v.BindEnv(prefix)
	}
}

// unknownKeys walks the decoded YAML against the struct tags so that a
// misspelt key is reported with its full path.
func unknownKeys(prefix string, val any, t reflect.Type) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			return nil // a type error, reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
		}
		if t == reflect.TypeOf(time.Time{}) {
			return nil
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key", join(prefix, k)))
				continue
			}
			errs = append(errs, unknownKeys(join(prefix, k), m[k], ft)...)
		}
	case reflect.Map:
		if m, ok := val.(map[string]any); ok {
			for _, k := range sortedKeys(m) {
				errs = append(errs, unknownKeys(join(prefix, k), m[k], t.Elem())...)
			}
		}
	case reflect.Slice:
		if l, ok := val.([]any); ok {
			for i, e := range l {
				errs = append(errs, unknownKeys(fmt.Sprintf("%s[%d]", prefix, i), e, t.Elem())...)
			}
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func (c *Config) applyDefaults() {
	if c.Limits.MaxRecordBytes == 0 {
		c.Limits.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.Kafka.GroupID == "" {
		c.Kafka.GroupID = "deident"
	}
	if c.Kafka.DeadLetterTopic == "" {
		c.Kafka.DeadLetterTopic = "deident.dead-letter"
	}
	if c.Kafka.QuarantineTopic == "" {
		c.Kafka.QuarantineTopic = "deident.quarantine"
	}
	if c.Kafka.BatchSize == 0 {
		c.Kafka.BatchSize = 1000
	}
	if c.Kafka.BatchTimeout == 0 {
		c.Kafka.BatchTimeout = 50 * time.Millisecond
	}
	if c.Kafka.MaxInFlight == 0 {
		c.Kafka.MaxInFlight = 10000
	}
	if c.Kafka.ShutdownGrace == 0 {
		c.Kafka.ShutdownGrace = 30 * time.Second
	}
	if c.Kafka.MetricsAddr == "" {
		c.Kafka.MetricsAddr = ":9464"
	}
	for name, s := range c.Sources {
		if s.Format == "" {
			s.Format = JSON
		}
		c.Sources[name] = s
	}
	for name, r := range c.Vendors {
		if r.Vendor == "" {
			r.Vendor = name
		}
		if r.Output == "" {
			r.Output = JSON
		}
		if r.CacheEntries == 0 {
			r.CacheEntries = DefaultCacheEntries
		}
		r.Gate = r.Gate.WithDefaults()
		if r.KAnon != nil {
			r.KAnon.ApplyDefaults(r.EventTime)
		}
		for i := range r.Keys {
			if r.Keys[i].Encoding == "" {
				r.Keys[i].Encoding = "hex"
			}
		}
		for i := range r.Fields {
			f := &r.Fields[i]
			switch f.Action {
			case Pseudonymize, EmailSplit:
				if f.Bits == 0 {
					f.Bits = DefaultBits
				}
				if f.Encoding == "" {
					f.Encoding = "hex"
				}
				if f.Normalize == "" {
					f.Normalize = "none"
				}
				if f.Namespace == "" {
					f.Namespace = f.Path
				}
				if f.Action == EmailSplit && f.Domain == "" {
					f.Domain = "keep"
				}
			case IPTruncate:
				if f.IPv4Bits == 0 {
					f.IPv4Bits = 24
				}
				if f.IPv6Bits == 0 {
					f.IPv6Bits = 48
				}
			}
		}
		c.Vendors[name] = r
	}
}

// Validate checks everything that can be checked without compiling the
// policy, and reads the keys. All errors are returned, joined.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if c.Limits.MaxRecordBytes < 0 {
		add("limits.max_record_bytes", "must be positive, got %d", c.Limits.MaxRecordBytes)
	}
	errs = append(errs, c.Kafka.validateRegistry()...)
	errs = append(errs, c.validateAcks()...)
	errs = append(errs, c.validateClusters()...)
	for _, name := range sortedKeys(c.Sources) {
		s := c.Sources[name]
		p := "sources." + name
		if !slices.Contains(Categories, s.Category) {
			add(p+".category", "unknown category %q (want one of %s)", s.Category, list(Categories))
		}
		if s.Format != JSON && s.Format != Avro {
			add(p+".format", "unknown format %q (want json or avro)", s.Format)
		}
		if s.SchemaFile != "" {
			if s.Format != Avro {
				add(p+".schema_file", "only for format avro, but the format is %s", s.Format)
			}
			path := s.SchemaFile
			if !filepath.IsAbs(path) {
				path = filepath.Join(c.Dir, path)
			}
			b, err := readSmall(path, maxSchemaBytes)
			if err != nil {
				add(p+".schema_file", "%v", err)
			}
			s.SchemaText = string(b)
			c.Sources[name] = s
		}
	}
	if len(c.Vendors) == 0 {
		add("vendors", "at least one vendor route is required")
	}
	type keyUse struct {
		path string
		key  secret.Key
	}
	var keys []keyUse
	for _, name := range sortedKeys(c.Vendors) {
		r := c.Vendors[name]
		p := "vendors." + name
		if strings.TrimSpace(r.Purpose) == "" {
			add(p+".purpose", "required: say what the vendor may use the data for")
		}
		if len(r.Categories) == 0 {
			add(p+".categories", "at least one category is required")
		}
		for i, cat := range r.Categories {
			if !slices.Contains(Categories, cat) {
				add(fmt.Sprintf("%s.categories[%d]", p, i), "unknown category %q (want one of %s)", cat, list(Categories))
				continue
			}
			if cat.NeedsOptIn() && strings.TrimSpace(r.OptIn[string(cat)]) == "" {
				add(p+".opt_in."+string(cat), "%s needs an explicit opt_in with a written justification", cat)
			}
		}
		for _, cat := range sortedKeys(r.OptIn) {
			if !slices.Contains(r.Categories, Category(cat)) {
				add(p+".opt_in."+cat, "opt_in for a category the route does not list")
			}
		}
		if r.Output != JSON && r.Output != Avro {
			add(p+".output", "unknown format %q (want json or avro)", r.Output)
		}
		if r.CacheEntries < -1 {
			add(p+".cache_entries", "must be positive, or -1 to disable, got %d", r.CacheEntries)
		}
		if len(r.Keys) == 0 {
			add(p+".keys", "at least one key is required")
		}
		if len(r.Keys) > 1 && r.EventTime == "" {
			add(p+".event_time", "required when the route has more than one key epoch")
		}
		if r.EventTime != "" {
			if _, err := fieldpath.Parse(r.EventTime); err != nil {
				add(p+".event_time", "%v", err)
			}
		}
		epochs := map[time.Time]int{}
		for i := range r.Keys {
			kp := fmt.Sprintf("%s.keys[%d]", p, i)
			k := &r.Keys[i]
			if j, dup := epochs[k.ValidFrom]; dup {
				add(kp+".valid_from", "same epoch start as keys[%d]", j)
			}
			epochs[k.ValidFrom] = i
			if key, ok, err := k.retired(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", kp, err))
				continue
			} else if ok {
				k.Key, k.Retired = key, true
				continue
			}
			key, err := k.read(c.Dir)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", kp, err))
				continue
			}
			k.Key = key
			keys = append(keys, keyUse{kp, key})
		}
		sort.SliceStable(r.Keys, func(i, j int) bool { return r.Keys[i].ValidFrom.Before(r.Keys[j].ValidFrom) })
		if n := len(r.Keys); n > 0 && r.Keys[n-1].Retired {
			add(p+".keys", "the newest key epoch is retired (its key is gone); add a new key")
		}
		errs = append(errs, validateFields(p, r.Fields)...)
		errs = append(errs, ValidateKAnon(p, r.KAnon, r.Fields)...)
		errs = append(errs, r.Gate.Validate(p+".gate")...)
		c.Vendors[name] = r
	}
	for i := range keys {
		for j := range i {
			if keys[i].key.Equal(keys[j].key) && vendorOf(keys[i].path) != vendorOf(keys[j].path) {
				add(keys[i].path, "the same key is used by %s; every vendor needs its own keys", keys[j].path)
			}
		}
	}
	return errors.Join(errs...)
}

func vendorOf(keyPath string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(keyPath, "vendors."), ".keys[")
	return p
}

func list[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// read loads the key material. Errors never contain it.
func (k KeyRef) read(dir string) (secret.Key, error) {
	var text []byte
	switch {
	case k.File != "" && k.Env != "":
		return secret.Key{}, errors.New("give file or env, not both")
	case k.File != "":
		path := k.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return secret.Key{}, fmt.Errorf("file: reading key: %w", err)
		}
		text = b
	case k.Env != "":
		val, ok := os.LookupEnv(k.Env)
		if !ok || val == "" {
			return secret.Key{}, fmt.Errorf("env: %s is not set", k.Env)
		}
		text = []byte(val)
	default:
		return secret.Key{}, errors.New("a key needs file or env (keys never go in the config text)")
	}
	var raw []byte
	switch k.Encoding {
	case "hex":
		t := strings.TrimSpace(string(text))
		b, err := hex.DecodeString(t)
		if err != nil {
			return secret.Key{}, errors.New("encoding: key is not valid hex")
		}
		raw = b
	case "base64":
		t := strings.TrimSpace(string(text))
		b, err := base64.StdEncoding.DecodeString(t)
		if err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(t); err != nil {
				return secret.Key{}, errors.New("encoding: key is not valid base64")
			}
		}
		raw = b
	case "raw":
		raw = text
	default:
		return secret.Key{}, fmt.Errorf("encoding: unknown key encoding %q (want hex, base64 or raw)", k.Encoding)
	}
	if len(raw) < secret.MinKeyBytes {
		return secret.Key{}, fmt.Errorf("key is %d bytes, must be at least %d", len(raw), secret.MinKeyBytes)
	}
	return secret.NewKey(raw), nil
}

func validateFields(route string, fields []FieldRule) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	seen := map[string]int{}
	type nsShape struct {
		bits              int
		encoding, prefix  string
		normalize, action string
		at                int
	}
	namespaces := map[string]nsShape{}
	for i, f := range fields {
		p := fmt.Sprintf("%s.fields[%d]", route, i)
		if _, err := fieldpath.Parse(f.Path); err != nil {
			add(p+".path", "%v", err)
		}
		if j, dup := seen[f.Path]; dup {
			add(p+".path", "%q already has a rule at fields[%d]", f.Path, j)
		}
		seen[f.Path] = i
		if !slices.Contains(Actions, f.Action) {
			add(p+".action", "unknown action %q (want one of %s)", f.Action, list(Actions))
			continue
		}
		hashing := f.Action == Pseudonymize || f.Action == EmailSplit
		if !hashing && (f.Namespace != "" || f.Bits != 0 || f.Encoding != "" || f.Prefix != "" || f.Normalize != "") {
			add(p, "namespace, bits, encoding, prefix and normalize apply only to pseudonymize and email_split")
		}
		if f.Action != EmailSplit && f.Domain != "" {
			add(p+".domain", "applies only to email_split")
		}
		if f.Action != IPTruncate && (f.IPv4Bits != 0 || f.IPv6Bits != 0) {
			add(p, "ipv4_bits and ipv6_bits apply only to ip_truncate")
		}
		generalizers := 0
		for _, set := range []bool{f.TimeBucket != "", f.NumericBucket != nil, f.Hierarchy != nil, f.Map != nil} {
			if set {
				generalizers++
			}
		}
		if f.Action != Generalize && generalizers > 0 {
			add(p, "time_bucket, numeric_bucket, hierarchy and map apply only to generalize")
		}
		switch f.Action {
		case Pseudonymize, EmailSplit:
			if f.Bits < 64 || f.Bits > 256 || f.Bits%8 != 0 {
				add(p+".bits", "must be a multiple of 8 from 64 to 256, got %d", f.Bits)
			}
			if f.Encoding != "hex" && f.Encoding != "base64url" {
				add(p+".encoding", "unknown encoding %q (want hex or base64url)", f.Encoding)
			}
			if !slices.Contains([]string{"none", "lower", "trim", "email"}, f.Normalize) {
				add(p+".normalize", "unknown normalization %q (want none, lower, trim or email)", f.Normalize)
			}
			if f.Action == EmailSplit && f.Domain != "keep" && f.Domain != "pseudonymize" {
				add(p+".domain", "must be keep or pseudonymize, got %q", f.Domain)
			}
			if strings.ContainsAny(f.Prefix, "\"\\") {
				add(p+".prefix", "must not contain quotes or backslashes")
			}
			shape := nsShape{f.Bits, f.Encoding, f.Prefix, f.Normalize, string(f.Action), i}
			if prev, ok := namespaces[f.Namespace]; ok {
				prev.at, shape.at = 0, 0
				if prev != shape {
					add(p+".namespace", "namespace %q is used with other options at fields[%d]; fields sharing a namespace need the same action, bits, encoding, prefix and normalize", f.Namespace, namespaces[f.Namespace].at)
				}
			} else {
				namespaces[f.Namespace] = shape
			}
		case IPTruncate:
			if f.IPv4Bits < 0 || f.IPv4Bits > 32 {
				add(p+".ipv4_bits", "must be 0 to 32, got %d", f.IPv4Bits)
			}
			if f.IPv6Bits < 0 || f.IPv6Bits > 128 {
				add(p+".ipv6_bits", "must be 0 to 128, got %d", f.IPv6Bits)
			}
		case Generalize:
			if generalizers != 1 {
				add(p, "generalize needs exactly one of time_bucket, numeric_bucket, hierarchy, map; got %d", generalizers)
			}
			if f.TimeBucket != "" {
				if _, err := ParseBucket(f.TimeBucket); err != nil {
					add(p+".time_bucket", "%v", err)
				}
			}
			if nb := f.NumericBucket; nb != nil {
				switch {
				case nb.Width != 0 && len(nb.Edges) > 0:
					add(p+".numeric_bucket", "give width or edges, not both")
				case nb.Width < 0 || (nb.Width == 0 && len(nb.Edges) == 0):
					add(p+".numeric_bucket.width", "must be positive")
				case len(nb.Edges) > 0 && !slices.IsSorted(nb.Edges):
					add(p+".numeric_bucket.edges", "must be ascending")
				}
			}
			if h := f.Hierarchy; h != nil {
				if h.File == "" {
					add(p+".hierarchy.file", "required")
				}
				if h.Level < 1 {
					add(p+".hierarchy.level", "must be at least 1, got %d", h.Level)
				}
				if len(h.Separator) > 1 {
					add(p+".hierarchy.separator", "must be one character")
				}
			}
			if m := f.Map; m != nil && len(m.Entries) == 0 {
				add(p+".map.entries", "at least one entry is required")
			}
		}
	}
	return errs
}

// ParseBucket parses a time bucket: a Go duration of at least one second that
// divides a day evenly, or "Nd" for whole days.
func ParseBucket(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := time.ParseDuration(n + "h")
		if err != nil {
			return 0, fmt.Errorf("invalid bucket %q", s)
		}
		d = days * 24
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("invalid bucket %q (want e.g. 1m, 1h, 1d)", s)
		}
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("bucket %q must be whole seconds, at least 1s", s)
	}
	if d < 24*time.Hour && (24*time.Hour)%d != 0 {
		return 0, fmt.Errorf("bucket %q must divide a day evenly", s)
	}
	return d, nil
}

// maxSchemaBytes bounds a source's schema file: a schema is a few KiB, and
// a path to a device or a huge file must not stall the loader.
const maxSchemaBytes = 1 << 20

// readSmall reads the file at path, refusing one over max bytes.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
