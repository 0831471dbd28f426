package pseudonym

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

// RFC 4231 HMAC-SHA-256 test vectors, from ../shared/data/hmac (copied to testdata).
func TestHasherRFC4231(t *testing.T) {
	f, err := os.Open("testdata/rfc4231_annotated.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	sc.Scan() // header
	n := 0
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		key, _ := hex.DecodeString(c[4])
		data, _ := hex.DecodeString(c[5])
		want := c[6]
		got := hex.EncodeToString(NewHasher(key).Sum(data))
		if !strings.HasPrefix(got, want) || len(want) < 32 {
			t.Errorf("case %s: got %s, want %s", c[0], got, want)
		}
		n++
	}
	if n != 7 {
		t.Fatalf("read %d vectors, want the 7 of RFC 4231", n)
	}
}

func TestFormat(t *testing.T) {
	h := NewHasher(bytes.Repeat([]byte{7}, 32))
	hexF := &Format{Namespace: []byte("user"), Bytes: 16, Encoding: Hex, Prefix: []byte("usr_")}
	b64F := &Format{Namespace: []byte("user"), Bytes: 8, Encoding: Base64URL}
	other := &Format{Namespace: []byte("host"), Bytes: 16, Encoding: Hex, Prefix: []byte("usr_")}
	p := string(hexF.AppendPseudonym(nil, h, []byte("alice")))
	if !strings.HasPrefix(p, "usr_") || len(p) != 4+32 {
		t.Errorf("hex pseudonym %q: want usr_ and 32 hex digits", p)
	}
	if q := string(hexF.AppendPseudonym(nil, h, []byte("alice"))); q != p {
		t.Error("not deterministic")
	}
	if q := string(other.AppendPseudonym(nil, h, []byte("alice"))); q == p {
		t.Error("two namespaces gave the same pseudonym")
	}
	if q := string(hexF.AppendPseudonym(nil, NewHasher(bytes.Repeat([]byte{8}, 32)), []byte("alice"))); q == p {
		t.Error("two keys gave the same pseudonym")
	}
	// The namespace is framed: ("ab","c") and ("a","bc") must differ.
	ab := &Format{Namespace: []byte("ab"), Bytes: 16}
	a := &Format{Namespace: []byte("a"), Bytes: 16}
	if string(ab.AppendPseudonym(nil, h, []byte("c"))) == string(a.AppendPseudonym(nil, h, []byte("bc"))) {
		t.Error("namespace and value are not separated")
	}
	if b := string(b64F.AppendPseudonym(nil, h, []byte("alice"))); len(b) != 11 || strings.ContainsAny(b, "+/=") {
		t.Errorf("base64url of 64 bits = %q, want 11 URL-safe characters", b)
	}
	val, buf := []byte("alice"), make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		buf = hexF.AppendPseudonym(buf[:0], h, val)
	})
	if allocs != 0 {
		t.Errorf("AppendPseudonym allocates %v times", allocs)
	}
}

func TestCacheComparesFullValue(t *testing.T) {
	c := NewCache(4)
	const h = 42 // force a collision: same index hash for different values
	c.Put(1, h, []byte("alice"), []byte("P(alice)"))
	if out := c.Get(1, h, []byte("alice")); out == nil || string(out) != "P(alice)" {
		t.Fatalf("hit: %q", out)
	}
	if out := c.Get(1, h, []byte("mallory")); out != nil {
		t.Fatalf("collision returned another value's pseudonym %q", out)
	}
	if out := c.Get(2, h, []byte("alice")); out != nil {
		t.Fatal("another slot (namespace or epoch) hit")
	}
	// Two ways per set: a second value with the same hash lives beside the
	// first; a third evicts the one used less recently.
	c.Put(1, h, []byte("mallory"), []byte("P(mallory)"))
	if out := c.Get(1, h, []byte("alice")); out == nil || string(out) != "P(alice)" {
		t.Fatalf("alice after mallory: %q", out)
	}
	c.Put(1, h, []byte("eve"), []byte("P(eve)"))
	if out := c.Get(1, h, []byte("mallory")); out != nil {
		t.Fatal("least recently used value still hits")
	}
	for _, v := range []string{"alice", "eve"} {
		if out := c.Get(1, h, []byte(v)); out == nil || string(out) != "P("+v+")" {
			t.Fatalf("%s: %q", v, out)
		}
	}
	long := bytes.Repeat([]byte{'x'}, MaxCachedValue+1)
	c.Put(1, 7, long, []byte("P"))
	if out := c.Get(1, 7, long); out != nil {
		t.Fatal("value above MaxCachedValue was cached")
	}
	var nilCache *Cache
	if out := nilCache.Get(1, 1, nil); out != nil {
		t.Fatal("disabled cache hit")
	}
	nilCache.Put(1, 1, nil, nil)
}

func TestCacheBounded(t *testing.T) {
	c := NewCache(1000)
	if len(c.entries) != 1024 {
		t.Fatalf("%d entries, want 1024", len(c.entries))
	}
	for i := range 100000 {
		v := []byte(fmt.Sprint("user", i))
		c.Put(0, uint64(i)*2654435761, v, v)
	}
	used := 0
	for _, e := range c.entries {
		if e.tick != 0 {
			used++
		}
	}
	if used > 1024 {
		t.Fatalf("%d entries used", used)
	}
}

// TestCacheToldStamps: a stamp lives with its value. Put hands out a zero
// stamp, a hit hands out the same word, a value that takes the entry over
// starts from zero again, and ClearTold zeroes the stamps of every entry
// in use.
func TestCacheToldStamps(t *testing.T) {
	c := NewCache(2) // one set of two entries: a third value evicts
	a, b, d := []byte("alice@example.com"), []byte("bob@example.com"), []byte("dave@example.com")
	pa := c.Put(1, 10, a, []byte("A"))
	if pa == nil || *pa != 0 {
		t.Fatalf("Put's stamp %v, want a zero word", pa)
	}
	*pa = 7
	if out, st := c.GetTold(1, 10, a); string(out) != "A" || st != pa || *st != 7 {
		t.Fatalf("hit: %q, stamp %v", out, st)
	}
	pb := c.Put(1, 12, b, []byte("B"))
	*pb = 9
	c.GetTold(1, 10, a)                // a is the more recent
	pd := c.Put(1, 14, d, []byte("D")) // evicts b
	if pd != pb || *pd != 0 {
		t.Fatalf("a value taking b's entry over has stamp %d", *pd)
	}
	if _, st := c.GetTold(1, 12, b); st != nil {
		t.Fatal("an evicted value still has a stamp")
	}
	*pd = 3
	c.ClearTold()
	if *pa != 0 || *pd != 0 {
		t.Fatalf("after ClearTold: stamps %d and %d", *pa, *pd)
	}
	if out, st := c.GetTold(1, 10, a); string(out) != "A" || *st != 0 {
		t.Fatal("ClearTold lost a value")
	}
	// Stamps set after a ClearTold are cleared by the next one too.
	*pa = 5
	c.ClearTold()
	if *pa != 0 {
		t.Fatal("a second ClearTold kept a stamp")
	}
	if c.Put(1, 16, make([]byte, MaxCachedValue+1), []byte("X")) != nil {
		t.Fatal("a value too long to cache has a stamp")
	}
}
