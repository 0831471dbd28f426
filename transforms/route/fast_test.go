package route

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

// recorder is an Observer that remembers what it was told.
type recorder struct{ seen []string }

func (r *recorder) ObserveIdentifier(rule int, val []byte) {
	r.seen = append(r.seen, fmt.Sprintf("%d=%q", rule, val))
}

// genObserver is a GenerationObserver whose generation the test sets; it
// remembers what it was told in each.
type genObserver struct {
	gen  uint64
	told map[uint64]map[string]bool
	n    int // calls
}

func (g *genObserver) Generation() uint64 { return g.gen }

func (g *genObserver) ObserveIdentifier(rule int, val []byte) {
	if g.told == nil {
		g.told = map[uint64]map[string]bool{}
	}
	if g.told[g.gen] == nil {
		g.told[g.gen] = map[string]bool{}
	}
	g.told[g.gen][fmt.Sprintf("%d=%q", rule, val)] = true
	g.n++
}

// knows reports whether every identifier in seen was told in the current
// generation.
func (g *genObserver) knows(seen []string) bool {
	for _, s := range seen {
		if !g.told[g.gen][s] {
			return false
		}
	}
	return true
}

const fastRules = "" +
	"      - {path: a.b, action: pseudonymize}\n" +
	"      - {path: a.c.d, action: keep}\n" +
	"      - {path: \"c[]\", action: keep}\n" +
	"      - {path: \"arr[].x\", action: pseudonymize}\n" +
	"      - {path: ip, action: ip_prefix_preserving}\n" +
	"      - {path: src, action: ip_truncate}\n" +
	"      - {path: e, action: email_split}\n" +
	"      - {path: t, action: generalize, time_bucket: 1h}\n" +
	"      - {path: n, action: generalize, numeric_bucket: {edges: [1, 10]}}\n" +
	"      - {path: u, action: keep}\n" +
	"      - {path: v, action: keep}\n" +
	"      - {path: a_member_name_longer_than_16, action: keep}\n"

// FuzzFastPathMatchesGeneral checks the fast path against the general one:
// for any two records in a row, the same output bytes, the same error, the
// same counters and the same identifiers told to the Observer.
func FuzzFastPathMatchesGeneral(f *testing.F) {
	for _, s := range [][2]string{
		{`{"a":{"b":"x","c":{"d":[1]}},"c":[1,{"z":2}],"ip":"10.0.0.1","src":"10.1.2.3","e":"A@B.c","t":"2026-11-27T13:45:00Z","n":5,"u":null,"zz":{"q":[true,false,null,-1.5e3]}}`,
			`{"a":{"b":"y","c":{"d":"\u00e9"}},"c":[],"ip":"::1","src":"bad","e":"x@y","t":1790000000,"n":"5","u":"\ud83d\ude00"}`},
		{`{"a":{"b":"x"},"a_member_name_longer_than_16":1}`, `{"a":{"b\u0022":"x"},"a_member_name_longer_than_17":1}`},
		{` { "u" : 1 , "a" : { } } `, `{"u":1 ,"a":{"b":[]}}`},
		{`{"arr":[{"x":"p"},{"x":"q","y":1},5]}`, `{"arr":{"x":"p"}}`},
		{`{"u":01}`, `{"u":1.}`},
		{`{"u":12345678,"n":100000000}`, `{"u":"a","u":"b"}`},
		{"{\"a\":{\"b\":\"\xff\"}}", `{"a":{"b":1}}`},
		{`{"u":1}x`, `{"u":1,}`},
		{`{"a":{"b":"x","c":{"d":1}},"u":1}`, `{"a":{"b":"x","c":{"d":1}},"u":2}`},
		{`{"a":{"b":"x","c":{"d":1}}`, `{"a":{"b":"x","c":{"d":1}},"a":{"b":"x","c":{"d":1}}}`},
		{`{"a":{"b":"x"},"a":{"b":"x"}}`, `{"a":{"b":"x"} ,"a":{"b":"x"}}`},
		{`{"a":{"b":"x"}`, `[{"u":1}]`},
		{`{"zz":{"p":"C:\\U\\a.0\\T\/x","n":123,"m":"\u0041"},"u":{"k":"v","n":7}}`, `{"zz":{"p":"a\q"},"u":{"k":"v","n":0}}`},
		{`{"u":"a","v":0,"u":12,"zz":1,"v":"b","u":3}`, `{"u":"a","v":01,"u":12,"zz":1}`},
		{`{"u":"a","v":1234567,"u":-1,"v":2}`, `{"u":"a","v":12345678,"u":1.5,"v":1e3,"u":"x"}`},
		{`{"u":"a\"b","v":"","u":true,"v":"\u0041","u":"é","v":0}`, `{"u":"a" ,"v":1,"u":1 ,"v":2}`},
		{`{"u":"a","v":1,"u":{"k":1},"v":[1]}`, `{"u":"a","v":1,"u":"b",`},
		{`{"zz":{"p":"a","n":12345678901},"u":{"k":"v\`, `{"zz":{"p":"é"},"u":{"k":"v"} ,"zz":{"p" :1},"zz":{"p":1.5}}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	r := compile(f, fastRules, "cache_entries: 64") // small: a fresh cache per input
	f.Fuzz(func(t *testing.T, x, y []byte) {
		fast, slow := r.NewApplier(), r.NewApplier()
		slow.general = true
		var fo, so recorder
		fast.SetObserver(&fo)
		slow.SetObserver(&so)
		memo := r.NewApplier() // no Observer: the subtree memo is on
		gens := r.NewApplier() // a GenerationObserver: the memos are on too
		var gobs genObserver
		gens.SetObserver(&gobs)
		for i, in := range [][]byte{x, y, x, y, x, y} {
			gobs.gen = uint64(1 + i/2) // x and y, then x and y again in the next generation
			before := len(so.seen)
			got, gotErr := gens.Apply([]byte("prefix"), in)
			want, wantErr := slow.Apply([]byte("prefix"), in)
			if string(got) != string(want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("%q: under a GenerationObserver %q %v, general %q %v", in, got, gotErr, want, wantErr)
			}
			if gotErr == nil && !gobs.knows(so.seen[before:]) {
				t.Fatalf("%q: generation %d was not told all of %v: %v", in, gobs.gen, so.seen[before:], gobs.told[gobs.gen])
			}
		}
		slow, so = r.NewApplier(), recorder{}
		slow.general = true
		slow.SetObserver(&so)
		for _, in := range [][]byte{x, y, x, y} {
			got, gotErr := fast.Apply([]byte("prefix"), in)
			want, wantErr := slow.Apply([]byte("prefix"), in)
			if string(got) != string(want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("%q: fast %q %v, general %q %v", in, got, gotErr, want, wantErr)
			}
			got, gotErr = memo.Apply([]byte("prefix"), in)
			if string(got) != string(want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("%q: with the memo %q %v, general %q %v", in, got, gotErr, want, wantErr)
			}
			if memo.Stats != slow.Stats || memo.cache.Hits+memo.cache.Misses != slow.cache.Hits+slow.cache.Misses {
				t.Fatalf("%q: with the memo %+v %d lookups, general %+v %d", in, memo.Stats, memo.cache.Hits+memo.cache.Misses,
					slow.Stats, slow.cache.Hits+slow.cache.Misses)
			}
			// A record the fast path gave up on may leave pseudonyms in the
			// cache that the general path then finds: the same lookups,
			// some hits where the general path alone would miss.
			if fast.Stats != slow.Stats || fast.cache.Hits+fast.cache.Misses != slow.cache.Hits+slow.cache.Misses {
				t.Fatalf("%q: fast %+v %d/%d, general %+v %d/%d", in, fast.Stats, fast.cache.Hits, fast.cache.Misses,
					slow.Stats, slow.cache.Hits, slow.cache.Misses)
			}
			if fmt.Sprint(fo.seen) != fmt.Sprint(so.seen) {
				t.Fatalf("%q: fast observed %v, general %v", in, fo.seen, so.seen)
			}
		}
	})
}

// FuzzFlatObjectEnd: the fast path's skip of a flat object accepts only
// what jsonscan.ValueEnd accepts, and ends where it does.
func FuzzFlatObjectEnd(f *testing.F) {
	for _, s := range []string{`{}`, `{"p":"C:\\U\\a\/b\n","n":12}`, `{"p":"\u0041"}`, `{"p":"a\`, `{"n":0}`, `{"n":1.5}`,
		`{"n":123456789012}`, `{"p":"a"`, `{"p":"a"}x`, `{"p":"\x"}`, "{\"p\":\"\xff\"}", `{"p" :1}`, `{"p":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, x []byte) {
		if len(x) == 0 || x[0] != '{' {
			return
		}
		d := x // read as if zero bytes followed it; load64 needs a word
		if len(d) < 8 {
			d = append(append([]byte(nil), x...), make([]byte, 8-len(x))...)
		}
		if got := flatObjectEnd(d, 0); got >= 0 {
			if want := jsonscan.ValueEnd(x, 0, 1); got != want {
				t.Fatalf("%q: flatObjectEnd %d, ValueEnd %d", x, got, want)
			}
		}
	})
}

// TestGenerationObserverToldOncePerGeneration: under a GenerationObserver
// the memos stay on, a repeated object's identifiers are told once per
// generation (not once per record), and every identifier of a record that
// succeeds has been told in the generation it was applied in, also after a
// record that failed half-way through a memo replay.
func TestGenerationObserverToldOncePerGeneration(t *testing.T) {
	r := compile(t, fastRules)
	a, ref := r.NewApplier(), r.NewApplier()
	var gobs genObserver
	var want recorder
	a.SetObserver(&gobs)
	ref.SetObserver(&want)
	idents := 0
	for i := range 600 {
		gobs.gen = uint64(1 + i/150)
		in := fmt.Sprintf(`{"a":{"b":"user%d","c":{"d":1}},"src":"10.0.%d.1","u":%d}`, i%7, i%5, i)
		if i%50 == 49 {
			in = in[:len(in)-3] + `,"src":"not an address"}` // fails after the memo's replay
		}
		idents += applyTold(t, a, ref, &gobs, &want, in)
	}
	// 4 generations of 7 users and 5 addresses: about 4*(7+5) tellings
	// (and those of failed records), not one per identifier.
	if gobs.n > idents/4 {
		t.Fatalf("told %d times for %d identifiers: the memos are not replaying", gobs.n, idents)
	}
}

// TestLongIdentifiersToldOncePerGeneration: values over 16 bytes (an
// e-mail address, a host name) are not in the leaf memo; under a
// GenerationObserver their pseudonym cache entries remember in which
// generation, and for which rule, they were told. Objects that never
// repeat (the subtree memo misses) must still tell each value once per
// generation and rule, also when two rules share a namespace (the gate
// remembers a host name's first label and a user name's only as a whole)
// and after records that fail half-way.
func TestLongIdentifiersToldOncePerGeneration(t *testing.T) {
	for _, ns := range []string{"", ", namespace: shared"} {
		r := compile(t, "      - {path: user.name, action: pseudonymize"+ns+"}\n"+
			"      - {path: host, action: pseudonymize"+ns+"}\n"+
			"      - {path: src, action: ip_truncate}\n")
		a, ref, gobs, want := toldPair(r)
		long := func(i int) string { return fmt.Sprintf("wks-%d.long-name.corp.example", i%13) }
		idents := 0
		for i := range 1200 {
			gobs.gen = uint64(1 + i/300)
			// The same long values under both rules, objects that never repeat.
			in := fmt.Sprintf(`{"user":{"name":%q,"seq":%d},"host":%q,"src":"10.0.%d.1"}`, long(i), i, long(i/2), i%5)
			if i%50 == 49 {
				in = in[:len(in)-1] + `,"src":"not an address"}` // fails after the long values
			}
			idents += applyTold(t, a, ref, gobs, want, in)
		}
		// 4 generations of 13 values under 2 rules and 5 addresses: about
		// 4*(26+5) tellings (and those of failed records), not one per
		// identifier. (In a shared namespace the two rules take turns with
		// one entry's stamp, so the values are told more often.)
		if ns == "" && gobs.n > idents/4 {
			t.Fatalf("told %d times for %d identifiers: the stamps are not used", gobs.n, idents)
		}
		t.Logf("namespace %q: told %d times for %d identifiers", ns, gobs.n, idents)
	}
}

// TestShortIdentifiersToldOncePerGeneration: values of up to 16 bytes
// (user names, addresses) go through the leaf memo, which holds fewer of
// them than the pseudonym cache; a value the memo lost must still be told
// once per generation (the cache entry's stamp), not on every miss.
func TestShortIdentifiersToldOncePerGeneration(t *testing.T) {
	r := compile(t, "      - {path: user.name, action: pseudonymize}\n"+
		"      - {path: src, action: ip_truncate}\n")
	a, ref, gobs, want := toldPair(r)
	const values = 3 * leafEntries // more than a leaf table holds
	idents := 0
	for pass := range 3 {
		gobs.gen = uint64(1 + pass/2) // two passes in one generation, then a new one
		for i := range values {
			// Objects that never repeat, so the subtree memo cannot hide them.
			in := fmt.Sprintf(`{"user":{"name":"u.%d","seq":%d},"src":"10.%d.%d.%d"}`, i, pass*values+i, i>>16, i>>8&255, i&255)
			idents += applyTold(t, a, ref, gobs, want, in)
		}
	}
	// 2 generations of 2*values identifiers. A few are told again when
	// the pseudonym cache's two-way sets evict them (about 3% here); a
	// value the leaf memo lost was told again on every pass (36,020
	// tellings).
	if limit := 2*2*values + values/4; gobs.n > limit {
		t.Fatalf("told %d times for %d identifiers (%d distinct per generation)", gobs.n, idents, 2*values)
	}
	t.Logf("told %d times for %d identifiers", gobs.n, idents)
}

// toldPair returns two Appliers of r: a under a GenerationObserver, ref
// under a recorder that the general path tells every identifier (for
// applyTold).
func toldPair(r *Route) (a, ref *Applier, gobs *genObserver, want *recorder) {
	a, ref, gobs, want = r.NewApplier(), r.NewApplier(), new(genObserver), new(recorder)
	a.SetObserver(gobs)
	ref.SetObserver(want)
	return a, ref, gobs, want
}

// applyTold applies in with a (under gobs) and with ref (under want, told
// every identifier by the general path), fails the test unless both
// succeed or fail and gobs was told, in its generation, every identifier
// ref read, and returns how many that was.
func applyTold(t *testing.T, a, ref *Applier, gobs *genObserver, want *recorder, in string) int {
	t.Helper()
	before := len(want.seen)
	_, refErr := ref.Apply(nil, []byte(in))
	_, err := a.Apply(nil, []byte(in))
	if (err == nil) != (refErr == nil) {
		t.Fatalf("%s: %v, want %v", in, err, refErr)
	}
	if err != nil {
		return 0
	}
	if !gobs.knows(want.seen[before:]) {
		t.Fatalf("%s, generation %d: not told all of %v", in, gobs.gen, want.seen[before:])
	}
	return len(want.seen) - before
}

// TestFastPathTakesTheUsualRecord guards the speed of the benchmark's
// records: a record of a learned shape must not fall back to the general
// path (which would still be correct, only twice as slow).
func TestFastPathTakesTheUsualRecord(t *testing.T) {
	r := compile(t, fastRules)
	a := r.NewApplier()
	in := []byte(`{"a":{"b":"x","c":{"d":[1,2]}},"u":"v","ip":"10.0.0.1","zz":{"q":[1,"s"]},"n":5}`)
	for i := 0; i < 2; i++ {
		if _, ok := a.fastApply(nil, in); !ok {
			t.Fatalf("round %d: the fast path gave up on %s", i, in)
		}
	}
}

// matchesFresh checks that a, with its memos, writes for rec what a fresh
// Applier of r writes.
func matchesFresh(t *testing.T, r *Route, a *Applier, round int, rec string) {
	t.Helper()
	got, err := a.Apply(nil, []byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	want, err := r.NewApplier().Apply(nil, []byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("round %d, %s: got %s, want %s", round, rec, got, want)
	}
}

// TestMemoKeepsKeyEpochsApart: the same object in records of two key
// epochs must get each epoch's pseudonym, not the one remembered from the
// other (the subtree memo replays outputs by the object's bytes).
func TestMemoKeepsKeyEpochsApart(t *testing.T) {
	r := compile(t, "      - {path: a.u, action: pseudonymize}\n      - {path: time, action: keep}\n",
		"event_time: time",
		"keys: [{env: TEST_KEY_V, valid_from: 2026-01-01T00:00:00Z}, {env: TEST_KEY_V2, valid_from: 2027-01-01T00:00:00Z}]")
	a := r.NewApplier()
	in := []string{
		`{"time":"2026-06-01T00:00:00Z","a":{"u":"alice"}}`,
		`{"time":"2027-06-01T00:00:00Z","a":{"u":"alice"}}`,
	}
	for round := 0; round < 3; round++ {
		for _, rec := range []string{in[0], in[0], in[1], in[1]} { // a hit, then the other epoch
			matchesFresh(t, r, a, round, rec)
		}
	}
	if ms := a.memo[r.root.kids[0].id]; ms.t == nil || ms.hits == 0 {
		t.Fatal("the memo was not used: the test checks nothing")
	}
}

// TestMemoTrial: after memoTrial lookups a node whose objects rarely
// repeat gives its table up (later objects go straight to the walk) and
// one whose objects repeat keeps it; outputs are the same either way.
func TestMemoTrial(t *testing.T) {
	r := compile(t, "      - {path: a.u, action: pseudonymize}\n      - {path: b.u, action: pseudonymize}\n")
	a := r.NewApplier()
	for i := range 2 * memoTrial {
		rec := fmt.Sprintf(`{"a":{"u":"user%d"},"b":{"u":"user%d"}}`, i, i%8)
		matchesFresh(t, r, a, i, rec)
	}
	ua, ub := r.root.child([]byte("a")).id, r.root.child([]byte("b")).id
	if a.memo[ua].t != &memoGivenUp {
		t.Error("a node whose objects never repeat kept its memo")
	}
	if m := a.memo[ub].t; m == nil || m == &memoGivenUp {
		t.Error("a node whose objects repeat lost its memo")
	}
}

// TestLeafMemoKeepsKeyEpochsApart: the same short value in records of two
// key epochs must get each epoch's pseudonym (the leaf memo replays
// outputs by the value's bytes), and values of the same length that differ
// only in their last byte must not share an entry.
func TestLeafMemoKeepsKeyEpochsApart(t *testing.T) {
	r := compile(t, "      - {path: u, action: pseudonymize}\n      - {path: ip, action: ip_truncate}\n      - {path: time, action: keep}\n",
		"event_time: time",
		"keys: [{env: TEST_KEY_V, valid_from: 2026-01-01T00:00:00Z}, {env: TEST_KEY_V2, valid_from: 2027-01-01T00:00:00Z}]")
	a := r.NewApplier()
	var in []string
	for _, tm := range []string{"2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z"} {
		for _, u := range []string{"alice", "alice1", "alice2", "alice.0123456789", "alice.0123456788", "alice.012345678", "alice.0123456789@corp.example.01", "alice.0123456789@corp.example.02", "alice.0123456789@corp.example.0", "alice.0123456789@corp.example.012", "alice.0123456789@corp.ex", "alice.0123456789@corp.ey", ""} {
			in = append(in, `{"time":"`+tm+`","u":"`+u+`","ip":"10.1.2.3"}`, `{"time":"`+tm+`","u":"`+u+`","ip":"10.1.2.30"}`)
		}
	}
	for round := 0; round < 3; round++ {
		for _, rec := range in {
			matchesFresh(t, r, a, round, rec)
		}
	}
	used := 0
	for _, t := range a.leaves {
		if t != nil {
			used++
		}
	}
	if used != 2 {
		t.Fatalf("the leaf memo was used for %d nodes, want 2: the test checks nothing", used)
	}
}

// TestMemoEntriesLineAligned: a memo entry is one cache line, and the
// table's entries start on one, so a lookup (and its generation stamp)
// reads one line.
func TestMemoEntriesLineAligned(t *testing.T) {
	if s := unsafe.Sizeof(memoEntry{}); s != 64 {
		t.Fatalf("memoEntry is %d bytes, want 64", s)
	}
	for range 8 {
		m := new(memoTable)
		if p := uintptr(unsafe.Pointer(&m.e[0])); p%64 != 0 {
			t.Fatalf("a memo table's entries start at %#x, not on a cache line", p)
		}
	}
}
