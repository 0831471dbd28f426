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
	Hits    uint64
	Misses  uint64
}

type cacheEntry struct {
	h    uint64
	slot uint32
	tick uint32 // last use, for choosing the victim within a set; 0: unused
	kv   []byte // the value, then the output
	n    int    // length of the value in kv
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
	if c == nil {
		return nil
	}
	i := h & c.mask
	set := c.entries[i : i+2 : i+2]
	e := &set[0]
	if !e.holds(slot, h, val) {
		if e = &set[1]; !e.holds(slot, h, val) {
			c.Misses++
			return nil
		}
	}
	c.tick++
	if c.tick == 0 {
		c.tick = 1 // 0 marks unused entries
	}
	e.tick = c.tick
	c.Hits++
	return e.kv[e.n:]
}

// holds reports whether e is (slot, val): the hash first, then the whole
// value with one compare.
func (e *cacheEntry) holds(slot uint32, h uint64, val []byte) bool {
	return e.h == h && e.slot == slot && e.n == len(val) && e.tick != 0 && string(e.kv[:e.n]) == string(val)
}

// Put stores out for (slot, val), evicting what shared its entry. It copies
// both into a buffer the entry reuses, so a warm cache does not allocate.
func (c *Cache) Put(slot uint32, h uint64, val, out []byte) {
	if c == nil || len(val) > MaxCachedValue || len(out) == 0 {
		return
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
	e.h, e.slot, e.tick, e.n = h, slot, c.tick, len(val)
	if n := len(val) + len(out); cap(e.kv) < n {
		e.kv = make([]byte, 0, n) // one allocation (the size class leaves some room)
	}
	e.kv = append(append(e.kv[:0], val...), out...)
}
