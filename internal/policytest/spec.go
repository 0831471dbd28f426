// Package policytest runs test cases kept beside a policy (deident test): a
// YAML file names a config, a route, input records and assertions, and the
// runner applies the route the way apply does and checks the outputs. Besides
// an expected output per record, privacy assertions are on by default: no
// field outside the route's allowlist, no raw e-mail address, IP address or
// card number in any output, the same input always gives the same bytes, no
// other route's keys give the same pseudonyms, and every class a
// k-anonymity stage releases holds at least k distinct entities.
//
// Failure messages name field paths and, for expected-output diffs, the
// values on both sides: they are fixture values the test author wrote, never
// production records.
package policytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is one test file: a config, the environment it needs, and cases.
type File struct {
	// Config is the policy under test, relative to the test file.
	Config string `yaml:"config"`
	// Route is the default route of every case.
	Route string `yaml:"route"`
	// Env sets environment variables while the file's config is loaded and
	// its cases run (e.g. env keys: DEIDENT_KEY_FLOWAI: {file: keys/flowai.key}).
	// The previous values are restored afterwards.
	Env map[string]EnvValue `yaml:"env"`
	// Cases are the test cases, run in order.
	Cases []Case `yaml:"cases"`

	// Path is where the file was read from.
	Path string `yaml:"-"`
}

// EnvValue is a literal string or {file: PATH} (relative to the test file;
// its content without the trailing newline). Prefer file for keys.
type EnvValue struct {
	Value string
	File  string
}

// UnmarshalYAML accepts a scalar or a mapping with file.
func (e *EnvValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		e.Value = n.Value
		return nil
	}
	var m struct {
		File string `yaml:"file"`
	}
	if err := decodeStrict(n, &m); err != nil {
		return err
	}
	if m.File == "" {
		return fmt.Errorf("line %d: an env value is a string or {file: PATH}", n.Line)
	}
	e.File = m.File
	return nil
}

// Case is one test case. The privacy checks are on unless switched off in
// Checks; min_k runs when the route has k_anonymity or MinK is set.
type Case struct {
	// Name says what the case checks.
	Name string `yaml:"name"`
	// Route overrides the file's route.
	Route string `yaml:"route"`
	// Input records: YAML mappings (converted to JSON, member order kept)
	// or strings holding a JSON line exactly.
	Input []yaml.Node `yaml:"input"`
	// InputFile is a JSON-lines file of input records, relative to the test
	// file; blank lines are skipped. Used after Input when both are given.
	InputFile string `yaml:"input_file"`
	// Expect holds the expected output of each input record, in order; a
	// null entry skips its record. Compared as JSON values (member order
	// does not matter); fewer entries than records check only the first.
	Expect []yaml.Node `yaml:"expect"`
	// ExpectReject: every input record must be rejected by the route with
	// an error containing this text (e.g. "key epoch retired").
	ExpectReject string `yaml:"expect_reject"`
	// DifferentFromRoute restricts the isolation check to that route (by
	// default every other route that pseudonymizes is checked).
	DifferentFromRoute string `yaml:"different_from_route"`
	// MinK is the k every released class must reach; the route's
	// k_anonymity.k when zero.
	MinK int `yaml:"min_k"`
	// Checks switches the built-in privacy assertions.
	Checks Checks `yaml:"checks"`

	line int
}

// Checks switches the built-in assertions; each is on when unset.
type Checks struct {
	// Allowlist: every output field is one a rule names (drop excluded).
	Allowlist *bool `yaml:"allowlist"`
	// RawIdentifiers: no e-mail, IPv4, IPv6 or card number, and no raw value
	// of a direct-identifier field, anywhere outside the IP-action fields.
	RawIdentifiers *bool `yaml:"raw_identifiers"`
	// Determinism: applying the input again (warm cache, and a fresh applier
	// in reverse order) gives the same bytes and key ids.
	Determinism *bool `yaml:"determinism"`
	// Isolation: the route's rules under another route's keys give other
	// pseudonyms for the same input.
	Isolation *bool `yaml:"isolation"`
	// MinK: set to false to skip the k-anonymity check of a route with k_anonymity.
	MinK *bool `yaml:"min_k"`
}

func on(b *bool) bool { return b == nil || *b }

// Load reads and validates a test file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading test file: %w", err)
	}
	return Parse(b, path)
}

// Parse decodes a test file's YAML; path resolves relative files.
func Parse(b []byte, path string) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty test file", path)
	}
	f := &File{Path: path}
	if err := decodeStrict(doc.Content[0], f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := f.validate(doc.Content[0]); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func decodeStrict(n *yaml.Node, v any) error {
	// yaml.Node.Decode has no KnownFields; re-encode and decode strictly.
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	return d.Decode(v)
}

func (f *File) validate(root *yaml.Node) error {
	var errs []error
	if f.Config == "" {
		errs = append(errs, errors.New("config: required (the policy file, relative to the test file)"))
	}
	if len(f.Cases) == 0 {
		errs = append(errs, errors.New("cases: at least one case is required"))
	}
	lines := caseLines(root)
	for i := range f.Cases {
		c := &f.Cases[i]
		if i < len(lines) {
			c.line = lines[i]
		}
		p := fmt.Sprintf("cases[%d]", i)
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		if c.Route == "" {
			c.Route = f.Route
		}
		if c.Route == "" {
			errs = append(errs, fmt.Errorf("%s.route: required (here or at the top of the file)", p))
		}
		if len(c.Input) == 0 && c.InputFile == "" {
			errs = append(errs, fmt.Errorf("%s: give input or input_file", p))
		}
		if c.ExpectReject != "" && len(c.Expect) > 0 {
			errs = append(errs, fmt.Errorf("%s: expect and expect_reject exclude each other", p))
		}
		if c.MinK < 0 || c.MinK == 1 {
			errs = append(errs, fmt.Errorf("%s.min_k: must be at least 2, got %d", p, c.MinK))
		}
	}
	return errors.Join(errs...)
}

// caseLines finds the line of each case, for messages.
func caseLines(root *yaml.Node) []int {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "cases" {
			var ls []int
			for _, c := range root.Content[i+1].Content {
				ls = append(ls, c.Line)
			}
			return ls
		}
	}
	return nil
}

// record is one input record and where it came from.
type record struct {
	at   string // "input[2]" or "fixtures/edr.jsonl:7"
	data []byte
}

// inputs returns the case's input records.
func (c *Case) inputs(dir string) ([]record, error) {
	var recs []record
	for i := range c.Input {
		n := &c.Input[i]
		at := fmt.Sprintf("input[%d]", i)
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			recs = append(recs, record{at, []byte(n.Value)})
			continue
		}
		b, err := nodeJSON(nil, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		recs = append(recs, record{at, b})
	}
	if c.InputFile != "" {
		path := c.InputFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("input_file: %w", err)
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			line = bytes.TrimSuffix(line, []byte("\r"))
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			recs = append(recs, record{fmt.Sprintf("%s:%d", c.InputFile, i+1), line})
		}
	}
	return recs, nil
}

// nodeJSON appends the JSON form of a YAML node. Member order is kept;
// timestamps stay the text the author wrote.
func nodeJSON(dst []byte, n *yaml.Node) ([]byte, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return append(dst, "null"...), nil
		}
		return nodeJSON(dst, n.Content[0])
	case yaml.MappingNode:
		dst = append(dst, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				dst = append(dst, ',')
			}
			k := n.Content[i]
			for k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a member name must be a scalar", k.Line)
			}
			dst = appendString(dst, k.Value)
			dst = append(dst, ':')
			var err error
			if dst, err = nodeJSON(dst, n.Content[i+1]); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case yaml.SequenceNode:
		dst = append(dst, '[')
		for i, e := range n.Content {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = nodeJSON(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return append(dst, "null"...), nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, err
			}
			return strconv.AppendBool(dst, b), nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return strconv.AppendInt(dst, i, 10), nil
			}
			fallthrough
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, err
			}
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("line %d: %s is not a JSON number", n.Line, n.Value)
			}
			return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
		default: // !!str, !!timestamp, !!binary: the text as written
			return appendString(dst, n.Value), nil
		}
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

func appendString(dst []byte, s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}

// isNull reports whether a YAML node is null (an expect entry to skip).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// envFor resolves the file's env values.
func (f *File) envFor() (map[string]string, error) {
	out := map[string]string{}
	dir := filepath.Dir(f.Path)
	for name, v := range f.Env {
		if v.File == "" {
			out[name] = v.Value
			continue
		}
		path := v.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("env.%s: %w", name, err)
		}
		out[name] = strings.TrimRight(string(b), "\r\n")
	}
	return out, nil
}
