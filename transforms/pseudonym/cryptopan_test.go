package pseudonym

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

// The sample key and the 70 IPv4 pairs come from the Crypto-PAn
// distribution's sample trace, as carried in github.com/Yawning/cryptopan
// (BSD-2-Clause, licence in testdata/cryptopan/LICENSE.Yawning-cryptopan).
var cryptoPAnTestdata = filepath.Join("testdata", "cryptopan")

func cryptoPAnTestKey(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cryptoPAnTestdata, "key.hex"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("key.hex: %v", err)
	}
	return key
}

func newTestCryptoPAn(t testing.TB) *CryptoPAn {
	t.Helper()
	c, err := NewCryptoPAn(cryptoPAnTestKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCryptoPAnVectors(t *testing.T) {
	c := newTestCryptoPAn(t)
	f, err := os.Open(filepath.Join(cryptoPAnTestdata, "vectors.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	n := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		raw, want, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("vectors.tsv:%d: want two tab-separated fields, got %q", line, sc.Text())
		}
		in := netip.MustParseAddr(raw)
		wantAddr := netip.MustParseAddr(want)
		if got := c.Anonymize(in); got != wantAddr {
			t.Errorf("Anonymize(%v) = %v, want %v", in, got, wantAddr)
		}
		// The same address written as IPv4-mapped IPv6 must be treated
		// as IPv4, or one host would get two unrelated pseudonyms.
		mapped := netip.AddrFrom16(in.As16())
		if got := c.Anonymize(mapped); got != wantAddr {
			t.Errorf("Anonymize(%v) = %v, want %v", mapped, got, wantAddr)
		}
		// For bit positions below 32 the IPv6 construction builds the
		// same AES blocks as the IPv4 one (address prefix, then pad), so
		// an IPv6 address whose first 32 bits spell this IPv4 address
		// must map to one whose first 32 bits spell its pseudonym. This
		// ties the IPv6 variant to the published vectors.
		var v6 [16]byte
		copy(v6[:4], in.AsSlice())
		for i := 4; i < 16; i++ {
			v6[i] = byte(line * i)
		}
		got6 := c.Anonymize(netip.AddrFrom16(v6)).As16()
		if got, want := netip.AddrFrom4([4]byte(got6[:4])), wantAddr; got != want {
			t.Errorf("Anonymize(%v) starts with %v, want %v", netip.AddrFrom16(v6), got, want)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 70 {
		t.Errorf("read %d vectors, want 70", n)
	}
}

// referenceCryptoPAn is a literal, bit-at-a-time rendering of the published
// construction (as in Yawning/cryptopan): no precomputed table, no byte-wise
// masking. It is the oracle for the optimised code on IPv6, for which no
// published vectors exist.
func referenceCryptoPAn(t testing.TB, key []byte, addr []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key[:16])
	if err != nil {
		t.Fatal(err)
	}
	bit := func(v []byte, i int) byte { return v[i/8] >> (7 - i%8) & 1 }
	setBit := func(v []byte, i int, b byte) {
		v[i/8] = v[i/8]&^(1<<(7-i%8)) | b<<(7-i%8)
	}
	pad := make([]byte, 16)
	block.Encrypt(pad, key[16:])
	out := make([]byte, len(addr))
	for pos := range len(addr) * 8 {
		in := bytes.Clone(pad)
		for j := range pos {
			setBit(in, j, bit(addr, j))
		}
		enc := make([]byte, 16)
		block.Encrypt(enc, in)
		setBit(out, pos, bit(enc, 0)^bit(addr, pos))
	}
	return out
}

func TestCryptoPAnMatchesReference(t *testing.T) {
	key := cryptoPAnTestKey(t)
	c := newTestCryptoPAn(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var a16 [16]byte
		for i := range a16 {
			a16[i] = byte(rng.Uint32())
		}
		a6 := netip.AddrFrom16(a16)
		if a6.Is4In6() {
			continue
		}
		want := netip.AddrFrom16([16]byte(referenceCryptoPAn(t, key, a16[:])))
		if got := c.Anonymize(a6); got != want {
			t.Errorf("Anonymize(%v) = %v, reference gives %v", a6, got, want)
		}

		a4 := netip.AddrFrom4([4]byte(a16[:4]))
		want = netip.AddrFrom4([4]byte(referenceCryptoPAn(t, key, a16[:4])))
		if got := c.Anonymize(a4); got != want {
			t.Errorf("Anonymize(%v) = %v, reference gives %v", a4, got, want)
		}
	}
}

// TestCryptoPAnIPv6Golden pins IPv6 outputs under the sample key so that a
// change to the IPv6 mapping, which would silently break joins against
// previously pseudonymized data, fails loudly. The values were produced by
// referenceCryptoPAn; there are no published IPv6 vectors.
func TestCryptoPAnIPv6Golden(t *testing.T) {
	c := newTestCryptoPAn(t)
	for _, tc := range []struct{ in, want string }{
		{"::", "78ff:f001:9fc0:20df:8380:b1f1:704:ec"},
		{"::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"},
		{"2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"},
		{"2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"},
		{"fe80::1", "cf7f:c0e:1fc3:da1c:70:b18e:f7f3:2101"},
		{"2606:4700:4700::1111", "4009:788c:3b3c:1ddc:1ff:8071:f900:cf2"},
	} {
		in := netip.MustParseAddr(tc.in)
		want := netip.MustParseAddr(tc.want)
		if got := c.Anonymize(in); got != want {
			t.Errorf("Anonymize(%v) = %v, want %v", in, got, want)
		}
	}
}

// commonPrefixLen returns the number of leading bits a and b share, over
// the address family's width.
func commonPrefixLen(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	for i := range x {
		if d := x[i] ^ y[i]; d != 0 {
			n += bits.LeadingZeros8(d)
			break
		}
		n += 8
	}
	if a.Is4() {
		n -= 96 // As16 puts IPv4 behind the ::ffff: prefix
	}
	return n
}

// randomPairWithPrefix returns two random addresses of width bytes that share
// exactly n leading bits (identical when n is the full width).
func randomPairWithPrefix(rng *rand.Rand, width, n int) (a, b netip.Addr) {
	var x [16]byte
	for i := range width {
		x[i] = byte(rng.Uint32())
	}
	y := x
	if n < width*8 {
		y[n/8] ^= 0x80 >> (n % 8) // differ at bit n
		for i := n + 1; i < width*8; i++ {
			if rng.IntN(2) == 1 {
				y[i/8] ^= 0x80 >> (i % 8)
			}
		}
	}
	if width == 4 {
		return netip.AddrFrom4([4]byte(x[:4])), netip.AddrFrom4([4]byte(y[:4]))
	}
	return netip.AddrFrom16(x), netip.AddrFrom16(y)
}

func TestCryptoPAnPrefixPreserving(t *testing.T) {
	c := newTestCryptoPAn(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, family := range []struct {
		name  string
		width int
	}{{"IPv4", 4}, {"IPv6", 16}} {
		t.Run(family.name, func(t *testing.T) {
			for n := 0; n <= family.width*8; n++ {
				for range 20 {
					a, b := randomPairWithPrefix(rng, family.width, n)
					if family.width == 16 && (a.Is4In6() || b.Is4In6()) {
						continue // would be unmapped to IPv4
					}
					if got := commonPrefixLen(a, b); got != n {
						t.Fatalf("test bug: %v and %v share %d bits, want %d", a, b, got, n)
					}
					pa, pb := c.Anonymize(a), c.Anonymize(b)
					if pa.BitLen() != a.BitLen() || pb.BitLen() != b.BitLen() {
						t.Fatalf("address family changed: %v -> %v, %v -> %v", a, pa, b, pb)
					}
					if got := commonPrefixLen(pa, pb); got != n {
						t.Errorf("%v and %v share %d bits but map to %v and %v sharing %d",
							a, b, n, pa, pb, got)
					}
				}
			}
		})
	}
}

func TestCryptoPAnDeterministic(t *testing.T) {
	key := cryptoPAnTestKey(t)
	c1 := newTestCryptoPAn(t)
	c2, err := NewCryptoPAn(bytes.Clone(key))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"10.1.2.3", "192.168.0.1", "2001:db8::42", "fe80::1"} {
		a := netip.MustParseAddr(s)
		first := c1.Anonymize(a)
		if again := c1.Anonymize(a); again != first {
			t.Errorf("Anonymize(%v) gave %v then %v", a, first, again)
		}
		if other := c2.Anonymize(a); other != first {
			t.Errorf("Anonymize(%v) gave %v and %v from two instances with one key", a, first, other)
		}
	}
}

func TestCryptoPAnKeyDependence(t *testing.T) {
	key := cryptoPAnTestKey(t)
	base := newTestCryptoPAn(t)
	// Changing either half must change the mapping: the AES key drives
	// every bit, the pad seed fills the blocks behind the address bits.
	for _, flip := range []int{0, 15, 16, 31} {
		k := bytes.Clone(key)
		k[flip] ^= 1
		c, err := NewCryptoPAn(k)
		if err != nil {
			t.Fatal(err)
		}
		same := 0
		addrs := []string{"10.1.2.3", "128.11.68.132", "192.168.1.1", "2001:db8::1", "2606:4700::1111"}
		for _, s := range addrs {
			a := netip.MustParseAddr(s)
			if c.Anonymize(a) == base.Anonymize(a) {
				same++
			}
		}
		if same == len(addrs) {
			t.Errorf("flipping key byte %d left all %d pseudonyms unchanged", flip, same)
		}
	}
}

// TestCryptoPAnConcurrent shares one instance between goroutines, as a
// pipeline would; run it with -race to check the pooled scratch blocks.
func TestCryptoPAnConcurrent(t *testing.T) {
	c := newTestCryptoPAn(t)
	addrs := make([]netip.Addr, 64)
	want := make([]netip.Addr, len(addrs))
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), 1, byte(i)})
		} else {
			addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		}
		want[i] = c.Anonymize(addrs[i])
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for r := range 50 {
				i := (g*7 + r) % len(addrs)
				if got := c.Anonymize(addrs[i]); got != want[i] {
					t.Errorf("concurrent Anonymize(%v) = %v, want %v", addrs[i], got, want[i])
				}
			}
		})
	}
	wg.Wait()
}

func TestCryptoPAnEdgeCases(t *testing.T) {
	c := newTestCryptoPAn(t)
	if got := c.Anonymize(netip.Addr{}); got.IsValid() {
		t.Errorf("Anonymize(zero Addr) = %v, want zero Addr", got)
	}
	zoned := netip.MustParseAddr("fe80::1%eth0")
	got := c.Anonymize(zoned)
	if got.Zone() != "" {
		t.Errorf("Anonymize(%v) = %v, want the zone dropped", zoned, got)
	}
	if want := c.Anonymize(zoned.WithZone("")); got != want {
		t.Errorf("Anonymize(%v) = %v, want %v as without the zone", zoned, got, want)
	}
}

func TestCryptoPAnBadKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		c, err := NewCryptoPAn(make([]byte, n))
		if err == nil || c != nil {
			t.Errorf("NewCryptoPAn(%d bytes) = %v, %v; want nil and an error", n, c, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "cryptopan: key must be 32 bytes") {
			t.Errorf("NewCryptoPAn(%d bytes) error = %q", n, err)
		}
	}
	if _, err := NewCryptoPAn(nil); err == nil {
		t.Error("NewCryptoPAn(nil) succeeded")
	}
}

func TestCryptoPAnAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceBuild() {
		// The race detector makes sync.Pool drop items at random, and
		// coverage counters can allocate; neither reflects production.
		t.Skip("instrumented build")
	}
	c := newTestCryptoPAn(t)
	for _, s := range []string{"128.11.68.132", "::ffff:10.0.0.1", "2001:db8::1"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { c.Anonymize(a) }); n != 0 {
			t.Errorf("Anonymize(%v) allocates %v times per call, want 0", a, n)
		}
	}
}

// raceBuild reports whether the test binary was built with -race.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func BenchmarkCryptoPAnIPv4(b *testing.B) {
	c := newTestCryptoPAn(b)
	a := netip.MustParseAddr("128.11.68.132")
	b.ReportAllocs()
	for b.Loop() {
		a = c.Anonymize(a)
	}
}

func BenchmarkCryptoPAnIPv6(b *testing.B) {
	c := newTestCryptoPAn(b)
	a := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		a = c.Anonymize(a)
	}
}
