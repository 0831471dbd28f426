//go:build faults

package reliability

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/pipeline"
	"github.com/deident/deident/transforms/route"
)

// 1. The broker is stopped (SIGTERM to its JVM, state kept) for 10 s
// mid-stream and started again on the same state. The worker's producer
// gives up after about 6 s and the worker exits non-zero without committing
// past unacknowledged outputs; the test, as an orchestrator, starts a
// replacement. Nothing is lost; duplicates are byte-identical.
func TestFaultBrokerOutage(t *testing.T) {
	s := newScenario(t, scenarioOptions{maxInFlight: 500})
	s.supervise = true
	s.worker("worker-1")
	st := s.stream(6000, 300, 150*time.Millisecond, 100)
	s.waitFor("1500 records consumed", 30*time.Second, func() bool { return s.consumed() >= 1500 })
	before := s.consumed()
	took := s.b.stopKeepState()
	down := time.Now()
	t.Logf("broker stopped (SIGTERM, exited in %v) after %.0f records consumed", took.Round(time.Millisecond), before)
	time.Sleep(10 * time.Second)
	t.Logf("broker down for %v; restarting it on its state", time.Since(down).Round(100*time.Millisecond))
	ready := s.b.restart(s.sourceTopics()...)
	t.Logf("broker ready %v after restart (downtime %v)", ready.Round(100*time.Millisecond), time.Since(down).Round(100*time.Millisecond))
	st.wait(s)
	s.finish(s.routes)
	t.Logf("worker replacements after the outage: %d", s.restarts)
}

// 2. One of three replicas is killed with SIGKILL mid-stream and restarted
// later: its uncommitted records are re-delivered by the partitions' next
// owners, byte-identical with the same deident-src; nothing is lost.
func TestFaultReplicaSIGKILL(t *testing.T) {
	s := newScenario(t, scenarioOptions{maxInFlight: 300})
	ws := []*proc{s.worker("replica-1"), s.worker("replica-2"), s.worker("replica-3")}
	s.waitFor("three replicas sharing the six partitions", 40*time.Second, func() bool {
		total := 0.0
		for _, w := range ws {
			n := w.metric("deident_assigned_partitions")
			if n == 0 {
				return false
			}
			total += n
		}
		return total == 2*partitions
	})
	st := s.stream(8000, 400, 150*time.Millisecond, 200)
	victim := ws[1]
	s.waitFor("the victim to consume 1000 records", 40*time.Second, func() bool {
		return victim.metric("deident_records_consumed_total") >= 1000
	})
	m := victim.metrics()
	victim.kill(t)
	t.Logf("SIGKILL %s (pid %d) at consumed %.0f, acked %.0f, in flight %.0f", victim.name, victim.pid(), m["deident_records_consumed_total"], m["deident_outputs_acked_total"], m["deident_records_in_flight"])
	time.Sleep(10 * time.Second)
	s.worker("replica-2.restarted")
	st.wait(s)
	rep := s.finish(s.routes)
	if rep.duplicates == 0 {
		t.Logf("no duplicates: the victim had nothing uncommitted when killed (re-delivery not exercised)")
	}
}

// 3. A vendor topic rejects writes for a while: it is deleted mid-stream
// (the broker auto-creates topics, but the worker's producer never asks it
// to), so every produce to it fails with UNKNOWN_TOPIC_OR_PARTITION. The
// worker exits non-zero without committing past unacknowledged records;
// after a while the topic is re-created and the worker restarted. Nothing
// is lost: every acme-mdr output at or past the offsets committed at the
// failure is in the re-created topic (those below were acknowledged into
// the deleted topic and went with it), and flowai is complete.
// (min.insync.replicas=2 on a one-replica topic does not reject acks=all
// writes on Kafka 4.4, so it cannot stand in for the fault.)
func TestFaultVendorTopicRejectsWrites(t *testing.T) {
	s := newScenario(t, scenarioOptions{maxInFlight: 300})
	w := s.worker("worker-1")
	st := s.stream(6000, 300, 150*time.Millisecond, 300)
	s.waitFor("1500 records consumed", 30*time.Second, func() bool { return s.consumed() >= 1500 })
	acme := s.routes["acme-mdr"].Config.Topic
	res, err := s.b.client().DeleteTopics(s.ctx, &kafka.DeleteTopicsRequest{Topics: []string{acme}})
	if err == nil {
		err = res.Errors[acme]
	}
	if err != nil {
		t.Fatalf("deleting %s: %v", acme, err)
	}
	rejected := time.Now()
	t.Logf("%s deleted at %.0f records consumed", acme, s.consumed())
	code := w.wait(t, 45*time.Second)
	m := w.metrics()
	t.Logf("worker-1 exited %d %v after the deletion (consumed %.0f, acked %.0f, in flight %.0f at its last scrape): %s",
		code, time.Since(rejected).Round(100*time.Millisecond), m["deident_records_consumed_total"], m["deident_outputs_acked_total"], m["deident_records_in_flight"], lastError(w))
	if code == 0 {
		t.Errorf("worker-1 exited 0 while its vendor topic rejected writes")
	}
	time.Sleep(3 * time.Second) // still rejecting; nobody consuming
	committed := s.committed()
	t.Logf("committed at the failure: %v", committed)
	s.lostWithTopic = map[string]map[string]map[int]int64{"acme-mdr": committed}
	s.b.createTopic(acme, partitions, nil)
	t.Logf("%s re-created after %v", acme, time.Since(rejected).Round(100*time.Millisecond))
	s.worker("worker-2")
	st.wait(s)
	s.finish(s.routes)
}

// poison makes n poison records of kind: truncated JSON, values of the
// wrong shape (not an object, wrong types, bad addresses) and, every
// fiftieth, a 5 MB value (over limits.max_record_bytes, 1 MiB).
func poison(kind gen.Kind, good [][]byte, n int) (out [][]byte, big int) {
	huge := func(i int) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"time":"2026-11-01T00:00:00Z","comment":"%d `, i)
		b.Write(bytes.Repeat([]byte("x"), 5<<20))
		b.WriteString(`"}`)
		return b.Bytes()
	}
	shapes := [][]byte{[]byte(`[1,2,3]`), []byte(`null`), []byte(`"just a string"`), []byte(`{"a":1}{"b":2}`)}
	if kind == gen.Threat {
		shapes = append(shapes,
			[]byte(`{"time":"2026-11-01T00:00:00Z","actor":{"user":{"name":42}}}`),
			[]byte(`{"time":"2026-11-01T00:00:00Z","device":{"ip":"not-an-address"}}`))
	} else {
		shapes = append(shapes, []byte(`{"time":"2026-11-01T00:00:00Z","duration_ms":"slow"}`))
	}
	for i := range n {
		switch {
		case i%50 == 49:
			out = append(out, huge(i))
			big++
		case i%2 == 0:
			g := good[i%len(good)]
			out = append(out, g[:len(g)/2])
		default:
			out = append(out, shapes[i%len(shapes)])
		}
	}
	return out, big
}

// 4. A burst with 10% poison records (truncated JSON, wrong shapes, 5 MB
// values): each goes to the dead-letter topic with its original bytes and a
// reason; the good records around them flow; nothing is lost. The source
// topics accept 8 MiB records; the dead-letter topic 20 MiB, above the
// sink's 16 MiB batch, so two 5 MB dead letters in one batch fit.
func TestFaultPoisonBurst(t *testing.T) {
	big := map[string]string{"max.message.bytes": "8388608"}
	s := newScenario(t, scenarioOptions{topicConfigs: map[string]map[string]string{
		"telemetry.edr":       big,
		"workflow.events":     big,
		"deident.dead-letter": {"max.message.bytes": "20971520"},
	}})
	s.worker("worker-1")
	total := 0
	bigN := 0
	for i, kind := range []gen.Kind{gen.Threat, gen.Workflow} {
		good := generate(kind, uint64(400+i), 1800)
		bad, nbig := poison(kind, good, 200)
		bigN += nbig
		var values [][]byte
		for j, g := range good {
			values = append(values, g)
			if j%9 == 8 {
				values = append(values, bad[j/9])
			}
		}
		total += len(values)
		topic := s.topic(map[gen.Kind]string{gen.Threat: "edr", gen.Workflow: "workflow"}[kind])
		s.produce(topic, values)
	}
	t.Logf("produced %d records, 10%% poison, %d of 5 MB", total, bigN)
	rep := s.finish(s.routes)
	reasons := map[string]int{}
	for _, m := range s.readAll(s.cfg.Kafka.DeadLetterTopic, 1) {
		r := header(m, pipeline.HeaderError)
		if i := strings.IndexAny(r, ":0123456789"); i > 0 {
			r = r[:i]
		}
		reasons[header(m, pipeline.HeaderStage)+"/"+header(m, pipeline.HeaderRoute)+": "+r]++
		if len(m.Value) > 1<<20 && !strings.Contains(header(m, pipeline.HeaderError), "max_record_bytes") {
			t.Errorf("5 MB dead letter with reason %q, want one naming limits.max_record_bytes", header(m, pipeline.HeaderError))
		}
	}
	for r, n := range reasons {
		t.Logf("  dead letters %4d  %s", n, r)
	}
	if rep.deadLettered < 400 {
		t.Errorf("%d dead letters for 400 poison records", rep.deadLettered)
	}
}

// 5. A policy change with a material difference (acme-mdr exports
// file.path, which it dropped) is refused by `deident policy diff` (exit 1)
// and by the running worker when it reaches it as a reload (its config
// file rewritten, then SIGHUP): the refusal is logged with its reason and
// counted, and the worker keeps producing under the old policy: every
// vendor record, before and after the refusal, carries the old policy
// version and is the old policy's output.
func TestFaultMaterialPolicyChangeRefused(t *testing.T) {
	s := newScenario(t, scenarioOptions{ownConfig: true})
	p := s.worker("worker-1")
	st := s.stream(1000, 250, 100*time.Millisecond, 500)

	root := repoRoot(t)
	dir := t.TempDir()
	old, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(old, []byte("{path: file.path, action: drop}"), []byte("{path: file.path, action: keep}"), 1)
	if bytes.Equal(changed, old) {
		t.Fatal("configs/deident.yaml no longer drops file.path: update the scenario's change")
	}
	newPath := filepath.Join(dir, "deident.yaml")
	if err := os.WriteFile(newPath, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "configs", "demo-keys"), filepath.Join(dir, "demo-keys")); err != nil {
		t.Fatal(err)
	}
	newCfg, err := config.Load(newPath)
	if err != nil {
		t.Fatal(err)
	}
	newRoutes, err := route.CompileAll(newCfg)
	if err != nil {
		t.Fatal(err)
	}
	oldV, newV := s.routes["acme-mdr"].Version, newRoutes["acme-mdr"].Version
	if oldV == newV {
		t.Fatalf("policy version unchanged (%s) by a material change", oldV)
	}

	s.waitFor("records flowing", 30*time.Second, func() bool { return s.consumed() >= 500 })
	cmd := exec.Command(s.bin, "policy", "diff", s.cfgPath, newPath)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	code := cmd.ProcessState.ExitCode()
	t.Logf("deident policy diff: exit %d; %s", code, strings.TrimSpace(errb.String()))
	if code != 1 {
		t.Errorf("policy diff exit %d (%v), want 1 (material change refused)\n%s", code, err, out.String())
	}
	if !strings.Contains(out.String(), "file.path") {
		t.Errorf("policy diff does not name file.path:\n%s", out.String())
	}
	// The worker reaches the change as a reload: the file rewritten, SIGHUP.
	if err := os.WriteFile(s.cfgPath, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitFor("the reload refused", 20*time.Second, func() bool {
		return p.metric(`deident_config_reloads_total{result="refused"}`) >= 1
	})
	m := p.scrapeNow(t)
	if m[`deident_config_reloads_total{result="applied"}`] != 0 || m[`deident_policy_info{route="acme-mdr",version="`+oldV+`"}`] != 1 {
		t.Errorf("after the refusal: %v applied, acme-mdr at %s: %v", m[`deident_config_reloads_total{result="applied"}`], oldV, m[`deident_policy_info{route="acme-mdr",version="`+oldV+`"}`])
	}
	if !strings.Contains(p.tail(1000), `material change (field newly exported) not acknowledged for policy `+newV) {
		t.Errorf("no refusal naming the material change in the log:\n%s", p.tail(20))
	}
	t.Logf("worker refused the reload: %v refused (SIGHUP and the file watch, debounced)", m[`deident_config_reloads_total{result="refused"}`])
	st.wait(s)
	// More records after the refusal: still the old policy.
	s.produce(s.topic("edr"), generate(gen.Threat, 501, 500))
	rep := s.finish(s.routes) // checks every record against the old routes, version header included

	// The change is material on these inputs: the new policy would export file.path.
	differs := 0
	na, oa := newRoutes["acme-mdr"].NewApplier(), s.routes["acme-mdr"].NewApplier()
	for _, v := range generate(gen.Threat, 501, 500) {
		a, _ := oa.Apply(nil, v)
		b, _ := na.Apply(nil, v)
		if !bytes.Equal(a, b) {
			differs++
		}
	}
	if differs == 0 {
		t.Error("the new policy gives the same outputs: the scenario proves nothing")
	}
	t.Logf("old policy %s kept running (%d vendor records); refused policy %s would change %d of 500 acme-mdr outputs", oldV, rep.published, newV, differs)
}

// 6. A slow vendor topic: a broker produce quota (producer_byte_rate for
// the user ANONYMOUS, which every PLAINTEXT client is) throttles every produce to ~128 KB/s over a backlog
// of 60000 records (~33 MB). The worker holds at most kafka.max_in_flight
// records, and its RSS (/proc/PID/status) stays under rssCap throughout;
// when the quota is lifted it finishes and nothing is lost.
func TestFaultSlowVendorMemoryCap(t *testing.T) {
	const (
		maxInFlight = 200
		backlog     = 60000
		rssCap      = 128 << 20
		rate        = 128 << 10 // bytes per second
		observe     = 20 * time.Second
	)
	s := newScenario(t, scenarioOptions{maxInFlight: maxInFlight})
	t.Setenv("DEIDENT_KAFKA_BATCH_SIZE", "200")
	t.Setenv("GOMAXPROCS", "2")
	s.produce(s.topic("edr"), generate(gen.Threat, 600, backlog))
	s.produce(s.topic("workflow"), generate(gen.Workflow, 601, 1000))

	quota := func(remove bool) {
		t.Helper()
		res, err := s.b.client().AlterClientQuotas(context.Background(), &kafka.AlterClientQuotasRequest{
			Entries: []kafka.AlterClientQuotaEntry{{
				// Unauthenticated (PLAINTEXT) clients are the principal ANONYMOUS: this
				// throttles every producer, and only the workers produce from here on.
				Entities: []kafka.AlterClientQuotaEntity{{EntityType: "user", EntityName: "ANONYMOUS"}},
				Ops:      []kafka.AlterClientQuotaOps{{Key: "producer_byte_rate", Value: rate, Remove: remove}},
			}},
		})
		if err == nil {
			for _, e := range res.Entries {
				if e.Error != nil {
					err = e.Error
				}
			}
		}
		if err != nil {
			t.Fatalf("AlterClientQuotas: %v", err)
		}
	}
	quota(false)
	w := s.worker("worker-1")
	t0 := time.Now()
	maxIn := 0.0
	for time.Since(t0) < observe {
		m := w.metrics()
		maxIn = max(maxIn, m["deident_records_in_flight"])
		if w.exited() {
			t.Fatalf("worker exited %d under a slow vendor topic: %s", w.exitCode(), lastError(w))
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := w.scrapeNow(t)
	consumed, acked := m["deident_records_consumed_total"], m["deident_outputs_acked_total"]
	peak := w.peakRSS()
	t.Logf("after %v throttled: consumed %.0f of %d, acked %.0f (%.0f/s), in flight max %.0f (cap %d), peak RSS %.1f MiB (cap %d MiB), go heap %.1f MiB",
		observe, consumed, backlog+1000, acked, acked/observe.Seconds(), maxIn, maxInFlight, float64(peak)/(1<<20), rssCap>>20, m["go_memstats_heap_inuse_bytes"]/(1<<20))
	if maxIn > maxInFlight {
		t.Errorf("in flight reached %.0f > max_in_flight %d", maxIn, maxInFlight)
	}
	if consumed >= backlog {
		t.Errorf("consumed the whole backlog (%.0f) while the vendor topic was throttled: the quota did not slow it", consumed)
	}
	if peak >= rssCap {
		t.Errorf("peak RSS %.1f MiB >= cap %d MiB", float64(peak)/(1<<20), rssCap>>20)
	}
	quota(true)
	s.finish(s.routes)
	if peak := w.peakRSS(); peak >= rssCap {
		t.Errorf("peak RSS after the quota was lifted %.1f MiB >= cap %d MiB", float64(peak)/(1<<20), rssCap>>20)
	} else {
		t.Logf("peak RSS over the whole run %.1f MiB (cap %d MiB)", float64(peak)/(1<<20), rssCap>>20)
	}
}
