package kanon

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
)

// TestStrHashReadsEveryByte: the window's tables spread values by
// strHash, so for every length it must depend on every byte (a byte it
// skipped would send all values differing there down one probe chain)
// and only on the content, wherever the string lies.
func TestStrHashReadsEveryByte(t *testing.T) {
	for n := 0; n <= 40; n++ {
		base := []byte(strings.Repeat("x", n))
		h0 := strHash(string(base))
		if h1 := strHash(strings.Clone(string(base))); h1 != h0 {
			t.Fatalf("length %d: the same content hashes to %x and %x", n, h0, h1)
		}
		for i := range n {
			b := append([]byte(nil), base...)
			b[i] = 'y'
			if strHash(string(b)) == h0 {
				t.Errorf("length %d: changing byte %d leaves the hash unchanged", n, i)
			}
		}
	}
	if strHash("") == strHash("\x00") {
		t.Error("the empty string and one NUL hash alike")
	}
}

// TestAppendFloatText: published numbers read exactly as strconv's
// shortest 'g' form (what aggregates always printed), integer fast path
// or not; NaN and infinities are null.
func TestAppendFloatText(t *testing.T) {
	cases := []float64{0, math.Copysign(0, -1), 1, -1, 7, 600, 999_999, -999_999, 1e6, -1e6, 1_234_567, 1e21,
		0.5, -2.25, 1e-7, 123456.5, math.MaxInt64, math.MinInt64, math.MaxFloat64, math.SmallestNonzeroFloat64}
	for i := -1_000_100; i <= 1_000_100; i += 997 {
		cases = append(cases, float64(i))
	}
	for _, f := range cases {
		if got, want := string(appendFloat(nil, f)), strconv.FormatFloat(f, 'g', -1, 64); got != want {
			t.Errorf("appendFloat(%v) = %s, want %s", f, got, want)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got := string(appendFloat(nil, f)); got != "null" {
			t.Errorf("appendFloat(%v) = %s, want null", f, got)
		}
	}
}

// TestEqStr: eqStr is string equality for every length, wherever the
// bytes differ (the group lookup relies on it to never merge classes).
func TestEqStr(t *testing.T) {
	for n := 0; n <= 40; n++ {
		a := strings.Repeat("v", n)
		if !eqStr(a, strings.Clone(a)) {
			t.Fatalf("length %d: equal strings compare unequal", n)
		}
		if eqStr(a, a+"v") || eqStr(a+"v", a) {
			t.Fatalf("length %d: strings of different lengths compare equal", n)
		}
		for i := range n {
			b := []byte(a)
			b[i] = 'w'
			if eqStr(a, string(b)) {
				t.Errorf("length %d: a difference at byte %d is missed", n, i)
			}
		}
	}
}

// TestSameValues: a record joins a group only when every quasi-identifier
// value is byte for byte the group's, for every length and position of a
// difference (two classes must never merge).
func TestSameValues(t *testing.T) {
	a := newAggState(3)
	group := func(vals ...string) *window {
		w := &window{dict: newDict([]*ladder{{height: 1}, {height: 1}, {height: 1}})}
		for i, v := range vals {
			w.ids = append(w.ids, w.dict.vals[i].intern(a, strHash(v), v))
		}
		return w
	}
	w := group(`"x"`, "null")
	if !w.sameValues(0, 2, []string{`"x"`, ""}) || !w.sameValues(0, 2, []string{`"x"`}) {
		t.Fatal("an empty or missing value is not null")
	}
	for n := 1; n <= 40; n++ {
		v := strings.Repeat("a", n)
		w := group(`"x"`, v, "null")
		if !w.sameValues(0, 3, []string{`"x"`, strings.Clone(v), "null"}) {
			t.Fatalf("length %d: equal values differ", n)
		}
		if !w.sameValues(0, 3, []string{`"x"`, strings.Clone(v)}) {
			t.Fatalf("length %d: a missing last value is not null", n)
		}
		if w.sameValues(0, 3, []string{`"x"`, v + "a", "null"}) {
			t.Fatalf("length %d: a longer value matches", n)
		}
		for i := range n {
			b := []byte(v)
			b[i] = 'b'
			if w.sameValues(0, 3, []string{`"x"`, string(b), "null"}) {
				t.Errorf("length %d: a difference at byte %d is missed", n, i)
			}
		}
	}
}

// TestDictIDs: the dictionary a window's groups hold their values in
// gives equal values, wherever they lie, one ID, and values differing in
// length or at any byte different IDs (classes are compared by IDs when
// a window closes).
func TestDictIDs(t *testing.T) {
	a := newAggState(1)
	v := &newDict([]*ladder{{height: 1}}).vals[0]
	id := func(s string) int32 { return v.intern(a, strHash(s), s) }
	for n := 1; n <= 40; n++ {
		s := strings.Repeat("a", n)
		x := id(s)
		if id(strings.Clone(s)) != x || v.text[x] != s {
			t.Fatalf("length %d: equal values get different IDs", n)
		}
		if id(s+"a") == x {
			t.Fatalf("length %d: a longer value gets the same ID", n)
		}
		for i := range n {
			b := []byte(s)
			b[i] = 'b'
			if id(string(b)) == x {
				t.Errorf("length %d: a difference at byte %d is missed", n, i)
			}
		}
	}
}

// TestGroupsFoundAfterGrowth: a window's table regrows from the hashes
// its dictionary kept, and Add then probes it with the hash it computes
// (inline up to 32 bytes, by strHash beyond): at every value length a
// value seen again after the table grew must find its group, not open a
// second one whose records would be published (or suppressed) apart.
func TestGroupsFoundAfterGrowth(t *testing.T) {
	c := config.KAnon{
		K: 2, Entity: "user", Mode: config.KAnonAggregate, EventTime: "ts", Window: time.Minute,
		QuasiIdentifiers: []config.QuasiIdentifier{{Path: "v"}},
	}
	s := newStage(t, c, nil)
	t0 := time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)
	var vals []string
	for n := range 41 { // every length to past strHash's 32-byte cases
		for j := range 5 {
			vals = append(vals, strings.Repeat(string(rune('a'+j)), n))
		}
	}
	vals = slices.Compact(vals) // length 0 is one value
	var outs []Output
	off := int64(0)
	for pass := range 2 { // the second pass after the table has grown
		for i, v := range vals {
			outs = s.Add(outs, Record{Topic: "t", Offset: off, EventTime: t0, Entity: fmt.Sprint(pass, i), QI: []string{v}})
			off++
		}
	}
	outs = s.Flush(outs)
	n := 0
	for _, o := range outs {
		if o.Kind != Aggregate || o.Count != 2 || o.Entities != 2 || o.Levels[0] != 0 {
			t.Fatalf("got %v %d records %d entities at %v, want one level-0 aggregate of 2 per value", o.Kind, o.Count, o.Entities, o.Levels)
		}
		n++
	}
	if n != len(vals) {
		t.Fatalf("%d aggregates, want %d (one per value)", n, len(vals))
	}
}
