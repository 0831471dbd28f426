package jsonscan

import (
	"fmt"
	"testing"
)

func TestNames(t *testing.T) {
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("field_%d", i))
	}
	// Same length and first eight bytes, differing only later; short names;
	// the empty name.
	names = append(names, "actor.user.name", "actor.user.nbme", "a", "ab", "", "ünï")
	tab := NewNames(names)
	for i, n := range names {
		if got := tab.Index([]byte(n)); got != i {
			t.Errorf("Index(%q) = %d, want %d", n, got, i)
		}
	}
	for _, n := range []string{"field_40", "actor.user.nam", "actor.user.namee", "b", "ünï2", "field_1 "} {
		if got := tab.Index([]byte(n)); got != -1 {
			t.Errorf("Index(%q) = %d, want -1", n, got)
		}
	}
	var empty *Names
	if empty.Index([]byte("x")) != -1 || NewNames(nil).Index([]byte("x")) != -1 {
		t.Error("empty table found a name")
	}
	if a := testing.AllocsPerRun(100, func() { tab.Index([]byte("field_7")) }); a != 0 {
		t.Errorf("Index allocates %v times", a)
	}
}
