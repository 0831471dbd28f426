// Package route compiles one vendor route's policy (field rules, key ring,
// categories) into a Route, and applies it to JSON records in a single pass:
// the input is scanned once, fields no rule names are skipped without being
// copied (default deny), and each named field is written to the output
// through its action. Compile once; give each worker its own Applier.
package route

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/fieldpath"
	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/transforms/generalize"
	"github.com/deident/deident/transforms/pseudonym"
)

// Route is a compiled vendor route. Immutable and safe for concurrent use;
// apply it through an Applier.
type Route struct {
	// Name is the route's key in the config.
	Name string
	// Version identifies the canonical policy (config after defaults, key
	// ids, hierarchy digests; never keys). Every output carries it.
	Version string
	// Config is the route's config after defaults.
	Config config.Route

	categories   []config.Category
	root         *node
	ring         *pseudonym.KeyRing
	eventTime    fieldpath.Path
	namespaces   int
	maxRecord    int
	cacheEntries int
	nodes        int // how many nodes the tree has
}

type leafKind uint8

const (
	kindKeep leafKind = iota
	// The direct-identifier actions, kindPseudonym to kindIPTruncate.
	kindPseudonym
	kindEmail
	kindIPPrefix
	kindIPTruncate
	kindTime
	kindNumber
	kindTable
)

// node is one step of the compiled path tree. A node either has an action
// (leaf) or children; arrays counts the "[]" levels its value is inside.
type node struct {
	path     string
	arrays   int
	children map[string]*node // used while compiling
	leaf     *leaf

	// The members, for the hot path: names finds a member's position
	// in kids.
	names *jsonscan.Names
	kids  []*node
	// member is `,"name":` for writing this node's member when its input
	// key holds no escapes (the key's bytes are then the name's): the
	// first member is written from member[1:].
	member []byte
	id     int // position in a depth-first numbering, for per-Applier state
	// depth counts the containers open inside this node's object (the
	// record's is 1) on the fast path, where every node's object sits at
	// the same depth (a node under an array goes the general way): it is
	// not passed down the walk.
	depth int
	// For the fast path (fast.go): what to do with the value, and member
	// as two little-endian words (zero-padded) when it fits in 16 bytes.
	op       fastOp
	mw0, mw1 uint64
}

// child returns the member named name, or nil.
func (n *node) child(name []byte) *node {
	if i := n.names.Index(name); i >= 0 {
		return n.kids[i]
	}
	return nil
}

// index builds the member tables of n and everything below it, numbering
// the nodes from *next.
func (n *node) index(next *int) {
	n.id = *next
	*next++
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	n.names = jsonscan.NewNames(names)
	n.kids = n.kids[:0]
	for _, name := range names {
		c := n.children[name]
		c.member = append(append([]byte(`,"`), name...), '"', ':')
		c.op = opGeneral
		switch {
		case c.arrays > 0:
		case c.leaf == nil:
			c.op = opObject
		case c.leaf.kind == kindKeep:
			c.op = opKeep
		default:
			c.op = opAct
		}
		var w [16]byte
		copy(w[:], c.member)
		c.mw0, c.mw1 = binary.LittleEndian.Uint64(w[:]), binary.LittleEndian.Uint64(w[8:])
		c.depth = n.depth + 1
		n.kids = append(n.kids, c)
		c.index(next)
	}
}

type normalization uint8

const (
	normNone normalization = iota
	normLower
	normTrim
	normEmail
)

var normalizations = map[string]normalization{"none": normNone, "lower": normLower, "trim": normTrim, "email": normEmail}

type leaf struct {
	kind      leafKind
	normalize normalization
	rule      int // index into Config.Fields, for errors
	ns        uint32
	format    *pseudonym.Format
	domain    *pseudonym.Format // email_split with domain: pseudonymize
	v4, v6    int
	time      *generalize.TimeBucket
	num       *generalize.NumericBucket
	table     *generalize.Table
}

// Compile builds route name from its config. dir resolves relative files.
// Errors are prefixed with the rule's key path and joined.
func Compile(name string, rc config.Route, dir string, limits config.Limits) (*Route, error) {
	prefix := "vendors." + name
	r := &Route{
		Name:         name,
		Config:       rc,
		categories:   slices.Clone(rc.Categories),
		root:         &node{children: map[string]*node{}},
		maxRecord:    limits.MaxRecordBytes,
		cacheEntries: rc.CacheEntries,
	}
	if r.maxRecord <= 0 {
		r.maxRecord = config.DefaultMaxRecordBytes
	}
	var errs []error
	epochs := make([]pseudonym.Epoch, len(rc.Keys))
	for i, k := range rc.Keys {
		epochs[i] = pseudonym.Epoch{From: k.ValidFrom, Key: k.Key}
	}
	ring, err := pseudonym.NewKeyRing(epochs)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.keys: %w", prefix, err))
	}
	r.ring = ring
	if rc.EventTime != "" {
		if r.eventTime, err = fieldpath.Parse(rc.EventTime); err != nil {
			errs = append(errs, fmt.Errorf("%s.event_time: %w", prefix, err))
		}
	}
	namespaces := map[string]uint32{}
	nsIndex := func(ns string) uint32 {
		i, ok := namespaces[ns]
		if !ok {
			i = uint32(len(namespaces))
			namespaces[ns] = i
		}
		return i
	}
	digests := map[string]string{}
	for i, f := range rc.Fields {
		p := fmt.Sprintf("%s.fields[%d]", prefix, i)
		path, err := fieldpath.Parse(f.Path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.path: %w", p, err))
			continue
		}
		if f.Action == config.Drop {
			continue // explicit and audited, but nothing to compile: unnamed is dropped anyway
		}
		l := &leaf{rule: i}
		switch f.Action {
		case config.Keep:
			l.kind = kindKeep
		case config.Pseudonymize, config.EmailSplit:
			l.kind = kindPseudonym
			if f.Action == config.EmailSplit {
				l.kind = kindEmail
			}
			l.ns = nsIndex(f.Namespace)
			l.normalize = normalizations[f.Normalize]
			l.format = pseudoFormat(f, f.Namespace)
			if f.Action == config.EmailSplit && f.Domain == "pseudonymize" {
				l.domain = pseudoFormat(f, f.Namespace+"\x00domain")
			}
		case config.IPPrefixPreserving:
			l.kind = kindIPPrefix
			l.ns = nsIndex("\x00ip_prefix_preserving")
		case config.IPTruncate:
			l.kind, l.v4, l.v6 = kindIPTruncate, f.IPv4Bits, f.IPv6Bits
			// Cached like a pseudonym (telemetry repeats addresses too),
			// in a namespace of its prefix lengths.
			l.ns = nsIndex(fmt.Sprintf("\x00ip_truncate/%d/%d", f.IPv4Bits, f.IPv6Bits))
		case config.Generalize:
			switch {
			case f.TimeBucket != "":
				d, err := config.ParseBucket(f.TimeBucket)
				if err == nil {
					l.time, err = generalize.NewTimeBucket(d)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.time_bucket: %w", p, err))
				}
				l.kind = kindTime
			case f.NumericBucket != nil:
				if f.NumericBucket.Width != 0 {
					l.num, err = generalize.NewNumericWidth(f.NumericBucket.Width)
				} else {
					l.num, err = generalize.NewNumericEdges(f.NumericBucket.Edges)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.numeric_bucket: %w", p, err))
				}
				l.kind = kindNumber
			case f.Hierarchy != nil:
				l.kind = kindTable
				l.table, digests[f.Hierarchy.File], err = loadHierarchy(dir, f.Hierarchy)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.hierarchy: %w", p, err))
				}
			case f.Map != nil:
				l.kind = kindTable
				from := make([]string, len(f.Map.Entries))
				to := make([]string, len(f.Map.Entries))
				for j, e := range f.Map.Entries {
					from[j], to[j] = e.From, e.To
				}
				def := f.Map.Default
				if def == "" {
					def = "other"
				}
				if l.table, err = generalize.NewMap(from, to, def); err != nil {
					errs = append(errs, fmt.Errorf("%s.map: %w", p, err))
				}
			}
		}
		if err := r.insert(path, l); err != nil {
			errs = append(errs, fmt.Errorf("%s.path: %w", p, err))
		}
	}
	r.namespaces = len(namespaces)
	if len(namespaces) > 1<<16 {
		errs = append(errs, fmt.Errorf("%s.fields: more than 65536 namespaces", prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.root.depth = 1
	r.root.index(&r.nodes)
	if rc.KAnon != nil {
		// The k-anonymity ladders' hierarchy files are policy too.
		for i, q := range rc.KAnon.QuasiIdentifiers {
			if h := q.Ladder.Hierarchy; h != nil {
				if _, ok := digests[h.File]; !ok {
					digest, err := fileDigest(dir, h.File)
					if err != nil {
						return nil, fmt.Errorf("%s.k_anonymity.quasi_identifiers[%d].ladder.hierarchy.file: %w", prefix, i, err)
					}
					digests[h.File] = digest
				}
			}
		}
	}
	r.Version = version(name, rc, ring, digests)
	return r, nil
}

// CompileAll compiles every route of c, reporting all errors at once.
func CompileAll(c *config.Config) (map[string]*Route, error) {
	routes := map[string]*Route{}
	var errs []error
	names := make([]string, 0, len(c.Vendors))
	for n := range c.Vendors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r, err := Compile(n, c.Vendors[n], c.Dir, c.Limits)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		routes[n] = r
	}
	return routes, errors.Join(errs...)
}

func pseudoFormat(f config.FieldRule, ns string) *pseudonym.Format {
	enc := pseudonym.Hex
	if f.Encoding == "base64url" {
		enc = pseudonym.Base64URL
	}
	return &pseudonym.Format{Namespace: []byte(ns), Bytes: f.Bits / 8, Encoding: enc, Prefix: []byte(f.Prefix)}
}

func fileDigest(dir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

func loadHierarchy(dir string, h *config.Hierarchy) (*generalize.Table, string, error) {
	path := h.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	sep := byte(';')
	if h.Separator != "" {
		sep = h.Separator[0]
	}
	def := h.Default
	if def == "" {
		def = "*"
	}
	t, err := generalize.ParseHierarchy(strings.NewReader(string(data)), sep, h.Level, def)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", h.File, err)
	}
	sum := sha256.Sum256(data)
	return t, hex.EncodeToString(sum[:]), nil
}

// insert adds a leaf at path, refusing rules that overlap (a rule on a
// field and another on something inside it).
func (r *Route) insert(path fieldpath.Path, l *leaf) error {
	n := r.root
	for i, seg := range path {
		child, ok := n.children[seg.Name]
		if !ok {
			child = &node{path: path[:i+1].String(), arrays: seg.Arrays, children: map[string]*node{}}
			n.children[seg.Name] = child
		} else if child.arrays != seg.Arrays {
			return fmt.Errorf("%q and %q disagree on whether %s is an array", path.String(), child.path, seg.Name)
		}
		if child.leaf != nil {
			return fmt.Errorf("%q is inside %q, which has a rule of its own", path.String(), child.path)
		}
		n = child
	}
	if len(n.children) > 0 {
		return fmt.Errorf("%q has rules for fields inside it; give either the field or its members a rule", path.String())
	}
	n.leaf = l
	return nil
}

// Allows reports whether the route may receive records of category c.
func (r *Route) Allows(c config.Category) bool { return slices.Contains(r.categories, c) }

// KeyRing returns the route's keys.
func (r *Route) KeyRing() *pseudonym.KeyRing { return r.ring }

// version hashes the canonical policy. Keys are represented by their ids.
func version(name string, rc config.Route, ring *pseudonym.KeyRing, digests map[string]string) string {
	type key struct {
		ID        string `json:"id"`
		ValidFrom string `json:"valid_from"`
	}
	canon := struct {
		Name        string             `json:"name"`
		Vendor      string             `json:"vendor"`
		Purpose     string             `json:"purpose"`
		Categories  []config.Category  `json:"categories"`
		OptIn       map[string]string  `json:"opt_in"`
		Topic       string             `json:"topic"`
		Output      config.Format      `json:"output"`
		EventTime   string             `json:"event_time"`
		Keys        []key              `json:"keys"`
		Fields      []config.FieldRule `json:"fields"`
		Hierarchies map[string]string  `json:"hierarchies"`
		KAnon       *config.KAnon      `json:"k_anonymity"`
		Gate        config.Gate        `json:"gate"`
	}{name, rc.Vendor, rc.Purpose, slices.Sorted(slices.Values(rc.Categories)), rc.OptIn, rc.Topic, rc.Output, rc.EventTime, nil, rc.Fields, digests, rc.KAnon, rc.Gate}
	for i := range ring.Len() {
		canon.Keys = append(canon.Keys, key{ring.ID(i), ring.From(i).UTC().Format("2006-01-02T15:04:05Z07:00")})
	}
	b, err := json.Marshal(canon)
	if err != nil {
		panic(err) // plain data; cannot fail
	}
	sum := sha256.Sum256(b)
	return "p" + hex.EncodeToString(sum[:8])
}
