package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testdata = "../../configs/testdata"

func TestGoodConfigs(t *testing.T) {
	t.Setenv("DEIDENT_TEST_KEY_B", strings.Repeat("cd", 32))
	files, _ := filepath.Glob(filepath.Join(testdata, "*.good.yaml"))
	if len(files) == 0 {
		t.Fatal("no good configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			for name, r := range c.Vendors {
				for i, k := range r.Keys {
					if k.Key.Len() < 32 {
						t.Errorf("%s key %d not loaded", name, i)
					}
				}
			}
		})
	}
}

func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testdata, "*.bad.yaml"))
	if len(files) == 0 {
		t.Fatal("no bad configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.Split(string(text), "\n") {
				if e, ok := strings.CutPrefix(line, "# error: "); ok {
					want = append(want, e)
				}
			}
			if len(want) == 0 {
				t.Fatal("bad config without # error: lines")
			}
			_, err = Load(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing error %q in:\n%v", w, err)
				}
			}
			for _, k := range []string{"1111111111", "2222222222", "3333333333"} {
				if strings.Contains(err.Error(), k) {
					t.Errorf("error echoes key material:\n%v", err)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Vendors["acme"]
	f := r.Fields[0]
	if f.Bits != 128 || f.Encoding != "hex" || f.Namespace != "actor.user.name" || f.Normalize != "none" {
		t.Errorf("pseudonymize defaults: %+v", f)
	}
	if r.Output != JSON || r.CacheEntries != DefaultCacheEntries || r.Vendor != "acme" {
		t.Errorf("route defaults: %+v", r)
	}
	if c.Limits.MaxRecordBytes != DefaultMaxRecordBytes || c.Kafka.GroupID != "deident" {
		t.Errorf("top-level defaults: %+v %+v", c.Limits, c.Kafka)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("DEIDENT_TEST_KEY_B", strings.Repeat("cd", 32))
	t.Setenv("DEIDENT_VENDORS_ACME_PURPOSE", "fraud-detection")
	t.Setenv("DEIDENT_LIMITS_MAX_RECORD_BYTES", "4096")
	t.Setenv("DEIDENT_KAFKA_BATCH_TIMEOUT", "1s")
	t.Setenv("DEIDENT_KAFKA_BROKERS", "h1:9092,h2:9092")
	c, err := Load(filepath.Join(testdata, "full.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Vendors["acme"].Purpose != "fraud-detection" {
		t.Errorf("purpose = %q", c.Vendors["acme"].Purpose)
	}
	if c.Limits.MaxRecordBytes != 4096 || c.Kafka.BatchTimeout != time.Second {
		t.Errorf("limits %+v, batch timeout %v", c.Limits, c.Kafka.BatchTimeout)
	}
	if fmt.Sprint(c.Kafka.Brokers) != "[h1:9092 h2:9092]" {
		t.Errorf("brokers = %v", c.Kafka.Brokers)
	}
	// Keys the file leaves out can be set too.
	t.Setenv("DEIDENT_VENDORS_LLM_CACHE_ENTRIES", "-1")
	t.Setenv("DEIDENT_KAFKA_GROUP_ID", "from-env")
	if c, err = Load(filepath.Join(testdata, "full.good.yaml")); err != nil {
		t.Fatal(err)
	}
	if c.Vendors["llm"].CacheEntries != -1 || c.Kafka.GroupID != "from-env" {
		t.Errorf("override of absent keys: cache_entries %d, group_id %q", c.Vendors["llm"].CacheEntries, c.Kafka.GroupID)
	}
	// A bad override is reported with its key path.
	t.Setenv("DEIDENT_VENDORS_ACME_FIELDS", "")
	t.Setenv("DEIDENT_LIMITS_MAX_RECORD_BYTES", "-5")
	if _, err := Load(filepath.Join(testdata, "full.good.yaml")); err == nil || !strings.Contains(err.Error(), "limits.max_record_bytes: must be positive") {
		t.Errorf("bad override: %v", err)
	}
}

func TestKeysSortedByEpochAndPrintRedacted(t *testing.T) {
	t.Setenv("DEIDENT_TEST_KEY_B", strings.Repeat("cd", 32))
	c, err := Load(filepath.Join(testdata, "full.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	keys := c.Vendors["acme"].Keys
	if !keys[0].ValidFrom.IsZero() || keys[1].ValidFrom.Year() != 2027 {
		t.Errorf("epochs: %v %v", keys[0].ValidFrom, keys[1].ValidFrom)
	}
	if s := fmt.Sprintf("%+v", c); strings.Contains(s, "cdcdcdcd") || !strings.Contains(s, "[REDACTED]") {
		t.Error("config printing shows key material")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"vendors: {a: {purpose: p}}", "sources: [1,2]", "kafka: {batch_timeout: x}", ":", "vendors:\n  a:\n    fields: [{path: '[]'}]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = Parse([]byte(s), t.TempDir()) // must not panic
	})
}
