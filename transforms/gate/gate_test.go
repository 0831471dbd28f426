package gate

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/deident/deident/internal/config"
)

// testRoute is a route config as Load leaves it (defaults applied).
func testRoute(gc config.Gate) config.Route {
	return config.Route{
		Purpose: "testing",
		Fields: []config.FieldRule{
			{Path: "time", Action: config.Keep},
			{Path: "actor.user.name", Action: config.Pseudonymize, Prefix: "usr_", Bits: 128, Encoding: "hex"},
			{Path: "actor.user.uid", Action: config.Pseudonymize, Bits: 64, Encoding: "base64url"},
			{Path: "actor.user.email_addr", Action: config.EmailSplit, Bits: 64, Encoding: "hex", Domain: "keep"},
			{Path: "device.hostname", Action: config.Pseudonymize, Prefix: "host_", Bits: 128, Encoding: "hex"},
			{Path: "device.ip", Action: config.IPPrefixPreserving},
			{Path: "src_endpoint.ip", Action: config.IPTruncate, IPv4Bits: 24, IPv6Bits: 48},
			{Path: "duration", Action: config.Generalize, NumericBucket: &config.NumericBucket{Width: 10}},
			{Path: "file.hashes[].value", Action: config.Keep},
			{Path: "file.path", Action: config.Drop},
			{Path: "comment", Action: config.Keep},
		},
		Gate: gc,
	}
}

const (
	usr  = "usr_0123456789abcdef0123456789abcdef"
	uid  = "AAECAwQFBgc"
	mail = "0123456789abcdef@corp.example"
	host = "host_fedcba9876543210fedcba9876543210"
)

// good is a record as the route writes it.
var good = `{"time":"2026-11-01T00:00:01.234Z","actor":{"user":{"name":"` + usr + `","uid":"` + uid + `","email_addr":"` + mail + `"}},` +
	`"device":{"hostname":"` + host + `","ip":"203.0.113.77"},"src_endpoint":{"ip":"10.1.2.0"},"duration":"[10,20)",` +
	`"file":{"hashes":[{"value":"9f86d081884c7d65"}]},"comment":"scheduled scan completed"}`

// raw is the input good was derived from.
const raw = `{"time":"2026-11-01T00:00:01.234Z","actor":{"user":{"name":"Alice.Smith","uid":"S-1-5-21-1004","email_addr":"alice.smith@corp.example"}},` +
	`"device":{"hostname":"wks-0042.corp.example","ip":"10.9.8.7"},"src_endpoint":{"ip":"10.1.2.3"},"duration":12,` +
	`"file":{"path":"C:\\Users\\alice.smith\\x.tmp","hashes":[{"value":"9f86d081884c7d65"}]},"comment":"scheduled scan completed"}`

func newGate(t testing.TB, gc config.Gate) *Gate {
	t.Helper()
	g, err := New("acme", testRoute(gc))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func verdictString(v Verdict) string {
	var s []string
	for _, f := range v.Findings {
		s = append(s, f.Reason.String()+"@"+f.Path)
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

type gateCase struct {
	name string
	out  string
	want string // sorted "reason@path" findings, "" for pass
}

func runCases(t *testing.T, c *Checker, cases []gateCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := c.Check([]byte(tc.out))
			if got := verdictString(v); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if v.Pass() != (tc.want == "") {
				t.Errorf("Pass() = %v", v.Pass())
			}
		})
	}
}

func replace(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("test bug: " + old)
	}
	return strings.Replace(s, old, new, 1)
}

func TestSchema(t *testing.T) {
	off := false
	c := newGate(t, config.Gate{Echo: &off, Patterns: []config.GatePattern{}}).NewChecker()
	runCases(t, c, []gateCase{
		{"good", good, ""},
		{"empty object", `{}`, ""},
		{"null pseudonym", replace(good, `"`+usr+`"`, "null"), ""},
		{"ipv6 truncated", replace(good, `"10.1.2.0"`, `"2001:db8:1::"`), ""},
		{"unknown top-level field", replace(good, `"time"`, `"x":1,"time"`), "schema@*"},
		{"unknown nested field", replace(good, `"uid"`, `"sid":"x","uid"`), "schema@actor.user.*"},
		{"dropped field present", replace(good, `"hashes"`, `"path":"x","hashes"`), "schema@file.*"},
		{"pseudonym too short", replace(good, usr, usr[:20]), "schema@actor.user.name"},
		{"pseudonym without prefix", replace(good, usr, "0123456789abcdef0123456789abcdef"), "schema@actor.user.name"},
		{"pseudonym upper-case hex", replace(good, usr, strings.ToUpper(usr[4:])), "schema@actor.user.name"},
		{"raw value in pseudonym field", replace(good, usr, "alice.smith"), "schema@actor.user.name"},
		{"base64url pseudonym wrong length", replace(good, uid, uid+"A"), "schema@actor.user.uid"},
		{"pseudonym as number", replace(good, `"`+usr+`"`, "42"), "schema@actor.user.name"},
		{"email without pseudonym", replace(good, mail, "alice@corp.example"), "schema@actor.user.email_addr"},
		{"email domain upper case", replace(good, mail, "0123456789abcdef@CORP.example"), "schema@actor.user.email_addr"},
		{"ip field not an ip", replace(good, `"203.0.113.77"`, `"wks-1"`), "schema@device.ip"},
		{"truncated ip with host bits", replace(good, `"10.1.2.0"`, `"10.1.2.3"`), "schema@src_endpoint.ip"},
		{"bucket as number", replace(good, `"[10,20)"`, `12`), "schema@duration"},
		{"array expected", replace(good, `[{"value":"9f86d081884c7d65"}]`, `{"value":"x"}`), "schema@file.hashes[]"},
		{"object expected", replace(good, `"actor":{`, `"actor":"x","a":{`), "schema@* schema@actor"},
		{"repeated member", replace(good, `"time"`, `"comment":"a","time"`), "schema@comment"},
		{"malformed", good[:len(good)-1], "schema@(record)"},
		{"not an object", `["x"]`, "schema@(record)"},
		{"trailing garbage", good + `x`, "schema@(record)"},
	})
}

func TestSchemaOff(t *testing.T) {
	off := false
	c := newGate(t, config.Gate{Schema: &off, Echo: &off}).NewChecker()
	runCases(t, c, []gateCase{
		{"unknown field passes", replace(good, `"time"`, `"x":1,"time"`), ""},
		// Still scanned: an unknown field's text is tested like free text.
		{"unknown field with an e-mail", replace(good, `"time"`, `"x":"bob@example.com","time"`), "pattern:email@*"},
		// A value the transform did not rewrite is tested even so.
		{"raw ip in truncated field", replace(good, `"10.1.2.0"`, `"10.1.2.3"`), "pattern:ipv4@src_endpoint.ip"},
		{"malformed is never vetted", good[:10], "schema@(record)"},
	})
}

func TestK(t *testing.T) {
	off := false
	c := newGate(t, config.Gate{MinK: 5, Echo: &off}).NewChecker()
	withK := func(k string) string { return replace(good, `{"time"`, `{"deident_k":`+k+`,"time"`) }
	runCases(t, c, []gateCase{
		{"missing marker", good, "k@deident_k"},
		{"below k", withK("4"), "k@deident_k"},
		{"at k", withK("5"), ""},
		{"above k", withK("12"), ""},
		{"not a number", withK(`"9"`), "k@deident_k schema@deident_k"},
		{"not an integer", withK(`5.5`), "k@deident_k schema@deident_k"},
	})
	if v := c.CheckClass([]byte(good), 7); !v.Pass() {
		t.Errorf("CheckClass(7): %s", verdictString(v))
	}
	if v := c.CheckClass([]byte(good), 3); verdictString(v) != "k@deident_k" {
		t.Errorf("CheckClass(3): %s", verdictString(v))
	}
	// Without min_k the route has no k-anonymity stage: a no-op, and the
	// marker is an unknown field like any other.
	c = newGate(t, config.Gate{Echo: &off}).NewChecker()
	runCases(t, c, []gateCase{
		{"no k stage", good, ""},
		{"marker without k stage", withK("5"), "schema@*"},
	})
}

func TestKFromKAnonymityStage(t *testing.T) {
	off := false
	rc := testRoute(config.Gate{Echo: &off})
	rc.KAnon = &config.KAnon{K: 5}
	g, err := New("acme", rc)
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	if v := c.CheckClass([]byte(good), 4); verdictString(v) != "k@deident_k" {
		t.Errorf("class of 4 under k_anonymity.k 5: %s", verdictString(v))
	}
	if v := c.CheckClass([]byte(good), 5); !v.Pass() {
		t.Errorf("class of 5: %s", verdictString(v))
	}
}

func TestEcho(t *testing.T) {
	g := newGate(t, config.Gate{Patterns: []config.GatePattern{}})
	c := g.NewChecker()
	c.Observe([]byte(raw))
	comment := func(s string) string { return replace(good, "scheduled scan completed", s) }
	runCases(t, c, []gateCase{
		{"clean", good, ""},
		{"username in command line", comment(`runas /user:CORP\\alice.smith cmd.exe`), "echo@comment"},
		{"username upper case", comment(`net user ALICE.SMITH /domain`), "echo@comment"},
		{"username with other separators", comment(`C:\\Users\\alice_smith\\AppData`), "echo@comment"},
		{"username without separators", comment(`login aliceSmith ok`), "echo@comment"},
		{"email local part in url", comment(`https://portal.example/q?u=alice.smith%40corp.example&x=1`), "echo@comment"},
		{"whole email", comment(`mailto:Alice.Smith@corp.example`), "echo@comment"},
		{"hostname in file path", comment(`\\\\wks-0042.corp.example\\c$\\temp`), "echo@comment"},
		{"host label in file path", comment(`C:\\Logs\\WKS-0042\\app.log`), "echo@comment"},
		{"raw ip in text", comment(`peer 10.9.8.7 port 443`), "echo@comment"},
		{"escaped json text", comment(`user \u0061lice.smith`), "echo@comment"},
		{"in a kept array", replace(good, "9f86d081884c7d65", "alice.smith"), "echo@file.hashes[].value"},
		{"as an unknown member name", replace(good, `"time"`, `"alice.smith":1,"time"`), "echo@* schema@*"},
		{"a different user", comment(`runas /user:bob.jones cmd.exe`), ""},
		{"a prefix of the name", comment(`alice smith`), ""},
		{"short numbers are not compared", comment(`1004`), ""},
	})
	// Pseudonym and IP fields are not tested: their values are the route's
	// own outputs.
	g2 := newGate(t, config.Gate{})
	c2 := g2.NewChecker()
	c2.Observe([]byte(strings.ReplaceAll(raw, "10.9.8.7", "203.0.113.77")))
	if v := c2.Check([]byte(good)); !v.Pass() {
		t.Errorf("an IP field equal to a raw IP: %s", verdictString(v))
	}
}

func TestEchoArraysAndNumbers(t *testing.T) {
	rc := config.Route{Fields: []config.FieldRule{
		{Path: "users[].name", Action: config.Pseudonymize, Bits: 64, Encoding: "hex"},
		{Path: "employee", Action: config.Pseudonymize, Bits: 64, Encoding: "hex"},
		{Path: "note", Action: config.Keep},
	}}
	g, err := New("r", rc)
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	c.Observe([]byte(`{"users":[{"name":"carol.x"},{"name":"Dave.Y"}],"employee":7654321,"note":"n"}`))
	for _, tc := range []struct {
		note string
		leak bool
	}{{"carol.x", true}, {"see dave.y", true}, {"id 7654321", true}, {"id 765432", false}, {"erin.z", false}} {
		v := c.Check([]byte(`{"note":"` + tc.note + `"}`))
		if v.Reasons.Has(ReasonEcho) != tc.leak {
			t.Errorf("%q: echo %v, want %v", tc.note, v.Reasons.Has(ReasonEcho), tc.leak)
		}
	}
}

func TestPatternsInRecords(t *testing.T) {
	off := false
	c := newGate(t, config.Gate{Echo: &off}).NewChecker()
	comment := func(s string) string { return replace(good, "scheduled scan completed", s) }
	runCases(t, c, []gateCase{
		{"email", comment("contact bob@example.com"), "pattern:email@comment"},
		{"card in comment", comment("paid with 4111 1111 1111 1111 today"), "pattern:card@comment"},
		{"card as kept number", replace(good, `"9f86d081884c7d65"`, `4111111111111111`), "pattern:card@file.hashes[].value"},
		{"ipv4 in pseudonymized-address field is fine", good, ""},
		{"ipv6 in comment", comment("from fe80::1ff:fe23:4567:890a"), "pattern:ipv6@comment"},
		{"two patterns", comment("bob@example.com 078-05-1120"), "pattern:email@comment pattern:ssn@comment"},
	})
	// Patterns can be chosen per route.
	c = newGate(t, config.Gate{Echo: &off, Patterns: []config.GatePattern{config.PatternCard}}).NewChecker()
	runCases(t, c, []gateCase{
		{"email not selected", comment("contact bob@example.com"), ""},
		{"card selected", comment("4111-1111-1111-1111"), "pattern:card@comment"},
	})
}

func TestDisabled(t *testing.T) {
	off := false
	g := newGate(t, config.Gate{Enabled: &off})
	c := g.NewChecker()
	c.Observe([]byte(raw))
	if v := c.Check([]byte(`{"x":"bob@example.com"`)); !v.Pass() {
		t.Errorf("a disabled gate failed a record: %s", verdictString(v))
	}
}

func TestVerdictHeaders(t *testing.T) {
	off := false
	c := newGate(t, config.Gate{Echo: &off}).NewChecker()
	v := c.Check([]byte(replace(good, "scheduled scan completed", "bob@example.com 4111 1111 1111 1111")))
	if got := string(v.Reasons.Append(nil)); got != "pattern:email,pattern:card" {
		t.Errorf("reasons header %q", got)
	}
	if got := v.Paths(); got != "comment" {
		t.Errorf("paths header %q", got)
	}
	if strings.Contains(v.Paths()+v.Reasons.String(), "bob") {
		t.Error("a value in the headers")
	}
}

func TestTallyFailsClosed(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rc := testRoute(config.Gate{MaxQuarantineRate: 0.1, QuarantineWindow: time.Minute, MinRecords: 50})
	g, err := New("acme", rc, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	bad := []byte(replace(good, "scheduled scan completed", "bob@example.com"))
	for i := range 100 {
		rec := []byte(good)
		if i%20 == 0 {
			rec = bad // 5%: under the threshold
		}
		if err := g.Tally(c.Check(rec)); err != nil {
			t.Fatalf("record %d: tripped at 5%%: %v", i, err)
		}
		now = now.Add(100 * time.Millisecond)
	}
	var trip error
	for i := 0; trip == nil && i < 100; i++ {
		trip = g.Tally(c.Check(bad))
	}
	var te *TripError
	if !errorsAs(trip, &te) || te.Route != "acme" {
		t.Fatalf("did not fail closed: %v", trip)
	}
	if g.Err() == nil || g.Tally(c.Check([]byte(good))) == nil {
		t.Error("a tripped gate must stay tripped")
	}
	s := g.Stats()
	if s.ByReason[ReasonPattern+Reason(patEmail)] != s.Quarantined || s.Checked != s.Quarantined+96 {
		t.Errorf("stats %+v", s)
	}
	counts := map[string]uint64{}
	s.Each(func(r string, n uint64) { counts[r] = n })
	if len(counts) != 1 || counts["pattern:email"] == 0 {
		t.Errorf("per-reason counts %v", counts)
	}
	t.Log(trip)
}

// A Tallier hands passes on in batches, yet a route must fail closed at
// the same record as with Gate.Tally, and its stats must add up once
// flushed: each gate below sees the same verdicts at the same times.
func TestTallierMatchesTally(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rc := testRoute(config.Gate{MaxQuarantineRate: 0.1, QuarantineWindow: time.Minute, MinRecords: 50})
	one, err := New("acme", rc, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	batched, err := New("acme", rc, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	c, tl := one.NewChecker(), batched.NewTallier()
	pass, bad := c.Check([]byte(good)), c.Check([]byte(replace(good, "scheduled scan completed", "bob@example.com")))
	rnd := rand.New(rand.NewPCG(1, 2))
	tripped := -1
	for i := range 20000 {
		// The quarantine rate drifts up slowly: 2% at first, 12% at the end.
		v := pass
		if rnd.Float64() < 0.02+0.1*float64(i)/20000 {
			v = bad
		}
		e1, e2 := one.Tally(v), tl.Tally(v)
		if (e1 == nil) != (e2 == nil) {
			t.Fatalf("record %d: Gate.Tally says %v, the Tallier %v", i, e1, e2)
		}
		// Unflushed, only passes lag, by less than a batch.
		s1, s2 := one.Stats(), batched.Stats()
		if lag := s1.Checked - s2.Checked; lag >= tallyBatch || s1.Quarantined != s2.Quarantined || s1.ByReason != s2.ByReason {
			t.Fatalf("record %d: stats %+v, the Tallier's %+v", i, s1, s2)
		}
		if e1 != nil {
			tripped = i
			break
		}
		now = now.Add(10 * time.Millisecond)
	}
	if tripped < 0 {
		t.Fatal("the route never failed closed")
	}
	_ = tl.Flush()
	if s1, s2 := one.Stats(), batched.Stats(); s1 != s2 {
		t.Errorf("stats at the trip %+v, flushed Tallier's %+v", s1, s2)
	}
	t.Logf("both failed closed at record %d", tripped)
}

func TestNewErrors(t *testing.T) {
	_, err := New("acme", testRoute(config.Gate{MinK: 1, Patterns: []config.GatePattern{"phone"}}))
	if err == nil || !strings.Contains(err.Error(), "vendors.acme.gate.min_k") || !strings.Contains(err.Error(), "vendors.acme.gate.patterns[0]") {
		t.Errorf("got %v", err)
	}
	_, err = New("acme", testRoute(config.Gate{MinK: 3, KField: "comment"}))
	if err == nil || !strings.Contains(err.Error(), "vendors.acme.gate.k_field") {
		t.Errorf("got %v", err)
	}
}

// TestSeenSetsLineAligned: a set of the seen cache is four fingerprints in
// one cache line, as remember assumes (a set across two lines costs every
// repeated raw identifier a second miss).
func TestSeenSetsLineAligned(t *testing.T) {
	g := newGate(t, config.Gate{})
	for range 4 {
		c := g.NewChecker()
		if p := uintptr(unsafe.Pointer(&c.seen[0])); p%64 != 0 {
			t.Fatalf("the seen cache starts at %#x: its sets cross cache lines", p)
		}
	}
}
