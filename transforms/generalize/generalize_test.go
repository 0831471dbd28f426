package generalize

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestTimeBucket(t *testing.T) {
	hour, _ := NewTimeBucket(time.Hour)
	day, _ := NewTimeBucket(24 * time.Hour)
	min15, _ := NewTimeBucket(15 * time.Minute)
	cases := []struct {
		name  string
		b     *TimeBucket
		in    string
		isNum bool
		want  string
	}{
		{"rfc3339 hour", hour, "2026-11-27T13:45:12.123Z", false, `"2026-11-27T13:00:00Z"`},
		{"offset converted to UTC", hour, "2026-11-27T13:45:12+02:00", false, `"2026-11-27T11:00:00Z"`},
		{"day", day, "2026-11-27T23:59:59Z", false, `"2026-11-27T00:00:00Z"`},
		{"15 minutes", min15, "2026-11-27T13:44:59Z", false, `"2026-11-27T13:30:00Z"`},
		{"epoch seconds", hour, "1795873512", true, "1795870800"},
		{"epoch millis", hour, "1795873512123", true, "1795870800000"},
		{"before 1970", day, "1969-12-31T13:00:00Z", false, `"1969-12-31T00:00:00Z"`},
	}
	for _, c := range cases {
		got, err := c.b.Append(nil, []byte(c.in), c.isNum)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %s, %v; want %s", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{"yesterday", "2026-13-01T00:00:00Z", "", "2026-11-27"} {
		if _, err := hour.Append(nil, []byte(bad), false); !errors.Is(err, ErrNotTime) {
			t.Errorf("%q: got %v, want ErrNotTime", bad, err)
		}
	}
	if _, err := NewTimeBucket(time.Millisecond); err == nil {
		t.Error("sub-second bucket accepted")
	}
}

func TestNumericBucket(t *testing.T) {
	w, _ := NewNumericWidth(10)
	e, _ := NewNumericEdges([]float64{18, 30, 65})
	cases := []struct {
		b        *NumericBucket
		in, want string
	}{
		{w, "0", `"[0,10)"`}, {w, "9.99", `"[0,10)"`}, {w, "10", `"[10,20)"`}, {w, "-1", `"[-10,0)"`}, {w, "1e3", `"[1000,1010)"`},
		{e, "17", `"<18"`}, {e, "18", `"[18,30)"`}, {e, "64.5", `"[30,65)"`}, {e, "65", `">=65"`}, {e, "200", `">=65"`},
	}
	for _, c := range cases {
		got, err := c.b.Append(nil, []byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := w.Append(nil, []byte("ten")); !errors.Is(err, ErrNotNumber) {
		t.Errorf("non-number: %v", err)
	}
	if _, err := NewNumericEdges([]float64{3, 2}); err == nil {
		t.Error("descending edges accepted")
	}
	if _, err := NewNumericWidth(0); err == nil {
		t.Error("zero width accepted")
	}
}

func TestHierarchyARXAdult(t *testing.T) {
	f, err := os.Open("testdata/adult_hierarchy_age.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	age2, err := ParseHierarchy(f, ';', 2, "*")
	if err != nil {
		t.Fatal(err)
	}
	// From the file: "37;35-39;30-39;20-39;*".
	for in, want := range map[string]string{"37": `"30-39"`, "17": `"10-19"`, "90": `"80-89"` /* as the file says */, "150": `"*"`} {
		if got := string(age2.Append(nil, []byte(in))); got != want {
			t.Errorf("age %s level 2 = %s, want %s", in, got, want)
		}
	}
	occ, err := os.ReadFile("testdata/adult_hierarchy_occupation.csv")
	if err != nil {
		t.Fatal(err)
	}
	o1, err := ParseHierarchy(strings.NewReader(string(occ)), ';', 1, "*")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := o1.Lookup("Tech-support"); got != "Technical" {
		t.Errorf("Tech-support -> %q", got)
	}
	if _, err := ParseHierarchy(strings.NewReader(string(occ)), ';', 3, "*"); !errors.Is(err, ErrHierarchy) || !strings.Contains(err.Error(), "levels 1 to 2") {
		t.Errorf("level beyond the file: %v", err)
	}
}

func TestHierarchyBadFiles(t *testing.T) {
	cases := map[string]string{
		"a;x;*\nb;y\n":   "line 2 has 2 columns, line 1 has 3",
		"a;x;*\na;y;*\n": "line 2 repeats a value",
		"a\n":            "line 1 has one column",
		"":               "empty file",
	}
	for in, want := range cases {
		_, err := ParseHierarchy(strings.NewReader(in), ';', 1, "*")
		if !errors.Is(err, ErrHierarchy) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", in, err, want)
		}
		if err != nil && strings.Contains(in, "a;") && strings.Contains(err.Error(), "a;") {
			t.Errorf("error echoes file contents: %v", err)
		}
	}
}

func TestMap(t *testing.T) {
	m, err := NewMap([]string{"cfo", "Controller", `q"x`}, []string{"executive", "executive", `y"z`}, "other")
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"cfo": `"executive"`, "Controller": `"executive"`, "controller": `"other"`, `q"x`: `"y\"z"`} {
		if got := string(m.Append(nil, []byte(in))); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
	if _, err := NewMap([]string{"a", "a"}, []string{"x", "y"}, ""); err == nil {
		t.Error("duplicate entry accepted")
	}
}

func FuzzParseHierarchy(f *testing.F) {
	f.Add("a;b;*\nc;d;*\n", 1)
	f.Add("1;0-4;*\r\n2;0-4;*\r\n", 2)
	f.Add(";;\n", 1)
	f.Fuzz(func(t *testing.T, data string, level int) {
		tab, err := ParseHierarchy(strings.NewReader(data), ';', level, "*")
		if err != nil {
			return
		}
		for _, line := range strings.Split(data, "\n") {
			parts := strings.Split(strings.TrimSuffix(line, "\r"), ";")
			if strings.TrimSpace(line) == "" || len(parts) <= level {
				continue
			}
			if got, ok := tab.Lookup(parts[0]); !ok || got != parts[level] {
				t.Fatalf("value on a line maps to %q, want its level %d column", got, level)
			}
		}
	})
}
