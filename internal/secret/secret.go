// Package secret holds key material in a type that cannot be printed,
// logged or marshalled by accident: every rendering is [REDACTED].
package secret

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Redacted is how a Key renders everywhere.
const Redacted = "[REDACTED]"

// MinKeyBytes is the shortest key accepted.
const MinKeyBytes = 32

// Key is secret key material. The zero value is an empty key.
type Key struct {
	b []byte
	// retiredID is the recorded id of a key whose material was destroyed.
	retiredID string
}

// Retired returns a Key standing for material that was destroyed (deident
// keys retire): it holds no bytes, its ID is id as recorded when it was
// retired, and Derive panics, so nothing can be keyed with it by accident.
func Retired(id string) Key { return Key{retiredID: id} }

// IsRetired reports whether k stands for destroyed material.
func (k Key) IsRetired() bool { return k.retiredID != "" }

// NewKey copies b into a Key.
func NewKey(b []byte) Key { return Key{b: append([]byte(nil), b...)} }

// Bytes returns the key material. Callers must not log or keep it longer than needed.
func (k Key) Bytes() []byte { return k.b }

// Len returns the key length in bytes.
func (k Key) Len() int { return len(k.b) }

// ID is a stable identifier derived from the key that does not reveal it:
// "k" and the first 64 bits of HMAC-SHA256(key, "deident key id v1") in hex.
func (k Key) ID() string {
	if k.retiredID != "" {
		return k.retiredID
	}
	m := hmac.New(sha256.New, k.b)
	m.Write([]byte("deident key id v1"))
	return "k" + hex.EncodeToString(m.Sum(nil)[:8])
}

// Derive returns a 32-byte subkey for one use (a label), so that the same
// vendor key never serves two algorithms directly. It panics on a retired
// key: deriving from no material would key everything with a public value.
func (k Key) Derive(label string) []byte {
	if k.retiredID != "" {
		panic("secret: deriving from retired key " + k.retiredID)
	}
	m := hmac.New(sha256.New, k.b)
	m.Write([]byte("deident derive v1\x00" + label))
	return m.Sum(nil)
}

// Equal reports whether two keys hold the same bytes, in constant time.
func (k Key) Equal(o Key) bool { return hmac.Equal(k.b, o.b) }

func (Key) String() string               { return Redacted }
func (Key) GoString() string             { return Redacted }
func (Key) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
func (Key) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (Key) Format(f fmt.State, _ rune)   { f.Write([]byte(Redacted)) }

var (
	_ fmt.Stringer   = Key{}
	_ fmt.GoStringer = Key{}
	_ fmt.Formatter  = Key{}
	_ slog.LogValuer = Key{}
)
