package gate

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/gen"
)

// TestShapesMatchFullPass: a Checker with its shapes and memo gives the
// same verdicts, findings included, as one that checks every record in
// full, on the corpus (clean, with planted leaks, and with outputs altered
// the ways a shape must notice: other bytes between values, escapes,
// whitespace, extra or missing members, values of another type).
func TestShapesMatchFullPass(t *testing.T) {
	r := corpusRoute(t)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	fast, full := g.NewChecker(), g.NewChecker()
	full.reference = true
	a := r.NewApplier()
	uas := zeekUserAgents(t)
	gn := gen.New(gen.Options{Seed: 11})
	rng := rand.New(rand.NewPCG(1, 2))
	mutate := []func(string) string{
		func(s string) string { return s },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment" : "`, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"\u00e9t\u00e9 `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"été `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"bad \xff `, 1) },
		func(s string) string {
			return strings.Replace(s, `"comment":"`, `"comment":"tab\there \"q\" \\ \/ `, 1)
		},
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"bad \x `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"bad \u12G4 `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"ctl `+"\x01"+` `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"comment":"\u0041nn.Lee \ud800 `, 1) },
		func(s string) string { return strings.Replace(s, `"comment":"`, `"extra":"x","comment":"`, 1) },
		func(s string) string {
			return strings.Replace(s, `"comment":"`, `"comment":4111111111111111,"c2":"`, 1)
		},
		func(s string) string { return strings.Replace(s, `"time":"`, `"time":null,"t":"`, 1) },
		func(s string) string { return strings.Replace(s, `"class_uid":`, `"class_uid":-0.5e+3,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `"class_uid":`, `"class_uid":01,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"name":"ABC`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"na\u006de":"`, 1) },
		func(s string) string { return strings.Replace(s, `,"category_uid"`, `1,"category_uid"`, 1) },
		func(s string) string { return strings.Replace(s, `,"category_uid"`, `.5,"category_uid"`, 1) },
		func(s string) string { return strings.Replace(s, `,"category_uid"`, ` ,"category_uid"`, 1) },
		func(s string) string { return strings.Replace(s, `","class_uid"`, `x","class_uid"`, 1) },
		func(s string) string { return s + " " },
		func(s string) string { return s + "x" },
		func(s string) string { return s[:len(s)-1] },
		func(s string) string {
			return strings.Replace(s, `"comment":"`, `"comment":{"bob.x":[1,true,"a@b.example"]},"c":"`, 1)
		},
		func(s string) string {
			return strings.Replace(s, `"user_agent":"`, `"user_agent":"`+strings.Repeat("long text ", 10), 1)
		},
	}
	var out []byte
	checked := 0
	for i := range 6000 {
		base := gn.Append(nil)
		txt := [4]string{cleanCmds[i%len(cleanCmds)], uas[i%len(uas)], cleanURLs[i%len(cleanURLs)], cleanComments[i%len(cleanComments)]}
		if i%7 == 3 {
			l := leaks[rng.IntN(len(leaks))]
			field := map[string]int{"actor.process.cmd_line": 0, "http_request.user_agent": 1, "http_request.url": 2, "comment": 3}[l.field]
			txt[field] = l.plant(identOf(t, base), rng.IntN(3))
		}
		in := corpusRecord(base, txt[0], txt[1], txt[2], txt[3])
		if out, err = a.Apply(out[:0], in); err != nil {
			t.Fatal(err)
		}
		fast.Observe(in)
		full.Observe(in)
		variants := []string{string(out)}
		if i%5 == 0 {
			variants = append(variants, mutate[rng.IntN(len(mutate))](string(out)))
		}
		for _, o := range variants {
			want := verdictString(full.Check([]byte(o)))
			if got := verdictString(fast.Check([]byte(o))); got != want {
				t.Fatalf("record %d: with shapes %s, in full %s\n%s", i, got, want, o)
			}
			if rng.IntN(4) == 0 { // k from the caller
				n := rng.IntN(4)
				want := verdictString(full.CheckClass([]byte(o), n))
				if got := verdictString(fast.CheckClass([]byte(o), n)); got != want {
					t.Fatalf("record %d, class of %d: with shapes %s, in full %s", i, n, got, want)
				}
			}
			checked++
		}
	}
	t.Logf("%d outputs compared", checked)
}

// TestMemoSeesNewIdentifiers: a string the memo has vetted is an echo as
// soon as a raw identifier equal to it (or to one of its tokens) arrives,
// on this Checker or another one of the route.
func TestMemoSeesNewIdentifiers(t *testing.T) {
	cfg := configWithFields(t, `      - {path: user.name, action: pseudonymize}
      - {path: note, action: keep}
`)
	g, err := New("v", cfg.Vendors["v"])
	if err != nil {
		t.Fatal(err)
	}
	c, other := g.NewChecker(), g.NewChecker()
	pseudo := strings.Repeat("ab", 16)
	out := []byte(`{"user":{"name":"` + pseudo + `"},"note":"owner quinn.zed, see ticket"}`)
	for range 3 {
		if v := c.Check(out); !v.Pass() {
			t.Fatalf("before: %s", verdictString(v))
		}
	}
	other.Observe([]byte(`{"user":{"name":"Quinn.Zed"}}`))
	if v := c.Check(out); !v.Reasons.Has(ReasonEcho) {
		t.Fatalf("after another Checker saw the identifier: %s", verdictString(v))
	}
	out2 := []byte(`{"user":{"name":"` + pseudo + `"},"note":"owner rex_9000, see ticket"}`)
	if v := c.Check(out2); !v.Pass() {
		t.Fatalf("before: %s", verdictString(v))
	}
	c.ObserveIdentifier(0, []byte("REX.9000"))
	if v := c.Check(out2); !v.Reasons.Has(ReasonEcho) {
		t.Fatalf("after the identifier arrived: %s", verdictString(v))
	}
}

// TestRememberedValuesSeeNewIdentifiers: a value a shape remembers as
// passed at its place (a kept string, and, with the schema check off, a
// pseudonym field holding something no pseudonym looks like, which is
// then tested as text) is an echo as soon as a raw identifier equal to it
// arrives.
func TestRememberedValuesSeeNewIdentifiers(t *testing.T) {
	t.Setenv("GATE_TEST_KEY", strings.Repeat("7e", 32))
	for _, schema := range []bool{true, false} {
		cfg, err := config.Parse([]byte(fmt.Sprintf(`
vendors:
  v:
    purpose: p
    categories: [threat_telemetry]
    keys: [{env: GATE_TEST_KEY}]
    gate: {schema: %v}
    fields:
      - {path: user.name, action: pseudonymize}
      - {path: user.uid, action: pseudonymize}
      - {path: n, action: keep}
      - {path: note, action: keep}
`, schema)), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		g, err := New("v", cfg.Vendors["v"])
		if err != nil {
			t.Fatal(err)
		}
		c := g.NewChecker()
		pseudo := strings.Repeat("ab", 16)
		for i, ident := range []string{"SAM.OWENS", "ticket-4711"} {
			name := pseudo
			if !schema {
				name = []string{"sam-owens", "zed-quinn"}[i] // not a pseudonym: tested as text
			}
			// Values differ only where a pseudonym goes, so every other
			// one is remembered at its place.
			outs := make([][]byte, 4)
			for k := range outs {
				outs[k] = []byte(fmt.Sprintf(`{"user":{"name":%q,"uid":"%032x"},"n":1007,"note":"see ticket-4711"}`, name, 17*k+i))
				if v := c.Check(outs[k]); !v.Pass() {
					t.Fatalf("schema %v, before %s: %s", schema, ident, verdictString(v))
				}
			}
			if i == 0 && schema {
				continue // the name is a pseudonym: nothing to find
			}
			c.ObserveIdentifier(1, []byte(ident))
			if v := c.Check(outs[0]); !v.Reasons.Has(ReasonEcho) {
				t.Fatalf("schema %v, after %s arrived: %s", schema, ident, verdictString(v))
			}
		}
	}
}

// TestPatternGuards: the byte counts that spare scanPatterns its checks
// never hide a pattern the check would find.
func TestPatternGuards(t *testing.T) {
	checks := []func([]byte) bool{
		patEmail: hasEmail, patIPv4: hasIPv4, patIPv6: hasIPv6, patMAC: hasMAC, patCard: hasCard,
		patIBAN: hasIBAN, patSSN: hasSSN, patJWT: hasJWT, patCloudKey: hasCloudKey, patPrivateKey: hasPrivateKey,
	}
	all := patternSet(1<<numPatterns - 1)
	var inputs []string
	for _, l := range leaks {
		for v := range 3 {
			inputs = append(inputs, l.plant(ident{"ann.lee", "ann.lee@corp.example", "wks-9.corp.example", "10.1.2.3"}, v))
		}
	}
	inputs = append(inputs, cleanCmds...)
	inputs = append(inputs, cleanURLs...)
	inputs = append(inputs, cleanComments...)
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("0123456789abcdefAEZ :-.@%_ ")
	for range 200000 {
		b := make([]byte, 8+rng.IntN(40))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	// RFC 3339 timestamps, which scanPatterns answers without the checks:
	// random digits in every form, and digits chosen to look like cards,
	// SSNs and addresses.
	stamps := 0
	for i := range 200000 {
		d := func() byte { return "0123456789"[rng.IntN(10)] }
		if i%2 == 0 {
			d = func() byte { return "124569"[rng.IntN(6)] }
		}
		var b []byte
		for _, c := range []byte("0000-00-00T00:00:00") {
			if c == '0' {
				c = d()
			}
			b = append(b, c)
		}
		b[10] = "Tt "[rng.IntN(3)]
		if n := rng.IntN(11); n > 0 {
			b = append(b, '.')
			for range min(n, 9) {
				b = append(b, d())
			}
		}
		switch rng.IntN(4) {
		case 1:
			b = append(b, "Zz"[rng.IntN(2)])
		case 2, 3:
			b = append(b, "+-"[rng.IntN(2)], d(), d(), ':', d(), d())
		}
		if !isTimestamp(b) {
			t.Fatalf("%q is not taken for a timestamp", b)
		}
		stamps++
		inputs = append(inputs, string(b))
	}
	for _, s := range []string{"2026-11-01T00:00:01.", "2026-11-01T00:00:01.0123456789Z", "2026-11-01T00:00:01+0100", "2026-11-01X00:00:01", "2026-11-01T00:00:01ZZ", "2026-11-0100:00:01", "2026-11-01T00:00:01 4111111111111111", "2026-11-01T00:00:01-12:345"} {
		if isTimestamp([]byte(s)) {
			t.Fatalf("%q is taken for a timestamp", s)
		}
	}
	for _, s := range inputs {
		var want patternSet
		for p, f := range checks {
			if f([]byte(s)) {
				want |= 1 << p
			}
		}
		if got := scanPatterns([]byte(s), all); got != want {
			t.Fatalf("%q: guarded %b, unguarded %b", s, got, want)
		}
	}
}

// TestPrehashSpreads: the summaries' hash spreads similar short strings.
func TestPrehashSpreads(t *testing.T) {
	seen := map[uint64]string{}
	for i := range 100000 {
		for _, s := range []string{fmt.Sprint(i), fmt.Sprintf("user.%d", i), fmt.Sprintf("wks-%d.corp.example", i)} {
			h := prehash([]byte(s))
			if o, dup := seen[h]; dup && o != s {
				t.Fatalf("%q and %q share a prehash", o, s)
			}
			seen[h] = s
		}
	}
}

// TestHexLower8 compares the eight-byte hex test with the class table on
// every byte in every position.
func TestHexLower8(t *testing.T) {
	for c := range 256 {
		for pos := range 8 {
			w := []byte("0123abcd")
			w[pos] = byte(c)
			want := true
			for _, b := range w {
				want = want && class[b]&cHexLower != 0
			}
			if got := hexLower8(binary.LittleEndian.Uint64(w)); got != want {
				t.Fatalf("%q: %v, want %v", w, got, want)
			}
		}
	}
}

// TestIPLeafFastPath: the dotted-quad parser agrees with netip on the
// verdicts of the IP leaves.
func TestIPLeafFastPath(t *testing.T) {
	leaves := []*gleaf{{kind: kindIPPrefix}, {kind: kindIPTruncate, v4: 24, v6: 48}, {kind: kindIPTruncate, v4: 16, v6: 64}, {kind: kindIPTruncate, v4: 32, v6: 128}, {kind: kindIPTruncate, v4: 0, v6: 0}, {kind: kindIPTruncate, v4: 33, v6: 129}}
	in := []string{"10.0.1.0", "10.0.1.1", "10.0.0.0", "255.255.255.255", "256.1.1.0", "01.2.3.0", "1.2.3", "1.2.3.4.5", "1..2.3", "1.2.3.0.", ".1.2.3", "0.0.0.0", "00.0.0.0", "1.2.3.00", "1.2.3.-0", "::ffff:10.0.1.0", "2001:db8::", "10.0.1.0%eth0", "1.2.3.4x", "1234.1.1.1", "1.2.3.0 "}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 50000 {
		b := make([]byte, 7+rng.IntN(9))
		for i := range b {
			b[i] = "0123456789...."[rng.IntN(14)]
		}
		in = append(in, string(b))
	}
	for _, l := range leaves {
		for _, s := range in {
			want := func() bool {
				ip, err := netip.ParseAddr(s)
				if err != nil || ip.Zone() != "" {
					return false
				}
				if l.kind != kindIPTruncate {
					return true
				}
				ip = ip.Unmap()
				bits := l.v6
				if ip.Is4() {
					bits = l.v4
				}
				p, err := ip.Prefix(bits)
				return err == nil && p.Addr() == ip
			}()
			if got := ipLeafOK(l, []byte(s)); got != want {
				t.Fatalf("%+v %q: %v, want %v", *l, s, got, want)
			}
		}
	}
}

// echoesReference is the echo test as first written (fold and decode,
// then tokens, their parts around '@', their dot-separated parts and
// skeletons, each looked up on its own), kept to check the one-pass
// version against.
func echoesReference(b *rotatingBloom, s []byte) bool {
	f := foldDecode(nil, s)
	if tokenOK(f) && b.contains(f) {
		return true
	}
	split := func(t []byte, a, c byte) (parts [][]byte) {
		start := 0
		for i := 0; i <= len(t); i++ {
			if i == len(t) || t[i] == a || t[i] == c {
				if i > start {
					parts = append(parts, t[start:i])
				}
				start = i + 1
			}
		}
		return parts
	}
	for i := 0; i < len(f); {
		for i < len(f) && coarseSep(f[i]) {
			i++
		}
		j, inner := i, false
		for j < len(f) && !coarseSep(f[j]) {
			inner = inner || f[j] == '.' || f[j] == '-' || f[j] == '_' || f[j] == '@'
			j++
		}
		t := f[i:j]
		if j > i {
			if len(t) != len(f) && tokenOK(t) && b.contains(t) {
				return true
			}
			if inner {
				for _, p := range split(t, '@', '@') {
					if len(p) != len(t) && tokenOK(p) && b.contains(p) {
						return true
					}
					for _, q := range split(p, '.', '@') {
						if len(q) != len(p) && tokenOK(q) && b.contains(q) {
							return true
						}
					}
				}
				sk := skeleton(nil, t)
				if len(sk) != len(t) && len(sk) >= minSkel && tokenOK(sk) && b.contains(sk) {
					return true
				}
			}
		}
		i = j
	}
	return false
}

// TestEchoesMatchReference: the one-pass echo test finds what the
// reference finds, on random text built from remembered values, their
// parts and noise.
func TestEchoesMatchReference(t *testing.T) {
	r := corpusRoute(t)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	var l gleaf
	l.hostish = true
	c.refresh()
	words := []string{"ann.lee", "Bob_Ray@Corp.Example", "wks-9.corp.example", "10.1.2.3", "s-1-5-21-77", "q%40x", "zed"}
	for _, w := range words[:4] {
		c.remember([]byte(w), &l)
	}
	pieces := append(words, "ANN.LEE", "ann-lee", "annlee", "bob_ray", "BOBRAY", "corp", "wks-9", "WKS9", "2026-11-01T00:00:01.054Z", "ann.lee@x.y", ".ann-lee_", "a@b@ann.lee", "10.1.2.3@", "%41nn.lee", "a+b", "%2F", "%", "@", ".", "-", "_", " ", "/", "\\", "=", "&", "?", ":", ",", "é", "x")
	rng := rand.New(rand.NewPCG(7, 8))
	hits := 0
	for range 100000 {
		var sb strings.Builder
		for range 1 + rng.IntN(6) {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
		s := []byte(sb.String())
		want := echoesReference(g.echo, s)
		if got := c.echoes(s); got != want {
			t.Fatalf("%q: %v, reference %v", s, got, want)
		}
		if want {
			hits++
		}
	}
	t.Logf("%d of 100000 echo", hits)
}

// TestEqual compares the shapes' inline compare with string equality for
// every length up to 40 and a difference at every place.
func TestEqual(t *testing.T) {
	for n := range 41 {
		a := []byte(strings.Repeat("abcdefghij", 5)[:n])
		if !equal(a, []byte(string(a))) {
			t.Fatalf("%q differs from itself", a)
		}
		if n > 0 && equal(a, a[:n-1]) {
			t.Fatalf("%q equals a shorter string", a)
		}
		for i := range n {
			b := []byte(string(a))
			b[i] ^= 0x20
			if equal(a, b) {
				t.Fatalf("%q equals %q", a, b)
			}
		}
	}
}

// TestEchoTimestamp: the echo test of a timestamp by its layout finds what
// the reference finds, with a filter holding one random piece of the
// timestamp (a substring, folded, maybe without its '.', '-' and '_').
func TestEchoTimestamp(t *testing.T) {
	r := corpusRoute(t)
	g, err := New(r.Name, r.Config)
	if err != nil {
		t.Fatal(err)
	}
	g.echo = newRotatingBloom(1000, 1e-6, time.Hour, time.Now)
	c := g.NewChecker()
	rng := rand.New(rand.NewPCG(9, 10))
	hits, clear := 0, 0
	for i := range 100000 {
		var b []byte
		for _, ch := range []byte("0000-00-00T00:00:00") {
			if ch == '0' {
				ch = "0123456789"[rng.IntN(10)]
			}
			b = append(b, ch)
		}
		b[10] = "Tt "[rng.IntN(3)]
		if n := rng.IntN(11); n > 0 {
			b = append(b, '.')
			for range min(n, 9) {
				b = append(b, "0123456789"[rng.IntN(10)])
			}
		}
		switch rng.IntN(4) {
		case 1:
			b = append(b, "Zz"[rng.IntN(2)])
		case 2, 3:
			b = append(b, "+-"[rng.IntN(2)], '0', byte('0'+rng.IntN(10)), ':', byte('0'+rng.IntN(6)), '0')
		}
		if !isTimestamp(b) {
			t.Fatalf("%q is not taken for a timestamp", b)
		}
		if i%1000 == 0 {
			g.echo = newRotatingBloom(1000, 1e-6, time.Hour, time.Now)
		}
		f := foldDecode(nil, b)
		lo := rng.IntN(len(f))
		piece := f[lo : lo+1+rng.IntN(len(f)-lo)]
		if rng.IntN(2) == 0 {
			piece = skeleton(nil, piece)
		}
		if len(piece) > 0 {
			g.echo.insertAll(g.echo.gens.Load(), []form{formOf(piece)}, time.Now())
		}
		want := echoesReference(g.echo, b)
		if got := c.echoTimestamp(b); got != want {
			t.Fatalf("%q with %q remembered: %v, reference %v", b, piece, got, want)
		}
		// A segment's timestamp: the first test finds the layout's
		// signatures clear or not, the second relies on that.
		c.sigStamp = g.echo.sigVersion.Load() | sigStampBit
		st := &segTime{n: len(b)}
		for k := range 2 {
			if got := c.echoSegTime(st, b); got != want {
				t.Fatalf("%q with %q remembered, segment test %d: %v, reference %v", b, piece, k, got, want)
			}
		}
		if st.clear != 0 {
			clear++
		}
		if want {
			hits++
		}
	}
	t.Logf("%d of 100000 echo; the layout's signatures were clear for %d", hits, clear)
	if clear < 1000 || clear > 99000 {
		t.Fatalf("the layout's signatures were clear for %d of 100000 timestamps: the test does not see both cases", clear)
	}
}

// TestShapeIPLeaves: the shapes' inline test of dotted quads gives the
// verdicts of the full pass, in a prefix-preserving and a truncated field.
func TestShapeIPLeaves(t *testing.T) {
	g := newGate(t, config.Gate{})
	fast, full := g.NewChecker(), g.NewChecker()
	full.reference = true
	in := []string{"10.0.1.0", "10.0.1.1", "0.0.0.0", "255.255.255.0", "256.1.1.0", "01.2.3.0", "1.2.3", "1.2.3.0.", "1..2.0", "1.2.3.00", "1234.1.1.0", "10.1.2.0 ", "::ffff:10.0.1.0", "2001:db8::", "1.2.3.0\\u0030", "99.99.99.999999999999999"}
	rng := rand.New(rand.NewPCG(11, 12))
	for range 5000 {
		b := make([]byte, 1+rng.IntN(17))
		for i := range b {
			b[i] = "0123456789...."[rng.IntN(14)]
		}
		in = append(in, string(b))
	}
	for _, s := range in {
		for _, rec := range []string{replace(good, `"ip":"10.1.2.0"`, `"ip":"`+s+`"`), replace(good, `"ip":"203.0.113.77"`, `"ip":"`+s+`"`)} {
			fast.Check([]byte(good)) // the shape
			want := verdictString(full.Check([]byte(rec)))
			for range 2 { // the second time, a short value that is no dotted quad may be a recent value
				if got := verdictString(fast.Check([]byte(rec))); got != want {
					t.Fatalf("%q: with shapes %s, in full %s", s, got, want)
				}
			}
		}
	}
}

// TestRunsAndTimestampsSeeNewIdentifiers: values the Checker remembers as
// runs (a product, class and region in a row; a disposition, port and
// site) and the date and
// hour of timestamps are tested again once the filter has learnt a new
// raw identifier, so one that matches them is caught on the next record.
func TestRunsAndTimestampsSeeNewIdentifiers(t *testing.T) {
	cfg := configWithFields(t, `      - {path: time, action: keep}
      - {path: class, action: keep}
      - {path: product, action: keep}
      - {path: user, action: pseudonymize}
      - {path: port, action: keep}
      - {path: disposition, action: keep}
      - {path: region, action: keep}
      - {path: site, action: keep}
`)
	// With a decoy, the identifier's signature (length, first and last
	// byte) is set before the records are checked, so arriving it moves
	// the filter's version but not its signature version: memos whose
	// lookups got past that signature must be stamped by the version.
	for _, ident := range []string{"Sentinel", "allowed", "2026-11-01T05", "decoy:Sentinel", "decoy:allowed", "decoy:2026-11-01T05"} {
		c, ident := checkerWithDecoy(t, cfg, ident)
		rec := func(k int) []byte {
			// Two runs: the product, class and region; the disposition,
			// port and site (numbers next to the pseudonym would join its
			// segment instead).
			return []byte(fmt.Sprintf(`{"time":"2026-11-01T05:%02d:%02d.%03dZ","product":"Sentinel EDR","class":1007,"region":"eu","user":"%032x","disposition":"Allowed","port":%d,"site":"hq"}`,
				k/60%60, k%60, k%1000, k, 443+k%2))
		}
		for k := range 200 {
			if v := c.Check(rec(k)); !v.Pass() {
				t.Fatalf("before %s: %s", ident, verdictString(v))
			}
		}
		runs := 0
		for _, sh := range c.shapes {
			for _, r := range sh.runs {
				if r.t != nil {
					runs++
				}
			}
		}
		if runs != 2 || c.tsVersion == 0 {
			t.Fatalf("%d runs remembered, timestamp head at version %d: the test checks nothing", runs, c.tsVersion)
		}
		c.ObserveIdentifier(3, []byte(ident)) // the user rule's index
		if v := c.Check(rec(200)); !v.Reasons.Has(ReasonEcho) {
			t.Fatalf("after %s arrived: %s", ident, verdictString(v))
		}
	}
}

// TestHexAtMatchesHexLower: the word-at-a-time test of pseudonyms agrees
// with hexLower on every one-byte change of hex strings.
func TestHexAtMatchesHexLower(t *testing.T) {
	base := []byte("0123456789abcdef0123456789abcdef01234")
	for n := 0; n <= len(base); n++ {
		for i := 0; i < n; i++ {
			for c := 0; c < 256; c++ {
				b := append([]byte(nil), base[:n]...)
				b[i] = byte(c)
				padded := append(b, make([]byte, 8)...) // hexAt reads within out only
				if got, want := hexAt(padded, 0, n), hexLower(b); got != want {
					t.Fatalf("%q: hexAt %v, hexLower %v", b, got, want)
				}
			}
		}
	}
}

// TestQuadAtMatchesParseIPv4: the shapes' one-pass reading of a quoted
// dotted quad agrees with parseIPv4 on random strings of digits, dots and
// a few other bytes, closed by a quote or not.
func TestQuadAtMatchesParseIPv4(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "0123456789...0125x\"-\xb0\xae\xa2" // and bytes that are a digit, a dot or a quote with the top bit set
	valid := 0
	for range 500000 {
		b := randomQuadish(rng, alphabet)
		want := -1
		for j := 1; j < quadRoom; j++ {
			if b[j] == '"' {
				if _, ok := parseIPv4(b[1:j]); ok {
					want = j + 1
				}
				break
			}
		}
		a, got := quadAt(&b)
		if (got > 0) != (want > 0) || (got > 0 && got != want) {
			t.Fatalf("%q: quadAt %d, parseIPv4 %d", b[:], got, want)
		}
		if got > 0 {
			valid++
			if w, _ := parseIPv4(b[1 : got-1]); w != a {
				t.Fatalf("%q: quadAt %x, parseIPv4 %x", b[:], a, w)
			}
		}
	}
	if valid < 1000 {
		t.Fatalf("only %d valid quads: the test checks little", valid)
	}
}

// TestTimestampForm: a string that the learnt layout of a timestamp
// accepts is a timestamp (isTimestamp) between quotes, for every one-byte
// change of a few timestamps and layouts.
func TestTimestampForm(t *testing.T) {
	for _, ts := range []string{"2026-11-01T05:34:06.813Z", "2026-11-01 05:34:06", "2026-11-01t05:34:06.123+01:00", "2026-11-01T05:34:06-07:00"} {
		q := `"` + ts + `"`
		var f [4]template
		for k := range len(q) {
			f[k/8].set(k%8, q[k])
		}
		accepted := 0
		for i := range q {
			for c := range 256 {
				b := append([]byte(q), make([]byte, 32)...)
				b[i] = byte(c)
				if f[0].match(load64(b, 0)) && f[1].match(load64(b, 8)) && f[2].match(load64(b, 16)) && f[3].match(load64(b, 24)) {
					accepted++
					if b[0] != '"' || b[len(q)-1] != '"' || !isTimestamp(b[1:len(q)-1]) {
						t.Fatalf("%q: the layout of %q accepts it, isTimestamp does not", b[:len(q)], ts)
					}
				}
			}
		}
		digits := 0
		for _, c := range []byte(ts) {
			if isDigit(c) {
				digits++
			}
		}
		if accepted < 10*digits { // every digit of every place, at least
			t.Fatalf("%s: only %d accepted", ts, accepted)
		}
	}
}

// TestJoinedSegmentSeesNewIdentifiers: a product name between two
// segments is taken with them as one segment, its checks stamped; once
// the filter learns a raw identifier that matches it, the next record is
// caught, with or without a decoy setting the identifier's signature
// first; a record with another product still passes by the two segments.
func TestJoinedSegmentSeesNewIdentifiers(t *testing.T) {
	cfg := configWithFields(t, `      - {path: time, action: keep}
      - {path: class, action: keep}
      - {path: product, action: keep}
      - {path: user, action: pseudonymize}
      - {path: disposition, action: keep}
`)
	rec := func(k int, product string) []byte {
		return []byte(fmt.Sprintf(`{"time":"2026-11-01T05:%02d:%02d.%03dZ","class":1007,"product":"%s","user":"%032x","disposition":"Allowed"}`,
			k/60%60, k%60, k%1000, product, k))
	}
	for _, ident := range []string{"Sentinel", "sentinel edr", "decoy:Sentinel"} {
		c, ident := checkerWithDecoy(t, cfg, ident)
		for k := range 200 {
			if v := c.Check(rec(k, "Sentinel EDR")); !v.Pass() {
				t.Fatalf("before %s: %s", ident, verdictString(v))
			}
		}
		var b *bridge
		for _, sh := range c.shapes {
			for _, s := range sh.segs {
				if s.bridge != nil {
					b = s.bridge
				}
			}
		}
		if b == nil || b.version == 0 || b.score <= 0 {
			t.Fatalf("no joined segment in use (%+v): the test checks nothing", b)
		}
		if v := c.Check(rec(200, "Falcon")); !v.Pass() {
			t.Fatalf("another product: %s", verdictString(v))
		}
		c.ObserveIdentifier(3, []byte(ident)) // the user rule's index
		v := c.Check(rec(201, "Sentinel EDR"))
		if !v.Reasons.Has(ReasonEcho) || len(v.Findings) != 1 || v.Findings[0].Path != "product" {
			t.Fatalf("after %s arrived: %s", ident, verdictString(v))
		}
	}
}

// TestSegmentTimestampSeesAnotherDay: a segment's timestamp passes on its
// remembered date and hour only when both are the same; a day that is an
// identifier is caught though the hour and the rest of the record are
// the ones remembered, and so is an hour (compared in the head's second
// word) though the date is.
func TestSegmentTimestampSeesAnotherDay(t *testing.T) {
	cfg := configWithFields(t, `      - {path: time, action: keep}
      - {path: class, action: keep}
      - {path: product, action: keep}
      - {path: user, action: pseudonymize}
`)
	rec := func(day string, k int) []byte {
		return []byte(fmt.Sprintf(`{"time":"%s:%02d:%02d.%03dZ","class":1007,"user":"%032x","product":"x"}`, day, k/60%60, k%60, k%1000, k))
	}
	c, _ := checkerWithDecoy(t, cfg, "")
	c.ObserveIdentifier(3, []byte("2025-11-01T05")) // the user rule's index
	c.ObserveIdentifier(3, []byte("2026-11-01T07"))
	for k := range 200 {
		if v := c.Check(rec("2026-11-01T05", k)); !v.Pass() {
			t.Fatalf("record %d: %s", k, verdictString(v))
		}
	}
	segTimes := 0
	for _, sh := range c.shapes {
		for _, s := range sh.segs {
			segTimes += len(s.ts)
		}
	}
	if segTimes == 0 || c.tsVersion == 0 {
		t.Fatalf("%d timestamps in segments, head remembered at version %d: the test checks nothing", segTimes, c.tsVersion)
	}
	if v := c.Check(rec("2025-11-01T05", 200)); !v.Reasons.Has(ReasonEcho) || len(v.Findings) != 1 || v.Findings[0].Path != "time" {
		t.Fatalf("another day, an identifier: %s", verdictString(v))
	}
	for k := 201; k < 205; k++ { // the remembered head again
		if v := c.Check(rec("2026-11-01T05", k)); !v.Pass() {
			t.Fatalf("record %d: %s", k, verdictString(v))
		}
	}
	if v := c.Check(rec("2026-11-01T07", 205)); !v.Reasons.Has(ReasonEcho) || len(v.Findings) != 1 || v.Findings[0].Path != "time" {
		t.Fatalf("another hour, an identifier: %s", verdictString(v))
	}
}

// checkerWithDecoy returns a Checker of route v of cfg and the identifier
// ident names. For "decoy:X" the Checker has first been told, as the raw
// value of rule 3, a decoy with X's signature (length, first and last
// byte) and other bytes between.
func checkerWithDecoy(t *testing.T, cfg *config.Config, ident string) (*Checker, string) {
	t.Helper()
	g, err := New("v", cfg.Vendors["v"])
	if err != nil {
		t.Fatal(err)
	}
	c := g.NewChecker()
	if d, ok := strings.CutPrefix(ident, "decoy:"); ok {
		ident = d
		c.ObserveIdentifier(3, []byte(d[:1]+strings.Repeat("q", len(d)-2)+d[len(d)-1:]))
	}
	return c, ident
}

// TestShortRecordAfterShape: a shape learnt from a record of 8 bytes or
// more keeps its tail as a word read from the record's last eight bytes;
// a later record of the same shape but under 8 bytes (a shorter number)
// must be checked without that read, with the same verdict as in full.
// The read itself would leave the record: CI runs this package under
// checkptr, which fails it then.
func TestShortRecordAfterShape(t *testing.T) {
	cfg := configWithFields(t, "      - {path: n, action: keep}\n")
	g, err := New("v", cfg.Vendors["v"])
	if err != nil {
		t.Fatal(err)
	}
	fast, full := g.NewChecker(), g.NewChecker()
	full.reference = true
	for _, rec := range []string{`{"n":1234}`, `{"n":12}`, `{"n":1}`, `{"n":1234}`, `{"n":1}`, `{"x":1}`} {
		want := verdictString(full.Check([]byte(rec)))
		if got := verdictString(fast.Check([]byte(rec))); got != want {
			t.Fatalf("%s: with shapes %q, in full %q", rec, got, want)
		}
	}
	if fast.shapes[fast.lastShape].tailN == 0 {
		t.Fatal("no shape kept its tail as a word: the test checks nothing")
	}
}

// TestRecentValuesKeepTwoPerSet: two values whose first words pick the
// same set are both remembered (direct-mapped, each evicted the other on
// the benchmark route: 9% of process names missed), a value passing again
// with a newer stamp replaces its own entry, and a third value evicts the
// older of the two.
func TestRecentValuesKeepTwoPerSet(t *testing.T) {
	val := func(s string) recentVal {
		w := words([]byte(s))
		return recentVal{w0: w[0], w1: w[1], n: uint8(len(s)), version: 1}
	}
	// Quoted names whose first words share a set.
	var same []string
	want := recentSetOf(words([]byte(`"proc-0"`))[0])
	for i := 0; len(same) < 3; i++ {
		s := fmt.Sprintf(`"proc-%d"`, i)
		if recentSetOf(words([]byte(s))[0]) == want {
			same = append(same, s)
		}
	}
	var set recentSet
	found := func(s string) *recentVal {
		w := words([]byte(s + `,"x":1}`)) // as in a record: bytes follow
		return set.find(w[0], w[1])
	}
	a, b, c := same[0], same[1], same[2]
	set.put(val(a))
	set.put(val(b))
	if found(a) == nil || found(b) == nil {
		t.Fatalf("%s and %s share a set: both must be remembered", a, b)
	}
	newer := val(a)
	newer.version = 2
	set.put(newer)
	if v := found(a); v == nil || v.version != 2 || found(b) == nil {
		t.Fatal("a value passing again must replace its own entry, keeping the other")
	}
	set.put(val(c))
	if found(c) == nil || found(a) == nil || found(b) != nil {
		t.Fatalf("a third value must evict the older of the two (%s)", b)
	}
}

// TestRunTableKeepsTwoPerSet: two runs whose hashes pick the same set are
// both remembered, each with its own text.
func TestRunTableKeepsTwoPerSet(t *testing.T) {
	c := newGate(t, config.Gate{}).NewChecker()
	r := &run{pure: true, window: 8}
	a, b := []byte(`443,"disposition":"Allowed"`), []byte(`22,"disposition":"Blocked"`)
	const h1 = 40<<(64-runBits) | 12345 // set 20, and then
	const h2 = h1 | 1<<(64-runBits)     // its other way
	c.storeRun(r, h1, a)
	c.storeRun(r, h2, b)
	for _, w := range []struct {
		h    uint64
		text []byte
	}{{h1, a}, {h2, b}} {
		slot := w.h >> (64 - runBits) &^ 1
		if r.t.e[slot].h != w.h {
			slot++
		}
		e := &r.t.e[slot]
		if e.h != w.h || e.n != len(w.text) || string(r.t.text[slot*maxRunBytes:slot*maxRunBytes+uint64(e.n)]) != string(w.text) {
			t.Fatalf("the run hashed %#x is not remembered with its text", w.h)
		}
	}
}
