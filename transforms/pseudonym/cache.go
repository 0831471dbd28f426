package pseudonym

import "math/bits"

// MaxCachedValue is the longest value the cache holds; longer values are
// hashed every time, which keeps the cache's memory bounded.
const MaxCachedValue = 128

// Cache remembers recent pseudonyms. Telemetry is heavily skewed (a few
// users, hosts and processes make most events), so most lookups hit. It is
// two-way set-associative (a value may live in either of two entries; a
// miss replaces the one used less recently) and bounded:
// entries*(MaxCachedValue+len(pseudonym)) bytes at most. The index is a
// non-cryptographic hash (xxhash) chosen by the caller, so every hit
// compares the full value and its slot: a collision costs a miss, never
// another value's pseudonym. Not safe for concurrent use.
type Cache struct {
	entries []cacheEntry
	mask    uint64 // selects a set of two adjacent entries
	tick    uint32
	stored  bool // Put has stored an entry
	Hits    uint64
	Misses  uint64
}

type cacheEntry struct {
	h    uint64
	slot uint32
	tick uint32 // last use, for choosing the victim within a set; 0: unused
	kv   []byte // the value, then the output
	n    uint32 // length of the value in kv (at most MaxCachedValue)
	told uint32 // the caller's stamp (GetTold); Put zeroes it
}

// NewCache returns a cache of n entries rounded up to a power of two, or
// nil (a valid, always-missing cache) when n <= 0.
func NewCache(n int) *Cache {
	if n <= 0 {
		return nil
	}
	size := max(2, 1<<bits.Len(uint(n-1)))
	return &Cache{entries: make([]cacheEntry, size), mask: uint64(size-1) &^ 1}
}

// Get returns the output cached for (slot, val), where h is the caller's
// hash of val and slot names the key epoch and namespace; nil on a miss.
// The output is valid until the next Put.
func (c *Cache) Get(slot uint32, h uint64, val []byte) []byte {
	out, _ := c.GetTold(slot, h, val)
	return out
}

// GetTold is Get, and on a hit the entry's told stamp: a word the caller
// keeps with the value while it stays cached, zero when Put stored it (the
// route keeps there the observer generation in which it last told the
// gate the raw value, which spares telling it again). The stamp is valid
// until the next Put, which may reuse the entry for another value and
// zero it.
func (c *Cache) GetTold(slot uint32, h uint64, val []byte) ([]byte, *uint32) {
	if c == nil {
		return nil, nil
	}
	i := h & c.mask
	set := c.entries[i : i+2 : i+2]
	e := &set[0]
	if !e.holds(slot, h, val) {
		if e = &set[1]; !e.holds(slot, h, val) {
			c.Misses++
			return nil, nil
		}
	}
	c.tick++
	if c.tick == 0 {
		c.tick = 1 // 0 marks unused entries
	}
	e.tick = c.tick
	c.Hits++
	return e.kv[e.n:], &e.told
}

// holds reports whether e is (slot, val): the hash first, then the whole
// value with one compare.
func (e *cacheEntry) holds(slot uint32, h uint64, val []byte) bool {
	return e.h == h && e.slot == slot && int(e.n) == len(val) && e.tick != 0 && string(e.kv[:e.n]) == string(val)
}

// Put stores out for (slot, val), evicting what shared its entry. It copies
// both into a buffer the entry reuses, so a warm cache does not allocate.
// It returns the entry's told stamp, zero (nil when nothing was stored).
func (c *Cache) Put(slot uint32, h uint64, val, out []byte) *uint32 {
	if c == nil || len(val) > MaxCachedValue || len(out) == 0 {
		return nil
	}
	set := c.entries[h&c.mask : h&c.mask+2]
	e := &set[0]
	if set[1].tick < set[0].tick {
		e = &set[1] // older, or unused (tick 0)
	}
	c.tick++
	if c.tick == 0 {
		c.tick = 1
	}
	e.h, e.slot, e.tick, e.n, e.told = h, slot, c.tick, uint32(len(val)), 0
	c.stored = true
	if n := len(val) + len(out); cap(e.kv) < n {
		e.kv = make([]byte, 0, n) // one allocation (the size class leaves some room)
	}
	e.kv = append(append(e.kv[:0], val...), out...)
	return &e.told
}

// ClearTold zeroes every entry's told stamp. A fresh cache it leaves
// alone, and otherwise it writes only entries in use: the entries of a
// fresh cache are pages the kernel has not yet backed (a worker holds one
// cache per route per claim), and reading them costs a miss each.
func (c *Cache) ClearTold() {
	if c == nil || !c.stored {
		return
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.tick != 0 {
			e.told = 0
		}
	}
}
