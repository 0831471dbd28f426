// Package pseudonym holds the keyed primitives: HMAC-SHA256 pseudonyms, the
// per-vendor key ring with epochs, the bounded pseudonym cache, and
// Crypto-PAn prefix-preserving IP addresses. Nothing here uses an unkeyed or
// non-cryptographic hash to derive a pseudonym; xxhash only indexes the cache.
package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
)

// Hasher computes HMAC-SHA256 under one key, reusing its state between
// calls so the hot path does not allocate. Not safe for concurrent use.
type Hasher struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewHasher keys a Hasher. The key is used as given (RFC 2104).
func NewHasher(key []byte) *Hasher {
	return &Hasher{mac: hmac.New(sha256.New, key)}
}

// Sum returns HMAC(key, msg). The result is valid until the next call.
func (h *Hasher) Sum(msg []byte) []byte {
	h.mac.Reset()
	h.mac.Write(msg)
	return h.mac.Sum(h.sum[:0])
}

// separator is package-level: a literal passed to the interface method
// Write would escape and allocate on every call.
var separator = []byte{0}

// sumFramed returns HMAC(key, namespace || 0x00 || value), so that the same
// value in two namespaces gives unrelated pseudonyms.
func (h *Hasher) sumFramed(namespace, value []byte) []byte {
	h.mac.Reset()
	h.mac.Write(namespace)
	h.mac.Write(separator)
	h.mac.Write(value)
	return h.mac.Sum(h.sum[:0])
}

// Encoding is how pseudonym bytes are written.
type Encoding uint8

const (
	Hex Encoding = iota
	Base64URL
)

// Format is the shape of a pseudonym: the namespace it is framed with, the
// bits kept, the encoding and a prefix. Immutable after construction.
type Format struct {
	Namespace []byte
	Bytes     int // bits / 8
	Encoding  Encoding
	Prefix    []byte
}

// AppendPseudonym appends prefix + encode(truncate(HMAC(ns||0||value))) to dst.
func (f *Format) AppendPseudonym(dst []byte, h *Hasher, value []byte) []byte {
	sum := h.sumFramed(f.Namespace, value)[:f.Bytes]
	dst = append(dst, f.Prefix...)
	switch f.Encoding {
	case Base64URL:
		return base64.RawURLEncoding.AppendEncode(dst, sum)
	default:
		return hex.AppendEncode(dst, sum)
	}
}
