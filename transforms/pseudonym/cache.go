package pseudonym

import (
	"bytes"
	"math/bits"
)

// MaxCachedValue is the longest value the cache holds; longer values are
// hashed every time, which keeps the cache's memory bounded.
const MaxCachedValue = 128

// Cache remembers recent pseudonyms. Telemetry is heavily skewed (a few
// users, hosts and processes make most events), so most lookups hit. It is
// two-way set-associative (a value may live in either of two entries; a
// miss replaces the one used less recently) and bounded:
// entries*(MaxCachedValue+len(pseudonym)) bytes at most. The index is a non-cryptographic hash (xxhash) chosen by the
// caller, so every hit compares the full value and its slot: a collision
// costs a miss, never another value's pseudonym. Not safe for concurrent use.
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
	used bool
	tick uint32 // last use, for choosing the victim within a set
	val  []byte
	out  []byte
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

// Get returns the pseudonym cached for (slot, val), where h is the caller's
// hash of val and slot names the key epoch and namespace.
func (c *Cache) Get(slot uint32, h uint64, val []byte) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	set := c.entries[h&c.mask : h&c.mask+2]
	for i := range set {
		if e := &set[i]; e.used && e.h == h && e.slot == slot && bytes.Equal(e.val, val) {
			c.tick++
			e.tick = c.tick
			c.Hits++
			return e.out, true
		}
	}
	c.Misses++
	return nil, false
}

// Put stores out for (slot, val), evicting what shared its entry. It copies
// both into buffers the entry reuses, so a warm cache does not allocate.
func (c *Cache) Put(slot uint32, h uint64, val, out []byte) {
	if c == nil || len(val) > MaxCachedValue {
		return
	}
	set := c.entries[h&c.mask : h&c.mask+2]
	e := &set[0]
	if set[1].tick < set[0].tick || !set[1].used {
		e = &set[1]
	}
	if !set[0].used {
		e = &set[0]
	}
	c.tick++
	e.h, e.slot, e.used, e.tick = h, slot, true, c.tick
	e.val = append(e.val[:0], val...)
	e.out = append(e.out[:0], out...)
}
