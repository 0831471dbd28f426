package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deident/deident/internal/gen"
)

// SIGHUP makes the real binary reload its config file: records consumed
// before it are the old policy's, records produced after it the new one's,
// and /metrics counts the reload and names the new version. The file is
// not watched here (--watch-config=false), so the signal alone did it.
func TestRunSIGHUPReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	f := newReloadFixture(t)
	oldRoutes := routesOf(t, f.path)
	edr := f.cfg.Sources["edr"].Topic

	bin := filepath.Join(t.TempDir(), "deident")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "run", "--config", f.path, "--watch-config=false")
	cmd.Env = append(os.Environ(), "DEIDENT_KAFKA_METRICS_ADDR=127.0.0.1:0")
	proc := startRunBinary(t, cmd)
	base, exited := proc.base, proc.exited
	metrics := func() map[string]float64 {
		_, text := scrape(t, base+"/metrics")
		return metricValues(t, text)
	}

	const n = 300
	produce(t, f.brokers, edr, generate(gen.Threat, 101, n))
	waitUntil(t, "the first batch consumed", 30*time.Second, func() bool {
		return metrics()["deident_records_consumed_total"] >= n
	})
	f.write(t, f.edit(t, "{path: dst_endpoint.port, action: keep}", "{path: dst_endpoint.port, action: drop}"))
	newRoutes := routesOf(t, f.path)
	newV := newRoutes["acme-mdr"].Version
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reload applied", 20*time.Second, func() bool {
		m := metrics()
		return m[`deident_config_reloads_total{result="applied"}`] == 1 && m[`deident_policy_info{route="acme-mdr",version="`+newV+`"}`] == 1
	})
	produce(t, f.brokers, edr, generate(gen.Threat, 102, n))
	waitCommitted(t, f.cfg, 30*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("deident run after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("deident run did not exit after SIGTERM")
	}

	version := acmeOutputs(t, f, oldRoutes, newRoutes)
	per := map[string]int{}
	for _, v := range version {
		per[v]++
	}
	if len(version) != 2*n || per[oldRoutes["acme-mdr"].Version] != n || per[newV] != n {
		t.Errorf("outputs per policy %v, want %d under each", per, n)
	}
	if !strings.Contains(proc.Logs(), `"msg":"config reloaded"`) {
		t.Error("no 'config reloaded' log line")
	}
}

// The file watch triggers a reload on a write and on an editor's atomic
// save (a new file renamed over the old one), not on other files in the
// directory.
func TestWatchConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deident.yaml")
	if err := os.WriteFile(path, []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trig := make(chan struct{}, 1)
	if err := watchConfig(ctx, path, trig); err != nil {
		t.Fatal(err)
	}
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-trig:
			if !want {
				t.Errorf("%s triggered a reload", what)
			}
		case <-time.After(300 * time.Millisecond):
			if want {
				t.Errorf("%s did not trigger a reload", what)
			}
		}
		for len(trig) > 0 {
			<-trig
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte("b: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("writing another file", false)
	if err := os.WriteFile(path, []byte("a: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("writing the file", true)
	tmp := filepath.Join(dir, ".deident.yaml.swp")
	if err := os.WriteFile(tmp, []byte("a: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for len(trig) > 0 {
		<-trig
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	expect("renaming a new file over it", true)
}
