//go:build faults

package reliability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// broker is a real single-node Kafka broker started by scripts/kafka-local
// for one scenario, on its own port, with its state under t.TempDir().
//
// Faults: stopKeepState sends SIGTERM to the broker's JVM and waits for it
// to exit (connections close, clients see a dead broker), keeping its state
// directory; restart runs the same java command line again (read from
// /proc/PID/cmdline before the stop) on that state, so topics, records and
// committed offsets survive, and records the new pid in the state's pid file
// so `scripts/kafka-local stop` (the cleanup) still stops it.
type broker struct {
	t      *testing.T
	root   string // repository root
	port   int
	state  string
	addr   string
	envs   []string
	cmd    []string  // java command line of the running broker, once read
	child  *exec.Cmd // the JVM when restarted by this test (we reap it)
	waited chan struct{}
}

// repoRoot is the repository root (the tests run in reliability/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// faultsPort is the broker port: DEIDENT_FAULTS_PORT, default 19892.
func faultsPort(t *testing.T) int {
	t.Helper()
	if s := os.Getenv("DEIDENT_FAULTS_PORT"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("DEIDENT_FAULTS_PORT=%q: %v", s, err)
		}
		return p
	}
	return 19892
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{t: t, root: repoRoot(t), port: faultsPort(t), state: filepath.Join(t.TempDir(), "kafka")}
	b.envs = append(os.Environ(),
		"DEIDENT_KAFKA_PORT="+strconv.Itoa(b.port),
		"DEIDENT_KAFKA_STATE="+b.state,
	)
	t0 := time.Now()
	cmd := exec.Command(filepath.Join(b.root, "scripts", "kafka-local"), "start")
	cmd.Env = b.envs
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/kafka-local start: %v\n%s", err, stderr.String())
	}
	t.Cleanup(b.stop)
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		t.Fatalf("scripts/kafka-local start printed no address\n%s", stderr.String())
	}
	b.addr = lines[len(lines)-1]
	t.Logf("broker %s started in %v (state %s)", b.addr, time.Since(t0).Round(100*time.Millisecond), b.state)
	return b
}

func (b *broker) brokers() []string { return []string{b.addr} }

// stop is the cleanup: scripts/kafka-local stop (it stops the pid in the
// state's pid file, restarted or not, and removes the state).
func (b *broker) stop() {
	cmd := exec.Command(filepath.Join(b.root, "scripts", "kafka-local"), "stop")
	cmd.Env = b.envs
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Logf("scripts/kafka-local stop: %v\n%s", err, out)
	}
	if b.waited != nil {
		select {
		case <-b.waited:
		case <-time.After(35 * time.Second):
			b.t.Logf("restarted broker did not exit")
		}
	}
}

func (b *broker) pid() int {
	b.t.Helper()
	s, err := os.ReadFile(filepath.Join(b.state, "kafka.pid"))
	if err != nil {
		b.t.Fatalf("broker pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(s)))
	if err != nil {
		b.t.Fatalf("broker pid file: %v", err)
	}
	return pid
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(s), ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// stopKeepState stops the broker with SIGTERM and waits until it has
// exited, keeping its state. It returns how long the JVM took to exit.
func (b *broker) stopKeepState() time.Duration {
	b.t.Helper()
	pid := b.pid()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		b.t.Fatalf("reading the broker's command line: %v", err)
	}
	b.cmd = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		b.t.Fatalf("SIGTERM broker %d: %v", pid, err)
	}
	for alive(pid) {
		if time.Since(t0) > 30*time.Second {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			b.t.Logf("broker %d ignored SIGTERM for 30s; killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.waited != nil {
		<-b.waited
	}
	return time.Since(t0)
}

// restart runs the broker's java command line again on the same state and
// waits until it answers metadata with a leader for every partition of
// topics. It returns how long that took.
func (b *broker) restart(topics ...string) time.Duration {
	b.t.Helper()
	if b.cmd == nil {
		b.t.Fatal("restart without stopKeepState")
	}
	logf, err := os.OpenFile(filepath.Join(b.state, "logs", "stdout.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer logf.Close()
	t0 := time.Now()
	cmd := exec.Command(b.cmd[0], b.cmd[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("restarting the broker: %v", err)
	}
	b.child = cmd
	b.waited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, b.waited)
	if err := os.WriteFile(filepath.Join(b.state, "kafka.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil || !alive(cmd.Process.Pid) {
			b.t.Fatalf("broker not listening after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, topic := range topics {
		if err := waitLeaders(ctx, b.brokers(), topic, -1); err != nil {
			b.t.Fatalf("broker not ready after restart: %v", err)
		}
	}
	return time.Since(t0)
}

func (b *broker) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 10 * time.Second}
}

// createTopic creates topic with partitions and topic configs, and waits
// until every partition has a leader.
func (b *broker) createTopic(topic string, partitions int, configs map[string]string) {
	b.t.Helper()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		res, err := b.client().CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
		if err == nil {
			err = res.Errors[topic]
		}
		if err == nil || errors.Is(err, kafka.TopicAlreadyExists) {
			break
		}
		if ctx.Err() != nil {
			b.t.Fatalf("creating topic %s: %v", topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := waitLeaders(ctx, b.brokers(), topic, partitions); err != nil {
		b.t.Fatalf("creating topic %s: %v", topic, err)
	}
}

// waitLeaders waits until topic has partitions partitions (any number when
// partitions < 0), each with a leader.
func waitLeaders(ctx context.Context, brokers []string, topic string, partitions int) error {
	// A transport of its own: the shared default one caches metadata,
	// which would answer for a broker that is not back yet.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	var last error
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil {
			err = fmt.Errorf("topic %s not in metadata", topic)
			for _, tp := range md.Topics {
				if tp.Name != topic {
					continue
				}
				if tp.Error != nil {
					err = tp.Error
					break
				}
				n := 0
				for _, p := range tp.Partitions {
					if p.Error == nil && p.Leader.Host != "" {
						n++
					}
				}
				if n == len(tp.Partitions) && n > 0 && (partitions < 0 || n == partitions) {
					return nil
				}
				err = fmt.Errorf("topic %s: %d of %d partitions have a leader", topic, n, len(tp.Partitions))
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
