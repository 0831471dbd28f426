package pseudonym

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/deident/deident/internal/secret"
)

// ErrNoKey is returned for an event time before the first key epoch.
var ErrNoKey = errors.New("no key epoch covers the event time")

// ErrEpochRetired is returned for an event time in a retired epoch: its key
// was destroyed (crypto-shredded), so nothing in it can be pseudonymized or
// re-derived any more.
var ErrEpochRetired = errors.New("key epoch retired")

// Epoch is one key of a ring and the time from which it applies.
type Epoch struct {
	From time.Time // zero: from the beginning
	Key  secret.Key
}

// KeyRing is a vendor route's keys by epoch. Records use the key of their
// event time, so pseudonyms are unlinkable across epochs and deleting an
// old key crypto-shreds its epoch. Immutable and safe for concurrent use.
type KeyRing struct {
	epochs []Epoch
	ids    []string
	pan    []*CryptoPAn
}

// NewKeyRing builds a ring; epochs need not be sorted. An epoch whose Key
// is retired (secret.Retired) keeps its place and id but has no key; the
// newest epoch cannot be retired.
func NewKeyRing(epochs []Epoch) (*KeyRing, error) {
	if len(epochs) == 0 {
		return nil, errors.New("key ring: no keys")
	}
	e := append([]Epoch(nil), epochs...)
	sort.SliceStable(e, func(i, j int) bool { return e[i].From.Before(e[j].From) })
	r := &KeyRing{epochs: e}
	for i, ep := range e {
		if i > 0 && ep.From.Equal(e[i-1].From) {
			return nil, fmt.Errorf("key ring: two keys start at %s", ep.From.Format(time.RFC3339))
		}
		if ep.Key.IsRetired() {
			if i == len(e)-1 {
				return nil, errors.New("key ring: the newest key epoch is retired; add a new key")
			}
			r.ids = append(r.ids, ep.Key.ID())
			r.pan = append(r.pan, nil)
			continue
		}
		if ep.Key.Len() < secret.MinKeyBytes {
			return nil, fmt.Errorf("key ring: key %d is %d bytes, must be at least %d", i, ep.Key.Len(), secret.MinKeyBytes)
		}
		pan, err := NewCryptoPAn(ep.Key.Derive("cryptopan"))
		if err != nil {
			return nil, err
		}
		r.ids = append(r.ids, ep.Key.ID())
		r.pan = append(r.pan, pan)
	}
	return r, nil
}

// Len is the number of epochs.
func (r *KeyRing) Len() int { return len(r.epochs) }

// ID returns epoch i's key id.
func (r *KeyRing) ID(i int) string { return r.ids[i] }

// From returns the start of epoch i.
func (r *KeyRing) From(i int) time.Time { return r.epochs[i].From }

// Epoch returns the index of the epoch covering t; with ErrEpochRetired
// when that epoch's key was retired.
func (r *KeyRing) Epoch(t time.Time) (int, error) {
	i := sort.Search(len(r.epochs), func(i int) bool { return r.epochs[i].From.After(t) }) - 1
	if i < 0 {
		return 0, ErrNoKey
	}
	if r.epochs[i].Key.IsRetired() {
		return i, ErrEpochRetired
	}
	return i, nil
}

// Retired reports whether epoch i's key was retired.
func (r *KeyRing) Retired(i int) bool { return r.epochs[i].Key.IsRetired() }

// Latest is the index of the newest epoch.
func (r *KeyRing) Latest() int { return len(r.epochs) - 1 }

// NewHasher returns a pseudonym hasher for epoch i, keyed with a subkey
// derived for pseudonyms. Each worker needs its own.
func (r *KeyRing) NewHasher(i int) *Hasher {
	return NewHasher(r.epochs[i].Key.Derive("pseudonym"))
}

// CryptoPAn returns epoch i's prefix-preserving IP anonymizer.
func (r *KeyRing) CryptoPAn(i int) *CryptoPAn { return r.pan[i] }
