package pseudonym

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net/netip"
	"sync"
)

// cryptoPAnKeySize is the length of Crypto-PAn keying material: an AES-128
// key followed by a 16-byte pad seed, the layout used by the reference
// implementation so that existing keys (and their published outputs) carry
// over unchanged.
const cryptoPAnKeySize = 32

// CryptoPAn is a keyed prefix-preserving IP address anonymizer, after Xu,
// Fan, Ammar and Moon, "Prefix-Preserving IP Address Anonymization" (2002).
// Two addresses that share exactly an n-bit prefix map to pseudonyms that
// share exactly an n-bit prefix, so subnet structure survives
// pseudonymization while the addresses themselves do not. The mapping is a
// bijection on each address family and is deterministic for a given key, so
// separately processed data sets stay joinable.
//
// A CryptoPAn is safe for concurrent use after construction: everything it
// holds is read-only once NewCryptoPAn returns (the AES cipher, the pad and a
// table derived from them), apart from a sync.Pool of scratch blocks.
type CryptoPAn struct {
	block cipher.Block
	pad   [16]byte
	// first holds the one-time-pad bits for the first address byte, indexed
	// by that byte. Those 8 bits depend only on the first 7 address bits, so
	// there are just 255 distinct AES inputs; precomputing them saves 8 of
	// the 32 block encryptions an IPv4 address would otherwise need.
	first [256]byte
	// scratch recycles the AES input and output blocks. Passing a slice to
	// cipher.Block.Encrypt, an interface method, makes escape analysis move
	// even a local array to the heap; pooling the blocks keeps Anonymize
	// free of per-call allocations.
	scratch sync.Pool
}

// cryptoPAnScratch is the working memory of one Anonymize call.
type cryptoPAnScratch struct {
	in, out [16]byte
}

// NewCryptoPAn takes 32 bytes: the first 16 are the AES-128 key, the last 16
// the pad seed (as in the reference implementation). The pad is the
// encryption of the seed rather than the seed itself, again to match the
// reference, whose published test vectors depend on it.
func NewCryptoPAn(key []byte) (*CryptoPAn, error) {
	if len(key) != cryptoPAnKeySize {
		return nil, fmt.Errorf("cryptopan: key must be %d bytes, got %d", cryptoPAnKeySize, len(key))
	}
	block, err := aes.NewCipher(key[:16])
	if err != nil {
		// Unreachable for a 16-byte key; kept so a future key-size change
		// cannot fail silently.
		return nil, fmt.Errorf("cryptopan: %w", err)
	}
	c := &CryptoPAn{block: block}
	c.block.Encrypt(c.pad[:], key[16:])
	c.scratch.New = func() any { return new(cryptoPAnScratch) }
	c.initFirst()
	return c, nil
}

// initFirst fills c.first. Bit p (p = 0 is the most significant) of the
// one-time pad is the top bit of AES_k(block), where block is the first p
// address bits followed by the pad's remaining bits. For p < 8 the block
// differs from the pad only in its first byte, so the bits form a binary
// tree over prefixes of the first address byte: compute each of the 255
// nodes once, then gather the 8 nodes on every byte's path.
func (c *CryptoPAn) initFirst() {
	var bits [8][128]byte // bits[p][prefix of length p]
	var in, out [16]byte
	in = c.pad
	for p := range 8 {
		keep := ^byte(0xff >> p) // top p bits come from the address
		for prefix := range 1 << p {
			in[0] = byte(prefix<<(8-p))&keep | c.pad[0]&^keep
			c.block.Encrypt(out[:], in[:])
			bits[p][prefix] = out[0] >> 7
		}
	}
	for b := range 256 {
		var otp byte
		for p := range 8 {
			otp |= bits[p][b>>(8-p)] << (7 - p)
		}
		c.first[b] = otp
	}
}

// Anonymize maps addr to its pseudonym; IPv4 (incl. 4-in-6 unmapped via
// Unmap) maps to IPv4, IPv6 to IPv6. Must not allocate.
//
// IPv4 output is identical to the reference Crypto-PAn implementations. IPv6
// uses the same construction over all 128 bits, as Yawning/cryptopan does.
// An IPv6 zone is dropped: it names an interface on the capturing host, is
// meaningless anywhere else, and is not something a pseudonym should carry.
// The zero Addr maps to itself.
func (c *CryptoPAn) Anonymize(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	switch {
	case addr.Is4():
		a4 := addr.As4()
		var a [16]byte
		copy(a[:], a4[:])
		o := c.anonymize(&a, 4)
		return netip.AddrFrom4([4]byte(o[:4]))
	case addr.Is6():
		a := addr.As16()
		return netip.AddrFrom16(c.anonymize(&a, 16))
	default:
		return netip.Addr{}
	}
}

// anonymize applies Crypto-PAn to the first n bytes of addr and returns the
// result in the first n bytes (the rest are zero).
func (c *CryptoPAn) anonymize(addr *[16]byte, n int) [16]byte {
	s := c.scratch.Get().(*cryptoPAnScratch)
	defer c.scratch.Put(s)

	var otp [16]byte
	otp[0] = c.first[addr[0]]

	// Build AES inputs incrementally: at bit position pos the block is the
	// first pos address bits followed by the pad's bits from pos onwards.
	// Bytes beyond the address length are never touched and stay pad, which
	// is how the reference pads a 32-bit IPv4 address to a 128-bit block.
	s.in = c.pad
	for pos := 8; pos < n*8; pos++ {
		i, k := pos>>3, pos&7
		if k == 0 {
			s.in[i-1] = addr[i-1]
		}
		keep := ^byte(0xff >> k)
		s.in[i] = addr[i]&keep | c.pad[i]&^keep
		c.block.Encrypt(s.out[:], s.in[:])
		otp[i] |= s.out[0] >> 7 << (7 - k)
	}
	for i := range n {
		otp[i] ^= addr[i]
	}
	return otp
}
