package route

import "github.com/deident/deident/internal/jsonscan"

// The fast path. Most records are machine-written, hold no escapes in their
// keys and repeat the shapes of the records before them; fastObject applies
// a route to such a record in one loop over the bytes, with the document,
// the offset and the output in registers and no error values. Anything it
// does not handle itself (arrays, escaped or non-ASCII string values under
// an action, numbers under a generalization, null) it hands to the general
// code one value at a time (Scanner.ResetAt, then value). Anything wrong or
// unusual (a malformed record, an escaped key, an action's error) makes it
// give up: Apply then starts the record again on the general path, which
// alone decides what is accepted and reports every error with its offset,
// so the fast path only has to accept a subset of what the general path
// accepts and write the same bytes for it (FuzzFastPathMatchesGeneral).
//
// Side effects of a record the fast path gives up on are undone: the
// Observer is told a record's identifiers only once the record succeeds
// (they are queued meanwhile), and the Stats and cache counters are reset
// (pseudonyms it computed stay cached: they are right, only the hit rate
// of such a record reads a little high).

// pending is one queued Observer call: the value is obsBuf[off:end].
type pending struct {
	rule, off, end int
}

// fastApply applies the route to src as Apply does, or reports false
// (dst unchanged) when src needs the general path.
func (a *Applier) fastApply(dst, src []byte) ([]byte, bool) {
	p := 0
	if len(src) > 0 && src[0] <= ' ' {
		p = jsonscan.SkipWS(src, 0)
	}
	if p >= len(src) || src[p] != '{' {
		return dst, false
	}
	stats := a.Stats
	var hits, misses uint64
	if a.cache != nil {
		hits, misses = a.cache.Hits, a.cache.Misses
	}
	a.queue = true
	a.obsQueue, a.obsBuf = a.obsQueue[:0], a.obsBuf[:0]
	start := len(dst)
	dst, p, ok := a.fastObject(dst, src, p, a.r.root, 1)
	a.queue = false
	if ok && p < len(src) {
		ok = jsonscan.SkipWS(src, p) == len(src)
	}
	if !ok {
		a.Stats = stats
		if a.cache != nil {
			a.cache.Hits, a.cache.Misses = hits, misses
		}
		return dst[:start], false
	}
	if len(dst) == start {
		dst = append(dst, "{}"...) // a record with no named field is still a record
	}
	for _, o := range a.obsQueue {
		a.obs.ObserveIdentifier(o.rule, a.obsBuf[o.off:o.end])
	}
	return dst, true
}

// fastObject writes the members of the object at d[p] ('{') that n names
// and returns the offset after it; ok is false when the general path must
// decide. depth counts the open containers, this one included. Members are
// written as `,"name":value`; when anything was written, the first comma
// becomes the object's '{'.
func (a *Applier) fastObject(dst, d []byte, p int, n *node, depth int) ([]byte, int, bool) {
	if depth > jsonscan.MaxDepth {
		return dst, p, false
	}
	mark := len(dst)
	p++
	if p < len(d) && d[p] <= ' ' {
		p = jsonscan.SkipWS(d, p)
	}
	if p < len(d) && d[p] == '}' {
		return dst, p + 1, true
	}
	shape := a.shapes[n.id]
	for ord := 0; ; ord++ {
		// The key: the same as last time at this position, or a plain one.
		var child *node
		if ord < len(shape) && shape[ord].match(d, p) {
			e := &shape[ord]
			child, p = e.child, p+e.n
		} else if k, end, ok := jsonscan.PlainKey(d, p); ok {
			if i := n.names.IndexAt(d, p+1, len(k)); i >= 0 {
				child = n.kids[i]
			}
			shape = a.learn(n, ord, p, end, d, child)
			p = end
		} else {
			return dst, p, false
		}
		if p < len(d) && d[p] <= ' ' {
			p = jsonscan.SkipWS(d, p)
		}
		if p >= len(d) {
			return dst, p, false
		}
		switch l := child.leafOrNil(); {
		case child == nil:
			// Default deny: validated, never copied.
			a.Stats.DroppedFields++
			if p = jsonscan.ValueEnd(d, p, depth); p < 0 {
				return dst, 0, false
			}
		case l != nil && child.arrays == 0 && l.kind == kindKeep:
			end := jsonscan.ValueEnd(d, p, depth)
			if end < 0 {
				return dst, p, false
			}
			dst = append(dst, child.member...)
			dst = append(dst, d[p:end]...)
			p = end
		case l != nil && child.arrays == 0 && d[p] == '"':
			val, end, ok := jsonscan.PlainString(d, p)
			if !ok {
				goto general
			}
			member := len(dst)
			dst = append(dst, child.member...)
			var err error
			dst, ok, err = a.act(dst, child, l, val, jsonscan.String)
			if err != nil {
				return dst, p, false
			}
			if !ok {
				dst = dst[:member]
			}
			p = end
		case l == nil && child.arrays == 0 && d[p] == '{':
			member := len(dst)
			dst = append(dst, child.member...)
			var ok bool
			if dst, p, ok = a.fastObject(dst, d, p, child, depth+1); !ok {
				return dst, p, false
			}
			if len(dst) == member+len(child.member) {
				dst = dst[:member]
			}
		default:
			goto general
		}
		goto next
	general:
		{
			member := len(dst)
			dst = append(dst, child.member...)
			a.s.ResetAt(d, p, depth)
			var ok bool
			var err error
			dst, ok, err = a.value(dst, child, child.arrays)
			if err != nil {
				return dst, p, false
			}
			if !ok {
				dst = dst[:member]
			}
			p = a.s.Pos()
		}
	next:
		// After the value: a comma and the next key, or the end.
		if p < len(d) && d[p] <= ' ' {
			p = jsonscan.SkipWS(d, p)
		}
		if p >= len(d) {
			return dst, p, false
		}
		if c := d[p]; c == ',' {
			p++
			if p < len(d) && d[p] <= ' ' {
				p = jsonscan.SkipWS(d, p)
			}
			continue
		} else if c != '}' {
			return dst, p, false
		}
		p++
		break
	}
	if len(dst) > mark {
		dst[mark] = '{'
		dst = append(dst, '}')
	}
	return dst, p, true
}

// leafOrNil is n's leaf; nil for a nil node.
func (n *node) leafOrNil() *leaf {
	if n == nil {
		return nil
	}
	return n.leaf
}

// observe tells the Observer about a raw identifier, or queues it while the
// fast path has not yet finished the record.
func (a *Applier) observe(rule int, val []byte) {
	if !a.queue {
		a.obs.ObserveIdentifier(rule, val)
		return
	}
	off := len(a.obsBuf)
	a.obsBuf = append(a.obsBuf, val...)
	a.obsQueue = append(a.obsQueue, pending{rule, off, len(a.obsBuf)})
}
