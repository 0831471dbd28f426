package policytest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/deident/deident/internal/config"
)

// writeDir writes files into a temporary directory and returns it.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	keyA = "1111111111111111111111111111111111111111111111111111111111111111\n"
	keyB = "2222222222222222222222222222222222222222222222222222222222222222\n"
)

// kanonConfig is a record-mode k-anonymity route (k=3) beside an ordinary one.
const kanonConfig = `
vendors:
  v:
    purpose: analytics
    categories: [threat_telemetry]
    keys: [{file: a.key}]
    k_anonymity:
      k: 3
      mode: record
      entity: user
      quasi_identifiers:
        - {path: dept, ladder: {hierarchy: {file: dept.csv}}}
    fields:
      - {path: user, action: pseudonymize}
      - {path: dept, action: keep}
  w:
    purpose: detection
    categories: [threat_telemetry]
    keys: [{file: b.key}]
    fields:
      - {path: user, action: pseudonymize}
`

// kanonFixture: sales has 3 users; legal one user (suppressed); ops and
// dev 3 users together (released as tech).
const kanonFixture = `{"user":"a","dept":"sales"}
{"user":"b","dept":"sales"}
{"user":"c","dept":"sales"}
{"user":"lonely","dept":"legal"}
{"user":"lonely","dept":"legal"}
{"user":"o","dept":"ops"}
{"user":"d1","dept":"dev"}
{"user":"d2","dept":"dev"}
`

func runText(t *testing.T, files map[string]string) []Result {
	t.Helper()
	dir := writeDir(t, files)
	f, err := Load(filepath.Join(dir, "x.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return RunFile(f)
}

func TestMinKCountsEntitiesOverTheFixture(t *testing.T) {
	files := map[string]string{
		"deident.yaml": kanonConfig, "a.key": keyA, "b.key": keyB, "fixture.jsonl": kanonFixture,
		"dept.csv": "sales;business;*\nlegal;business;*\nops;tech;*\ndev;tech;*\n",
		"x.test.yaml": `
config: deident.yaml
route: v
cases:
  - name: the route's k holds
    input_file: fixture.jsonl
  - name: a stricter k fails
    input_file: fixture.jsonl
    min_k: 4
`,
	}
	res := runText(t, files)
	if !res[0].Passed() {
		t.Errorf("k=3: %q", res[0].Failures)
	}
	if !slices.ContainsFunc(res[0].Notes, func(n string) bool {
		return strings.Contains(n, "6 records released in 2 classes") && strings.Contains(n, "2 records suppressed") && strings.Contains(n, "smallest class 3 entities")
	}) {
		t.Errorf("notes %q", res[0].Notes)
	}
	if res[1].Passed() || !slices.ContainsFunc(res[1].Failures, func(f string) bool {
		return strings.HasPrefix(f, "min_k: ") && strings.Contains(f, "under k=4")
	}) {
		t.Errorf("k=4: %q", res[1].Failures)
	}
}

// TestIsolationFailsOnASharedKey: the loader rejects two routes sharing a
// key, so the check is tested on a config altered after loading.
func TestIsolationFailsOnASharedKey(t *testing.T) {
	dir := writeDir(t, map[string]string{"a.key": keyA, "b.key": keyB, "dept.csv": "sales;*\n"})
	cfg, err := config.Parse([]byte(kanonConfig), dir)
	if err != nil {
		t.Fatal(err)
	}
	input := []yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: `{"user":"alice"}`}}
	for _, shared := range []bool{false, true} {
		if shared {
			w := cfg.Vendors["w"]
			w.Keys = cfg.Vendors["v"].Keys
			cfg.Vendors["w"] = w
		}
		var res Result
		runCase(&res, cfg, dir, &Case{Route: "w", Input: input, DifferentFromRoute: "v"})
		failed := slices.ContainsFunc(res.Failures, func(f string) bool {
			return strings.HasPrefix(f, "isolation: input[0]: user gets the same pseudonym under route v's key")
		})
		if failed != shared {
			t.Errorf("shared key %v: failures %q", shared, res.Failures)
		}
	}
}

func TestAllowlistNamesFieldsNoRuleNames(t *testing.T) {
	rc := config.Route{Fields: []config.FieldRule{
		{Path: "a.b", Action: config.Pseudonymize},
		{Path: "meta", Action: config.Keep},
		{Path: "list[].x", Action: config.Keep},
		{Path: "gone", Action: config.Drop},
	}}
	out, err := decode([]byte(`{"a":{"b":"p","c":1},"meta":{"any":{"thing":1}},"list":[{"x":1,"y":2},{"y":3}],"gone":1,"top":"v","a2":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := newAllowlist(rc).outside("", out, nil)
	want := []string{"a.c", "a2", "gone", "list[].y", "top"}
	if !slices.Equal(got, want) {
		t.Errorf("outside = %q, want %q", got, want)
	}
}

func TestYAMLInputBecomesJSONInOrder(t *testing.T) {
	var n yaml.Node
	src := "{z: 1, a: 2026-11-01T00:00:01.000Z, s: '007', f: 1.5, b: true, n: null, l: [x, {k: \"<&>\"}], h: 0x10}"
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	b, err := nodeJSON(nil, &n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"z":1,"a":"2026-11-01T00:00:01.000Z","s":"007","f":1.5,"b":true,"n":null,"l":["x",{"k":"<&>"}],"h":16}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestDiffIsFieldByField(t *testing.T) {
	got, _ := decode([]byte(`{"a":{"b":"x","c":1},"l":[1,2],"extra":true}`))
	want, _ := decode([]byte(`{"l":[1,3],"a":{"c":1.0,"b":"y"},"gone":null}`))
	text := formatDiff(diffJSON(got, want), "")
	wantText := `a.b    got "x", want "y"
extra  got true, want no such field
gone   missing, want null
l[1]   got 2, want 3`
	if text != wantText {
		t.Errorf("diff:\n%s\nwant:\n%s", text, wantText)
	}
}

func TestParseRejectsMistakes(t *testing.T) {
	cases := map[string]string{
		"config: x.yaml\nroute: r\ncases: [{input: [{}], expct: []}]":           "field expct not found",
		"route: r\ncases: [{input: [{}]}]":                                      "config: required",
		"config: x.yaml\ncases: [{input: [{}]}]":                                "cases[0].route: required",
		"config: x.yaml\nroute: r\ncases: [{name: n}]":                          "cases[0]: give input or input_file",
		"config: x.yaml\nroute: r\ncases: [{input: [{}], min_k: 1}]":            "min_k: must be at least 2",
		"config: x.yaml\nroute: r\ncases: []":                                   "at least one case",
		"config: x.yaml\nroute: r\nenv: {K: {path: x}}\ncases: [{input: [{}]}]": "field path not found",
	}
	for text, want := range cases {
		_, err := Parse([]byte(text), "t.test.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", text, err, want)
		}
	}
}

func TestEnvIsSetForTheFileAndRestored(t *testing.T) {
	t.Setenv("DEIDENT_TEST_POLICYTEST_KEY", "before")
	dir := writeDir(t, map[string]string{
		"a.key": keyA, "k.hex": keyB,
		"deident.yaml": `
vendors:
  v:
    purpose: p
    categories: [threat_telemetry]
    keys: [{env: DEIDENT_TEST_POLICYTEST_KEY}]
    fields: [{path: user, action: pseudonymize}]
`,
		"x.test.yaml": `
config: deident.yaml
route: v
env: {DEIDENT_TEST_POLICYTEST_KEY: {file: k.hex}}
cases: [{input: [{user: u}]}]
`,
	})
	f, err := Load(filepath.Join(dir, "x.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if res := RunFile(f); !res[0].Passed() {
		t.Errorf("%q", res[0].Failures)
	}
	if v := os.Getenv("DEIDENT_TEST_POLICYTEST_KEY"); v != "before" {
		t.Errorf("env after the run: %q", v)
	}
}
