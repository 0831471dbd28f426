// Package gen writes realistic synthetic telemetry for trying policies, tests
// and benchmarks: nested OCSF-like threat events and workflow events with
// skewed (Zipf) value distributions, reproducible from a seed.
package gen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

// Kind selects which events Write produces.
type Kind string

const (
	// Threat is OCSF-like endpoint and network telemetry (category threat_telemetry).
	Threat Kind = "threat"
	// Workflow is invoice-routing workflow metadata (category workflow_metadata).
	Workflow Kind = "workflow"
)

// Options controls Write. The zero value of each field means "the default".
type Options struct {
	Kind  Kind      // Threat when empty
	Count int       // number of records
	Seed  uint64    // the same seed gives the same bytes
	Start time.Time // event time of the first record; 2026-11-01T00:00:00Z when zero
	Users int       // distinct users; 5000 when zero
}

// Generator produces one record at a time. Not safe for concurrent use.
type Generator struct {
	opt   Options
	rng   *rand.Rand
	users *rand.Zipf
	hosts *rand.Zipf
	procs *rand.Zipf
	dsts  *rand.Zipf
	t     time.Time
	n     int
}

// New returns a generator for opt.
func New(opt Options) *Generator {
	if opt.Kind == "" {
		opt.Kind = Threat
	}
	if opt.Users <= 0 {
		opt.Users = 5000
	}
	if opt.Start.IsZero() {
		opt.Start = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15))
	return &Generator{
		opt:   opt,
		rng:   rng,
		users: rand.NewZipf(rng, 1.2, 1, uint64(opt.Users-1)),
		hosts: rand.NewZipf(rng, 1.1, 1, uint64(opt.Users/2)),
		procs: rand.NewZipf(rng, 1.4, 1, uint64(len(processes)-1)),
		dsts:  rand.NewZipf(rng, 1.3, 1, 2000),
		t:     opt.Start,
	}
}

// Write writes opt.Count JSON lines to w.
func Write(w io.Writer, opt Options) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	g := New(opt)
	var buf []byte
	for range opt.Count {
		buf = g.Append(buf[:0])
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Append appends the next record (one JSON object, no newline) to dst.
func (g *Generator) Append(dst []byte) []byte {
	g.n++
	g.t = g.t.Add(time.Duration(g.rng.IntN(2000)) * time.Millisecond)
	if g.opt.Kind == Workflow {
		return g.workflow(dst)
	}
	return g.threat(dst)
}

var (
	firstNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf"}
	processes  = []string{"svchost.exe", "chrome.exe", "powershell.exe", "outlook.exe", "explorer.exe", "cmd.exe", "teams.exe", "python.exe", "ssh", "bash", "rundll32.exe", "msedge.exe", "winword.exe", "excel.exe", "curl"}
	dispos     = []string{"Allowed", "Blocked", "Quarantined", "Detected", "Allowed", "Allowed"}
	steps      = []string{"received", "coded", "approved", "rejected", "escalated", "paid"}
	roles      = []string{"ap_clerk", "finance_manager", "controller", "cfo", "department_head"}
	currencies = []string{"EUR", "USD", "GBP", "CHF"}
	suppliers  = []string{"Globex Ltd", "Initech GmbH", "Umbrella Corp", "Hooli Inc", "Stark Industries", "Wayne Enterprises"}
)

func (g *Generator) user() (name string, id int) {
	id = int(g.users.Uint64())
	return firstNames[id%len(firstNames)] + "." + strconv.Itoa(id), id
}

func appendIP(dst []byte, a, b, c, d int) []byte {
	dst = strconv.AppendInt(dst, int64(a), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(b), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(c), 10)
	dst = append(dst, '.')
	return strconv.AppendInt(dst, int64(d), 10)
}

func (g *Generator) threat(dst []byte) []byte {
	user, uid := g.user()
	host := int(g.hosts.Uint64())
	proc := processes[g.procs.Uint64()]
	dst_ := int(g.dsts.Uint64())
	activity := 1 + g.rng.IntN(3)
	dst = append(dst, `{"time":"`...)
	dst = g.t.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","class_uid":1007,"category_uid":1,"activity_id":`...)
	dst = strconv.AppendInt(dst, int64(activity), 10)
	dst = append(dst, `,"severity_id":`...)
	dst = strconv.AppendInt(dst, int64(1+g.rng.IntN(5)), 10)
	dst = append(dst, `,"type_uid":`...)
	dst = strconv.AppendInt(dst, int64(100700+activity), 10)
	dst = append(dst, `,"metadata":{"product":{"name":"Sentinel EDR"}},"device":{"hostname":"wks-`...)
	dst = strconv.AppendInt(dst, int64(host), 10)
	dst = append(dst, `.corp.example","ip":"`...)
	dst = appendIP(dst, 10, host>>8&255, host&255, 10+host%200)
	dst = append(dst, `"},"actor":{"user":{"name":"`...)
	dst = append(dst, user...)
	dst = append(dst, `","email_addr":"`...)
	dst = append(dst, user...)
	dst = append(dst, `@corp.example","uid":"S-1-5-21-3623811015-`...)
	dst = strconv.AppendInt(dst, int64(1000+uid), 10)
	dst = append(dst, `"},"process":{"name":"`...)
	dst = append(dst, proc...)
	dst = append(dst, `","pid":`...)
	dst = strconv.AppendInt(dst, int64(1000+g.rng.IntN(60000)), 10)
	dst = append(dst, `}},"src_endpoint":{"ip":"`...)
	dst = appendIP(dst, 10, host>>8&255, host&255, 10+host%200)
	dst = append(dst, `","port":`...)
	dst = strconv.AppendInt(dst, int64(49152+g.rng.IntN(16000)), 10)
	dst = append(dst, `},"dst_endpoint":{"ip":"`...)
	dst = appendIP(dst, 198, 51, dst_>>8&255, dst_&255)
	dst = append(dst, `","port":`...)
	dst = strconv.AppendInt(dst, int64([]int{443, 443, 443, 80, 22, 445, 3389}[dst_%7]), 10)
	dst = append(dst, `},"disposition":"`...)
	dst = append(dst, dispos[g.rng.IntN(len(dispos))]...)
	dst = append(dst, `","file":{"path":"C:\\Users\\`...)
	dst = append(dst, user...)
	dst = append(dst, `\\Temp\\`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(1000)), 16)
	dst = append(dst, `.tmp"}}`...)
	return dst
}

func (g *Generator) workflow(dst []byte) []byte {
	user, _ := g.user()
	n := g.n
	amount := float64(g.rng.IntN(5000000)) / 100
	dst = append(dst, `{"time":"`...)
	dst = g.t.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","workflow_id":"wf-`...)
	dst = strconv.AppendInt(dst, int64(n/5), 10)
	dst = append(dst, `","step":"`...)
	dst = append(dst, steps[n%len(steps)]...)
	dst = append(dst, `","duration_ms":`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(86400000)), 10)
	dst = append(dst, `,"invoice":{"id":"INV-`...)
	dst = strconv.AppendInt(dst, int64(100000+n/5), 10)
	dst = append(dst, `","amount":`...)
	dst = strconv.AppendFloat(dst, amount, 'f', 2, 64)
	dst = append(dst, `,"currency":"`...)
	dst = append(dst, currencies[n%len(currencies)]...)
	dst = append(dst, `","supplier":"`...)
	dst = append(dst, suppliers[int(g.users.Uint64())%len(suppliers)]...)
	dst = append(dst, `","unit_price":`...)
	dst = strconv.AppendFloat(dst, amount/10, 'f', 2, 64)
	dst = append(dst, `},"approver":{"name":"`...)
	dst = append(dst, user...)
	dst = append(dst, `","email":"`...)
	dst = append(dst, user...)
	dst = append(dst, `@corp.example","role":"`...)
	dst = append(dst, roles[len(user)%len(roles)]...)
	dst = append(dst, `"},"comment":"`...)
	dst = fmt.Appendf(dst, "please check with %s before paying", user)
	dst = append(dst, `","attachments":[{"name":"invoice-`...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, `.pdf","size_bytes":`...)
	dst = strconv.AppendInt(dst, int64(10000+g.rng.IntN(900000)), 10)
	dst = append(dst, `}]}`...)
	return dst
}
