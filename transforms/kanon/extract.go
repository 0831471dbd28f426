package kanon

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
	"github.com/deident/deident/transforms/generalize"
)

// Extraction errors, wrapped in a *FieldError naming the path.
var (
	ErrNoEntity    = errors.New("entity field missing or not a string or number")
	ErrNoEventTime = errors.New("event time missing or not a timestamp")
	ErrNotObject   = errors.New("quasi-identifier is an object or array")
)

// FieldError names the field path extraction failed at; never the value.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// slots of the values a stage reads from a record.
const (
	slotEntity = iota
	slotTime
	slotSensitive
	slotQI // then one per QI, then one per metric field
)

// pnode is a compiled tree of the paths the stage reads.
type pnode struct {
	name     string
	slot     int // -1 when only an inner node
	children []*pnode
}

func (n *pnode) insert(path string, slot int) {
	for _, name := range strings.Split(path, ".") {
		var next *pnode
		for _, c := range n.children {
			if c.name == name {
				next = c
				break
			}
		}
		if next == nil {
			next = &pnode{name: name, slot: -1}
			n.children = append(n.children, next)
		}
		n = next
	}
	n.slot = slot
}

// found is where a value lies in the payload.
type found struct {
	start, end int
	kind       jsonscan.Kind
}

// walk records the position of every slot's value in the object at s.
func (n *pnode) walk(s *jsonscan.Scanner, src []byte, out []found) error {
	if err := s.BeginObject(); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := s.NextMember(first)
		if err != nil || !more {
			return err
		}
		key, escaped, err := s.Key()
		if err != nil {
			return err
		}
		var c *pnode
		if !escaped {
			for _, ch := range n.children {
				if ch.name == string(key) {
					c = ch
					break
				}
			}
		}
		kind := s.Peek()
		if c != nil && len(c.children) > 0 && kind == jsonscan.Object {
			if err := c.walk(s, src, out); err != nil {
				return err
			}
			continue
		}
		start := s.Pos()
		if _, err := s.Skip(); err != nil {
			return err
		}
		if c != nil && c.slot >= 0 {
			out[c.slot] = found{start, s.Pos(), kind}
		}
	}
}

// Extract fills rec's Entity, EventTime (aggregate mode), QI, Sensitive,
// Metrics and Payload from payload, a de-identified record (route output,
// one JSON object). The caller sets the source position (Topic, Partition,
// Offset). rec's strings and Payload alias payload (no copies: Add copies
// what it keeps), so payload must not change until rec is last used.
// Errors name a path, never a value. Not safe for concurrent use.
func (s *Stage) Extract(rec *Record, payload []byte) error {
	if cap(s.found) < s.slots {
		s.found = make([]found, s.slots)
	}
	f := s.found[:s.slots]
	clear(f)
	s.scan.Reset(payload)
	if err := s.paths.walk(&s.scan, payload, f); err != nil {
		return err
	}
	rec.Payload = payload
	raw := func(i int) []byte { return payload[f[i].start:f[i].end] }
	switch e := f[slotEntity]; e.kind {
	case jsonscan.String, jsonscan.Number:
		rec.Entity = alias(raw(slotEntity))
	default:
		return &FieldError{s.cfg.Entity, ErrNoEntity}
	}
	if s.agg != nil {
		t := f[slotTime]
		if t.kind != jsonscan.String && t.kind != jsonscan.Number {
			return &FieldError{s.cfg.EventTime, ErrNoEventTime}
		}
		v := raw(slotTime)
		if t.kind == jsonscan.String {
			s.tbuf = jsonscan.AppendUnescaped(s.tbuf[:0], v[1:len(v)-1])
			v = s.tbuf
		}
		tm, _, err := generalize.ParseTime(v, t.kind == jsonscan.Number)
		if err != nil {
			return &FieldError{s.cfg.EventTime, ErrNoEventTime}
		}
		rec.EventTime = tm
	}
	if s.cfg.LDiversity != nil && f[slotSensitive].kind != jsonscan.Invalid {
		rec.Sensitive = alias(raw(slotSensitive))
	} else {
		rec.Sensitive = ""
	}
	rec.QI = rec.QI[:0]
	for i := range s.qis {
		v := f[slotQI+i]
		switch v.kind {
		case jsonscan.Invalid, jsonscan.Null:
			rec.QI = append(rec.QI, "null")
		case jsonscan.Object, jsonscan.Array:
			return &FieldError{s.qis[i].path, ErrNotObject}
		default:
			rec.QI = append(rec.QI, alias(raw(slotQI+i)))
		}
	}
	rec.Metrics = rec.Metrics[:0]
	for i := range s.metrics {
		v := f[slotQI+len(s.qis)+i]
		x := math.NaN()
		if v.kind == jsonscan.Number {
			x, _ = strconv.ParseFloat(alias(raw(slotQI+len(s.qis)+i)), 64)
		}
		rec.Metrics = append(rec.Metrics, x)
	}
	return nil
}

// alias is b as a string without a copy: b must not change while the
// string is in use (Extract's values live as long as the payload).
func alias(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// rewrite appends payload with each QI value replaced by its value at lv.
// QIs missing from payload stay missing (their class key holds null).
func (s *Stage) rewrite(dst, payload []byte, qi []string, lv []uint8) []byte {
	if cap(s.found) < s.slots {
		s.found = make([]found, s.slots)
	}
	f := s.found[:s.slots]
	clear(f)
	s.scan.Reset(payload)
	if err := s.paths.walk(&s.scan, payload, f); err != nil {
		return append(dst, payload...) // unreachable for payloads Extract accepted
	}
	// Splice in payload order.
	type splice struct{ start, end, qi int }
	var buf [16]splice
	sp := buf[:0]
	for i := range s.qis {
		if v := f[slotQI+i]; v.kind != jsonscan.Invalid {
			sp = append(sp, splice{v.start, v.end, i})
		}
	}
	for i := 1; i < len(sp); i++ {
		for j := i; j > 0 && sp[j].start < sp[j-1].start; j-- {
			sp[j], sp[j-1] = sp[j-1], sp[j]
		}
	}
	pos := 0
	for _, x := range sp {
		dst = append(dst, payload[pos:x.start]...)
		dst = s.qis[x.qi].gen(dst, qiAt(qi, x.qi), int(lv[x.qi]))
		pos = x.end
	}
	return append(dst, payload[pos:]...)
}
