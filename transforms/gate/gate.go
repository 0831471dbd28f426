// Package gate is the re-identification gate (design section 5): the last
// stage before a vendor sink, which re-checks every outgoing record without
// trusting the transforms before it. A record that fails is quarantined with
// its reason codes and the field paths that failed, never the values.
//
// Checks, each switchable per route (config.Gate):
//
//   - schema: the record holds only fields the route's rules name (drop
//     excluded), each of the shape its action produces: pseudonyms are the
//     prefix and the exact number of hex or base64url characters,
//     email_split is pseudonym@domain, IP actions produce IP addresses
//     (ip_truncate with the host bits zero), generalize produces strings
//     (time buckets also numbers), keep anything. Malformed JSON and
//     repeated members fail it too (reason schema, path "(record)").
//   - k: with gate.min_k set (or k_anonymity.k, when min_k is 0), the
//     record's top-level k_field ("deident_k")
//     must be a number of at least min_k: the distinct-entity count of the
//     released class (record mode) or of the aggregate. A k-anonymity stage
//     writes it; CheckClass takes it from metadata instead. Without min_k
//     (no k-anonymity stage) the check is a no-op.
//   - echo: Observe puts raw values of direct-identifier fields
//     (pseudonymize, email_split, ip_prefix_preserving, ip_truncate) into a
//     rotating Bloom filter; every outgoing string (and member name) outside
//     pseudonym and IP fields is case-folded and percent-decoded, then it and
//     its tokens are looked up.
//   - pattern:NAME: e-mail, IPv4, IPv6 (not in IP-action fields), MAC,
//     payment card (Luhn), IBAN (mod 97), US SSN, JWT, cloud access keys,
//     private-key blocks, in the same strings.
//
// A Gate is compiled once per route and shared: its Bloom filter, counters
// and fail-closed tracker are safe for concurrent use. Each worker checks
// through its own Checker.
package gate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/fieldpath"
	"github.com/deident/deident/internal/jsonscan"
)

// Header names on quarantined records.
const (
	// HeaderReasons lists the reason codes, comma-separated ("schema,pattern:email").
	HeaderReasons = "deident-gate"
	// HeaderPaths lists the field paths that failed, comma-separated.
	HeaderPaths = "deident-gate-paths"
)

// Reason is why a record failed; String gives its code.
type Reason uint8

const (
	ReasonSchema Reason = iota
	ReasonK
	ReasonEcho
	// ReasonPattern is the first pattern reason; pattern i of
	// config.GatePatterns is ReasonPattern+i.
	ReasonPattern
)

// NumReasons is the number of reason codes.
const NumReasons = int(ReasonPattern) + int(numPatterns)

var reasonNames = func() (n [NumReasons]string) {
	n[ReasonSchema], n[ReasonK], n[ReasonEcho] = "schema", "k", "echo"
	for i, p := range config.GatePatterns {
		n[int(ReasonPattern)+i] = "pattern:" + string(p)
	}
	return n
}()

func (r Reason) String() string {
	if int(r) < NumReasons {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Reasons is a set of reasons.
type Reasons uint32

// Has reports whether r is in the set.
func (s Reasons) Has(r Reason) bool { return s&(1<<r) != 0 }

// Each calls f for every reason in the set, in code order.
func (s Reasons) Each(f func(Reason)) {
	for r := Reason(0); int(r) < NumReasons; r++ {
		if s.Has(r) {
			f(r)
		}
	}
}

// Append appends the codes, comma-separated.
func (s Reasons) Append(dst []byte) []byte {
	first := true
	s.Each(func(r Reason) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, reasonNames[r]...)
	})
	return dst
}

func (s Reasons) String() string { return string(s.Append(nil)) }

// Finding is one failed check at one field path. Paths are the route's rule
// paths ("actor.user.name", "file.hashes[].value"); a member no rule names is
// reported as its parent's path with ".*" ("actor.*", "*" at the top),
// because member names are outside data too.
type Finding struct {
	Reason Reason
	Path   string
}

// Verdict is the gate's decision on one record. Findings is owned by the
// Checker and valid until its next call.
type Verdict struct {
	Reasons  Reasons
	Findings []Finding
}

// Pass reports whether the record may go to the vendor.
func (v Verdict) Pass() bool { return v.Reasons == 0 }

// AppendPaths appends the distinct failed paths, comma-separated.
func (v Verdict) AppendPaths(dst []byte) []byte {
	for i, f := range v.Findings {
		dup := false
		for _, g := range v.Findings[:i] {
			dup = dup || g.Path == f.Path
		}
		if dup {
			continue
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, f.Path...)
	}
	return dst
}

// Paths returns the distinct failed paths, comma-separated.
func (v Verdict) Paths() string { return string(v.AppendPaths(nil)) }

// Option configures New.
type Option func(*options)

type options struct {
	now  func() time.Time
	prev *Gate
}

// WithClock sets the clock of the Bloom rotation and the quarantine-rate
// window; time.Now by default.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithState makes the new Gate continue prev, the same route's gate under
// the running policy (a config reload): it shares prev's counters, so
// they never go back, and, when the gate config is unchanged, prev's Bloom
// filter of raw identifiers and quarantine-rate window too, so a reload
// forgets no identifier seen before it and does not reset the fail-closed
// rate. nil: a fresh gate.
func WithState(prev *Gate) Option { return func(o *options) { o.prev = prev } }

// Gate is one route's compiled gate. Safe for concurrent use.
type Gate struct {
	name     string
	cfg      config.Gate
	on       bool
	schema   bool
	minK     int // 0: no k check
	kField   string
	patterns patternSet
	root     *gnode
	byRule   []*gleaf          // the leaf of each field rule, by index (nil for drop)
	idents   []*gleaf          // byRule's direct identifiers, nil elsewhere; nil without the echo check
	byPath   map[string]*gleaf // the leaf of each field rule, by path (for aggregates)
	echo     *rotatingBloom    // nil when the echo check is off
	rate     *RateTracker
	now      func() time.Time

	stats *counters // shared with the gates a reload replaces it with (WithState)
}

// counters are a gate's tallies; they outlive a reload.
type counters struct {
	checked, quarantined atomic.Uint64
	byReason             [NumReasons]atomic.Uint64
}

type leafKind uint8

const (
	kindKeep leafKind = iota
	kindPseudonym
	kindEmail
	kindIPPrefix
	kindIPTruncate
	kindTime
	kindLabel // numeric bucket, hierarchy, map
)

// gnode is one step of the compiled output tree.
type gnode struct {
	path    string // the rule path up to here
	anyPath string // path of members no rule names: path + ".*"
	arrays  int
	kids    map[string]*gnode // used while compiling
	names   *jsonscan.Names   // kids' names, indexed for the hot path
	members []*gnode          // kids in the order of names
	bit     uint64            // this member's bit in its parent's duplicate mask (0 beyond 64)
	leaf    *gleaf
	ident   bool // a direct-identifier field is at or below this node
}

type gleaf struct {
	kind       leafKind
	prefix     string
	b64        bool
	charClass  uint8 // class bits of the encoding's characters
	hexPlain   bool  // pseudonymize to hex with a printable ASCII prefix (no '"' or '\\')
	chars      int   // pseudonym length after the prefix
	domainHash bool  // email_split with domain: pseudonymize
	v4, v6     int   // ip_truncate bits
	hostish    bool  // the path names a host: also remember the first label
}

// New compiles the gate of route name from its config (defaults are
// applied to rc.Gate here too, so a hand-built config works).
func New(name string, rc config.Route, opts ...Option) (*Gate, error) {
	o := options{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	gc := rc.Gate.WithDefaults()
	prefix := "vendors." + name + ".gate"
	if errs := gc.Validate(prefix); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	g := &Gate{
		name:   name,
		cfg:    gc,
		on:     gc.On(),
		schema: gc.SchemaOn(),
		kField: gc.KField,
		now:    o.now,
		root:   &gnode{anyPath: "*", kids: map[string]*gnode{}},
		stats:  &counters{},
	}
	same := o.prev != nil && reflect.DeepEqual(o.prev.cfg, gc)
	if o.prev != nil {
		g.stats = o.prev.stats
	}
	if same {
		g.rate = o.prev.rate
	} else {
		g.rate = NewRateTracker(name, gc.MaxQuarantineRate, gc.QuarantineWindow, gc.MinRecords, o.now)
	}
	if gc.MinK == 0 && rc.KAnon != nil {
		gc.MinK = rc.KAnon.K // the route's k-anonymity stage sets the k to check
	}
	if gc.KOn() {
		g.minK = gc.MinK
	}
	g.patterns = patternsOf(gc.Patterns)
	for i, f := range rc.Fields {
		if f.Action == config.Drop {
			continue
		}
		path, err := fieldpath.Parse(f.Path)
		if err != nil {
			return nil, fmt.Errorf("vendors.%s.fields[%d].path: %w", name, i, err)
		}
		l, err := compileLeaf(f)
		if err != nil {
			return nil, fmt.Errorf("vendors.%s.fields[%d]: %w", name, i, err)
		}
		for len(g.byRule) <= i {
			g.byRule = append(g.byRule, nil)
		}
		g.byRule[i] = l
		if g.byPath == nil {
			g.byPath = map[string]*gleaf{}
		}
		g.byPath[f.Path] = l
		if err := g.insert(path, l); err != nil {
			return nil, fmt.Errorf("vendors.%s.fields[%d].path: %w", name, i, err)
		}
	}
	if g.minK > 0 {
		if _, clash := g.root.kids[g.kField]; clash {
			return nil, fmt.Errorf("%s.k_field: %q is also a field the route outputs", prefix, g.kField)
		}
	}
	g.root.index()
	switch {
	case same:
		g.echo = o.prev.echo // nil too when the echo check is off
	case g.on && gc.EchoOn():
		g.echo = newRotatingBloom(gc.BloomCapacity, gc.BloomFPRate, gc.BloomRotate, o.now)
	}
	if g.echo != nil {
		g.idents = make([]*gleaf, len(g.byRule))
		for i, l := range g.byRule {
			if l != nil && l.identifier() {
				g.idents[i] = l
			}
		}
	}
	return g, nil
}

func compileLeaf(f config.FieldRule) (*gleaf, error) {
	l := &gleaf{}
	switch f.Action {
	case config.Keep:
		l.kind = kindKeep
	case config.Pseudonymize, config.EmailSplit:
		l.kind = kindPseudonym
		if f.Action == config.EmailSplit {
			l.kind = kindEmail
			l.domainHash = f.Domain == "pseudonymize"
		}
		bits := f.Bits
		if bits == 0 {
			bits = config.DefaultBits
		}
		l.prefix = f.Prefix
		l.b64 = f.Encoding == "base64url"
		if l.b64 {
			l.chars = (bits/8*8 + 5) / 6
			l.charClass = cB64URL
		} else {
			l.chars = bits / 8 * 2
			l.charClass = cHexLower
		}
		low := strings.ToLower(f.Path)
		l.hostish = strings.Contains(low, "host") || strings.Contains(low, "domain") || strings.Contains(low, "fqdn")
		l.hexPlain = l.kind == kindPseudonym && !l.b64
		for _, c := range []byte(l.prefix) {
			l.hexPlain = l.hexPlain && c >= 0x20 && c < 0x7f && c != '"' && c != '\\'
		}
	case config.IPPrefixPreserving:
		l.kind = kindIPPrefix
	case config.IPTruncate:
		l.kind, l.v4, l.v6 = kindIPTruncate, f.IPv4Bits, f.IPv6Bits
		if l.v4 == 0 {
			l.v4 = 24
		}
		if l.v6 == 0 {
			l.v6 = 48
		}
	case config.Generalize:
		l.kind = kindLabel
		if f.TimeBucket != "" {
			l.kind = kindTime
		}
	default:
		return nil, fmt.Errorf("action: unknown action %q", f.Action)
	}
	return l, nil
}

func (l *gleaf) identifier() bool { return l.kind >= kindPseudonym && l.kind <= kindIPTruncate }

func (g *Gate) insert(path fieldpath.Path, l *gleaf) error {
	n := g.root
	for i, seg := range path {
		child, ok := n.kids[seg.Name]
		if !ok {
			p := path[:i+1].String()
			child = &gnode{path: p, anyPath: p + ".*", arrays: seg.Arrays, kids: map[string]*gnode{}}
			if len(n.kids) < 64 {
				child.bit = 1 << len(n.kids)
			}
			n.kids[seg.Name] = child
		} else if child.arrays != seg.Arrays || child.leaf != nil {
			return fmt.Errorf("%q overlaps another rule", path.String())
		}
		n = child
	}
	if len(n.kids) > 0 {
		return fmt.Errorf("%q overlaps another rule", path.String())
	}
	n.leaf = l
	if l.identifier() {
		for m, i := g.root, 0; i < len(path); i++ {
			m.ident = true
			m = m.kids[path[i].Name]
			m.ident = true
		}
	}
	return nil
}

// Name is the route's name.
func (g *Gate) Name() string { return g.name }

// Enabled reports whether the gate checks anything (gate.enabled).
func (g *Gate) Enabled() bool { return g.on }

// Config is the gate's config after defaults.
func (g *Gate) Config() config.Gate { return g.cfg }

// Tally counts a checked record: its verdict's reasons and the quarantine
// rate. It returns a *TripError (wrapping ErrFailClosed) once the route's
// quarantine rate has passed max_quarantine_rate; from then on the caller
// must publish nothing more to the route.
func (g *Gate) Tally(v Verdict) error {
	g.stats.checked.Add(1)
	if !v.Pass() {
		g.stats.quarantined.Add(1)
		v.Reasons.Each(func(r Reason) { g.stats.byReason[r].Add(1) })
	}
	return g.rate.Add(!v.Pass())
}

// Tallier tallies one goroutine's verdicts on its Gate, handing passing
// records on in batches of tallyBatch: Tally took two atomic
// read-modify-writes per record, about 26 ns, a tenth of what the gate
// costs a record on the benchmark route. A quarantined record first hands
// on the passes before it, so the rate it is judged by counts them (other
// Talliers' unflushed passes, at most tallyBatch-1 each, only make the
// rate look higher: the route fails closed no later). Call Flush before
// reading the Gate's Stats. Not safe for concurrent use.
type Tallier struct {
	g      *Gate
	rate   *RateTracker // g's, one load nearer
	passes uint64       // passing records not yet on the Gate
}

// tallyBatch is how many passes a Tallier hands on at once. Each hand-on
// reads the clock (73 ns on this project's VM), takes the tracker's lock
// and divides: about 110 ns, 7 ns per record in batches of 16.
const tallyBatch = 64

// NewTallier returns a Tallier on g.
func (g *Gate) NewTallier() *Tallier { return &Tallier{g: g, rate: g.rate} }

// Tally is Gate.Tally for one goroutine.
func (t *Tallier) Tally(v Verdict) error {
	if !v.Pass() {
		t.handOn()
		return t.g.Tally(v)
	}
	if t.passes++; t.passes == tallyBatch {
		t.handOn()
	}
	return t.rate.errFast()
}

// Flush hands the passing records tallied since the last Flush on to the
// Gate; it returns the *TripError once the route has failed closed.
func (t *Tallier) Flush() error {
	t.handOn()
	return t.rate.errFast()
}

func (t *Tallier) handOn() {
	if n := t.passes; n > 0 {
		t.passes = 0
		t.g.stats.checked.Add(n)
		t.rate.addPasses(n)
	}
}

// Err returns the *TripError once the route has failed closed.
func (g *Gate) Err() error { return g.rate.Err() }

// Stats is a snapshot of a gate's counters.
type Stats struct {
	Checked, Quarantined uint64
	// ByReason counts quarantined records per reason; a record with two
	// reasons counts under both.
	ByReason [NumReasons]uint64
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	s := Stats{Checked: g.stats.checked.Load(), Quarantined: g.stats.quarantined.Load()}
	for i := range s.ByReason {
		s.ByReason[i] = g.stats.byReason[i].Load()
	}
	return s
}

// Each calls f for every reason with a non-zero count, in code order.
func (s Stats) Each(f func(reason string, n uint64)) {
	for i, n := range s.ByReason {
		if n > 0 {
			f(reasonNames[i], n)
		}
	}
}

// ipLeafOK reports whether val is what an IP action writes.
func ipLeafOK(l *gleaf, val []byte) bool {
	if a, ok := parseIPv4(val); ok && (l.kind != kindIPTruncate || 0 <= l.v4 && l.v4 <= 32) {
		if l.kind != kindIPTruncate {
			return true
		}
		return a&(1<<(32-l.v4)-1) == 0
	}
	ip, err := netip.ParseAddr(str(val))
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
}

// parseIPv4 parses a dotted quad as netip.ParseAddr does (four decimal
// fields up to 255, no leading zeros). ok false means "not this way", not
// "invalid": the caller asks netip then.
func parseIPv4(b []byte) (addr uint32, ok bool) {
	if len(b) < 7 || len(b) > 15 {
		return 0, false
	}
	i := 0
	for f := range 4 {
		if f > 0 {
			if i >= len(b) || b[i] != '.' {
				return 0, false
			}
			i++
		}
		if i >= len(b) || b[i]-'0' > 9 {
			return 0, false
		}
		v := uint32(b[i] - '0')
		i++
		if v != 0 { // a field that starts with 0 is 0
			for k := 0; k < 2 && i < len(b) && b[i]-'0' <= 9; k++ {
				v = v*10 + uint32(b[i]-'0')
				i++
			}
		}
		if v > 255 {
			return 0, false
		}
		addr = addr<<8 | v
	}
	return addr, i == len(b)
}

// pseudonymOK reports whether val is prefix + chars of the encoding.
func pseudonymOK(l *gleaf, val []byte) bool {
	if len(val) != len(l.prefix)+l.chars || string(val[:len(l.prefix)]) != l.prefix {
		return false
	}
	body := val[len(l.prefix):]
	if !l.b64 {
		return hexLower(body)
	}
	want := l.charClass
	for _, c := range body {
		if class[c]&want == 0 {
			return false
		}
	}
	return true
}

// hexLower8 reports whether all eight bytes of x are 0-9 or a-f. Bytes
// below 0x80 leave room to add up to 0x80 without carrying into the next,
// so b+(0x80-lo) has its top bit set exactly when b >= lo.
func hexLower8(x uint64) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	if x&msb != 0 {
		return false
	}
	digit := (x + lsb*(0x80-'0')) &^ (x + lsb*(0x80-'9'-1))
	letter := (x + lsb*(0x80-'a')) &^ (x + lsb*(0x80-'f'-1))
	return (digit|letter)&msb == msb
}

// hexLower reports whether every byte of b is 0-9 or a-f.
func hexLower(b []byte) bool {
	for len(b) >= 8 {
		if !hexLower8(binary.LittleEndian.Uint64(b)) {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if class[c]&cHexLower == 0 {
			return false
		}
	}
	return true
}

func emailOK(l *gleaf, val []byte) bool {
	at := len(l.prefix) + l.chars
	if len(val) < at+2 || val[at] != '@' || !pseudonymOK(l, val[:at]) {
		return false
	}
	dom := val[at+1:]
	if l.domainHash {
		return pseudonymOK(l, dom)
	}
	for _, c := range dom {
		if c < 0x80 && !(isDigit(c) || ('a' <= c && c <= 'z') || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// child returns the member named name, or nil.
func (n *gnode) child(name []byte) *gnode {
	if i := n.names.Index(name); i >= 0 {
		return n.members[i]
	}
	return nil
}

// index builds the member tables of n and everything below it.
func (n *gnode) index() {
	names := make([]string, 0, len(n.kids))
	for name := range n.kids {
		names = append(names, name)
	}
	sort.Strings(names)
	n.names = jsonscan.NewNames(names)
	n.members = n.members[:0]
	for _, name := range names {
		n.members = append(n.members, n.kids[name])
		n.kids[name].index()
	}
}
