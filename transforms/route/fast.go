package route

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/deident/deident/internal/jsonscan"
)

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
//
// The memos (below) replay the output of a repeated object or value. Under
// an Observer they are on only when it is a GenerationObserver: an entry
// keeps the identifiers it read and the generation in which the observer
// was last told them, and a replay in another generation tells them again.
// The generation is stamped on the entry only once the record succeeds
// and its queued identifiers have been told. A value too long for the
// leaf memo has its stamp (generation and rule) in its pseudonym cache
// entry instead, so an object the subtree memo misses does not tell it
// again in the same generation.

// pending is one queued Observer call: the value is the record's bytes at
// src when it is a slice of the record (the record outlives the queue),
// else a copy at obsBuf[off:end]; end-off is its length either way.
// told: the value was told in this generation already (a pseudonym cache
// entry's stamp says so), so it is queued only for a memo entry that
// stores the identifiers its object holds, and not told again.
type pending struct {
	rule, off, end int
	src            int // the value's offset in the record, -1: not a slice of it
	told           bool
}

// fastApply applies the route to src as Apply does, or reports false
// (dst unchanged) when src needs the general path.
func (a *Applier) fastApply(dst, src []byte) ([]byte, bool) {
	p := 0
	if len(src) > 0 && src[0] <= ' ' {
		p = jsonscan.SkipWS(src, 0)
	}
	if p >= len(src) || src[p] != '{' || len(src) < 8 {
		return dst, false // (load64 needs a word to shift: a record of under 8 bytes is {} or close)
	}
	stats := a.Stats
	var hits, misses uint64
	if a.cache != nil {
		hits, misses = a.cache.Hits, a.cache.Misses
	}
	a.queue, a.rec = true, src
	a.obsQueue, a.obsBuf, a.stamps, a.toldStamps = a.obsQueue[:0], a.obsBuf[:0], a.stamps[:0], a.toldStamps[:0]
	if a.gobs != nil {
		a.gen = a.gobs.Generation()
	}
	start := len(dst)
	// The loop reads src as if zero bytes followed it: load64 and at read
	// past its end as zeros. A zero byte is valid nowhere in JSON outside
	// a string and ends a string's plain run, so the loop never moves past
	// len(src) on its own (see fastObject), and its word loads need one
	// compare each. (It used to read a copy of src with 32 zero bytes
	// after it: the copy cost more than the loads that now go past the
	// end, a few per record.)
	dst, p, ok := a.fastObject(dst, src, p, a.r.root)
	a.queue, a.rec = false, nil
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
		if o.told {
			continue
		}
		if o.src >= 0 {
			a.obs.ObserveIdentifier(o.rule, src[o.src:o.src+o.end-o.off])
		} else {
			a.obs.ObserveIdentifier(o.rule, a.obsBuf[o.off:o.end])
		}
	}
	for _, g := range a.stamps {
		*g = a.gen
	}
	for _, t := range a.toldStamps {
		*t.at = t.tag
	}
	return dst, true
}

// fastOp is what the fast path does with a member's value.
type fastOp uint8

const (
	opDrop    fastOp = iota // no rule names the member: validate, skip
	opKeep                  // validate, copy
	opAct                   // an action on a scalar
	opObject                // an object with rules for its members
	opGeneral               // inside arrays: the general path
)

// fastObject writes n's member for the object at d[p] ('{'), with the
// members of the object that n names, and returns the offset after it; ok
// is false when the general path must decide. Nothing is written for an
// object that exports no member, and for the record itself (the root has
// no member) only its members. d is the record, read as if zero bytes
// followed it (load64, at; fastApply), and p never passes the record's
// end: a zero byte fails every test here that would move past it.
// n.depth counts the open containers, this one included. Members are
// written as `,"name":value`; when anything was written, the first comma
// becomes the object's '{'.
//
// The usual member (a key of the learned shape, a number or a plain string)
// goes through the loop without a call: see jsonscan.StopMask.
func (a *Applier) fastObject(dst, d []byte, p int, n *node) ([]byte, int, bool) {
	if n.depth > jsonscan.MaxDepth {
		return dst, p, false
	}
	start := len(dst)
	dst = appendMember(dst, n) // here, not in the caller: one call less per object
	mark := len(dst)
	p++
	if at(d, p) == '}' {
		return dst[:start], p + 1, true
	}
	shape := a.shapes[n.id]
	for ord := 0; ; ord++ {
		// A run of kept members of the shape (the key matches, opKeep),
		// each value a plain string or an integer without a leading zero
		// and each followed directly by a comma, is validated here and
		// written as its input bytes with one copy: these are values the
		// code below would copy byte for byte, and keys of the shape are
		// plain, so `,"key":value` is what each member writes. In the
		// loop, not a function: the call costs more than a short run
		// (the zero bytes past the record end the scans, as below).
		if ord < len(shape) && shape[ord].op == opKeep {
			q := p
		run:
			for o := ord; o < len(shape); o++ {
				e := &shape[o]
				if e.op != opKeep || load64(d, q)&e.m0 != e.w0 || load64(d, q+8)&e.m1 != e.w1 {
					break
				}
				i := q + e.n
				switch c := at(d, i); {
				case c == '"':
					i++
					for {
						if t := jsonscan.StopMask(load64(d, i)); t != 0 {
							i += bits.TrailingZeros64(t) >> 3
							break
						}
						i += 8
					}
					if at(d, i) != '"' {
						break run
					}
					i++
				case c-'1' < 9:
					i += jsonscan.DigitRun(load64(d, i)) // a '.', 'e' or ninth digit is not the comma
				case c == '0':
					i++
				default:
					break run
				}
				if at(d, i) != ',' {
					break
				}
				q, ord = i+1, o+1
			}
			if q != p {
				l := len(dst)
				dst = append(dst, d[p-1:q-1]...)
				dst[l] = ','
				p = q
			}
		}
		// The key: `"key":` as the shape remembers it at this position
		// (two masked word compares; zeros past the record match no key),
		// or, after whitespace or a change of shape, read and looked up.
		var child *node
		var op fastOp
		if ord < len(shape) && load64(d, p)&shape[ord].m0 == shape[ord].w0 && load64(d, p+8)&shape[ord].m1 == shape[ord].w1 {
			child, op, p = shape[ord].child, shape[ord].op, p+shape[ord].n
		} else {
			var ok bool
			if child, p, ok = a.fastKey(d, p, n, ord); !ok {
				return dst, p, false
			}
			if op = opDrop; child != nil {
				op = child.op
			}
			shape = a.shapes[n.id]
		}
		// The value. Its end, for a plain string (any string for drop and
		// keep, validated) or a number; whitespace, other values and
		// other ops go on below with end -1.
		c, end := at(d, p), -1
		if op == opObject && c == '{' {
			// The usual object member, straight to its call (to the walk
			// for a node whose memo is given up).
			var ok bool
			if ms := &a.memo[child.id]; ms.t == nil {
				dst, p, ok = a.fastMember(dst, d, p, child)
			} else if ms.t == &memoGivenUp {
				dst, p, ok = a.fastObject(dst, d, p, child)
			} else {
				dst, p, ok = a.memoMember(dst, d, p, ms)
			}
			if !ok {
				return dst, p, false
			}
			goto next
		}
		if op <= opAct {
			if c == '"' {
				i := p + 1
				for {
					if t := jsonscan.StopMask(load64(d, i)); t != 0 {
						i += bits.TrailingZeros64(t) >> 3
						break
					}
					i += 8
				}
				if at(d, i) == '"' {
					end = i + 1
				} else if op != opAct {
					if end = jsonscan.StringEnd(d, i); end < 0 {
						return dst, p, false
					}
				}
			} else if op != opAct && c-'0' < 10 {
				// An integer (no leading zero) ending within 8 bytes.
				if k := jsonscan.DigitRun(load64(d, p)); k < 8 && (k == 1 || c != '0') {
					if e := at(d, p+k); e != '.' && e|0x20 != 'e' {
						end = p + k
					}
				}
			}
		}
		if end < 0 {
			if c <= ' ' {
				if c == 0 {
					return dst, p, false
				}
				p = jsonscan.SkipWS(d, p)
				c = at(d, p)
			}
			if op <= opKeep {
				if c == '{' && n.depth < jsonscan.MaxDepth {
					end = flatObjectEnd(d, p)
				}
				if end < 0 {
					if end = jsonscan.ValueEnd(d, p, n.depth); end < 0 {
						return dst, p, false
					}
				}
			} else if op == opAct && c == '"' {
				end = jsonscan.PlainRun(d, p+1)
				if at(d, end) != '"' {
					end = -1
				} else {
					end++
				}
			}
		}
		switch {
		case op == opDrop:
			// Default deny: validated, never copied.
			a.Stats.DroppedFields++
			p = end
		case op == opKeep:
			if l, k := len(dst), end-p; k <= 16 && cap(dst)-l >= 32 && len(child.member) <= 16 {
				w := dst[l : l+32]
				binary.LittleEndian.PutUint64(w, child.mw0)
				binary.LittleEndian.PutUint64(w[8:], child.mw1)
				l = len(child.member)
				binary.LittleEndian.PutUint64(w[l:], load64(d, p))
				binary.LittleEndian.PutUint64(w[l+8:], load64(d, p+8))
				dst = dst[:len(dst)+l+k]
			} else {
				dst = append(dst, child.member...)
				dst = append(dst, d[p:end]...)
			}
			p = end
		case op == opAct && end >= 0:
			member := len(dst)
			dst = appendMember(dst, child)
			vi, val := p+1, d[p+1:end-1]
			p = end
			if l := child.leaf; (l.kind == kindPseudonym || l.kind == kindIPTruncate) && a.memos {
				var ok bool
				if dst, ok = a.cachedLeaf(dst, child, d, vi, end-1); !ok {
					return dst, p, false
				}
				break
			}
			var ok bool
			var err error
			if dst, ok, err = a.act(dst, child, child.leaf, val, jsonscan.String); err != nil {
				return dst, p, false
			}
			if !ok {
				dst = dst[:member]
			}
		case op == opObject && c == '{':
			var ok bool
			if dst, p, ok = a.fastMember(dst, d, p, child); !ok {
				return dst, p, false
			}
		default:
			var ok bool
			if dst, p, ok = a.fastGeneral(dst, d, p, child, n.depth); !ok {
				return dst, p, false
			}
		}
	next:
		// After the value: a comma (whitespace after it is left to the
		// key's slow branch), or the end.
		c = at(d, p)
		if c == ',' {
			p++
			continue
		}
		if c <= ' ' && c != 0 {
			p = jsonscan.SkipWS(d, p)
			if c = at(d, p); c == ',' {
				p++
				continue
			}
		}
		if c != '}' {
			return dst, p, false
		}
		p++
		break
	}
	if len(dst) == mark {
		return dst[:start], p, true
	}
	dst[mark] = '{'
	return append(dst, '}'), p, true
}

// The subtree memo. Telemetry repeats whole objects, not only values: the
// same user object ({"name":…,"email_addr":…,"uid":…}) with the same three
// pseudonyms, the same device, the same product. fastMember remembers, per
// node, the input bytes of recent objects and the output they gave, and
// replays the output when the same bytes come again. Equal bytes are the
// same object, already validated (a complete object ends where its bytes
// say, and a node always sits at the same depth), and its output depends
// on nothing else but the key epoch, which the entry records. Used only
// with the pseudonym cache on (it is a cache of pseudonyms too: with the
// cache off every value is hashed, as the floor comparison expects), and
// under an Observer only when it is a GenerationObserver: the entry keeps
// the raw identifiers the object held, to tell them again in a new
// generation. Bounded: memoEntries*(memoMaxIn+memoMaxOut) bytes per node
// with rules for members at most (plus the identifiers, fewer bytes than
// the object's), allocated for nodes whose objects are met: 128 KiB of
// entries, and what they hold (a few hundred bytes each here). 4,096
// entries per node were 2.5% faster on the benchmark but took the worker
// of TestFaultSlowVendorMemoryCap (12 Appliers) from 107 to 130 MiB.
const (
	memoBits    = 11            // two places per object, from the hash's top memoBits bits and the memoBits below them
	memoEntries = 1 << memoBits // per node (1,024 direct-mapped missed ~1 in 6 of the benchmark's 1,335 users)
	memoMaxIn   = 256           // longest object remembered
	memoMaxOut  = 1024          // longest output remembered
	memoTrial   = 256           // lookups after which a node whose objects rarely repeat is given up
)

// A memoTable is allocated on its own pages (it is over 32 KiB), and its
// entries come first, so each entry is one cache line: an entry at an
// 8-byte offset spans two, and its generation stamp, read on every hit
// under a GenerationObserver, was a miss of its own
// (TestMemoEntriesLineAligned).
type memoTable struct {
	e [memoEntries]memoEntry
	n *node // whose objects it remembers
}

// memoSlot is a node's memo in the Applier: its table and the counts of
// its trial. The counts sit beside the pointer, on a line every record
// reads: at the table's end, their line was written on every lookup and
// evicted between records (two write misses per record on the benchmark
// route with the gate's Checker running in between).
type memoSlot struct {
	t           *memoTable // nil: none yet; &memoGivenUp: given up
	tries, hits uint32     // lookups and hits, up to memoTrial
}

// memoGivenUp stands in the Applier's memo for a node whose objects
// rarely repeat; it is never looked up, so its entries stay zero (and
// their pages untouched).
var memoGivenUp memoTable

// memoEntry is 64 bytes: what a lookup reads first, then the rest.
type memoEntry struct {
	h  uint64
	kv []byte // the object's bytes (n), what it wrote (out), member included, then its identifiers (memoID)
	n  uint32 // 0: an empty entry
	// out: bytes of output in kv. The identifiers the object told a
	// GenerationObserver are memoIDs after them: they are slices of the
	// object, so an entry keeps where, not a copy (no allocation or line
	// of its own to write on every store).
	out     uint32
	epoch   uint32
	dropped uint32 // members it dropped
	lookups uint32 // pseudonym cache lookups it made (counted as hits on replay)
	gen     uint64 // the generation in which its identifiers were last told; 0: never
}

// memoID is an identifier a memo entry's object told the Observer: its
// rule, and where it lies in the object, as three little-endian uint16s.
const memoID = 6

// fastMember writes the member for the object at d[p] (node child)
// through the memo or fastObject.
func (a *Applier) fastMember(dst, d []byte, p int, child *node) ([]byte, int, bool) {
	ms := &a.memo[child.id]
	if ms.t == nil || ms.t == &memoGivenUp || !a.memos {
		if ms.t != nil || !a.memos {
			return a.fastObjectMember(dst, d, p, child)
		}
		ms.t = &memoTable{n: child}
	}
	return a.memoMember(dst, d, p, ms)
}

// memoMember writes the member for the object at d[p] (node ms.t.n)
// through its memo (the memos on, the memo not given up): fastObject's
// usual call for an object member, with the slot it has loaded.
func (a *Applier) memoMember(dst, d []byte, p int, ms *memoSlot) ([]byte, int, bool) {
	m := ms.t
	// The index: the object's first 32 bytes (or what follows it).
	h := (load64(d, p)*0x9E3779B97F4A7C15 ^ load64(d, p+8)*0xC2B2AE3D27D4EB4F ^
		load64(d, p+16)*0x165667B19E3779F9 ^ load64(d, p+24)*0x27D4EB2F165667C5) * 0x9E3779B97F4A7C15
	// Two places an object may be in (the index's top 12 bits, or the
	// 12 below them): a new object takes the second when the first is
	// taken and the second is not, so that the objects of a working set
	// smaller than the table rarely evict each other. Entries never move
	// (a record's generation stamps point into them).
	e := &m.e[h>>(64-memoBits)]
	hit := e.holds(h, a.epoch, d, p)
	if !hit {
		if e2 := &m.e[h>>(64-2*memoBits)&(memoEntries-1)]; e2.holds(h, a.epoch, d, p) {
			e, hit = e2, true
		}
	}
	if ms.tries < memoTrial {
		ms.tries++
		if hit {
			ms.hits++
		} else if ms.tries == memoTrial && ms.hits < memoTrial/4 {
			// This node's objects rarely repeat: its table goes (a stamp
			// of this record may still point into it, which keeps it
			// until then).
			ms.t = &memoGivenUp
		}
	}
	if hit {
		n := int(e.n)
		a.Stats.DroppedFields += uint64(e.dropped)
		a.cache.Hits += uint64(e.lookups)
		out := e.kv[n : n+int(e.out)]
		if a.gobs != nil && e.gen != a.gen {
			// (Entries stored without an Observer hold none; SetObserver
			// empties the memo.)
			for ids := e.kv[n+int(e.out):]; len(ids) >= memoID; ids = ids[memoID:] {
				off := p + int(binary.LittleEndian.Uint16(ids[2:]))
				a.observe(int(binary.LittleEndian.Uint16(ids)), d[off:off+int(binary.LittleEndian.Uint16(ids[4:]))])
			}
			a.stamps = append(a.stamps, &e.gen)
		}
		return append(dst, out...), p + n, true
	}
	start, member := p, len(dst)
	dropped := a.Stats.DroppedFields
	lookups := a.cache.Hits + a.cache.Misses
	told := len(a.obsQueue)
	dst, p, ok := a.fastObjectMember(dst, d, p, m.n)
	if !ok {
		return dst, p, false
	}
	if p-start <= memoMaxIn && len(dst)-member <= memoMaxOut && a.epoch == int(uint32(a.epoch)) && a.idsInside(told, start, p) {
		if e2 := &m.e[h>>(64-2*memoBits)&(memoEntries-1)]; e.n != 0 && e2.n == 0 {
			e = e2
		}
		e.h, e.n, e.out, e.epoch = h, uint32(p-start), uint32(len(dst)-member), uint32(a.epoch)
		ids := a.obsQueue[told:] // none without an Observer (and the memos need a GenerationObserver then)
		// One buffer of the exact size: appending the identifiers to a
		// buffer sized for the object and output would double it.
		if n := p - start + len(dst) - member + memoID*len(ids); cap(e.kv) < n {
			e.kv = make([]byte, 0, n)
		}
		e.kv = append(append(e.kv[:0], d[start:p]...), dst[member:]...)
		// Fewer than memoMaxIn members: the counts fit.
		e.dropped = uint32(a.Stats.DroppedFields - dropped)
		e.lookups = uint32(a.cache.Hits + a.cache.Misses - lookups)
		e.gen = 0
		for _, o := range ids {
			e.kv = binary.LittleEndian.AppendUint16(e.kv, uint16(o.rule))
			e.kv = binary.LittleEndian.AppendUint16(e.kv, uint16(max(o.src-start, 0))) // (an empty value: -1)
			e.kv = binary.LittleEndian.AppendUint16(e.kv, uint16(o.end-o.off))
		}
		if a.gobs != nil {
			a.stamps = append(a.stamps, &e.gen)
		}
	}
	return dst, p, true
}

// holds reports whether e remembers the object at d[p], whose index is h,
// under the key epoch.
func (e *memoEntry) holds(h uint64, epoch int, d []byte, p int) bool {
	n := int(e.n)
	return n != 0 && e.h == h && int(e.epoch) == epoch && n <= len(d)-p && string(d[p:p+n]) == string(e.kv[:n])
}

// fastObjectMember writes the member for the object at d[p] (node child)
// through fastObject: nothing when the object wrote no member.
func (a *Applier) fastObjectMember(dst, d []byte, p int, child *node) ([]byte, int, bool) {
	return a.fastObject(dst, d, p, child)
}

// flatObjectEnd validates the object at d[p] ('{') when it is flat and
// compact, the usual shape of a dropped or kept object (a file's path,
// a process's name and pid): no whitespace, and only string members and
// integers without a leading zero, strings of plain bytes and two-byte
// escapes. It returns the offset after the object, or -1 for anything
// else, and the caller then asks jsonscan.ValueEnd, which decides (so it
// accepts a subset of what ValueEnd accepts, and never rejects). d is
// read as if zero bytes followed it (load64, at): the scans stop at the
// first zero byte. The caller checks the depth.
func flatObjectEnd(d []byte, p int) int {
	p++
	if at(d, p) == '}' {
		return p + 1
	}
	for {
		if at(d, p) != '"' {
			return -1
		}
		if p = flatStringEnd(d, p+1); p < 0 || at(d, p) != ':' {
			return -1
		}
		p++
		if c := at(d, p); c == '"' {
			if p = flatStringEnd(d, p+1); p < 0 {
				return -1
			}
		} else if c-'1' < 9 {
			p += jsonscan.DigitRun(load64(d, p)) // anything but ',' or '}' after it fails below
		} else {
			return -1
		}
		if c := at(d, p); c == ',' {
			p++
		} else if c == '}' {
			return p + 1
		} else {
			return -1
		}
	}
}

// flatStringEnd reads a string body from d[i] (after its opening quote)
// of plain bytes and two-byte escapes, and returns the offset after its
// closing quote; -1 for anything else (\u escapes, control bytes, the
// record's end, non-ASCII: ValueEnd decides). d is read as if zero bytes
// followed it.
func flatStringEnd(d []byte, i int) int {
	for {
		t := jsonscan.StopMask(load64(d, i))
		if t == 0 {
			i += 8
			continue
		}
		i += bits.TrailingZeros64(t) >> 3
		if c := at(d, i); c == '"' {
			return i + 1
		} else if c != '\\' || !jsonscan.IsSimpleEscape(at(d, i+1)) {
			return -1
		}
		i += 2
	}
}

// The leaf memo: the subtree memo's idea for a short value under a cached
// action (a pseudonym, an IP truncated). Looking such a value up in the
// pseudonym cache hashes it with xxhash (a call), probes a two-way set and
// compares; a value of up to 16 bytes is two words of the record (zeros past its end),
// so a small table per node keyed by those words (and the
// length and key epoch: the words are the whole value, nothing is left to
// compare) replays the output for a few instructions. Its outputs are the
// cache's (it is filled from what the cache gave or stored), a replay is
// counted as the cache hit the lookup would have been, and it is used
// under the subtree memo's conditions: the cache on, and no Observer or a
// GenerationObserver, told the value once per generation (the entry's
// words are the value).
const (
	leafBits    = 11            // two places per value, as the subtree memo's
	leafEntries = 1 << leafBits // per node (128 KiB)
	leafMaxOut  = 36            // longest output remembered (a 128-bit hex pseudonym, quoted): an entry is 64 bytes
)

type leafTable [leafEntries]leafEntry

type leafEntry struct {
	w0, w1 uint64 // the value's bytes, zero past its length
	gen    uint64 // the generation in which the Observer was last told it; 0: never
	n      uint8  // its length; 0: empty entry (an empty value is not remembered)
	on     uint8
	epoch  uint16
	out    [leafMaxOut]byte
}

// leafMasks[n] keeps the first n bytes of two little-endian words.
var leafMasks = func() (m [17][2]uint64) {
	for n := range m {
		m[n][0] = ^uint64(0) >> (64 - 8*uint(min(n, 8)))
		m[n][1] = ^uint64(0) >> (64 - 8*uint(max(n-8, 0)))
	}
	return m
}()

// cachedLeaf writes child's action (a pseudonym or ip_truncate, the memos
// on) for the string body d[i:j] of the record d; ok is false on
// the action's error (the general path reports it).
func (a *Applier) cachedLeaf(dst []byte, child *node, d []byte, i, j int) ([]byte, bool) {
	l := child.leaf
	val := d[i:j]
	n := len(val)
	if n == 0 || n > 16 {
		return a.actOnce(dst, l, val)
	}
	t := a.leaves[child.id]
	if t == nil {
		t = new(leafTable)
		a.leaves[child.id] = t
	}
	// Two word loads (load64 reads past the record's end as zeros),
	// masked to the value's length.
	mk := &leafMasks[n]
	w0 := load64(d, i) & mk[0]
	w1 := load64(d, i+8) & mk[1]
	// Two places, as in the subtree memo (memoMember).
	h := (w0*0x9E3779B97F4A7C15 ^ w1*0xC2B2AE3D27D4EB4F) + uint64(n)
	e := &t[h>>(64-leafBits)]
	hit := e.holds(w0, w1, n, a.epoch)
	if !hit {
		if e2 := &t[h>>(64-2*leafBits)&(leafEntries-1)]; e2.holds(w0, w1, n, a.epoch) {
			e, hit = e2, true
		}
	}
	if hit {
		a.cache.Hits++
		if a.gobs != nil && e.gen != a.gen {
			a.observe(l.rule, val)
			a.stamps = append(a.stamps, &e.gen)
		}
		return append(dst, e.out[:e.on]...), true
	}
	start := len(dst)
	dst, ok := a.actOnce(dst, l, val)
	if ok && len(dst)-start <= leafMaxOut && a.epoch == int(uint16(a.epoch)) {
		if e2 := &t[h>>(64-2*leafBits)&(leafEntries-1)]; e.n != 0 && e2.n == 0 {
			e = e2
		}
		e.w0, e.w1, e.n, e.epoch, e.gen = w0, w1, uint8(n), uint16(a.epoch), 0
		e.on = uint8(copy(e.out[:], dst[start:]))
		if a.gobs != nil {
			a.stamps = append(a.stamps, &e.gen)
		}
	}
	return dst, ok
}

// holds reports whether e remembers the value of n bytes whose words are
// w0 and w1 (masked) under the key epoch.
func (e *leafEntry) holds(w0, w1 uint64, n, epoch int) bool {
	return e.w0 == w0 && e.w1 == w1 && int(e.n) == n && int(e.epoch) == epoch
}

// cachedAct writes l's action (a pseudonym or ip_truncate) for val
// through the pseudonym cache.
func (a *Applier) cachedAct(dst []byte, l *leaf, val []byte) ([]byte, bool) {
	if l.kind == kindPseudonym {
		return a.pseudonym(dst, l, val), true
	}
	dst, err := a.ipTruncateCached(dst, l, val)
	return dst, err == nil
}

// load64 reads the eight bytes at d[i] little-endian, those past the end
// of d as zeros: the fast path reads the record as if zero bytes followed
// it. One unsigned compare guards the usual load (d[i:i+8] would cost two
// compares and the masking of an empty slice's pointer on every load of
// the loop); past it, for the last 7 bytes of d and beyond, d's last word
// is shifted down (a shift of 64 or more gives 0), so no read leaves d.
// d holds at least 8 bytes (fastApply sends a shorter record the general
// way), which makes len(d)-8 a valid offset.
func load64(d []byte, i int) uint64 {
	last := len(d) - 8
	if uint(i) > uint(last) {
		return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(d)), last))[:]) >> (uint(i-last) * 8)
	}
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(d)), i))[:])
}

// at reads d[i], or 0 past the end of d (as load64).
func at(d []byte, i int) byte {
	if uint(i) < uint(len(d)) {
		return d[i]
	}
	return 0
}

// appendMember appends child's `,"name":`, with two word stores when it
// and the room for it fit in 16 bytes.
func appendMember(dst []byte, child *node) []byte {
	if l := len(dst); len(child.member) <= 16 && cap(dst)-l >= 16 {
		w := dst[l : l+16]
		binary.LittleEndian.PutUint64(w, child.mw0)
		binary.LittleEndian.PutUint64(w[8:], child.mw1)
		return dst[:l+len(child.member)]
	}
	return append(dst, child.member...)
}

// fastKey reads the key at d[p] (after whitespace) when the shape's two
// words did not match: a key the shape remembers after whitespace, a long
// one, or a plain key looked up and learnt.
func (a *Applier) fastKey(d []byte, p int, n *node, ord int) (*node, int, bool) {
	if p < len(d) && d[p] <= ' ' {
		p = jsonscan.SkipWS(d, p)
	}
	if sh := a.shapes[n.id]; ord < len(sh) && sh[ord].match(d, p) {
		return sh[ord].child, p + sh[ord].n, true
	}
	k, end, ok := jsonscan.PlainKey(d, p)
	if !ok {
		return nil, p, false // escapes or malformed: the general path
	}
	var child *node
	if i := n.names.IndexAt(d, p+1, len(k)); i >= 0 {
		child = n.kids[i]
	}
	a.learn(n, ord, p, end, d, child)
	return child, end, true
}

// actOnce writes l's action for val through the pseudonym cache and
// tells the Observer val: under a GenerationObserver once per generation
// and rule, as the cache entry's told stamp records (rules may share a
// namespace, and the gate remembers a host name's first label too). A
// short value's leaf memo entry has a stamp of its own, but the memo
// holds fewer values than the cache (on the benchmark route 5,000 user
// names and 2,501 addresses for 2,048 entries of two places per node), so
// a value it lost would be told again on every miss. cachedLeaf's
// caller has the memos on, so the cache is.
func (a *Applier) actOnce(dst []byte, l *leaf, val []byte) ([]byte, bool) {
	if a.gobs == nil || a.gen >= 1<<16 || l.rule >= 1<<16 {
		if a.obs != nil {
			a.observe(l.rule, val)
		}
		return a.cachedAct(dst, l, val)
	}
	var told *uint32
	if l.kind == kindPseudonym {
		dst, told = a.pseudonymTold(dst, l, val)
	} else {
		var err error
		if dst, told, err = a.ipTruncateTold(dst, l, val); err != nil {
			return dst, false
		}
	}
	a.observeOnce(l.rule, val, told, uint32(a.gen)<<16|uint32(l.rule))
	return dst, true
}

// fastGeneral hands the value at d[p] for child (never nil) to the general
// code through the Scanner.
func (a *Applier) fastGeneral(dst, d []byte, p int, child *node, depth int) ([]byte, int, bool) {
	member := len(dst)
	dst = append(dst, child.member...)
	a.s.ResetAt(d, p, depth)
	dst, ok, err := a.value(dst, child, child.arrays)
	if err != nil {
		return dst, p, false
	}
	if !ok {
		dst = dst[:member]
	}
	return dst, a.s.Pos(), true
}

// observeOnce queues val for the GenerationObserver unless told, the
// stamp of its pseudonym cache entry (nil: none), is tag: val was told
// for this rule in this generation (tag is both, never 0). It is then
// queued as told, for a memo entry to keep, and not told again. The stamp
// is set once the record succeeds.
func (a *Applier) observeOnce(rule int, val []byte, told *uint32, tag uint32) {
	already := told != nil && *told == tag
	if told != nil && !already {
		a.toldStamps = append(a.toldStamps, toldStamp{told, tag})
	}
	a.enqueue(rule, val, already)
}

// idsInside reports whether the identifiers queued from told on lie in
// the record between start and end (and their rules fit a memoID): what a
// memo entry of that object can replay.
func (a *Applier) idsInside(told, start, end int) bool {
	for _, o := range a.obsQueue[told:] {
		if o.end > o.off && (o.src < start || o.src+o.end-o.off > end) || uint(o.rule) > 0xffff {
			return false
		}
	}
	return true
}

// toldStamp is a pseudonym cache entry's stamp to set once the record
// succeeds.
type toldStamp struct {
	at  *uint32
	tag uint32
}

// inRecord returns val's offset in the record the fast path is applying,
// or -1 when val is not a slice of it (an unescaped copy).
func (a *Applier) inRecord(val []byte) int {
	if len(val) == 0 {
		return -1
	}
	off := uintptr(unsafe.Pointer(unsafe.SliceData(val))) - uintptr(unsafe.Pointer(unsafe.SliceData(a.rec)))
	if off >= uintptr(len(a.rec)) || uintptr(len(val)) > uintptr(len(a.rec))-off {
		return -1
	}
	return int(off)
}

// observe tells the Observer about a raw identifier, or queues it while the
// fast path has not yet finished the record.
func (a *Applier) observe(rule int, val []byte) {
	if !a.queue {
		a.obs.ObserveIdentifier(rule, val)
		return
	}
	a.enqueue(rule, val, false)
}

// enqueue queues an Observer call for val until the record succeeds.
// Only a value that is not a slice of the record (an unescaped copy in
// scratch that the next value overwrites) is copied.
func (a *Applier) enqueue(rule int, val []byte, told bool) {
	src, off := a.inRecord(val), len(a.obsBuf)
	if !told && src < 0 {
		a.obsBuf = append(a.obsBuf, val...)
	}
	a.obsQueue = append(a.obsQueue, pending{rule, off, off + len(val), src, told})
}
