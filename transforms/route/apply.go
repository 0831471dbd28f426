package route

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/transforms/generalize"
	"github.com/deident/deident/transforms/pseudonym"
)

// Sentinel errors a FieldError wraps; test with errors.Is.
var (
	ErrTooLarge   = errors.New("record exceeds max_record_bytes")
	ErrNotObject  = errors.New("record is not a JSON object")
	ErrNotString  = errors.New("needs a string")
	ErrNotIP      = errors.New("not an IP address")
	ErrNotEmail   = errors.New("not an e-mail address")
	ErrEventTime  = errors.New("event time missing or unreadable")
	ErrWrongValue = errors.New("value of the wrong type")
)

// FieldError names the field path a record failed at; never the value.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Stats counts what an Applier did.
type Stats struct {
	Records       uint64 // records applied without error
	DroppedFields uint64 // input members no rule names (default deny)
}

// Observer is told every raw direct-identifier value the Applier reads
// (fields whose action pseudonymizes or generalizes an identifier), with
// the index of its rule in the route's fields. The re-identification gate
// uses it to learn raw values without a second pass over the input. val is
// valid only during the call.
type Observer interface {
	ObserveIdentifier(rule int, val []byte)
}

// A GenerationObserver remembers what it is told for a while, by
// generation: a value told while Generation returned g is still known
// while it returns g. The Applier then keeps its memos on (fast.go) and
// tells a repeated object's or value's identifiers once per generation
// instead of once per record. The Applier calls Generation once per
// record, so an observer can read its clock there. It never returns 0.
type GenerationObserver interface {
	Observer
	Generation() uint64
}

// Applier applies a Route. It owns the per-worker state: keyed hashers,
// the pseudonym cache, the subtree memo (fast.go) and scratch buffers. Not
// safe for concurrent use; src is not retained after Apply returns (the
// caches keep copies of recent values and objects, as a pseudonym cache
// must, in the worker's memory only).
type Applier struct {
	r       *Route
	s       jsonscan.Scanner
	hashers []*pseudonym.Hasher // per epoch, made on first use
	cache   *pseudonym.Cache
	epoch   int
	obs     Observer
	gobs    GenerationObserver // obs, when it is one
	memos   bool               // the subtree and leaf memos are on (fast.go)
	unesc   []byte
	norm    []byte
	shapes  [][]expect // per node id: the keys its objects had last time
	Stats   Stats

	// The fast path's state (fast.go): while queue is set, Observer calls
	// wait in obsQueue (values that are not slices of the record copied to
	// obsBuf). general forces the general path, for tests that compare the
	// two.
	queue    bool
	rec      []byte // the record the fast path is applying
	obsQueue []pending
	obsBuf   []byte
	gen      uint64    // gobs's generation at this record's start
	stamps   []*uint64 // memo entries whose identifiers this record tells gobs
	// pseudonym cache entries whose values this record tells gobs, and
	// their stamps: the generation and the rule
	toldStamps []toldStamp
	memo       []memoSlot   // per node id: recent objects and their outputs
	leaves     []*leafTable // per node id: recent short values and their outputs
	general    bool
}

// expect is the key an object's member had last time at the same position,
// `"key":` as bytes, so that a record of the same shape is matched with two
// masked word compares instead of a scan and a lookup. Only keys without
// escapes are remembered, so equal bytes are a key the Scanner accepts.
type expect struct {
	w0, w1 uint64 // the first 16 bytes, little-endian, zero-padded
	m0, m1 uint64 // masks of the bytes w0 and w1 hold
	n      int    // length of `"key":`; 0: nothing remembered
	child  *node  // nil: a member no rule names
	op     fastOp // what the fast path does with the value (fast.go)
}

// A key longer than 16 bytes, or nothing, is remembered with masks that
// never match (w0 & 0 != 1); match then compares a long key in full.
const noMatch = 1

// maxShape bounds the members remembered per object.
const maxShape = 64

// match reports whether d[q:] starts with e's key.
func (e *expect) match(d []byte, q int) bool {
	if e.n > 16 {
		return q+e.n <= len(d) && string(d[q:q+e.n]) == string(e.child.member[1:])
	}
	if q < 0 || q+16 > len(d) {
		return false
	}
	w := d[q : q+16]
	return binary.LittleEndian.Uint64(w)&e.m0 == e.w0 && binary.LittleEndian.Uint64(w[8:])&e.m1 == e.w1
}

// learn remembers the plain key d[q:end] (`"key":`) as member ord of an
// object of n, and returns n's shape.
func (a *Applier) learn(n *node, ord, q, end int, d []byte, child *node) []expect {
	sh := a.shapes[n.id]
	if ord > len(sh) || ord >= maxShape {
		return sh
	}
	e := expect{w0: noMatch, w1: noMatch}
	switch l := end - q; {
	case l <= 16:
		var b [16]byte
		copy(b[:], d[q:end])
		e = expect{w0: binary.LittleEndian.Uint64(b[:]), w1: binary.LittleEndian.Uint64(b[8:]), n: l, child: child}
		e.m0, e.m1 = ^uint64(0), ^uint64(0)
		if l < 8 {
			e.m0, e.m1 = 1<<(8*l)-1, 0
		} else if l < 16 {
			e.m1 = 1<<(8*(l-8)) - 1
		}
	case child != nil:
		e.n, e.child = l, child
	}
	if child != nil {
		e.op = child.op
	}
	if ord == len(sh) {
		sh = append(sh, e)
		a.shapes[n.id] = sh
		return sh
	}
	sh[ord] = e
	return sh
}

// NewApplier returns an Applier with its own cache and hashers.
func (r *Route) NewApplier() *Applier {
	a := &Applier{
		r:       r,
		hashers: make([]*pseudonym.Hasher, r.ring.Len()),
		cache:   pseudonym.NewCache(r.cacheEntries),
		shapes:  make([][]expect, r.nodes),
		memo:    make([]memoSlot, r.nodes),
		leaves:  make([]*leafTable, r.nodes),
		unesc:   make([]byte, 0, 256),
		norm:    make([]byte, 0, 256),
	}
	a.memos = a.cache != nil
	return a
}

// SetObserver makes the Applier report raw identifiers to o (nil: none).
// The memos start empty: what they hold was never told to o.
func (a *Applier) SetObserver(o Observer) {
	a.obs = o
	a.gobs, _ = o.(GenerationObserver)
	a.memos = a.cache != nil && (o == nil || a.gobs != nil)
	clear(a.memo)
	clear(a.leaves)
	a.cache.ClearTold()
}

// Cache exposes the pseudonym cache's counters (nil when disabled).
func (a *Applier) Cache() *pseudonym.Cache { return a.cache }

// KeyID is the id of the key the last applied record used.
func (a *Applier) KeyID() string { return a.r.ring.ID(a.epoch) }

// Epoch is the key epoch index the last applied record used.
func (a *Applier) Epoch() int { return a.epoch }

// Apply appends the de-identified form of the JSON object src to dst. On
// error dst is returned truncated to its original length and the error is
// a *FieldError (or wraps a *jsonscan.SyntaxError) that names no value.
func (a *Applier) Apply(dst, src []byte) ([]byte, error) {
	start := len(dst)
	if len(src) > a.r.maxRecord {
		return dst, &FieldError{Path: "(record)", Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(src), a.r.maxRecord)}
	}
	a.epoch = a.r.ring.Latest()
	if a.r.ring.Len() > 1 {
		if err := a.pickEpoch(src); err != nil {
			return dst, err
		}
	}
	if !a.general {
		if out, ok := a.fastApply(dst, src); ok {
			a.Stats.Records++
			return out, nil
		}
	}
	a.s.Reset(src)
	if a.s.Peek() != jsonscan.Object {
		if _, err := a.s.Skip(); err != nil {
			return dst, &FieldError{Path: "(record)", Err: err}
		}
		return dst, &FieldError{Path: "(record)", Err: ErrNotObject}
	}
	dst, wrote, err := a.object(dst, a.r.root)
	if err == nil {
		err = a.s.End()
	}
	if !wrote {
		dst = append(dst, "{}"...) // a record with no named field is still a record
	}
	if err != nil {
		var fe *FieldError
		if !errors.As(err, &fe) {
			err = &FieldError{Path: "(record)", Err: err}
		}
		return dst[:start], err
	}
	a.Stats.Records++
	return dst, nil
}

// object copies the members of the object at the scanner that n names.
// It reports whether anything was written; if not, dst is unchanged.
//
// The loop keeps the document and the offset in locals and reads plain
// keys, dropped values, kept values and plain strings itself; anything
// else (escapes in a key, nested rules, arrays, errors) goes through the
// Scanner, which is first moved to the same offset, so what is accepted
// and every error (with its offset) are the Scanner's.
func (a *Applier) object(dst []byte, n *node) ([]byte, bool, error) {
	if err := a.s.BeginObject(); err != nil {
		return dst, false, err
	}
	mark := len(dst)
	dst = append(dst, '{')
	wrote := false
	d, p, depth := a.s.Data(), a.s.Pos(), a.s.Depth()
	shape := a.shapes[n.id]
	for first, ord := true, -1; ; first = false {
		ord++
		// The next key: `"key":` right after `{` or `,`, or the Scanner.
		var key []byte
		var child *node
		q := p
		if q < len(d) {
			if c := d[q]; c == ',' && !first {
				q++
			} else if c == '}' {
				a.s.Close(q + 1)
				break
			}
		}
		escaped := false
		if ord < len(shape) && q != p != first && shape[ord].match(d, q) {
			// The same key as last time.
			e := &shape[ord]
			child, p = e.child, q+e.n
		} else if k, end, ok := jsonscan.PlainKey(d, q); ok && q != p != first {
			key, p = k, end
			if i := n.names.IndexAt(d, q+1, len(k)); i >= 0 {
				child = n.kids[i]
			}
			shape = a.learn(n, ord, q, end, d, child)
		} else {
			a.s.Seek(p)
			var more bool
			var err error
			key, escaped, more, err = a.s.NextKey(first)
			if err != nil {
				return dst[:mark], false, err
			}
			if !more {
				break
			}
			p = a.s.Pos()
			lookup := key
			if escaped {
				a.unesc = jsonscan.AppendUnescaped(a.unesc[:0], key)
				lookup = a.unesc
			}
			child = n.child(lookup)
		}
		if child == nil {
			a.Stats.DroppedFields++
			if _, end, ok := jsonscan.SkipValue(d, p, depth); ok {
				p = end
				continue
			}
			a.s.Seek(p)
			if _, err := a.s.Skip(); err != nil {
				return dst[:mark], false, err
			}
			p = a.s.Pos()
			continue
		}
		member := len(dst)
		if !escaped {
			if wrote {
				dst = append(dst, child.member...)
			} else {
				dst = append(dst, child.member[1:]...)
			}
		} else {
			if wrote {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, key...) // escaped keys never come from the shape
			dst = append(dst, '"', ':')
		}
		if l := child.leaf; l != nil && child.arrays == 0 {
			if p < len(d) && d[p] <= ' ' {
				p = jsonscan.SkipWS(d, p)
			}
			if l.kind == kindKeep {
				if start, end, ok := jsonscan.SkipValue(d, p, depth); ok {
					dst = append(dst, d[start:end]...)
					p = end
					wrote = true
					continue
				}
			} else if val, end, ok := jsonscan.PlainString(d, p); ok {
				p = end
				var err error
				var ok bool
				dst, ok, err = a.act(dst, child, l, val, jsonscan.String)
				if err != nil {
					return dst[:mark], false, err
				}
				if !ok {
					dst = dst[:member]
					continue
				}
				wrote = true
				continue
			}
		}
		a.s.Seek(p)
		var ok bool
		var err error
		if child.leaf == nil && child.arrays == 0 && p < len(d) && d[p] == '{' {
			dst, ok, err = a.object(dst, child)
		} else {
			dst, ok, err = a.value(dst, child, child.arrays)
		}
		if err != nil {
			return dst[:mark], false, err
		}
		p = a.s.Pos()
		if !ok {
			dst = dst[:member]
			continue
		}
		wrote = true
	}
	if !wrote {
		return dst[:mark], false, nil
	}
	return append(dst, '}'), true, nil
}

// value writes the value at the scanner for node n, which is arrays levels
// of array away from its action or members.
func (a *Applier) value(dst []byte, n *node, arrays int) ([]byte, bool, error) {
	kind := a.s.Peek()
	if arrays > 0 {
		if kind != jsonscan.Array {
			// Not the shape the rule expects: nothing is exported.
			_, err := a.s.Skip()
			return dst, false, err
		}
		return a.array(dst, n, arrays)
	}
	if n.leaf != nil {
		return a.leaf(dst, n, kind)
	}
	if kind != jsonscan.Object {
		_, err := a.s.Skip()
		return dst, false, err
	}
	return a.object(dst, n)
}

func (a *Applier) array(dst []byte, n *node, arrays int) ([]byte, bool, error) {
	if err := a.s.BeginArray(); err != nil {
		return dst, false, err
	}
	mark := len(dst)
	dst = append(dst, '[')
	wrote := false
	for first := true; ; first = false {
		more, err := a.s.NextElement(first)
		if err != nil {
			return dst[:mark], false, err
		}
		if !more {
			break
		}
		elem := len(dst)
		if wrote {
			dst = append(dst, ',')
		}
		var ok bool
		dst, ok, err = a.value(dst, n, arrays-1)
		if err != nil {
			return dst[:mark], false, err
		}
		if !ok {
			dst = dst[:elem]
			continue
		}
		wrote = true
	}
	// An array is exported even when no element yields anything, as [], so
	// the output keeps the input's shape.
	return append(dst, ']'), true, nil
}

func fieldErr(n *node, err error) error { return &FieldError{Path: n.path, Err: err} }

func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// leaf applies n's action to the value at the scanner.
func (a *Applier) leaf(dst []byte, n *node, kind jsonscan.Kind) ([]byte, bool, error) {
	l := n.leaf
	if l.kind == kindKeep {
		raw, err := a.s.Skip()
		if err != nil {
			return dst, false, err
		}
		return append(dst, raw...), true, nil
	}
	if kind == jsonscan.Null {
		_, err := a.s.Skip()
		return append(dst, "null"...), err == nil, err
	}
	var val []byte
	switch kind {
	case jsonscan.String:
		raw, escaped, err := a.s.String()
		if err != nil {
			return dst, false, err
		}
		val = raw
		if escaped {
			a.unesc = jsonscan.AppendUnescaped(a.unesc[:0], raw)
			val = a.unesc
		}
	case jsonscan.Number:
		raw, err := a.s.Number()
		if err != nil {
			return dst, false, err
		}
		if l.kind != kindTime && l.kind != kindNumber && l.kind != kindTable {
			return dst, false, fieldErr(n, fmt.Errorf("%w, got number", ErrNotString))
		}
		val = raw
	default:
		if _, err := a.s.Skip(); err != nil {
			return dst, false, err
		}
		return dst, false, fieldErr(n, fmt.Errorf("%w, got %s", ErrWrongValue, kind))
	}
	return a.act(dst, n, l, val, kind)
}

// act writes the value val (a string body, unescaped, or a number's text,
// as kind says) through n's action.
func (a *Applier) act(dst []byte, n *node, l *leaf, val []byte, kind jsonscan.Kind) ([]byte, bool, error) {
	if a.obs != nil && l.kind >= kindPseudonym && l.kind <= kindIPTruncate {
		a.observe(l.rule, val)
	}
	var err error
	switch l.kind {
	case kindPseudonym:
		dst = a.pseudonym(dst, l, val)
	case kindEmail:
		dst, err = a.email(dst, l, val)
	case kindIPPrefix:
		dst, err = a.ipPrefix(dst, l, val)
	case kindIPTruncate:
		dst, err = a.ipTruncateCached(dst, l, val)
	case kindTime:
		dst, err = l.time.Append(dst, val, kind == jsonscan.Number)
	case kindNumber:
		dst, err = l.num.Append(dst, val)
	case kindTable:
		dst = l.table.Append(dst, val)
	}
	if err != nil {
		return dst, false, fieldErr(n, err)
	}
	return dst, true, nil
}

func (a *Applier) hasher() *pseudonym.Hasher {
	h := a.hashers[a.epoch]
	if h == nil {
		h = a.r.ring.NewHasher(a.epoch)
		a.hashers[a.epoch] = h
	}
	return h
}

const slotMix = 0x9E3779B97F4A7C15

// cached looks val up in the cache for namespace ns of the current epoch.
// The cache holds what the action writes, quotes included, so a hit is one
// append.
func (a *Applier) cached(ns uint32, val []byte) (slot uint32, h uint64, out []byte) {
	slot, h = a.cacheKey(ns, val)
	return slot, h, a.cache.Get(slot, h, val)
}

// cacheKey is val's pseudonym cache slot (key epoch and namespace) and hash.
func (a *Applier) cacheKey(ns uint32, val []byte) (slot uint32, h uint64) {
	slot = uint32(a.epoch)<<16 | ns
	return slot, xxhash.Sum64(val) ^ (uint64(slot) * slotMix)
}

func (a *Applier) pseudonym(dst []byte, l *leaf, val []byte) []byte {
	dst, _ = a.pseudonymTold(dst, l, val)
	return dst
}

// pseudonymTold is pseudonym, and the told stamp of val's pseudonym cache
// entry (nil when not cached).
func (a *Applier) pseudonymTold(dst []byte, l *leaf, val []byte) ([]byte, *uint32) {
	slot, h := a.cacheKey(l.ns, val)
	if out, told := a.cache.GetTold(slot, h, val); out != nil {
		return append(dst, out...), told
	}
	start := len(dst)
	dst = append(dst, '"')
	dst = l.format.AppendPseudonym(dst, a.hasher(), a.normalize(l, val))
	dst = append(dst, '"')
	return dst, a.cache.Put(slot, h, val, dst[start:])
}

// normalize returns val as the rule's normalization wants it hashed.
func (a *Applier) normalize(l *leaf, val []byte) []byte {
	switch l.normalize {
	case normLower:
		return appendLower(a.norm[:0], val)
	case normTrim:
		return bytes.TrimSpace(val)
	case normEmail:
		val = bytes.TrimSpace(val)
		at := bytes.LastIndexByte(val, '@')
		if at < 0 {
			return val
		}
		a.norm = append(a.norm[:0], val[:at+1]...)
		a.norm = appendLower(a.norm, val[at+1:])
		return a.norm
	}
	return val
}

func appendLower(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += n
	}
	return dst
}

// email writes pseudonym(local)@domain, the domain kept (lowercased) or
// pseudonymized in its own namespace.
func (a *Applier) email(dst []byte, l *leaf, val []byte) ([]byte, error) {
	val = bytes.TrimSpace(val)
	at := bytes.LastIndexByte(val, '@')
	if at <= 0 || at == len(val)-1 {
		return dst, ErrNotEmail
	}
	slot, h, out := a.cached(l.ns, val)
	if out != nil {
		return append(dst, out...), nil
	}
	start := len(dst)
	dst = append(dst, '"')
	local, domain := val[:at], val[at+1:]
	dst = l.format.AppendPseudonym(dst, a.hasher(), a.normalize(l, local))
	dst = append(dst, '@')
	a.norm = appendLower(a.norm[:0], domain)
	if l.domain != nil {
		dst = l.domain.AppendPseudonym(dst, a.hasher(), a.norm)
	} else {
		dst = jsonscan.AppendEscaped(dst, a.norm)
	}
	dst = append(dst, '"')
	a.cache.Put(slot, h, val, dst[start:])
	return dst, nil
}

func parseIP(val []byte) (netip.Addr, error) {
	ip, err := netip.ParseAddr(str(val))
	if err != nil {
		return netip.Addr{}, ErrNotIP
	}
	return ip.WithZone(""), nil
}

func (a *Applier) ipPrefix(dst []byte, l *leaf, val []byte) ([]byte, error) {
	slot, h, out := a.cached(l.ns, val)
	if out != nil {
		return append(dst, out...), nil
	}
	ip, err := parseIP(val)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, '"')
	dst = a.r.ring.CryptoPAn(a.epoch).Anonymize(ip).AppendTo(dst)
	dst = append(dst, '"')
	a.cache.Put(slot, h, val, dst[start:])
	return dst, nil
}

// ipTruncateTold is ipTruncateCached with the told stamp of val's cache
// entry (pseudonymTold's; the cache is on).
func (a *Applier) ipTruncateTold(dst []byte, l *leaf, val []byte) ([]byte, *uint32, error) {
	slot, h := a.cacheKey(l.ns, val)
	if out, told := a.cache.GetTold(slot, h, val); out != nil {
		return append(dst, out...), told, nil
	}
	start := len(dst)
	dst, err := ipTruncate(dst, l, val)
	if err != nil {
		return dst, nil, err
	}
	return dst, a.cache.Put(slot, h, val, dst[start:]), nil
}

// ipTruncateCached is ipTruncate through the pseudonym cache.
func (a *Applier) ipTruncateCached(dst []byte, l *leaf, val []byte) ([]byte, error) {
	if a.cache == nil {
		return ipTruncate(dst, l, val)
	}
	slot, h, out := a.cached(l.ns, val)
	if out != nil {
		return append(dst, out...), nil
	}
	start := len(dst)
	dst, err := ipTruncate(dst, l, val)
	if err == nil {
		a.cache.Put(slot, h, val, dst[start:])
	}
	return dst, err
}

func ipTruncate(dst []byte, l *leaf, val []byte) ([]byte, error) {
	if v, dots, ok := parseDottedQuad(val); ok && l.v4 >= 0 && l.v4 <= 32 {
		var b [17]byte
		b[0] = '"'
		n := 1
		if k := l.v4 / 8; l.v4%8 == 0 && k > 0 {
			// Whole octets kept: their text is already canonical.
			end := len(val)
			if k < 4 {
				end = int(uint8(dots >> (8 * (k - 1))))
			}
			n += copy(b[1:], val[:end])
			for ; k < 4; k++ {
				b[n], b[n+1] = '.', '0'
				n += 2
			}
			b[n] = '"'
			return append(dst, b[:n+1]...), nil
		}
		v &^= uint32(uint64(1)<<(32-l.v4) - 1)
		for i := 24; i >= 0; i -= 8 {
			n = putOctet(&b, n, byte(v>>i))
			b[n] = '.'
			n++
		}
		b[n-1] = '"'
		return append(dst, b[:n]...), nil
	}
	ip, err := parseIP(val)
	if err != nil {
		return dst, err
	}
	ip = ip.Unmap()
	bits := l.v6
	if ip.Is4() {
		bits = l.v4
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return dst, ErrNotIP
	}
	dst = append(dst, '"')
	dst = p.Addr().AppendTo(dst)
	return append(dst, '"'), nil
}

// pickEpoch finds the event time and selects the key epoch covering it.
func (a *Applier) pickEpoch(src []byte) error {
	val, isNum, ok := lookup(&a.s, src, a.r)
	if !ok {
		return &FieldError{Path: a.r.Config.EventTime, Err: ErrEventTime}
	}
	if !isNum {
		if bytes.IndexByte(val, '\\') >= 0 {
			a.unesc = jsonscan.AppendUnescaped(a.unesc[:0], val)
			val = a.unesc
		}
	}
	t, _, err := generalize.ParseTime(val, isNum)
	if err != nil {
		return &FieldError{Path: a.r.Config.EventTime, Err: ErrEventTime}
	}
	e, err := a.r.ring.Epoch(t)
	if err != nil {
		return &FieldError{Path: a.r.Config.EventTime, Err: err}
	}
	a.epoch = e
	return nil
}

// lookup finds the event-time field (a plain path without arrays) and
// returns its string body or number text. Malformed input reports not found;
// the main pass then reports the syntax error precisely.
func lookup(s *jsonscan.Scanner, src []byte, r *Route) (val []byte, isNum, ok bool) {
	s.Reset(src)
	for _, seg := range r.eventTime {
		if seg.Arrays > 0 || s.BeginObject() != nil {
			return nil, false, false
		}
		found := false
		for first := true; ; first = false {
			more, err := s.NextMember(first)
			if err != nil || !more {
				return nil, false, false
			}
			key, escaped, err := s.Key()
			if err != nil {
				return nil, false, false
			}
			if !escaped && string(key) == seg.Name {
				found = true
				break
			}
			if _, err := s.Skip(); err != nil {
				return nil, false, false
			}
		}
		if !found {
			return nil, false, false
		}
	}
	switch s.Peek() {
	case jsonscan.String:
		raw, _, err := s.String()
		return raw, false, err == nil
	case jsonscan.Number:
		raw, err := s.Number()
		return raw, true, err == nil
	}
	return nil, false, false
}

// parseDottedQuad reads the IPv4 form netip.ParseAddr accepts (four decimal
// octets, no leading zeros) quickly; ok is false for anything else, which
// then goes through netip. Byte k of dots is the offset of dot k.
func parseDottedQuad(b []byte) (v, dots uint32, ok bool) {
	fields, octet, digits := 0, 0, 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && octet == 0 {
				return 0, 0, false // leading zero
			}
			octet = octet*10 + int(c-'0')
			digits++
			if octet > 255 {
				return 0, 0, false
			}
		case c == '.' && digits > 0 && fields < 3:
			v = v<<8 | uint32(octet)
			dots |= uint32(i) << (8 * fields)
			fields++
			octet, digits = 0, 0
		default:
			return 0, 0, false
		}
	}
	if fields != 3 || digits == 0 {
		return 0, 0, false
	}
	return v<<8 | uint32(octet), dots, true
}

// putOctet writes b in decimal at buf[n:] and returns the offset after it.
func putOctet(buf *[17]byte, n int, b byte) int {
	switch {
	case b >= 100:
		buf[n], buf[n+1], buf[n+2] = '0'+b/100, '0'+b/10%10, '0'+b%10
		return n + 3
	case b >= 10:
		buf[n], buf[n+1] = '0'+b/10, '0'+b%10
		return n + 2
	}
	buf[n] = '0' + b
	return n + 1
}
