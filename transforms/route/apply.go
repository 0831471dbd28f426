package route

import (
	"bytes"
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

// Applier applies a Route. It owns the per-worker state: keyed hashers,
// the pseudonym cache and scratch buffers. Not safe for concurrent use;
// src is not retained after Apply returns.
type Applier struct {
	r       *Route
	s       jsonscan.Scanner
	hashers []*pseudonym.Hasher // per epoch, made on first use
	cache   *pseudonym.Cache
	epoch   int
	obs     Observer
	unesc   []byte
	norm    []byte
	Stats   Stats
}

// NewApplier returns an Applier with its own cache and hashers.
func (r *Route) NewApplier() *Applier {
	return &Applier{
		r:       r,
		hashers: make([]*pseudonym.Hasher, r.ring.Len()),
		cache:   pseudonym.NewCache(r.cacheEntries),
		unesc:   make([]byte, 0, 256),
		norm:    make([]byte, 0, 256),
	}
}

// SetObserver makes the Applier report raw identifiers to o (nil: none).
func (a *Applier) SetObserver(o Observer) { a.obs = o }

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
func (a *Applier) object(dst []byte, n *node) ([]byte, bool, error) {
	if err := a.s.BeginObject(); err != nil {
		return dst, false, err
	}
	mark := len(dst)
	dst = append(dst, '{')
	wrote := false
	for first := true; ; first = false {
		key, escaped, more, err := a.s.NextKey(first)
		if err != nil {
			return dst[:mark], false, err
		}
		if !more {
			break
		}
		lookup := key
		if escaped {
			a.unesc = jsonscan.AppendUnescaped(a.unesc[:0], key)
			lookup = a.unesc
		}
		child := n.child(lookup)
		if child == nil {
			a.Stats.DroppedFields++
			if _, err := a.s.Skip(); err != nil {
				return dst[:mark], false, err
			}
			continue
		}
		member := len(dst)
		if wrote {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, key...)
		dst = append(dst, '"', ':')
		var ok bool
		dst, ok, err = a.value(dst, child, child.arrays)
		if err != nil {
			return dst[:mark], false, err
		}
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
	if a.obs != nil && l.kind >= kindPseudonym && l.kind <= kindIPTruncate {
		a.obs.ObserveIdentifier(l.rule, val)
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
		dst, err = ipTruncate(dst, l, val)
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
func (a *Applier) cached(ns uint32, val []byte) (slot uint32, h uint64, out []byte, ok bool) {
	slot = uint32(a.epoch)<<16 | ns
	h = xxhash.Sum64(val) ^ (uint64(slot) * slotMix)
	out, ok = a.cache.Get(slot, h, val)
	return slot, h, out, ok
}

func (a *Applier) pseudonym(dst []byte, l *leaf, val []byte) []byte {
	dst = append(dst, '"')
	slot, h, out, ok := a.cached(l.ns, val)
	if ok {
		dst = append(dst, out...)
		return append(dst, '"')
	}
	start := len(dst)
	dst = l.format.AppendPseudonym(dst, a.hasher(), a.normalize(l, val))
	a.cache.Put(slot, h, val, dst[start:])
	return append(dst, '"')
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
	slot, h, out, ok := a.cached(l.ns, val)
	dst = append(dst, '"')
	if ok {
		dst = append(dst, out...)
		return append(dst, '"'), nil
	}
	start := len(dst)
	local, domain := val[:at], val[at+1:]
	dst = l.format.AppendPseudonym(dst, a.hasher(), a.normalize(l, local))
	dst = append(dst, '@')
	a.norm = appendLower(a.norm[:0], domain)
	if l.domain != nil {
		dst = l.domain.AppendPseudonym(dst, a.hasher(), a.norm)
	} else {
		dst = jsonscan.AppendEscaped(dst, a.norm)
	}
	a.cache.Put(slot, h, val, dst[start:])
	return append(dst, '"'), nil
}

func parseIP(val []byte) (netip.Addr, error) {
	ip, err := netip.ParseAddr(str(val))
	if err != nil {
		return netip.Addr{}, ErrNotIP
	}
	return ip.WithZone(""), nil
}

func (a *Applier) ipPrefix(dst []byte, l *leaf, val []byte) ([]byte, error) {
	slot, h, out, ok := a.cached(l.ns, val)
	dst = append(dst, '"')
	if ok {
		dst = append(dst, out...)
		return append(dst, '"'), nil
	}
	ip, err := parseIP(val)
	if err != nil {
		return dst[:len(dst)-1], err
	}
	start := len(dst)
	dst = a.r.ring.CryptoPAn(a.epoch).Anonymize(ip).AppendTo(dst)
	a.cache.Put(slot, h, val, dst[start:])
	return append(dst, '"'), nil
}

func ipTruncate(dst []byte, l *leaf, val []byte) ([]byte, error) {
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
