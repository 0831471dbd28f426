package route

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/internal/secret"
	"github.com/deident/deident/transforms/pseudonym"
)

const testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// compile builds route "v" from YAML field rules (and extra route keys).
func compile(t testing.TB, fields string, extra ...string) *Route {
	t.Helper()
	t.Setenv("TEST_KEY_V", testKeyHex)
	t.Setenv("TEST_KEY_V2", strings.Repeat("ab", 32))
	yaml := "vendors:\n  v:\n    purpose: test\n    categories: [threat_telemetry]\n"
	for _, e := range extra {
		yaml += "    " + e + "\n"
	}
	if !strings.Contains(yaml, "keys:") {
		yaml += "    keys: [{env: TEST_KEY_V}]\n"
	}
	yaml += "    fields:\n" + fields
	cfg, err := config.Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile("v", cfg.Vendors["v"], cfg.Dir, cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pseudo computes the expected pseudonym independently of the Applier.
func pseudo(ns, val string, bytesN int, prefix string) string {
	key := secret.NewKey(mustHex(testKeyHex))
	h := pseudonym.NewHasher(key.Derive("pseudonym"))
	sum := h.Sum([]byte(ns + "\x00" + val))
	return prefix + hex.EncodeToString(sum[:bytesN])
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestActions(t *testing.T) {
	cases := []struct {
		name   string
		fields string
		in     string
		want   string
	}{
		{"keep copies the value; default deny drops the rest",
			"      - {path: a, action: keep}\n",
			`{"a":{"x":[1,"two",null]},"b":"secret","c":3}`, `{"a":{"x":[1,"two",null]}}`},
		{"drop is explicit",
			"      - {path: a, action: drop}\n      - {path: b, action: keep}\n",
			`{"a":"x","b":true}`, `{"b":true}`},
		{"nested paths keep structure, empty objects vanish",
			"      - {path: actor.user.name, action: keep}\n",
			`{"actor":{"user":{"name":"n","uid":1},"process":{"pid":2}},"other":{"user":1}}`, `{"actor":{"user":{"name":"n"}}}`},
		{"pseudonymize hex 128 with prefix",
			"      - {path: u, action: pseudonymize, namespace: user, prefix: usr_}\n",
			`{"u":"alice"}`, `{"u":"` + pseudo("user", "alice", 16, "usr_") + `"}`},
		{"pseudonymize default namespace is the path; 64 bits",
			"      - {path: u, action: pseudonymize, bits: 64}\n",
			`{"u":"alice"}`, `{"u":"` + pseudo("u", "alice", 8, "") + `"}`},
		{"normalize lower",
			"      - {path: u, action: pseudonymize, normalize: lower, namespace: n}\n",
			`{"u":"ALICE"}`, `{"u":"` + pseudo("n", "alice", 16, "") + `"}`},
		{"normalize trim",
			"      - {path: u, action: pseudonymize, normalize: trim, namespace: n}\n",
			`{"u":"  alice\t"}`, `{"u":"` + pseudo("n", "alice", 16, "") + `"}`},
		{"normalize email lowercases the domain only",
			"      - {path: u, action: pseudonymize, normalize: email, namespace: n}\n",
			`{"u":"Alice@CORP.Example"}`, `{"u":"` + pseudo("n", "Alice@corp.example", 16, "") + `"}`},
		{"escaped input is hashed unescaped",
			"      - {path: u, action: pseudonymize, namespace: n}\n",
			`{"u":"al\u0069ce"}`, `{"u":"` + pseudo("n", "alice", 16, "") + `"}`},
		{"null stays null",
			"      - {path: u, action: pseudonymize}\n",
			`{"u":null}`, `{"u":null}`},
		{"shared namespace joins fields",
			"      - {path: a.user, action: pseudonymize, namespace: user}\n      - {path: t.user, action: pseudonymize, namespace: user}\n",
			`{"a":{"user":"bob"},"t":{"user":"bob"}}`, `{"a":{"user":"` + pseudo("user", "bob", 16, "") + `"},"t":{"user":"` + pseudo("user", "bob", 16, "") + `"}}`},
		{"email_split keeps the domain, lowercased",
			"      - {path: e, action: email_split, namespace: em}\n",
			`{"e":"Bob.Smith@Corp.Example"}`, `{"e":"` + pseudo("em", "Bob.Smith", 16, "") + `@corp.example"}`},
		{"email_split pseudonymizes the domain",
			"      - {path: e, action: email_split, namespace: em, domain: pseudonymize, bits: 64}\n",
			`{"e":"bob@corp.example"}`, `{"e":"` + pseudo("em", "bob", 8, "") + "@" + pseudo("em\x00domain", "corp.example", 8, "") + `"}`},
		{"ip_truncate v4 and v6",
			"      - {path: a, action: ip_truncate}\n      - {path: b, action: ip_truncate, ipv4_bits: 16, ipv6_bits: 32}\n      - {path: c, action: ip_truncate}\n",
			`{"a":"192.168.17.42","b":"2001:db8:abcd:12::1","c":"::ffff:10.1.2.3"}`, `{"a":"192.168.17.0","b":"2001:db8::","c":"10.1.2.0"}`},
		{"time bucket",
			"      - {path: t, action: generalize, time_bucket: 1h}\n",
			`{"t":"2026-11-27T13:45:00.5Z"}`, `{"t":"2026-11-27T13:00:00Z"}`},
		{"numeric bucket by width and edges",
			"      - {path: a, action: generalize, numeric_bucket: {width: 10}}\n      - {path: b, action: generalize, numeric_bucket: {edges: [10, 100]}}\n",
			`{"a":37,"b":100}`, `{"a":"[30,40)","b":">=100"}`},
		{"map with default",
			"      - path: r\n        action: generalize\n        map: {entries: [{from: CFO, to: executive}], default: other}\n      - path: s\n        action: generalize\n        map: {entries: [{from: CFO, to: executive}]}\n",
			`{"r":"CFO","s":"clerk"}`, `{"r":"executive","s":"other"}`},
		{"arrays: every element",
			"      - {path: \"h[].v\", action: pseudonymize, namespace: n}\n      - {path: \"h[].alg\", action: keep}\n",
			`{"h":[{"alg":1,"v":"x","junk":2},{"alg":2},{"junk":3}]}`, `{"h":[{"alg":1,"v":"` + pseudo("n", "x", 16, "") + `"},{"alg":2}]}`},
		{"arrays of scalars and nested arrays",
			"      - {path: \"tags[]\", action: pseudonymize, namespace: n}\n      - {path: \"m[][]\", action: keep}\n",
			`{"tags":["a","b"],"m":[[1,2],[3]]}`, `{"tags":["` + pseudo("n", "a", 16, "") + `","` + pseudo("n", "b", 16, "") + `"],"m":[[1,2],[3]]}`},
		{"a value of another shape than the rule expects is not exported",
			"      - {path: a.b, action: keep}\n      - {path: \"c[]\", action: keep}\n",
			`{"a":"flat","c":{"not":"array"}}`, `{}`},
		{"keys with escapes are matched unescaped and written as given",
			"      - {path: name, action: keep}\n",
			`{"n\u0061me":"x"}`, `{"n\u0061me":"x"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := compile(t, c.fields).NewApplier()
			got, err := a.Apply(nil, []byte(c.in))
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			if !json.Valid(got) {
				t.Fatalf("output is not valid JSON: %s", got)
			}
			// Deterministic, and the same with the cache warm.
			again, _ := a.Apply(nil, []byte(c.in))
			if !bytes.Equal(again, got) {
				t.Fatalf("second run differs: %s", again)
			}
		})
	}
}

func TestIPPrefixPreservingMatchesCryptoPAn(t *testing.T) {
	r := compile(t, "      - {path: ip, action: ip_prefix_preserving}\n")
	pan := r.KeyRing().CryptoPAn(0)
	a := r.NewApplier()
	for _, ip := range []string{"10.1.2.3", "10.1.2.4", "2001:db8::1", "fe80::1%eth0"} {
		got, err := a.Apply(nil, []byte(`{"ip":"`+ip+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		want := pan.Anonymize(netip.MustParseAddr(ip).WithZone(""))
		if string(got) != `{"ip":"`+want.String()+`"}` {
			t.Errorf("%s -> %s, want %s", ip, got, want)
		}
	}
	// Prefix preserved through the route: 10.1.2.3 and 10.1.2.4 share 29 bits.
	x, _ := a.Apply(nil, []byte(`{"ip":"10.1.2.3"}`))
	y, _ := a.Apply(nil, []byte(`{"ip":"10.1.2.4"}`))
	px := netip.MustParseAddr(string(x[7 : len(x)-2]))
	py := netip.MustParseAddr(string(y[7 : len(y)-2]))
	if p, _ := px.Prefix(29); !p.Contains(py) {
		t.Errorf("%s and %s do not share a /29", px, py)
	}
}

func TestErrorsNameThePathNotTheValue(t *testing.T) {
	r := compile(t, ""+
		"      - {path: user.name, action: pseudonymize}\n"+
		"      - {path: ip, action: ip_truncate}\n"+
		"      - {path: mail, action: email_split}\n"+
		"      - {path: t, action: generalize, time_bucket: 1h}\n"+
		"      - {path: n, action: generalize, numeric_bucket: {width: 5}}\n")
	cases := []struct {
		in       string
		path     string
		sentinel error
	}{
		{`{"user":{"name":31337}}`, "user.name", ErrNotString},
		{`{"user":{"name":{"first":"SECRETVALUE"}}}`, "user.name", ErrWrongValue},
		{`{"ip":"SECRETVALUE"}`, "ip", ErrNotIP},
		{`{"mail":"SECRETVALUE"}`, "mail", ErrNotEmail},
		{`{"t":"SECRETVALUE"}`, "t", nil},
		{`{"n":"SECRETVALUE"}`, "n", nil},
		{`{"user":{"name":"SECRETVALUE"`, "(record)", jsonscan.ErrTruncated},
		{`{"x":"SECRETVALUE` + "\xff" + `"}`, "(record)", jsonscan.ErrInvalidUTF8},
		{`["SECRETVALUE"]`, "(record)", ErrNotObject},
		{`{"ip":"10.0.0.1"} trailing`, "(record)", jsonscan.ErrSyntax},
	}
	a := r.NewApplier()
	for _, c := range cases {
		out, err := a.Apply([]byte("prefix"), []byte(c.in))
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: got %v, want a FieldError", c.in, err)
			continue
		}
		if fe.Path != c.path {
			t.Errorf("%s: path %q, want %q", c.in, fe.Path, c.path)
		}
		if c.sentinel != nil && !errors.Is(err, c.sentinel) {
			t.Errorf("%s: %v is not %v", c.in, err, c.sentinel)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "31337") {
			t.Errorf("error echoes the value: %v", err)
		}
		if string(out) != "prefix" {
			t.Errorf("%s: dst not restored on error: %q", c.in, out)
		}
	}
	// The applier goes on after errors.
	if out, err := a.Apply(nil, []byte(`{"ip":"10.9.8.7"}`)); err != nil || string(out) != `{"ip":"10.9.8.0"}` {
		t.Errorf("after errors: %s %v", out, err)
	}
}

func TestMaxRecordBytes(t *testing.T) {
	r := compile(t, "      - {path: a, action: keep}\n")
	r.maxRecord = 100
	_, err := r.NewApplier().Apply(nil, []byte(`{"a":"`+strings.Repeat("x", 200)+`"}`))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestKeyEpochsByEventTime(t *testing.T) {
	r := compile(t, "      - {path: u, action: pseudonymize}\n      - {path: time, action: keep}\n",
		"event_time: time",
		"keys: [{env: TEST_KEY_V, valid_from: 2026-01-01T00:00:00Z}, {env: TEST_KEY_V2, valid_from: 2027-01-01T00:00:00Z}]")
	a := r.NewApplier()
	old, err := a.Apply(nil, []byte(`{"u":"alice","time":"2026-06-01T00:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	oldKey := a.KeyID()
	newer, err := a.Apply(nil, []byte(`{"time":"2027-06-01T00:00:00Z","u":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() == oldKey {
		t.Error("both records used the same key id")
	}
	if !strings.Contains(string(old), pseudo("u", "alice", 16, "")) {
		t.Errorf("2026 record not under the 2026 key: %s", old)
	}
	if strings.Contains(string(newer), pseudo("u", "alice", 16, "")) {
		t.Error("pseudonyms link across epochs")
	}
	// Epoch millis work too; before the first epoch and missing time are errors.
	if _, err := a.Apply(nil, []byte(`{"u":"alice","time":1800000000000}`)); err != nil || a.KeyID() == oldKey {
		t.Errorf("epoch millis in 2027: %v, key %s", err, a.KeyID())
	}
	if _, err := a.Apply(nil, []byte(`{"u":"alice","time":"2020-01-01T00:00:00Z"}`)); !errors.Is(err, pseudonym.ErrNoKey) {
		t.Errorf("before first epoch: %v", err)
	}
	if _, err := a.Apply(nil, []byte(`{"u":"alice"}`)); !errors.Is(err, ErrEventTime) {
		t.Errorf("missing event time: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Setenv("TEST_KEY_V", testKeyHex)
	cases := map[string]string{
		"      - {path: a, action: keep}\n      - {path: a.b, action: keep}\n":              `vendors.v.fields[1].path: "a.b" is inside "a"`,
		"      - {path: a.b, action: keep}\n      - {path: a, action: keep}\n":              `vendors.v.fields[1].path: "a" has rules for fields inside it`,
		"      - {path: \"a[].b\", action: keep}\n      - {path: a.c, action: keep}\n":      `disagree on whether a is an array`,
		"      - {path: h, action: generalize, hierarchy: {file: missing.csv, level: 1}}\n": `vendors.v.fields[0].hierarchy: open`,
	}
	for fields, want := range cases {
		yaml := "vendors:\n  v:\n    purpose: p\n    categories: [threat_telemetry]\n    keys: [{env: TEST_KEY_V}]\n    fields:\n" + fields
		cfg, err := config.Parse([]byte(yaml), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		_, err = CompileAll(cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", fields, err, want)
		}
	}
}

func TestVersionChangesWithPolicyNotWithKeyMaterialOrder(t *testing.T) {
	a := compile(t, "      - {path: u, action: pseudonymize}\n")
	b := compile(t, "      - {path: u, action: pseudonymize}\n")
	c := compile(t, "      - {path: u, action: pseudonymize, bits: 64}\n")
	if a.Version != b.Version {
		t.Error("same policy, different versions")
	}
	if a.Version == c.Version {
		t.Error("bits changed but version did not")
	}
	d := compile(t, "      - {path: u, action: pseudonymize}\n", "gate: {echo: false}")
	if a.Version == d.Version {
		t.Error("the gate was loosened but the version did not change")
	}
	if strings.Contains(a.Version, testKeyHex[:8]) {
		t.Error("version leaks the key")
	}
}

func TestApplyDoesNotAllocateWhenWarm(t *testing.T) {
	r := compile(t, ""+
		"      - {path: u, action: pseudonymize, normalize: lower}\n"+
		"      - {path: e, action: email_split}\n"+
		"      - {path: ip, action: ip_prefix_preserving}\n"+
		"      - {path: src, action: ip_truncate}\n"+
		"      - {path: t, action: generalize, time_bucket: 1h}\n"+
		"      - {path: n, action: generalize, numeric_bucket: {edges: [1, 10]}}\n"+
		"      - {path: \"h[].v\", action: keep}\n")
	a := r.NewApplier()
	in := []byte(`{"u":"Alice","e":"a@b.c","ip":"10.1.2.3","src":"10.1.2.3","t":"2026-11-27T13:45:00Z","n":5,"h":[{"v":1},{"w":2}],"drop":"me"}`)
	out := make([]byte, 0, 1024)
	out, _ = a.Apply(out, in)
	allocs := testing.AllocsPerRun(200, func() {
		var err error
		if out, err = a.Apply(out[:0], in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("warm Apply allocates %v times per record", allocs)
	}
}

func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{"a":{"b":"x"},"c":[1,2,{"d":"e"}],"ip":"10.0.0.1","t":"2026-11-27T13:45:00Z"}`,
		`{"a":`, `{"a":"\u00e9\ud83d\ude00"}`, `{}`, `[]`, `{"a":1e400}`, "{\"a\":\"\xff\"}", `{"c":[[[[]]]]}`,
		`{"u":"x","u":"y"}`, `{"a":{"b":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := compile(t, ""+
			"      - {path: a.b, action: pseudonymize}\n"+
			"      - {path: \"c[]\", action: keep}\n"+
			"      - {path: ip, action: ip_prefix_preserving}\n"+
			"      - {path: t, action: generalize, time_bucket: 1h}\n"+
			"      - {path: u, action: keep}\n")
		out, err := r.NewApplier().Apply(nil, in)
		if err != nil {
			if len(out) != 0 {
				t.Fatalf("output on error: %q", out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output %q from %q", out, in)
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if k != "a" && k != "c" && k != "ip" && k != "t" && k != "u" {
				t.Fatalf("unnamed field %q left: %s", k, fmt.Sprint(m))
			}
		}
	})
}
