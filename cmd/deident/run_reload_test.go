package main

import (
	"bytes"
	"cmp"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/internal/kafkatest"
	"github.com/deident/deident/transforms/route"
)

// reloadFixture is configs/deident.yaml copied into a directory of its own
// (the demo keys beside it), with the test's brokers, topics and group set
// through DEIDENT_ variables, so that the file can be rewritten and
// reloaded while the environment stays.
type reloadFixture struct {
	path    string
	text    []byte // the file as it started
	brokers []string
	cfg     *config.Config
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	brokers := kafkatest.Brokers(t)
	dir := t.TempDir()
	text, err := os.ReadFile("../../configs/deident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := filepath.Abs("../../configs/demo-keys")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(keys, filepath.Join(dir, "demo-keys")); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(keys, "flowai.key"))
	if err != nil {
		t.Fatal(err)
	}
	topic := func(name string, partitions int) string {
		tp := kafkatest.Topic(t, name)
		kafkatest.CreateTopic(t, brokers, tp, partitions)
		return tp
	}
	for k, v := range map[string]string{
		"DEIDENT_KEY_FLOWAI":              strings.TrimSpace(string(key)),
		"DEIDENT_KAFKA_BROKERS":           strings.Join(brokers, ","),
		"DEIDENT_KAFKA_GROUP_ID":          kafkatest.Topic(t, "deident-group"),
		"DEIDENT_KAFKA_DEAD_LETTER_TOPIC": topic("dead-letter", 1),
		"DEIDENT_KAFKA_QUARANTINE_TOPIC":  topic("quarantine", 1),
		"DEIDENT_KAFKA_BATCH_TIMEOUT":     "5ms",
		"DEIDENT_KAFKA_METRICS_ADDR":      "off",
		"DEIDENT_KAFKA_SHUTDOWN_GRACE":    "10s",
		"DEIDENT_SOURCES_EDR_TOPIC":       topic("edr", testPartitions),
		"DEIDENT_SOURCES_WORKFLOW_TOPIC":  topic("workflow", testPartitions),
		"DEIDENT_VENDORS_ACME_MDR_TOPIC":  topic("vendor-acme-mdr", testPartitions),
		"DEIDENT_VENDORS_FLOWAI_TOPIC":    topic("vendor-flowai", testPartitions),
		"DEIDENT_KAFKA_MAX_IN_FLIGHT":     "500",
	} {
		t.Setenv(k, v)
	}
	f := &reloadFixture{path: filepath.Join(dir, "deident.yaml"), text: text, brokers: brokers}
	f.write(t, text)
	if f.cfg, err = config.Load(f.path); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *reloadFixture) write(t *testing.T, text []byte) {
	t.Helper()
	if err := os.WriteFile(f.path, text, 0o644); err != nil {
		t.Fatal(err)
	}
}

// edit returns the starting file with old replaced by new (which must occur).
func (f *reloadFixture) edit(t *testing.T, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(f.text, []byte(old)) {
		t.Fatalf("configs/deident.yaml no longer has %q: update the test", old)
	}
	return bytes.Replace(f.text, []byte(old), []byte(new), 1)
}

// routesOf compiles the routes of the config at path.
func routesOf(t *testing.T, path string) map[string]*route.Route {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := route.CompileAll(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// reloader runs w's reload loop on an injected trigger (no debounce).
type reloader struct {
	trig  chan struct{}
	plans chan *reloadPlan
}

func startReloader(t *testing.T, w *worker, path string) *reloader {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &reloader{trig: make(chan struct{}), plans: make(chan *reloadPlan, 1)}
	go w.reloadLoop(ctx, path, r.trig, 0, func(p *reloadPlan) { r.plans <- p })
	return r
}

func (r *reloader) reload(t *testing.T) *reloadPlan {
	t.Helper()
	r.trig <- struct{}{}
	select {
	case p := <-r.plans:
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("no reload within 20s")
		return nil
	}
}

// acmeOutputs reads the acme-mdr topic and checks every record against
// the input it names: its value must be what the routes of the policy its
// deident-policy header names make of that input, with that key id. It
// returns the policy version of each input (by deident-src) and fails on
// an input with two outputs.
func acmeOutputs(t *testing.T, f *reloadFixture, policies ...map[string]*route.Route) map[string]string {
	t.Helper()
	inputs := map[string][]byte{}
	for _, m := range readAll(t, f.brokers, f.cfg.Sources["edr"].Topic, testPartitions) {
		inputs[srcOf(m)] = m.Value
	}
	byVersion := map[string]*route.Applier{}
	for _, rs := range policies {
		byVersion[rs["acme-mdr"].Version] = rs["acme-mdr"].NewApplier()
	}
	version := map[string]string{}
	for _, m := range readAll(t, f.brokers, f.cfg.Vendors["acme-mdr"].Topic, testPartitions) {
		h := headers(m)
		src := h["deident-src"]
		if _, dup := version[src]; dup {
			t.Fatalf("%s: two outputs", src)
		}
		a := byVersion[h["deident-policy"]]
		if a == nil {
			t.Fatalf("%s: policy %s is none of the test's", src, h["deident-policy"])
		}
		want, err := a.Apply(nil, inputs[src])
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if !bytes.Equal(m.Value, want) || h["deident-key"] != a.KeyID() {
			t.Fatalf("%s: output is not what policy %s makes of its input (processed half under another?)\n got %s\nwant %s", src, h["deident-policy"], m.Value, want)
		}
		version[src] = h["deident-policy"]
	}
	return version
}

// offsetsOf splits "topic/partition/offset".
func offsetsOf(t *testing.T, src string) (string, int64) {
	t.Helper()
	i := strings.LastIndexByte(src, '/')
	off, err := strconv.ParseInt(src[i+1:], 10, 64)
	if err != nil {
		t.Fatalf("deident-src %q", src)
	}
	return src[:i], off
}

// A valid reload while records stream in: the records consumed before it
// are the old policy's, those produced after it the new one's, the ones in
// between one or the other, each wholly (value, key id and policy header
// agree), never both; in each partition the new version follows the old.
// Nothing is lost or doubled, and the metrics name the new version.
func TestReloadApplied(t *testing.T) {
	f := newReloadFixture(t)
	rw := startWorker(t, f.cfg)
	rl := startReloader(t, rw.w, f.path)
	oldRoutes := routesOf(t, f.path)
	edr := f.cfg.Sources["edr"].Topic

	const n, mid = 300, 5000
	batches := [3][][]byte{generate(gen.Threat, 81, n), generate(gen.Threat, 82, mid), generate(gen.Threat, 83, n)}
	batchOf := map[string]int{}
	for i, b := range batches {
		for _, v := range b {
			batchOf[string(v)] = i
		}
	}
	produce(t, f.brokers, edr, batches[0])
	waitUntil(t, "the first batch consumed", 20*time.Second, func() bool {
		return rw.w.runner.Counters().Worker.Consumed.Load() >= n
	})
	// Not material: one field less for acme-mdr.
	f.write(t, f.edit(t, "{path: dst_endpoint.port, action: keep}", "{path: dst_endpoint.port, action: drop}"))
	newRoutes := routesOf(t, f.path)
	oldV, newV := oldRoutes["acme-mdr"].Version, newRoutes["acme-mdr"].Version
	if oldV == newV {
		t.Fatal("the edit did not change the policy version")
	}
	during := make(chan struct{})
	go func() {
		defer close(during)
		produce(t, f.brokers, edr, batches[1])
	}()
	waitUntil(t, "records of the second batch flowing", 20*time.Second, func() bool {
		return rw.w.runner.Counters().Worker.Consumed.Load() >= n+100
	})
	p := rl.reload(t)
	<-during
	if p.Result != reloadApplied || p.Versions["acme-mdr"] != [2]string{oldV, newV} {
		t.Fatalf("reload %s %v %v, want applied acme-mdr %s -> %s", p.Result, p.Reasons, p.Versions, oldV, newV)
	}
	produce(t, f.brokers, edr, batches[2])
	waitCommitted(t, f.cfg, 30*time.Second)
	rw.shutdown(t)

	version := acmeOutputs(t, f, oldRoutes, newRoutes)
	if len(version) != 2*n+mid {
		t.Fatalf("%d acme-mdr outputs for %d inputs", len(version), 2*n+mid)
	}
	// Per partition in offset order: old, then new, never back.
	type rec struct {
		off int64
		v   string
	}
	parts := map[string][]rec{}
	for src, v := range version {
		p, off := offsetsOf(t, src)
		parts[p] = append(parts[p], rec{off, v})
	}
	for p, rs := range parts {
		slices.SortFunc(rs, func(a, b rec) int { return cmp.Compare(a.off, b.off) })
		seenNew := false
		for _, r := range rs {
			if r.v == newV {
				seenNew = true
			} else if seenNew {
				t.Fatalf("%s/%d: old policy after the new one", p, r.off)
			}
		}
	}
	// The first batch was consumed before the reload, the last produced after it.
	perBatch := [3]map[string]int{{}, {}, {}}
	for _, m := range readAll(t, f.brokers, edr, testPartitions) {
		b, ok := batchOf[string(m.Value)]
		if !ok {
			t.Fatalf("%s: an input of no batch", srcOf(m))
		}
		v := version[srcOf(m)]
		perBatch[b][v]++
		if b == 0 && v != oldV || b == 2 && v != newV {
			t.Fatalf("%s (batch %d) under %s", srcOf(m), b, v)
		}
	}
	t.Logf("outputs per policy: before the reload %v, during %v, after %v", perBatch[0], perBatch[1], perBatch[2])

	srv := httptest.NewServer(rw.w.httpHandler())
	defer srv.Close()
	_, text := scrape(t, srv.URL+"/metrics")
	m := metricValues(t, text)
	if m[`deident_config_reloads_total{result="applied"}`] != 1 || m[`deident_config_reloads_total{result="refused"}`] != 0 {
		t.Errorf("reload counters: %v applied, %v refused", m[`deident_config_reloads_total{result="applied"}`], m[`deident_config_reloads_total{result="refused"}`])
	}
	if m[`deident_policy_info{route="acme-mdr",version="`+newV+`"}`] != 1 {
		t.Errorf("deident_policy_info does not name %s for acme-mdr:\n%s", newV, grepLines(text, "deident_policy_info"))
	}
}

func grepLines(text, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Refused reloads leave the running policy in place: an invalid file, an
// unacknowledged material change (acme-mdr would export a process id) and a
// change that needs a restart are each refused with their reason and
// counted, and the records after each are still the old policy's. Then the
// file acknowledges the material change at its new policy version, and the
// same change is applied.
func TestReloadRefused(t *testing.T) {
	f := newReloadFixture(t)
	rw := startWorker(t, f.cfg)
	rl := startReloader(t, rw.w, f.path)
	oldRoutes := routesOf(t, f.path)
	oldV := oldRoutes["acme-mdr"].Version
	edr := f.cfg.Sources["edr"].Topic

	// Material, and the gate lets it through (file.path would carry user names).
	material := f.edit(t, "{path: actor.process.pid, action: drop}", "{path: actor.process.pid, action: keep}")
	f.write(t, material)
	newRoutes := routesOf(t, f.path)
	newV := newRoutes["acme-mdr"].Version

	const n = 200
	seed := uint64(90)
	consumed := uint64(0)
	batch := func() {
		t.Helper()
		seed++
		consumed += n
		produce(t, f.brokers, edr, generate(gen.Threat, seed, n))
		waitUntil(t, "the batch consumed", 20*time.Second, func() bool {
			return rw.w.runner.Counters().Worker.Consumed.Load() >= consumed
		})
	}
	batch()
	for _, tc := range []struct {
		name   string
		text   []byte
		result reloadResult
		reason string
	}{
		{"invalid yaml", []byte("vendors: [\n"), reloadInvalid, "yaml"},
		{"invalid config", f.edit(t, "{path: file.path, action: drop}", "{path: file.path, action: hash}"), reloadInvalid, `vendors.acme-mdr.fields[18].action: unknown action "hash"`},
		{"material, not acknowledged", material, reloadRefused, "vendors.acme-mdr.fields[actor.process.pid].action: material change (field newly exported) not acknowledged for policy " + newV},
		{"acknowledged for another version", append(material, []byte("acknowledge:\n  - {route: acme-mdr, policy: p0000000000000000, reason: stale}\n")...), reloadRefused, "not acknowledged for policy " + newV},
		{"needs a restart", f.edit(t, "max_record_bytes: 1048576", "max_record_bytes: 2097152"), reloadRefused, "limits.max_record_bytes: changed: needs a restart"},
		{"route added", append(bytes.Clone(f.text), []byte("  beta:\n    purpose: p\n    categories: [threat_telemetry]\n    topic: beta\n    keys: [{file: demo-keys/bench.key}]\n    fields: []\n")...), reloadRefused, "vendors.beta: route added: needs a restart"},
	} {
		f.write(t, tc.text)
		p := rl.reload(t)
		if p.Result != tc.result || !strings.Contains(strings.Join(p.Reasons, "\n"), tc.reason) {
			t.Errorf("%s: reload %s %q, want %s naming %q", tc.name, p.Result, p.Reasons, tc.result, tc.reason)
		}
		if v := rw.w.runner.Versions()["acme-mdr"]; v != oldV {
			t.Fatalf("%s: the runner runs %s after a refused reload", tc.name, v)
		}
		batch()
	}
	refusedAt := rw.w.runner.Counters().Worker.Consumed.Load()

	// The file acknowledges the change at its new version: applied.
	f.write(t, append(bytes.Clone(material), []byte("acknowledge:\n  - {route: acme-mdr, policy: "+newV+", reason: \"process ids are needed for detections\"}\n")...))
	if p := rl.reload(t); p.Result != reloadApplied || p.Acked["acme-mdr"] != "process ids are needed for detections" {
		t.Fatalf("acknowledged reload: %s %q %v", p.Result, p.Reasons, p.Acked)
	}
	batch()
	waitCommitted(t, f.cfg, 30*time.Second)
	rw.shutdown(t)

	version := acmeOutputs(t, f, oldRoutes, newRoutes)
	if want := int(consumed); len(version) != want {
		t.Fatalf("%d acme-mdr outputs for %d inputs", len(version), want)
	}
	perPolicy := map[string]int{}
	for _, m := range readAll(t, f.brokers, edr, testPartitions) {
		perPolicy[version[srcOf(m)]]++
	}
	if perPolicy[oldV] != int(refusedAt) || perPolicy[newV] != n {
		t.Errorf("outputs per policy %v, want %d under %s (before the acknowledged reload) and %d under %s", perPolicy, refusedAt, oldV, n, newV)
	}
	srv := httptest.NewServer(rw.w.httpHandler())
	defer srv.Close()
	_, text := scrape(t, srv.URL+"/metrics")
	m := metricValues(t, text)
	for result, want := range map[string]float64{"applied": 1, "refused": 4, "invalid": 2} {
		if got := m[`deident_config_reloads_total{result="`+result+`"}`]; got != want {
			t.Errorf("deident_config_reloads_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}
