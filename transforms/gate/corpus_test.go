package gate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
	"github.com/deident/deident/transforms/route"
)

// corpusRoute is configs/deident.yaml's acme-mdr route with free-text fields
// kept, so that planted leaks can reach the output.
func corpusRoute(tb testing.TB) *route.Route {
	tb.Helper()
	tb.Setenv("DEIDENT_KEY_FLOWAI", strings.Repeat("5a", 32))
	cfg, err := config.Load(filepath.Join("..", "..", "configs", "deident.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	rc := cfg.Vendors["acme-mdr"]
	for _, p := range []string{"actor.process.cmd_line", "http_request.user_agent", "http_request.url", "comment"} {
		rc.Fields = append(rc.Fields, config.FieldRule{Path: p, Action: config.Keep})
	}
	r, err := route.Compile("acme-mdr", rc, cfg.Dir, cfg.Limits)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func zeekUserAgents(tb testing.TB) []string {
	f, err := os.Open(filepath.Join("testdata", "zeek-user-agents.jsonl"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var uas []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s string
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			tb.Fatal(err)
		}
		uas = append(uas, s)
	}
	return uas
}

// Clean free text, the kind a kept field holds.
var (
	cleanCmds = []string{
		`svchost.exe -k netsvcs -p -s Schedule`,
		`"C:\Program Files\Google\Chrome\Application\chrome.exe" --type=renderer --lang=en-US --renderer-client-id=42`,
		`powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\ProgramData\scripts\inventory.ps1`,
		`cmd.exe /c "ipconfig /all > %TEMP%\net.txt"`,
		`rundll32.exe shell32.dll,Control_RunDLL desk.cpl`,
		`/usr/bin/python3 -m pip install --upgrade requests==2.32.3`,
		`ssh -o StrictHostKeyChecking=no -p 2222 git-mirror`,
		`curl -sS https://updates.vendor.example/v2/manifest.json -o /tmp/manifest.json`,
		`"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE" /recycle`,
		`bash -c "tar czf /var/backups/etc-20261101.tgz /etc"`,
	}
	cleanURLs = []string{
		`https://portal.corp.example/app/dashboard?tab=alerts&page=2`,
		`https://updates.vendor.example/v2/check?build=19045.3693&channel=stable`,
		`https://login.microsoftonline.com/common/oauth2/authorize?client_id=4765445b-32c6-49b0-83e6-1d93765276ca&response_type=code`,
		`http://crl.pki.example/root-g2.crl`,
		`https://cdn.example.net/assets/app.3f9a1c.js?v=20261101`,
		`https://api.example.com/v1/items/7711?fields=id,name&sort=-updated`,
	}
	cleanComments = []string{
		"scheduled scan completed",
		"quarantine released after review",
		"ticket INC-20261101-0042 closed",
		"false positive: signed binary, publisher verified",
		"retry 3 of 5 at 2026-11-01 12:30:00",
		"hash 9f86d081884c7d65 matched allowlist v1.4.2",
		"",
	}
)

// corpusRecord adds the free-text fields to a generated threat record.
func corpusRecord(rec []byte, cmd, ua, u, comment string) []byte {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	s := strings.Replace(string(rec), `"pid":`, `"cmd_line":`+q(cmd)+`,"pid":`, 1)
	s = strings.TrimSuffix(s, "}")
	return fmt.Appendf(nil, `%s,"http_request":{"user_agent":%s,"url":%s},"comment":%s}`, s, q(ua), q(u), q(comment))
}

// ident holds the raw identifiers of one generated record.
type ident struct{ user, email, host, ip string }

func identOf(tb testing.TB, rec []byte) ident {
	var r struct {
		Actor struct {
			User struct {
				Name  string `json:"name"`
				Email string `json:"email_addr"`
			} `json:"user"`
		} `json:"actor"`
		Device struct {
			Hostname string `json:"hostname"`
			IP       string `json:"ip"`
		} `json:"device"`
	}
	if err := json.Unmarshal(rec, &r); err != nil {
		tb.Fatal(err)
	}
	return ident{r.Actor.User.Name, r.Actor.User.Email, r.Device.Hostname, r.Device.IP}
}

// leak plants something that must not reach a vendor into one free-text
// field; variant picks the spelling (as is, upper case, other separators).
type leak struct {
	name  string
	field string // rule path of the field it is planted in
	plant func(id ident, variant int) string
}

func label(host string) string { l, _, _ := strings.Cut(host, "."); return l }

var leaks = []leak{
	{"username in a command line", "actor.process.cmd_line", func(id ident, v int) string {
		return `runas /user:CORP\` + [...]string{id.user, strings.ToUpper(id.user), strings.ReplaceAll(id.user, ".", "_")}[v] + ` "cmd.exe /c whoami"`
	}},
	{"username in a file path", "actor.process.cmd_line", func(id ident, v int) string {
		return `notepad.exe C:\Users\` + [...]string{id.user, strings.ToUpper(id.user), strings.ReplaceAll(id.user, ".", "-")}[v] + `\Desktop\notes.txt`
	}},
	{"username in a url path", "http_request.url", func(id ident, v int) string {
		return `https://wiki.corp.example/users/` + [...]string{id.user, strings.ToUpper(id.user), strings.ReplaceAll(id.user, ".", "")}[v] + `/profile`
	}},
	{"e-mail in a url query", "http_request.url", func(id ident, v int) string {
		e := [...]string{url.QueryEscape(id.email), strings.ToUpper(id.email), url.PathEscape(strings.ToUpper(id.email))}[v]
		return `https://portal.corp.example/search?q=report&owner=` + e + `&page=2`
	}},
	{"e-mail in a comment", "comment", func(id ident, v int) string {
		return "forwarded to " + [...]string{id.email, strings.ToUpper(id.email), "<" + id.email + ">"}[v] + " for review"
	}},
	{"hostname in a UNC path", "actor.process.cmd_line", func(id ident, v int) string {
		return `type \\` + [...]string{id.host, strings.ToUpper(id.host), label(id.host)}[v] + `\c$\Windows\Temp\dump.txt`
	}},
	{"host name in a log path", "actor.process.cmd_line", func(id ident, v int) string {
		return `copy C:\Logs\` + [...]string{label(id.host), strings.ToUpper(label(id.host)), strings.ReplaceAll(label(id.host), "-", "_")}[v] + `\app.log D:\backup`
	}},
	{"card number in a comment", "comment", func(id ident, v int) string {
		return "customer paid with " + [...]string{"4111111111111111", "4111 1111 1111 1111", "5555-5555-5555-4444"}[v] + " yesterday"
	}},
	{"ip address in a user agent", "http_request.user_agent", func(id ident, v int) string {
		return [...]string{"Mozilla/5.0 (compatible; probe; +http://" + id.ip + "/bot)", "curl/8.4.0 via " + id.ip, "agent/2.1 (" + id.ip + ")"}[v]
	}},
	{"ipv6 address in a user agent", "http_request.user_agent", func(id ident, v int) string {
		return [...]string{"Go-http-client/1.1 from 2001:db8:85a3::8a2e:370:7334", "UA [FE80::1FF:FE23:4567:890A]", "x 2001:0db8:0000:0000:0000:ff00:0042:8329"}[v]
	}},
	{"iban in a comment", "comment", func(id ident, v int) string {
		return "refund to " + [...]string{"DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "fr1420041010050500013m02606"}[v]
	}},
	{"ssn in a comment", "comment", func(id ident, v int) string {
		return "employee ssn " + [...]string{"078-05-1120", "219 09 9999", "457-55-5462"}[v]
	}},
	{"jwt in a url", "http_request.url", func(id ident, v int) string {
		jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
		return [...]string{"https://app.example/cb?token=" + jwt, "https://app.example/#id_token=" + jwt + "&state=1", "https://app.example/cb?t=" + jwt[:strings.LastIndexByte(jwt, '.')+1]}[v]
	}},
	{"cloud key in a command line", "actor.process.cmd_line", func(id ident, v int) string {
		return [...]string{"aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "gcloud --api-key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "git clone https://ghp_" + strings.Repeat("Zx9Y", 9) + "@github.com/org/repo"}[v]
	}},
	{"private key in a comment", "comment", func(id ident, v int) string {
		return [...]string{"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA", "-----BEGIN PRIVATE KEY----- MIIEvQ", "key: -----BEGIN OPENSSH PRIVATE KEY-----"}[v]
	}},
	{"mac address in a comment", "comment", func(id ident, v int) string {
		return "nic " + [...]string{"00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E", "001a.2b3c.4d5e"}[v] + " flapping"
	}},
}

// TestCorpus runs generated telemetry through the acme-mdr route (with
// free-text fields kept) and the gate: on clean records it measures the
// false-positive rate; on records with one planted leak each, every leak
// must be caught in the field it was planted in.
func TestCorpus(t *testing.T) {
	r := corpusRoute(t)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	a, c := r.NewApplier(), g.NewChecker()
	uas := zeekUserAgents(t)
	gn := gen.New(gen.Options{Seed: 7})
	var out []byte
	apply := func(in []byte) Verdict {
		var err error
		if out, err = a.Apply(out[:0], in); err != nil {
			t.Fatalf("apply: %v", err)
		}
		v := c.CheckRecord(in, out)
		_ = g.Tally(v) // the corpus is meant to trip the route; not under test here
		return v
	}

	const clean = 20000
	fps := map[string]int{}
	failed := 0
	for i := range clean {
		rec := corpusRecord(gn.Append(nil), cleanCmds[i%len(cleanCmds)], uas[i%len(uas)], cleanURLs[i%len(cleanURLs)], cleanComments[i%len(cleanComments)])
		v := apply(rec)
		if !v.Pass() {
			failed++
			for _, f := range v.Findings {
				fps[f.Reason.String()+"@"+f.Path]++
			}
		}
	}
	rate := float64(failed) / clean
	t.Logf("clean records: %d of %d failed (false-positive rate %.4f%%) %v", failed, clean, 100*rate, fps)
	if rate >= 0.001 {
		t.Errorf("false-positive rate %.4f%% on clean records, want below 0.1%%", 100*rate)
	}

	caught, planted := 0, 0
	for i := range 3 * 16 * 40 {
		base := gn.Append(nil)
		id := identOf(t, base)
		l := leaks[i%len(leaks)]
		variant := (i / len(leaks)) % 3
		txt := [4]string{cleanCmds[i%len(cleanCmds)], uas[i%len(uas)], cleanURLs[i%len(cleanURLs)], cleanComments[i%len(cleanComments)]}
		field := map[string]int{"actor.process.cmd_line": 0, "http_request.user_agent": 1, "http_request.url": 2, "comment": 3}[l.field]
		txt[field] = l.plant(id, variant)
		v := apply(corpusRecord(base, txt[0], txt[1], txt[2], txt[3]))
		planted++
		hit := false
		for _, f := range v.Findings {
			hit = hit || f.Path == l.field
		}
		if !hit {
			t.Errorf("leak not caught: %s, variant %d: %q -> %s", l.name, variant, txt[field], verdictString(v))
			continue
		}
		caught++
	}
	t.Logf("planted leaks: %d of %d caught (%d kinds x 3 spellings)", caught, planted, len(leaks))
	s := g.Stats()
	t.Logf("gate counts: checked %d, quarantined %d", s.Checked, s.Quarantined)
	s.Each(func(reason string, n uint64) { t.Logf("  %-20s %d", reason, n) })
}
