//go:build faults

package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds cmd/deident into t.TempDir().
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deident")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/deident")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is one `deident run` process. A background loop scrapes its
// /metrics and reads its RSS every 100ms until it exits, so the counts of
// a process that was killed are those of its last scrape.
type proc struct {
	name string
	cmd  *exec.Cmd
	base string // http://host:port of /metrics
	done chan struct{}

	mu     sync.Mutex
	logs   []string
	last   map[string]float64 // last successful scrape
	maxRSS int64              // bytes, from /proc/PID/status VmRSS
	code   int                // exit code once done; -1 when killed by a signal
	signal string             // the signal that ended it, if any

	replaced bool // a supervisor started a replacement
}

var addrRE = regexp.MustCompile(`"msg":"serving /metrics, /healthz, /readyz","addr":"([^"]+)"`)

// startProc runs `bin run --config cfgPath` with the process environment
// (the scenario sets its overrides with t.Setenv) plus env.
func startProc(t *testing.T, name, bin, cfgPath string, env ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", cfgPath)
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
		_ = p.cmd.Wait()
		p.mu.Lock()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.signal = ws.Signal().String()
		}
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("---- %s: last log lines ----\n%s", name, p.tail(25))
		}
	})
	select {
	case addr := <-addrc:
		p.base = "http://" + addr
	case <-p.done:
		t.Fatalf("%s exited before serving /metrics (exit %d)\n%s", name, p.exitCode(), p.tail(25))
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not serve /metrics within 20s", name)
	}
	go p.watch()
	return p
}

func (p *proc) watch() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if m, err := scrape(p.base); err == nil {
			p.mu.Lock()
			p.last = m
			p.mu.Unlock()
		}
		if rss := vmRSS(p.cmd.Process.Pid); rss > 0 {
			p.mu.Lock()
			p.maxRSS = max(p.maxRSS, rss)
			p.mu.Unlock()
		}
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
	}
}

// vmRSS reads VmRSS of pid in bytes (0 when unknown).
func vmRSS(pid int) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(s), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs[max(0, len(p.logs)-n):], "\n")
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) exitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// metrics returns the last scrape (nil before the first).
func (p *proc) metrics() map[string]float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *proc) metric(name string) float64 { return p.metrics()[name] }

func (p *proc) peakRSS() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxRSS
}

// scrapeNow scrapes /metrics now and stores it as the last scrape.
func (p *proc) scrapeNow(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := scrape(p.base)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	p.mu.Lock()
	p.last = m
	p.mu.Unlock()
	return m
}

// wait waits up to timeout for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v\n%s", p.name, timeout, p.tail(20))
		return 0
	}
}

// term sends SIGTERM and returns the exit code.
func (p *proc) term(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(t, 20*time.Second)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
}

// scrape fetches base/metrics and parses the Prometheus text exposition:
// "name{labels}" -> value.
func scrape(base string) (map[string]float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", base, res.Status)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}

func routeMetric(route, outcome string) string {
	return `deident_route_records_total{outcome="` + outcome + `",route="` + route + `"}`
}

// checkIdentity checks the accounting identities of one process's scrape
// (exact only while it processes nothing):
//
//	consumed = decoded + dead_lettered
//	per route: in = out + suppressed + quarantined + filtered_by_category + failed + held + revoked, in = decoded
func checkIdentity(m map[string]float64, routes []string) error {
	var errs []string
	consumed, decoded, dead := m["deident_records_consumed_total"], m["deident_records_decoded_total"], m["deident_records_dead_lettered_total"]
	if consumed != decoded+dead {
		errs = append(errs, fmt.Sprintf("consumed %v != decoded %v + dead_lettered %v", consumed, decoded, dead))
	}
	for _, r := range routes {
		g := func(o string) float64 { return m[routeMetric(r, o)] }
		held := m[`deident_route_records_held{route="`+r+`"}`]
		sum := g("out") + g("suppressed") + g("quarantined") + g("filtered_by_category") + g("failed") + held + g("revoked")
		if g("in") != sum {
			errs = append(errs, fmt.Sprintf("route %s: in %v != out %v + suppressed %v + quarantined %v + filtered_by_category %v + failed %v + held %v + revoked %v",
				r, g("in"), g("out"), g("suppressed"), g("quarantined"), g("filtered_by_category"), g("failed"), held, g("revoked")))
		}
		if g("in") != decoded {
			errs = append(errs, fmt.Sprintf("route %s: in %v != decoded %v", r, g("in"), decoded))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
